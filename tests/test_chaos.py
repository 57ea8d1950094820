"""Chaos: three hosts in network namespaces share seed 002's 36-point grid through PostgreSQL
while, in a seeded and repeatable order, their commands get SIGINT (to the process group, as a
terminal's Ctrl-C), SIGTERM (alone, as a scheduler sends it) and SIGKILL, the server restarts,
the network goes away for every host longer than the grace period (the server up: only the
outages the hosts report hold them off), and one host's wall clock runs 10 minutes
ahead (Debian's libfaketime: Linux time namespaces shift only the monotonic clocks). Every
stopped command is started again, as a user or a scheduler would.

It ends with every point complete exactly once, no trial left running, no process left; a
command stopped by SIGINT or SIGTERM leaves nothing of its host running in the study; no live
trial is taken over by another machine (an outage, a restart and a clock that disagrees fail
none), and the trials that failed are those of signalled commands.

Needs what tests/test_cluster.py needs, and libfaketime; skipped without them, required in CI.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, small_space
from netns import Cluster, faketime_library, require_netns

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SEED = 2026
GRACE = 20  # above the ~15 s a connection over a cut link takes to fail (sweep.results.shared.engine_options)
# libfaketime makes Python's time.sleep fail (clock_nanosleep on the monotonic clock: EINVAL)
# when it leaves the monotonic clock alone, and hangs timed waits when it does not: host-c's
# processes sleep through select() instead (no code of sweep's changes; only their wall clock).
SLEEP_SHIM = "import select, time\ntime.sleep = lambda seconds: select.select([], [], [], seconds) if seconds > 0 else None\n"
BEAT = ("--heartbeat-interval", "1", "--grace-period", str(GRACE))
SEED002 = {"fewer_layers": [False, True], "channel_factor": [1, 2, 4], "kernel_size": [3, 5], "compression_factor": [1, 2, 4]}
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}


class Command:
    """`python -m sweep.grid` on one host, started again whenever it ends before the grid."""

    def __init__(self, host, space: str, results: Path, url: str, workers: int, env: dict[str, str]):
        self.host, self.space, self.results, self.url, self.workers, self.env = host, space, results, url, workers, env
        self.process: subprocess.Popen | None = None
        self.log = results.with_suffix(".log")
        self.runs: list[tuple[int | None, int]] = []  # (signal sent, exit code) of every run

    def mid_trial(self, timeout: float = 90) -> None:
        """Wait until this run has checkpointed an epoch (its trials are mid-training), or
        ended, or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if any(p.stat().st_mtime > self.started for p in self.results.glob("trials/*/checkpoint.npz")):
                return
            time.sleep(0.2)

    def start(self) -> None:
        self.started = time.time()
        command = [
            sys.executable, "-m", "sweep.grid", "--space", self.space, "--results", str(self.results), "--storage", self.url,
            "--workers", str(self.workers), "--checkpoint-every", "0", *BEAT,
        ]  # fmt: skip
        with open(self.log, "a") as log:
            log.write(f"\n==== start at {time.strftime('%H:%M:%S')}\n")
            log.flush()
            self.process = self.host.popen(
                command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )  # fmt: skip

    def signal(self, signum: int) -> None:
        """SIGINT to the whole process group (a terminal's Ctrl-C), the others to the command alone."""
        if signum == signal.SIGINT:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)

    def wait(self, sent: int | None, timeout: float = 600) -> int:
        code = self.process.wait(timeout=timeout)
        self.runs.append((sent, code))
        return code

    def tail(self) -> str:
        return f"--- {self.host.name} ({self.log}):\n" + self.log.read_text()[-5000:]


