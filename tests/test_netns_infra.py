"""The simulated hosts of tests/netns.py: separate hostnames, one throwaway PostgreSQL server
reachable through the bridge, a link that can be cut and restored, a server that can be
restarted, and nothing left on the machine afterwards."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns import Cluster, require_netns

pytestmark = pytest.mark.netns

# Connects, prints the address the server sees the client at, exits 0; fails within ~3 s when
# the server cannot be reached.
CONNECT = """
import sys, psycopg
with psycopg.connect(sys.argv[1], connect_timeout=3) as connection:
    print(connection.execute("select host(inet_client_addr())").fetchone()[0])
"""


def connect(host, url: str) -> subprocess.CompletedProcess:
    """Run CONNECT on the host."""
    return host.run([sys.executable, "-c", CONNECT, url], capture_output=True, text=True, timeout=30)


def gone(pid: int | str, timeout: float = 5) -> bool:
    """Whether the process has exited (a zombie counts) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster():
    require_netns()
    with Cluster() as cluster:
        cluster.add_host("alpha")
        cluster.add_host("beta")
        cluster.postgres()
        yield cluster


def test_hosts_have_their_own_hostnames(cluster):
    hostname = [sys.executable, "-c", "import socket; print(socket.gethostname())"]
    names = [host.run(hostname, capture_output=True, text=True, check=True).stdout.strip() for host in cluster.hosts]
    assert names == ["alpha", "beta"]


def test_hosts_reach_the_server_through_the_bridge(cluster):
    server = cluster.servers[0]
    assert server.url("postgres") == f"postgresql://postgres@{cluster.address}:{server.port}/postgres"
    url = server.create_database("reach")
    for host in cluster.hosts:
        out = connect(host, url)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == host.address  # the server sees the host's own address


def test_a_cut_host_loses_the_server_until_restored(cluster):
    alpha, beta = cluster.hosts
    url = cluster.servers[0].url("postgres")
    alpha.cut()
    try:
        assert alpha.is_cut and not beta.is_cut
        began = time.monotonic()
        out = connect(alpha, url)
        assert out.returncode != 0
        assert time.monotonic() - began < 10  # the connect timeout, not a hang
        assert connect(beta, url).returncode == 0  # the others keep their link
    finally:
        alpha.restore()
    assert not alpha.is_cut
    out = connect(alpha, url)
    assert out.returncode == 0, out.stderr


def test_the_server_restarts_and_accepts_connections_again(cluster):
    server = cluster.servers[0]
    before = server.pid
    down = server.restart()
    assert 0 < down < 30
    assert server.pid != before
    out = connect(cluster.hosts[0], server.url("postgres"))
    assert out.returncode == 0, out.stderr


def test_close_leaves_nothing_behind():
    require_netns()
    cluster = Cluster()
    host = cluster.add_host("gamma")
    server = cluster.postgres()
    postmaster, directory = server.pid, server.dir
    sleeper = host.popen(["sleep", "60"])
    cluster.close()

    assert sleeper.wait(timeout=5) == -9
    assert host.namespace not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert cluster.bridge not in links and host.veth not in links
    assert gone(postmaster)
    assert not directory.exists()


def test_a_new_cluster_removes_what_a_killed_run_left():
    require_netns()
    killed = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from netns import Cluster
cluster = Cluster()
host = cluster.add_host("delta")
server = cluster.postgres()
print(cluster.bridge, host.veth, host.namespace, server.dir, server.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    out = subprocess.run([sys.executable, "-c", killed], capture_output=True, text=True, timeout=60)
    assert out.returncode == -9, out.stderr
    bridge, veth, namespace, directory, postmaster = out.stdout.split()
    assert Path(f"/sys/class/net/{bridge}").exists() and Path(directory).exists() and not gone(postmaster, 0)

    with Cluster():
        assert namespace not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert not Path(f"/sys/class/net/{bridge}").exists() and not Path(f"/sys/class/net/{veth}").exists()
        assert not Path(directory).exists()
        assert gone(postmaster)
