"""Many machines for real: hosts in network namespaces of their own (own address, own host
name, own `--results` folder) share one grid through a throwaway PostgreSQL server on a
bridge, with the plain `postgresql://` URL the README documents. A link is cut mid-trial, a
host is SIGKILLed mid-trial, the server is restarted mid-sweep; each test checks the exact
final state of the shared results table, and that a fourth host reads the same with
`load_results(URL)`.

They need root, `ip netns` and PostgreSQL's server programs (tests/netns.py); they are
skipped where those are missing, and required in CI (SWEEP_REQUIRE_NETNS=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, report_folder, run_cli, small_space, study_summaries
from netns import Cluster, require_netns

pytestmark = [pytest.mark.netns, pytest.mark.slow]

BEAT = ("--heartbeat-interval", "1", "--grace-period", "6")
SEED002 = {"fewer_layers": [False, True], "channel_factor": [1, 2, 4], "kernel_size": [3, 5], "compression_factor": [1, 2, 4]}

READ = """
import json, sys
from sweep.results import load_results
frame = load_results(sys.argv[1])
print(json.dumps(sorted(zip(frame["trial_key"], frame["status"], frame["host"]))))
"""


@pytest.fixture(scope="module")
def cluster():
    """Three worker hosts, a fourth that only reads, and the database server on the bridge."""
    require_netns()
    with Cluster() as built:
        built.server = built.postgres()
        for name in ("host-a", "host-b", "host-c", "reader"):
            built.add_host(name)
        yield built


@pytest.fixture
def database(cluster) -> str:
    """A fresh database on the cluster's server: its plain postgresql:// URL."""
    return cluster.server.create_database(f"t{uuid.uuid4().hex[:10]}")


