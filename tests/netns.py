"""Several separate hosts on one Linux machine, and a throwaway PostgreSQL server they share.

A `Cluster` is a Linux bridge with an address on this machine; each `Host` is a network
namespace joined to the bridge by a veth pair, whose processes also get their own UTS
namespace, so `socket.gethostname()` in them returns the host's name. `Host.cut()` takes the
host's link down (its open TCP connections hang, new ones time out) and `Host.restore()` brings
it back. `Postgres` is a PostgreSQL server in a temporary directory; `Cluster.postgres()` starts
one on the bridge address, reachable from every host. Everything is removed again on close, at
exit as a fallback, and, for runs that were killed, by the next `Cluster`.

Needs root, iproute2, util-linux (`unshare`, `runuser`) and the PostgreSQL server binaries
(/usr/lib/postgresql/*/bin); the chaos test also libfaketime (`faketime_library`). Tests call `require_netns()` first, which skips them when any of
that is missing, or fails them when SWEEP_REQUIRE_NETNS=1.
"""

from __future__ import annotations

import atexit
import functools
import ipaddress
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


from sweep.progress import alive

PG_USER = "postgres"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # a valid hostname label
# What this module creates names the process that created it, so that what a killed process
# left behind can be told from what a running one uses: interfaces (names of at most 15
# characters) by their alias, namespaces and server directories by their names.
_LINK_ALIAS = "sweep tests, process "  # and the pid
_NAMESPACE = re.compile(r"sweep-(\d+)-.+")
_SERVER_DIRS = Path("/tmp")
_SERVER_DIR = re.compile(r"sweep-pg-(\d+)-.+")
_clusters = itertools.count()


