"""Signals stop the whole run, and nothing is lost (`sweep.stop` has the protocol).

Each test drives a real command as a user (or a scheduler) would: SIGTERM to the driver
alone (`kill PID`, Slurm, Kubernetes), SIGINT to its whole process group (a terminal's
Ctrl-C), SIGKILL, a second signal, a worker still in an epoch at the deadline, `--workers 1`,
`python -m sweep.optuna`, `python -m sweep.bench` and `python3 tasks.py`. Every process of
the run must be gone soon after; a stopped trial writes no row, keeps a checkpoint of the
epoch it stopped after, and the same command run again resumes it from there.
"""

from __future__ import annotations

import json
import os
import signal
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli, small_space

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")]

DEADLINE_S = 10.0  # sweep.stop.DEADLINE_S
# Two trials alike but for their seed (so they keep pace), of about half a second an epoch under
# TensorFlow on one core, 12 epochs: a signal finds them mid-trial (with 6, one worker slow to
# start under load found the other's trial already finished).
TRIALS = {"seed": [1, 2], "kernel_size": [3], "channel_factor": [2]}
PROTOCOL = {"epochs": 12, "batch_size": 8, "train_limit": 256}
# One epoch far longer than the deadline (wider models on 224x224 images: about a minute on one
# core): a signal finds them mid-epoch at the deadline.
LONG_TRIALS = {"seed": [1, 2], "kernel_size": [5], "channel_factor": [4]}
LONG_EPOCH = {"epochs": 2, "batch_size": 8, "train_limit": None, "image_size": 224}