def our_processes(marker: str) -> list[int]:
    """Processes whose command line mentions `marker` (the test's own folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def running_here(url: str, host: str) -> list[str]:
    """What `host` still holds: running queue rows, and RUNNING Optuna trials it started."""
    import optuna
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT slot, worker FROM sweep_queue WHERE state = 'running'")).all()
    engine.dispose()
    held = [f"point {slot} ({worker})" for slot, worker in rows if str(worker).startswith(f"{host}:")]
    for summary in optuna.get_all_study_summaries(url):
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        held += [f"trial #{t.number}" for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)) if str(t.user_attrs.get("worker", "")).startswith(f"{host}:")]
    return held


def test_chaos_three_hosts_signals_restarts_an_outage_and_a_clock_ahead(tmp_path):
    require_netns()
    library = faketime_library()
    import optuna

    from sweep.results.shared import SharedRows
    from sweep.run import grid_trials
    from sweep.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = small_space(tmp_path, SEED002, f"chaos-{uuid.uuid4().hex[:6]}", epochs=6, train_limit=224)
    keys = {spec.key for _, spec in grid_trials(load_space(space), None)}
    assert len(keys) == 36
    rng = random.Random(SEED)
    t0 = time.monotonic()
    with Cluster() as cluster:
        server = cluster.postgres()
        url = server.create_database("chaos")
        hosts = [cluster.add_host(name) for name in ("host-a", "host-b", "host-c")]
        # host-c's wall clock 10 minutes ahead; its monotonic clock left alone (libfaketime's
        # monotonic offset breaks timed waits, and no real clock skew touches it)
        shim = tmp_path / "faketime-shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(SLEEP_SHIM)
        ahead = {"FAKETIME": "+10m", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "LD_PRELOAD": library, "PYTHONPATH": str(shim)}
        commands = [
            Command(hosts[0], space, tmp_path / "host-a", url, 2, {}),  # two worker processes under one driver
            Command(hosts[1], space, tmp_path / "host-b", url, 1, {}),
            Command(hosts[2], space, tmp_path / "host-c", url, 1, ahead),
        ]
        for command in commands:
            command.start()
        # The seeded plan: six signals to random hosts, a server restart, an outage longer
        # than the grace period, in an order and at moments drawn from SEED.
        plan = [("signal", s) for s in (signal.SIGINT, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGTERM)]
        plan.insert(rng.randrange(2, 5), ("restart", 0.0))
        plan.insert(rng.randrange(4, 7), ("outage", GRACE + 5.0))
        events = []
        try:
            for kind, what in plan:
                time.sleep(rng.uniform(2.0, 6.0))
                if kind == "signal":
                    while True:  # a command still running, caught mid-trial (a stop at start-up is tests/test_signals.py's)
                        running = [c for c in commands if c.process.poll() is None]
                        assert running, f"the grid ended before the plan did: {events}"
                        command = rng.choice(running)
                        command.mid_trial()
                        try:
                            command.signal(what)
                            break
                        except ProcessLookupError:  # it finished the grid just now: another one
                            command.wait(None)
                    code = command.wait(what, timeout=60)
                    events.append(f"{signal.Signals(what).name} {command.host.name}: exit {code}")
                    assert code in (EXIT[what], 0), command.tail()  # (0: it was finishing anyway)
                    if what != signal.SIGKILL and code == EXIT[what]:
                        held = running_here(url, command.host.name)
                        assert not held, f"{events[-1]} left {held} running\n{command.tail()}"
                    time.sleep(rng.uniform(0.5, 3.0))
                    command.start()
                elif kind == "restart":
                    thread = threading.Thread(target=server.restart, kwargs={"down": what})
                    thread.start()
                    thread.join(timeout=120)
                    events.append(f"server restart: down {what:.0f} s")
                else:  # the network away for every host, the server up all along: only sweep_hosts tells
                    for host in hosts:
                        host.cut()
                    try:
                        time.sleep(what)
                    finally:
                        for host in hosts:
                            host.restore()
                    events.append(f"network outage: every host cut off {what:.0f} s")
            for command in commands:  # let each end; start again what a SIGKILL's orphans may have ended
                while command.wait(None, timeout=600) != 0:
                    events.append(f"{command.host.name} exited {command.runs[-1][1]}; started again")
                    assert len(command.runs) < 12, command.tail()
                    command.start()
        except BaseException:
            for command in commands:
                if command.process and command.process.poll() is None:
                    os.killpg(command.process.pid, signal.SIGKILL)
            print("\n".join(events))
            print("\n".join(command.tail() for command in commands))
            raise
        elapsed = time.monotonic() - t0
        assert len([e for e in events if e.startswith("SIG")]) == 6 and len(events) >= 8, events  # the whole plan happened

        # Every point complete exactly once: in the queue, in the study, in the shared table.
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            states = conn.execute(sa.text("SELECT slot, state FROM sweep_queue")).all()
        engine.dispose()
        assert sorted(states) == [(slot, "complete") for slot in range(36)], states
        (summary,) = [s for s in optuna.get_all_study_summaries(url)]
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        by_point: dict[int, list[str]] = {}
        for trial in study.trials:
            by_point.setdefault(trial.user_attrs.get("grid_point"), []).append(trial.state.name)
        assert set(by_point.pop(None, ["FAIL"])) == {"FAIL"}  # (asked by a worker killed before it named its point)
        assert all(states.count("COMPLETE") == 1 for states in by_point.values()) and set(by_point) == set(range(36)), by_point
        assert not [t.number for t in study.trials if t.state.name == "RUNNING"]
        rows = SharedRows(url, timeout=30).rows()
        assert sorted(r["trial_key"] for r in rows) == sorted(keys) and {r["status"] for r in rows} == {"complete"}
        # No live trial was taken over: neither the outage, nor the restart, nor the clock 10
        # minutes ahead made a machine fail another's trial (a taken-over holder says so when
        # it comes back). The trials that failed are those of signalled commands.
        logs = {c.host.name: c.log.read_text() for c in commands}
        taken = [name for name, text in logs.items() if "was failed meanwhile by another machine" in text]
        assert not taken, f"live trials were taken over on {taken}; {events}\n" + "\n".join(c.tail() for c in commands)
        signalled = {event.split()[1].rstrip(":") for event in events if event.startswith("SIG")}
        failed = [t for t in study.trials if t.state.name == "FAIL" and not t.user_attrs.get("interrupted")]
        assert {str(t.user_attrs.get("worker", "?:")).split(":")[0] for t in failed} <= signalled, (failed, events)
        assert any(str(t.user_attrs.get("worker", "")).startswith("host-c:") for t in study.trials)  # the host ahead took part
        # No process left.
        deadline = time.monotonic() + 15
        while our_processes(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not our_processes(str(tmp_path))
    print(f"chaos, seed {SEED}: {'; '.join(events)}; every point complete once in {elapsed:.0f} s")