def sweep_grid(host, space: str, results: Path, url: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """`python -m sweep.grid` on `host`, as a user types it there."""
    command = [sys.executable, "-m", "sweep.grid", "--space", space, "--results", str(results), "--storage", url, "--workers", "1", *extra]
    return host.popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip


def finish(processes: list[subprocess.Popen], timeout: float = 600) -> tuple[list[int], list[str]]:
    """Wait for the processes; their exit codes and outputs."""
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    return [p.returncode for p in processes], outputs


def tails(codes: list[int], outputs: list[str], expected: list[int]) -> str:
    """The end of each unexpected worker's output (its traceback), whole, for the failure message."""
    return "\n".join(f"--- worker {i} exited {code}:\n{out[-6000:]}" for i, (code, want, out) in enumerate(zip(codes, expected, outputs)) if code != want)


def table(url: str) -> dict[str, dict]:
    """The shared results table as {trial_key: row}, read from this machine."""
    from sweep.results.shared import SharedRows

    rows = SharedRows(url, timeout=30).rows()
    assert len(rows) == len({r["trial_key"] for r in rows})  # one row per key (the primary key)
    return {r["trial_key"]: r for r in rows}


def read_from_reader(cluster, url: str) -> list[list[str]]:
    out = cluster.hosts[3].run([sys.executable, "-c", READ, url], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def study_of(url: str):
    import optuna

    (summary,) = study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def states_by_point(study) -> dict[int, list[str]]:
    by_point: dict[int, list[str]] = {}
    for trial in sorted(study.trials, key=lambda t: t.number):
        by_point.setdefault(trial.user_attrs["grid_point"], []).append(trial.state.name)
    return by_point


def local_rows(results: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["trial_key"]: json.loads(p.read_text()) for p in (results / "rows").glob("*.json")}


def grid_keys(space: str) -> list[str]:
    from sweep.run import grid_trials
    from sweep.space import load_space

    return [spec.key for _, spec in grid_trials(load_space(space), None)]


def wait_for(condition, timeout: float, what: str, poll: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def running_on(url: str, host_name: str):
    """The trial running on `host_name` right now, or None."""
    try:
        study = study_of(url)
    except (ValueError, KeyError):
        return None
    running = [t for t in study.trials if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").startswith(f"{host_name}:")]
    return running[0] if running else None


def assert_final_table(cluster, url: str, keys: list[str]) -> dict[str, dict]:
    """Every key complete exactly once in the shared table, and the reader host sees the same."""
    rows = table(url)
    assert sorted(rows) == sorted(set(keys))
    assert {r["status"] for r in rows.values()} == {"complete"}
    assert read_from_reader(cluster, url) == sorted([k, "complete", rows[k]["host"]] for k in rows)
    return rows


def test_three_hosts_share_the_36_point_grid_each_point_complete_once(cluster, database, tmp_path):
    space = small_space(tmp_path, SEED002, "seed002", train_limit=32)
    keys = grid_keys(space)
    assert len(set(keys)) == 36
    hosts = cluster.hosts[:3]
    results = [tmp_path / host.name for host in hosts]
    t0 = time.monotonic()
    workers = [sweep_grid(host, space, folder, database, "--heartbeat-interval", "1") for host, folder in zip(hosts, results)]

    def watched_from_the_reader() -> str | None:
        """`python -m sweep.status` on the fourth host, once it shows trials running on two hosts."""
        out = cluster.hosts[3].run([sys.executable, "-m", "sweep.status", "--storage", database], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout if sum(f" on {host.name} pid " in out.stdout for host in hosts) >= 2 else None

    status = wait_for(watched_from_the_reader, 120, "sweep.status to show trials running on two hosts", poll=0)
    assert "grid:" in status and "points complete" in status and "heartbeat" in status, status
    codes, outputs = finish(workers)
    elapsed = time.monotonic() - t0
    assert codes == [0, 0, 0], tails(codes, outputs, [0, 0, 0])

    rows = assert_final_table(cluster, database, keys)
    # No host trained a point another had completed: each key is in exactly one host's own
    # folder, and the table's row is that host's.
    trained = {host.name: local_rows(folder) for host, folder in zip(hosts, results)}
    owners = {key: [name for name, local in trained.items() if key in local] for key in keys}
    assert all(len(names) == 1 for names in owners.values()), owners
    assert {key: rows[key]["host"] for key in keys} == {key: names[0] for key, names in owners.items()}
    assert {r["host"] for r in rows.values()} == {"host-a", "host-b", "host-c"}  # all three did part of the work
    study = study_of(database)
    assert states_by_point(study) == {point: ["COMPLETE"] for point in range(36)}
    print(f"3 hosts, 36 points: {elapsed:.1f} s; trials per host {[len(t) for t in trained.values()]}")

    # The report of the whole cluster, from the URL (no local folder holds all rows).
    out = run_cli("sweep.report", "--results", database, "--out", str(tmp_path / "report"), "--no-reference", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Covers **36 trials**: 36 complete" in (tmp_path / "report" / "report.md").read_text()


def test_a_cut_link_fails_the_trial_over_to_another_host_and_its_late_result_stays_out(cluster, database, tmp_path):
    space = small_space(tmp_path, {"channel_factor": [1, 2, 4], "kernel_size": [3, 5]}, "cut", epochs=4, train_limit=384)
    keys = grid_keys(space)
    hosts = cluster.hosts[:3]
    results = [tmp_path / host.name for host in hosts]
    workers = [sweep_grid(host, space, folder, database, *BEAT) for host, folder in zip(hosts, results)]
    cut = hosts[2]
    try:
        victim = wait_for(lambda: running_on(database, cut.name), 180, f"a trial running on {cut.name}")
        time.sleep(0.5)  # mid-training
        cut.cut()
        t_cut = time.monotonic()

        def retried():
            study = study_of(database)
            return next((t for t in study.trials if t.user_attrs.get("retry_of") == victim.number and t.state.name == "COMPLETE"), None)

        retry = wait_for(retried, 240, "the cut host's trial to be retried and completed elsewhere", poll=1)
        t_retried = time.monotonic() - t_cut
    finally:
        cut.restore()
    codes, outputs = finish(workers)
    assert codes == [0, 0, 0], tails(codes, outputs, [0, 0, 0])

    key = victim.user_attrs["trial_key"]
    rows = assert_final_table(cluster, database, keys)
    assert retry.user_attrs["trial_key"] == key
    assert rows[key]["host"] == retry.user_attrs["worker"].split(":")[0] != cut.name  # the retry's row
    late = local_rows(results[2])[key]  # the cut host finished too, and kept its copy
    assert late["status"] == "complete" and late["host"] == cut.name
    assert "a complete row of it was stored first" in outputs[2], outputs[2]
    assert "was failed meanwhile by another machine" in outputs[2], outputs[2]
    by_point = states_by_point(study_of(database))
    point = victim.user_attrs["grid_point"]
    assert by_point.pop(point) == ["FAIL", "COMPLETE"]
    assert by_point == {p: ["COMPLETE"] for p in range(6) if p != point}
    print(f"link cut mid-trial: retried and complete elsewhere {t_retried:.1f} s after the cut")


def test_a_host_killed_mid_trial_is_resumed_on_another_from_the_shared_checkpoint(cluster, database, tmp_path):
    protocol = {"epochs": 4, "train_limit": 192}
    space = small_space(tmp_path, {"channel_factor": [1, 2, 4]}, "killed", **protocol)
    keys = grid_keys(space)
    victim = keys[0]
    # The uninterrupted trial, on this machine alone (the key names the trial, whatever the space).
    reference_space = small_space(tmp_path, {"channel_factor": [1]}, "reference", **protocol)
    assert grid_keys(reference_space) == [victim]
    out = run_cli("sweep.grid", "--space", reference_space, "--results", str(tmp_path / "reference"), "--workers", "1")
    assert out.returncode == 0, out.stderr
    reference = local_rows(tmp_path / "reference")[victim]

    artifacts = tmp_path / "shared-artifacts"  # one folder every host sees (a shared mount)
    common = (*BEAT, "--artifacts", str(artifacts), "--checkpoint-every", "0")
    host_a, host_b = cluster.hosts[:2]
    killed = sweep_grid(host_a, space, tmp_path / "a", database, *common, env={"SWEEP_FAILPOINTS": f"trial.epoch_end:{victim}=kill@2"})
    wait_for(lambda: (running_on(database, host_a.name) or killed.poll() is not None), 180, "host-a to start")
    survivor = sweep_grid(host_b, space, tmp_path / "b", database, *common)
    t0 = time.monotonic()
    codes, outputs = finish([killed, survivor])
    assert codes == [-9, 0], tails(codes, outputs, [-9, 0])  # SIGKILLed at the end of its victim's second epoch

    rows = assert_final_table(cluster, database, keys)
    row = rows[victim]
    assert row["host"] == host_b.name and row["resumed_from_epoch"] == 2 and row["epochs_run"] == 4
    history, expected = json.loads(row["history"]), json.loads(reference["history"])
    assert len(history) == len(expected) == 4
    for got, want in zip(history, expected):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9)
    for metric in ("val_mse", "test_mse", "test_psnr", "test_ssim", "best_epoch", "params"):
        assert row[metric] == pytest.approx(reference[metric], rel=1e-6), metric
    assert sorted(p.name for p in (artifacts / victim).iterdir()) == ["history.json", "model.keras", "reconstructions.png", "spec.json"]
    assert victim not in local_rows(tmp_path / "a")  # host-a died before its row
    by_point = states_by_point(study_of(database))
    assert by_point == {0: ["FAIL", "COMPLETE"], 1: ["COMPLETE"], 2: ["COMPLETE"]}
    # The README's report of a cluster: rows from the URL, pictures from the shared store.
    out = run_cli("sweep.report", "--results", database, "--artifacts", str(artifacts), "--no-reference", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (report_folder(out, tmp_path) / ".pictures" / "trials" / victim / "reconstructions.png").exists()
    print(f"SIGKILLed host: the survivor finished the grid {time.monotonic() - t0:.1f} s after the kill, resuming from epoch 2")


def test_a_database_restart_mid_sweep_loses_and_duplicates_nothing(cluster, database, tmp_path):
    factors = {"channel_factor": [1, 2, 4], "kernel_size": [3, 5], "fewer_layers": [False, True]}
    space = small_space(tmp_path, factors, "restart", epochs=2, train_limit=256)
    keys = grid_keys(space)
    hosts = cluster.hosts[:3]
    results = [tmp_path / host.name for host in hosts]
    workers = [sweep_grid(host, space, folder, database, *BEAT) for host, folder in zip(hosts, results)]

    def complete() -> int:
        try:
            return sum(t.state.name == "COMPLETE" for t in study_of(database).trials)
        except (ValueError, KeyError):
            return 0

    downtimes = []
    for after, down in ((2, 0.0), (6, 3.0)):  # a plain restart, then one that keeps the server away 3 s
        wait_for(lambda: complete() >= after, 240, f"{after} complete trials")
        downtimes.append(cluster.server.restart(down=down))
    codes, outputs = finish(workers)
    assert codes == [0, 0, 0], tails(codes, outputs, [0, 0, 0])

    rows = assert_final_table(cluster, database, keys)
    trained = [local_rows(folder) for folder in results]
    assert sorted(key for local in trained for key in local) == sorted(keys)  # each trained exactly once
    assert all(rows[key]["host"] == host.name for host, local in zip(hosts, trained) for key in local)
    by_point = states_by_point(study_of(database))
    assert all(states.count("COMPLETE") == 1 for states in by_point.values()) and len(by_point) == 12, by_point
    retried = sum(states.count("FAIL") for states in by_point.values())
    noticed = sum("does not answer" in out for out in outputs)  # (retried calls, or a heartbeat that failed)
    assert noticed >= 1 and sum("answers again" in out for out in outputs) == noticed, outputs
    print(f"2 server restarts (down {', '.join(f'{d:.2f}' for d in downtimes)} s): {noticed} host(s) retried, {retried} trial(s) failed over")