def pids_of_run(root: int) -> set[int]:
    """`root` and every process descending from it (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid, ppid = int(text.split(" ", 1)[0]), int(text.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(parents.get(pid, []))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def gone_within(pids: set[int], seconds: float) -> float:
    """Wait until none of `pids` runs; return how long that took (fail after `seconds`)."""
    t0 = time.monotonic()
    while any(alive(pid) for pid in pids):
        if time.monotonic() - t0 > seconds:
            left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120] for pid in pids if alive(pid)}
            pytest.fail(f"still running {seconds:.0f} s later: {left}")
        time.sleep(0.1)
    return time.monotonic() - t0


class Run:
    """A command started as a user would, in a session of its own (so its group can be signalled)."""

    def __init__(self, args: list[str], tmp_path: Path, env: dict | None = None):
        self.out, self.err = open(tmp_path / "stdout.txt", "w+"), open(tmp_path / "stderr.txt", "w+")
        self.process = subprocess.Popen(
            args, cwd=ROOT, stdout=self.out, stderr=self.err, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )  # fmt: skip
        self.pid = self.process.pid
        self.family: set[int] = set()

    def snapshot(self) -> set[int]:
        """The run's processes now (the driver, its workers, their helpers)."""
        self.family |= pids_of_run(self.pid)
        return self.family

    def stderr(self) -> str:
        self.err.flush()
        return Path(self.err.name).read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout:.0f} s later; stderr:\n{self.stderr()[-3000:]}")

    def kill(self) -> None:
        for pid in self.family | pids_of_run(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.process.wait(timeout=30)
        self.out.close()
        self.err.close()


@pytest.fixture
def runs():
    started: list[Run] = []
    yield started
    for run in started:  # nothing of a failed test keeps running
        run.kill()


def grid(tmp_path: Path, runs: list, protocol: dict = PROTOCOL, workers: int = 2, via: str = "module") -> tuple[Run, list[str]]:
    """Start `python -m sweep.grid` (or `python3 tasks.py grid`) on a tiny synthetic space."""
    space = small_space(tmp_path, LONG_TRIALS if protocol is LONG_EPOCH else TRIALS, name="signals", **protocol)
    args = ["--space", space, "--results", str(tmp_path / "results"), "--workers", str(workers), "--checkpoint-every", "0"]
    command = [sys.executable, "-m", "sweep.grid", *args] if via == "module" else [sys.executable, str(ROOT / "tasks.py"), "grid", *args]
    run = Run(command, tmp_path)
    runs.append(run)
    return run, args


def training(run: Run, results: Path, trials: int, epochs_done: int = 0, timeout: float = 120) -> dict[str, int]:
    """Wait until `trials` trials are training with at least `epochs_done` epochs finished
    (the progress files workers keep for the progress bar); return {trial key: epochs done}."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if run.process.poll() is not None:
            pytest.fail(f"the run ended before its trials trained (status {run.process.returncode}):\n{run.stderr()[-3000:]}")
        found = {}
        for path in (results / ".workers" / "progress").glob("*.json"):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if entry["epoch"] >= epochs_done:
                found[entry["key"]] = entry["epoch"]
        if len(found) >= trials:
            run.snapshot()
            return found
        time.sleep(0.1)
    pytest.fail(f"no {trials} trial(s) training after {timeout} s:\n{run.stderr()[-3000:]}")


def wait_for(found, run: Run, timeout: float = 60):
    """Poll `found()` until it returns something true; return that."""
    t0 = time.monotonic()
    while not (value := found()):
        if time.monotonic() - t0 > timeout or run.process.poll() is not None:
            pytest.fail(f"not there after {time.monotonic() - t0:.0f} s:\n{run.stderr()[-3000:]}")
        time.sleep(0.1)
    return value


def rows(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "rows").glob("*.json"))]


def checkpoint_epoch(results: Path, key: str) -> int | None:
    """The last epoch (0-based) of the trial's checkpoint, or None without one."""
    path = results / "trials" / key / "checkpoint.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as saved:
        return json.loads(str(saved["meta"]))["epoch"]


def last_line(run: Run) -> str:
    return run.stderr().strip().splitlines()[-1]


def counts(line: str, signame: str) -> tuple[int, int]:
    """(trials finished and stored, trials stopped at an epoch end) in the interrupted line."""
    found = re.fullmatch(
        rf"interrupted by {signame}: (\d+) trial\(s\) finished in this run and are stored"
        rf"(?:, (\d+) stopped at the end of an epoch and resume from their checkpoints)?; run the same command again to resume",
        line,
    )  # fmt: skip
    assert found, line
    return int(found[1]), int(found[2] or 0)


def stopped_and_resumed(tmp_path: Path, runs: list, send) -> None:
    """Start a grid of two trials on two workers, `send` a stop once both have finished an
    epoch; check the run stops within the deadline, leaves no process, and that each trial
    either finished (its row stored) or stopped (no row, a checkpoint at least as far as it
    had got); then the same command again completes both, the stopped ones resumed from their
    checkpoints."""
    run, args = grid(tmp_path, runs)
    results = tmp_path / "results"
    seen = training(run, results, trials=2, epochs_done=1)
    family = run.snapshot()
    assert len(family) >= 3, family  # the driver and its two workers (and their helpers)
    t0 = time.monotonic()
    signum = send(run)
    status = run.wait(timeout=DEADLINE_S + 20)
    assert status == 128 + signum, run.stderr()[-3000:]
    exited = time.monotonic() - t0
    gone_within(family, 15 - exited)
    print(f"{signal.Signals(signum).name}: the driver exited with {status} after {exited:.1f} s; no process left after {time.monotonic() - t0:.1f} s")
    assert "Traceback" not in run.stderr()
    finished, stopped = counts(last_line(run), signal.Signals(signum).name)
    stored = {row["trial_key"] for row in rows(results)}
    assert len(stored) == finished and finished + stopped == 2 and stopped >= 1, (last_line(run), stored)
    for key, epochs_done in seen.items():
        if key not in stored:  # stopped: no row (a stop is no trial outcome), the epoch in progress kept
            epoch = checkpoint_epoch(results, key)
            assert epoch is not None and epoch + 1 >= epochs_done, (key, epoch, epochs_done)

    again = run_cli("sweep.grid", *args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    done = {row["trial_key"]: row for row in rows(results)}
    assert sorted(done) == sorted(seen)
    for key, row in done.items():
        assert row["status"] == "complete" and row["epochs_run"] == PROTOCOL["epochs"], row.get("error")
        if key not in stored:
            assert row["resumed_from_epoch"] is not None and row["resumed_from_epoch"] >= seen[key] > 0, row["resumed_from_epoch"]
        assert not (results / "trials" / key / "checkpoint.npz").exists()


def test_sigterm_to_the_driver_stops_every_worker_at_its_epoch_end_and_a_rerun_resumes(tmp_path, runs):
    def send(run: Run) -> int:
        os.kill(run.pid, signal.SIGTERM)  # the driver alone: kill PID, scancel, a time limit, Kubernetes
        return signal.SIGTERM

    stopped_and_resumed(tmp_path, runs, send)


def test_ctrl_c_to_the_process_group_stops_the_run_and_a_rerun_resumes(tmp_path, runs):
    def send(run: Run) -> int:
        os.killpg(run.pid, signal.SIGINT)  # a terminal's Ctrl-C: the driver and every worker get it
        return signal.SIGINT

    stopped_and_resumed(tmp_path, runs, send)


def test_no_worker_outlives_a_sigkilled_driver(tmp_path, runs):
    run, _ = grid(tmp_path, runs)
    training(run, tmp_path / "results", trials=2)
    workers = run.snapshot() - {run.pid}
    assert len(workers) >= 2, workers
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait(timeout=10) == -signal.SIGKILL
    took = gone_within(workers, 5)
    print(f"SIGKILL of the driver: no worker left after {took:.1f} s")


def test_a_worker_still_in_its_epoch_at_the_deadline_is_killed(tmp_path, runs):
    run, _ = grid(tmp_path, runs, protocol=LONG_EPOCH)
    training(run, tmp_path / "results", trials=2)
    time.sleep(2)  # into the first epoch, which takes far longer than the deadline
    family = run.snapshot()
    t0 = time.monotonic()
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait(timeout=DEADLINE_S + 20) == 143, run.stderr()[-3000:]
    took = time.monotonic() - t0
    assert DEADLINE_S - 1 <= took <= DEADLINE_S + 5, took
    gone_within(family, 3)
    print(f"SIGTERM at the deadline: the driver exited with 143 after {took:.1f} s; no process left after {time.monotonic() - t0:.1f} s")
    line = last_line(run)
    assert line.startswith("interrupted by SIGTERM: 0 trial(s) finished in this run and are stored, 2 killed at the 10 s deadline"), line
    assert rows(tmp_path / "results") == []


def test_a_second_signal_kills_the_workers_at_once(tmp_path, runs):
    run, _ = grid(tmp_path, runs, protocol=LONG_EPOCH)
    training(run, tmp_path / "results", trials=2)
    time.sleep(2)
    family = run.snapshot()
    t0 = time.monotonic()
    os.kill(run.pid, signal.SIGTERM)
    time.sleep(1)
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait(timeout=DEADLINE_S + 20) == 143, run.stderr()[-3000:]
    gone_within(family, 3)
    took = time.monotonic() - t0
    assert took < 1 + 4, took  # not the deadline: at once
    print(f"two SIGTERMs 1 s apart: no process left {took:.1f} s after the first")
    line = last_line(run)
    assert "2 killed at once (second signal)" in line, line


@pytest.mark.backends  # (under JAX too: the trial runs in the driver, beside its signal handling)
def test_with_one_worker_the_driver_stops_the_trial_it_runs_at_its_epoch_end(tmp_path, runs):
    run, args = grid(tmp_path, runs, workers=1)
    results = tmp_path / "results"
    seen = training(run, results, trials=1, epochs_done=1)
    family = run.snapshot()
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait(timeout=DEADLINE_S + 20) == 143, run.stderr()[-3000:]
    gone_within(family, 3)
    assert counts(last_line(run), "SIGTERM") == (0, 1)
    ((key, epochs_done),) = seen.items()
    assert rows(results) == [] and checkpoint_epoch(results, key) + 1 >= epochs_done


def test_with_one_worker_the_driver_ends_itself_at_the_deadline(tmp_path, runs):
    run, _ = grid(tmp_path, runs, protocol=LONG_EPOCH, workers=1)
    training(run, tmp_path / "results", trials=1)
    time.sleep(2)
    t0 = time.monotonic()
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait(timeout=DEADLINE_S + 20) == 143, run.stderr()[-3000:]
    took = time.monotonic() - t0
    assert DEADLINE_S - 1 <= took <= DEADLINE_S + 5, took
    line = last_line(run)
    assert line.startswith("interrupted by SIGTERM: 0 trial(s) finished in this run and are stored, 1 killed at the 10 s deadline"), line


def test_optuna_stops_its_workers_too(tmp_path, runs):
    sampled = {"learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True}, "channel_factor": [2]}  # two workers never sample one trial
    space = small_space(tmp_path, sampled, name="signals", **PROTOCOL)
    results = tmp_path / "results"
    run = Run([sys.executable, "-m", "sweep.optuna", "--space", space, "--trials", "4", "--workers", "2", "--results", str(results), "--pruner", "none", "--checkpoint-every", "0"], tmp_path)  # fmt: skip
    runs.append(run)
    training(run, results, trials=2, epochs_done=1)
    family = run.snapshot()
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait(timeout=DEADLINE_S + 20) == 143, run.stderr()[-3000:]
    gone_within(family, 5)
    line = last_line(run)  # (the Optuna driver words it itself: what its study holds)
    assert line.startswith("interrupted by SIGTERM:") and line.endswith("run the same command again to resume"), line


def test_bench_stops_its_harness_workers_too(tmp_path, runs):
    space = small_space(tmp_path, TRIALS, name="signals", **PROTOCOL)
    scratch = tmp_path / "scratch"  # where the bench keeps its throw-away results (TMPDIR)
    scratch.mkdir()
    command = [sys.executable, "-m", "sweep.bench", "--space", space, "--modes", "harness", "--workers", "2", "--no-peak", "--checkpoint-every", "0"]
    run = Run(command, tmp_path, env={"TMPDIR": str(scratch)})
    runs.append(run)
    (results,) = wait_for(lambda: list(scratch.glob("sweep-bench-*")), run)
    training(run, results, trials=2, epochs_done=1)
    family = run.snapshot()
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait(timeout=DEADLINE_S + 20) == 143, run.stderr()[-3000:]
    gone_within(family, 5)
    assert last_line(run).startswith("interrupted by SIGTERM: the benchmark stopped"), last_line(run)
    assert list(scratch.iterdir()) == []  # its throw-away results removed


def test_tasks_py_passes_sigterm_on_and_returns_the_commands_status(tmp_path, runs):
    run, _ = grid(tmp_path, runs, via="tasks")
    training(run, tmp_path / "results", trials=2)
    family = run.snapshot()
    assert len(family) >= 4, family  # tasks.py, the driver, two workers
    os.kill(run.pid, signal.SIGTERM)  # tasks.py alone
    assert run.wait(timeout=DEADLINE_S + 20) == 143, run.stderr()[-3000:]
    gone_within(family, 5)
    assert last_line(run).startswith("interrupted by SIGTERM:"), run.stderr()[-3000:]


def test_tasks_py_passes_a_sigint_sent_to_it_alone_on(tmp_path, runs):
    """`kill -INT` to tasks.py alone (not to its process group) stops the command too: the
    command runs in a group of its own, and tasks.py passes SIGINT on once."""
    run, _ = grid(tmp_path, runs, via="tasks")
    training(run, tmp_path / "results", trials=2)
    family = run.snapshot()
    os.kill(run.pid, signal.SIGINT)  # tasks.py alone
    assert run.wait(timeout=DEADLINE_S + 20) == 130, run.stderr()[-3000:]
    gone_within(family, 5)
    assert last_line(run).startswith("interrupted by SIGINT:") and "killed" not in last_line(run), run.stderr()[-3000:]


def test_ctrl_c_through_tasks_py_prints_no_traceback(tmp_path, runs):
    run, _ = grid(tmp_path, runs, via="tasks")
    training(run, tmp_path / "results", trials=2)
    family = run.snapshot()
    os.killpg(run.pid, signal.SIGINT)  # a terminal's Ctrl-C: tasks.py, the driver and the workers
    assert run.wait(timeout=DEADLINE_S + 20) == 130, run.stderr()[-3000:]
    gone_within(family, 5)
    assert "Traceback" not in run.stderr()
    finished, stopped = counts(last_line(run), "SIGINT")
    assert finished + stopped == 2 and stopped >= 1