def _run(argv: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, raising RuntimeError with its output when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return done


def _ip(*args: str) -> str:
    """Run `ip ARGS` and return its standard output."""
    return _run(["ip", *args]).stdout


def _pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries installed, or None."""
    found = [Path(p).parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found = [d for d in found if (d / "pg_ctl").exists() and d.parent.name.isdigit()]
    return max(found, key=lambda d: int(d.parent.name), default=None)


def _as_postgres(tool: str, *args: str, cwd: Path) -> None:
    """Run a PostgreSQL server binary as the postgres user."""
    _run(["runuser", "-u", PG_USER, "--", str(_pg_bin() / tool), *args], cwd=cwd)


@functools.cache
def netns_available() -> str | None:
    """None when hosts and a throwaway PostgreSQL server can be simulated here, else why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "runuser", "hostname"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found"
    if _pg_bin() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no `{PG_USER}` system user to run PostgreSQL"
    probe = f"sweep-{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as error:
        return f"`ip netns add` not permitted: {error}"
    try:  # a bridge and a veth pair inside the probe namespace: nothing on this machine changes
        _ip("-n", probe, "link", "add", "probe-br", "type", "bridge")
        _ip("-n", probe, "link", "add", "probe-a", "type", "veth", "peer", "name", "probe-b")
    except RuntimeError as error:
        return f"cannot create bridges or veth pairs: {error}"
    finally:
        _ip("netns", "delete", probe)
    return None


def require_netns() -> None:
    """Skip the calling test when `netns_available()` gives a reason, or fail it if
    SWEEP_REQUIRE_NETNS=1."""
    from conftest import require

    require(netns_available(), "SWEEP_REQUIRE_NETNS")


def faketime_library() -> str:
    """Debian's libfaketime (multi-threaded build): a process started with LD_PRELOAD set to it
    and FAKETIME="+10m" sees a wall clock 10 minutes ahead. Skips the calling test without it,
    or fails it when SWEEP_REQUIRE_NETNS=1 (CI installs the faketime package)."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    if found:
        return str(found[0])
    from conftest import require

    require("no libfaketime (apt-get install faketime)", "SWEEP_REQUIRE_NETNS")
    raise AssertionError("unreachable")  # (require skips or fails)


def _free_port(addresses: list[str]) -> int:
    """A TCP port free on every address (the first's ephemeral port the others also accept)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((addresses[0], 0))
            port = first.getsockname()[1]
            try:
                for address in addresses[1:]:
                    with socket.socket() as other:
                        other.bind((address, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port free on all of {addresses}")


class Postgres:
    """A throwaway PostgreSQL server: its own data directory under /tmp, owned by the postgres
    user, trusting the given subnet; removed on `stop()`. Create it with `Postgres.start(...)`."""

    def __init__(self, listen: list[str], trusted_cidr: str, port: int | None = None):
        self.listen = list(listen)
        self.trusted_cidr = str(ipaddress.ip_network(trusted_cidr, strict=False))
        self.port = port or _free_port(self.listen)
        self.dir = Path(tempfile.mkdtemp(prefix=f"sweep-pg-{os.getpid()}-", dir=_SERVER_DIRS))
        self.data = self.dir / "data"
        self.logfile = self.dir / "log"
        self.running = False

    @classmethod
    def start(cls, listen: list[str], *, trusted_cidr: str, port: int | None = None) -> Postgres:
        """initdb, configure and start a server on `listen`:`port` (a free port by default);
        returns once it accepts connections."""
        _remove_stale()
        server = cls(listen, trusted_cidr, port)
        atexit.register(server.stop)
        try:
            server._init()
            server._pg_ctl("-w", "-t", "60", "-l", str(server.logfile), "start")
            server.running = True
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def _pg_ctl(self, *args: str) -> None:
        _as_postgres("pg_ctl", "-D", str(self.data), *args, cwd=self.dir)

    def _init(self) -> None:
        user = pwd.getpwnam(PG_USER)
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.dir.chmod(0o700)
        initdb = ["-D", str(self.data), "-U", PG_USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        _as_postgres("initdb", *initdb, cwd=self.dir)
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            f"host all all {self.trusted_cidr} trust\n"
        )
        with open(self.data / "postgresql.conf", "a") as conf:  # later settings win over initdb's
            conf.write(
                f"listen_addresses = '{','.join(self.listen)}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "fsync = off\n"
                "max_connections = 200\n"
            )

    def _wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    where = f"{self.listen[0]}:{self.port}"
                    raise RuntimeError(f"PostgreSQL on {where} does not accept connections:\n{self.log_tail()}") from None
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        """The postmaster's process id."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, db: str) -> str:
        """The database's URL in the documented form, postgresql://postgres@HOST:PORT/DB."""
        return f"postgresql://{PG_USER}@{self.listen[0]}:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """Create a database and return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def restart(self, down: float = 0.0) -> float:
        """Restart the server (fast shutdown: open connections are cut), keeping it stopped for
        `down` seconds; returns the seconds until it accepted connections again."""
        began = time.monotonic()
        if down > 0:
            self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")
            time.sleep(down)
            self._pg_ctl("-w", "-t", "60", "-l", str(self.logfile), "start")
        else:
            self._pg_ctl("-w", "-t", "60", "-m", "fast", "-l", str(self.logfile), "restart")
        self._wait_ready()
        return time.monotonic() - began

    def stop(self) -> None:
        """Stop the server and remove its directory; does nothing the second time."""
        atexit.unregister(self.stop)
        if self.running:
            try:
                self._pg_ctl("-w", "-t", "30", "-m", "fast", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                if (self.data / "postmaster.pid").exists():  # still running, not already stopped
                    self._pg_ctl("-w", "-t", "30", "-m", "immediate", "stop")
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Host:
    """One simulated host: a network namespace on the cluster's bridge. Made by `Cluster.add_host`."""

    def __init__(self, name: str, namespace: str, veth: str, address: str):
        self.name = name
        self.namespace = namespace
        self.veth = veth  # this machine's end of the link
        self.address = address

    def command(self, argv: list[str]) -> list[str]:
        """`argv` wrapped to run inside the namespace, with the host's name as hostname."""
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *map(str, argv)]

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start `argv` on this host (`subprocess.Popen` keyword arguments apply); its pid is
        that of `argv` itself, every wrapper execs."""
        return subprocess.Popen(self.command(argv), **kwargs)

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Run `argv` on this host to completion (`subprocess.run` keyword arguments apply)."""
        return subprocess.run(self.command(argv), **kwargs)

    def cut(self) -> None:
        """Take the host's link down: its open connections hang, new ones time out."""
        _ip("link", "set", self.veth, "down")

    def restore(self, timeout: float = 10) -> None:
        """Bring the host's link back up; returns once packets flow again."""
        _ip("link", "set", self.veth, "up")
        operstate = Path(f"/sys/class/net/{self.veth}/operstate")
        deadline = time.monotonic() + timeout
        while operstate.read_text().strip() != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.veth} did not come up in {timeout} s")
            time.sleep(0.02)

    @property
    def is_cut(self) -> bool:
        """Whether the link is down (IFF_UP clear)."""
        return not int(Path(f"/sys/class/net/{self.veth}/flags").read_text(), 16) & 0x1

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address})"


def _kill_namespace_processes(namespace: str, timeout: float = 10) -> None:
    """SIGKILL every process in the namespace and wait until none is left."""
    deadline = time.monotonic() + timeout
    while pids := [int(p) for p in _ip("netns", "pids", namespace).split()]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in {namespace} survive SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _remove_stale() -> None:
    """Remove the bridges, veths, namespaces and servers left by earlier processes that were
    killed before they could clean up (their pid is in the names)."""
    for ifalias in Path("/sys/class/net").glob("*/ifalias"):
        try:
            alias = ifalias.read_text().strip()
        except FileNotFoundError:  # deleted meanwhile, by the process that made it
            continue
        match = re.fullmatch(re.escape(_LINK_ALIAS) + r"(\d+)", alias)
        if match and not alive(int(match[1])):
            _delete_link(ifalias.parent.name)
    for line in _ip("netns", "list").splitlines():
        namespace = line.split(" ", 1)[0]
        if (match := _NAMESPACE.fullmatch(namespace)) and not alive(int(match[1])):
            _kill_namespace_processes(namespace)
            _ip("netns", "delete", namespace)
    for directory in _SERVER_DIRS.glob("sweep-pg-*"):
        if (match := _SERVER_DIR.fullmatch(directory.name)) and not alive(int(match[1])):
            try:
                _as_postgres("pg_ctl", "-D", str(directory / "data"), "-w", "-m", "immediate", "stop", cwd=directory)
            except RuntimeError:
                pass  # it never started, or it is gone already
            shutil.rmtree(directory)


def _add_link(name: str, *args: str) -> None:
    """Create an interface (`ip link add NAME ARGS`) and mark it as this process's."""
    _ip("link", "add", name, *args)
    _ip("link", "set", name, "alias", f"{_LINK_ALIAS}{os.getpid()}")


def _delete_link(name: str) -> None:
    """Delete a link (a veth: both ends) unless it is already gone."""
    try:
        _ip("link", "delete", name)
    except RuntimeError:
        if Path(f"/sys/class/net/{name}").exists():
            raise


def _free_subnet(start: int) -> ipaddress.IPv4Network:
    """A subnet 10.201.Y.0/24 that no address here is in, trying Y = start % 250 first (parallel
    test processes start at different Y). Wider networks (/8 VPN ranges) do not count: the
    bridge's /24 route is more specific."""
    words = _ip("-4", "-o", "addr", "show").split()
    used = [ipaddress.ip_interface(word).network for word in words if re.fullmatch(r"[\d.]+/\d+", word)]
    for offset in range(250):
        subnet = ipaddress.ip_network(f"10.201.{(start + offset) % 250}.0/24")
        if not any(subnet.overlaps(network) for network in used if network.prefixlen >= 16):
            return subnet
    raise RuntimeError("no free /24 in 10.201.0.0/16")


class Cluster:
    """A bridge on this machine, with hosts attached to it and the servers it owns; a context
    manager. `close()` kills the hosts' processes, stops the servers and removes it all."""

    def __init__(self):
        _remove_stale()
        sequence = next(_clusters)
        self.name = f"sweep-{os.getpid()}-{sequence}"
        self.bridge = f"sw{os.getpid():x}-{sequence}"
        self.hosts: list[Host] = []
        self.servers: list[Postgres] = []
        self.closed = False
        atexit.register(self.close)
        try:
            self.subnet = _free_subnet(os.getpid() + sequence)
            self.address = str(next(self.subnet.hosts()))  # .1
            _add_link(self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.address}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add_host(self, name: str) -> Host:
        """Create a host named `name` (a hostname label) on the bridge, at the next address from .10."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid hostname")
        index = len(self.hosts)
        veth = f"{self.bridge}-{index}"
        if len(veth) > 15:
            raise ValueError(f"interface name {veth} is longer than 15 characters")
        host = Host(name, f"{self.name}-{name}", veth, str(self.subnet.network_address + 10 + index))
        _ip("netns", "add", host.namespace)
        self.hosts.append(host)  # from here close() removes it
        _add_link(veth, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        host.restore()  # waits until the link is up
        return host

    def postgres(self, port: int | None = None) -> Postgres:
        """Start a throwaway server on the bridge address, trusting the cluster's subnet; it is
        stopped and removed on close."""
        server = Postgres.start([self.address], trusted_cidr=str(self.subnet), port=port)
        self.servers.append(server)
        return server

    def close(self) -> None:
        """Kill every process on the hosts, stop the servers, delete namespaces, veths and the
        bridge. Every step is tried; the first error is raised at the end."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        steps = [functools.partial(_kill_namespace_processes, host.namespace) for host in self.hosts]
        steps += [server.stop for server in self.servers]
        steps += [functools.partial(_delete_link, host.veth) for host in self.hosts]
        steps.append(functools.partial(_delete_link, self.bridge))
        steps += [functools.partial(_ip, "netns", "delete", host.namespace) for host in self.hosts]
        errors = []
        for step in steps:
            try:
                step()
            except Exception as error:  # noqa: BLE001 - the remaining steps must still run
                errors.append(error)
        if errors:
            raise errors[0]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

