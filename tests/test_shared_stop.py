"""A shared grid stopped the way the world stops a job: Ctrl-C (twice, in two runs), SIGTERM,
and a worker whose code raises. Nothing is lost: what a stopped run held waits again with no
retry used up, nothing of it stays RUNNING in the study, the same command then completes every
point exactly once, and the end summary counts grid points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_cli, small_space, study_summaries

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FACTORS = {"channel_factor": [1, 2], "kernel_size": [3, 5]}


def start(space: str, results, url: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "sweep.grid", "--space", space, "--results", str(results), "--storage", url,
               "--checkpoint-every", "0", "--heartbeat-interval", "1", "--grace-period", "30", *extra]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def queue_rows(url: str) -> list:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT slot, state, attempts, worker, error FROM sweep_queue ORDER BY slot")).all()
    engine.dispose()
    return rows


def study_states(url: str) -> list[str]:
    import optuna

    (summary,) = study_summaries(url)
    return [t.state.name for t in optuna.load_study(study_name=summary.study_name, storage=url).trials]


def wait_mid_trial(results, process: subprocess.Popen, timeout: float = 180) -> None:
    """Until the command has checkpointed an epoch of a trial it holds (so it is mid-trial)."""
    from sweep.train.checkpoint import CHECKPOINT_FILE

    def checkpoints() -> dict:
        found = {}
        for path in results.glob(f"trials/*/{CHECKPOINT_FILE}"):
            try:
                found[path] = path.stat().st_mtime_ns
            except FileNotFoundError:  # (its trial ended meanwhile)
                pass
        return found

    before = checkpoints()  # (an earlier stopped run's checkpoints are not this command's)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        if set(checkpoints().items()) - set(before.items()):  # (written at the end of an epoch, atomically)
            return
        time.sleep(0.2)
    raise AssertionError("no trial checkpointed an epoch")


@pytest.mark.parametrize(
    "stop, twice, workers",
    [(signal.SIGINT, False, 1), (signal.SIGTERM, False, 1), (signal.SIGINT, True, 2)],
    ids=["Ctrl-C", "SIGTERM", "Ctrl-C twice, two workers"],
)
def test_a_stopped_shared_grid_loses_no_point_and_the_rerun_completes_each_once(tmp_path, postgres_url, stop, twice, workers):
    space = small_space(tmp_path, FACTORS, "stopped", epochs=12, train_limit=256)  # (an epoch can take 0.1 s: trials long enough to stop mid-way)
    results = tmp_path / "results"
    expected = 130 if stop == signal.SIGINT else 143
    for attempt in range(2):  # two runs stopped, as the finding did it
        process = start(space, results, postgres_url, "--workers", str(workers))
        wait_mid_trial(results, process)
        for _ in range(2 if twice else 1):  # the second signal forces: workers killed at once
            if stop == signal.SIGINT:
                os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole process group
            else:
                process.send_signal(signal.SIGTERM)  # what a scheduler sends: the command alone
            time.sleep(0.3)
        t0 = time.monotonic()
        output = process.communicate(timeout=60)[0]
        assert process.returncode == expected, output
        assert time.monotonic() - t0 < 15, output
        last = output.strip().splitlines()[-1]
        assert last.startswith(f"interrupted by {signal.Signals(stop).name}:") and "run the same command again to resume" in last, output
        rows = queue_rows(postgres_url)
        assert not [row for row in rows if row.state == "running"], rows  # nothing of this host left running
        assert "RUNNING" not in study_states(postgres_url)
        assert all(row.attempts == 0 for row in rows), rows  # no retry used up
        assert any(row.error == "interrupted" and row.state == "waiting" for row in rows), rows
    out = run_cli("sweep.grid", "--space", space, "--results", str(results), "--storage", postgres_url, "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "4 grid points: 4 complete, 0 failed" in out.stdout, out.stdout
    assert [row.state for row in queue_rows(postgres_url)] == ["complete"] * 4
    states = study_states(postgres_url)
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states
    from sweep.results import load_results

    frame = load_results(postgres_url)
    assert len(frame) == 4 and set(frame["status"]) == {"complete"}
    assert frame["resumed_from_epoch"].fillna(0).max() > 0  # the interrupted trial went on from its checkpoint


def test_a_point_whose_code_raises_is_retried_then_named_failed_in_the_end_summary(tmp_path, postgres_url, monkeypatch, capsys):
    import sweep.run.study_job
    from sweep.cli.grid import main
    from sweep.run import grid_trials
    from sweep.run.queue import MAX_RETRY
    from sweep.space import load_space

    space = small_space(tmp_path, {"kernel_size": [3, 5]}, "raising")
    keys = [spec.key for _, spec in grid_trials(load_space(space), None)]
    real, calls = sweep.run.study_job.run_trial, []

    def crashing(spec, *args, **kwargs):
        if spec.key == keys[1]:
            calls.append(spec.key)
            raise RuntimeError("simulated crash outside the trial")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(sweep.run.study_job, "run_trial", crashing)
    command = ["--space", space, "--results", str(tmp_path / "r"), "--storage", postgres_url, "--workers", "1"]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert len(calls) == MAX_RETRY + 1  # retried up to the limit
    assert "2 grid points: 1 complete, 1 failed" in out, out
    assert "point 1 " in out and "RuntimeError: simulated crash outside the trial" in out, out
    (_, (slot, state, attempts, _, error)) = queue_rows(postgres_url)
    assert (slot, state, attempts) == (1, "failed", MAX_RETRY + 1) and "simulated crash" in error
    status = run_cli("sweep.status", "--storage", postgres_url)
    assert "failed: point 1" in status.stdout and "simulated crash" in status.stdout, status.stdout
    # Failed points stay failed on a rerun, unless --retry-failed (which works shared).
    monkeypatch.undo()
    assert main(command) == 0 and "2 grid points: 1 complete, 1 failed" in capsys.readouterr().out
    assert main([*command, "--retry-failed"]) == 0
    captured = capsys.readouterr()
    assert "1 failed queued again" in captured.err and "2 grid points: 2 complete" in captured.out, captured


def test_a_stopped_optuna_run_hands_its_trial_back_with_the_same_params(tmp_path):
    """`sweep.optuna` goes through the same rules: SIGTERM mid-trial, and the trial is told
    failed (marked interrupted) with a waiting copy of its params, nothing RUNNING; the same
    command then takes the copy first and resumes it from its checkpoint."""
    import optuna

    from sweep.results import load_results

    space = small_space(tmp_path, FACTORS, "sampled", epochs=12, train_limit=256)
    results = tmp_path / "results"
    command = [sys.executable, "-m", "sweep.optuna", "--trials", "2", "--space", space, "--results", str(results), "--sampler", "grid",
               "--sampler-seed", "0", "--workers", "1", "--checkpoint-every", "0", "--pruner", "none"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wait_mid_trial(results, process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 143, output
    assert output.strip().splitlines()[-1].startswith("interrupted by SIGTERM:"), output
    url = f"sqlite:///{results}/optuna.db"
    (summary,) = study_summaries(url)
    trials = optuna.load_study(study_name=summary.study_name, storage=url).trials
    stopped = [t for t in trials if t.state.name == "FAIL"]
    assert "RUNNING" not in [t.state.name for t in trials] and len(stopped) == 1 and stopped[0].user_attrs.get("interrupted"), trials
    (copy,) = [t for t in trials if t.state.name == "WAITING"]
    assert copy.params == stopped[0].params and copy.user_attrs["retry_of"] == stopped[0].number and copy.user_attrs["sweep_attempts"] == 0
    rerun = run_cli(*command[2:])
    assert rerun.returncode == 0, rerun.stderr
    trials = optuna.load_study(study_name=summary.study_name, storage=url).trials
    retried = next(t for t in trials if t.number == copy.number)
    assert retried.state.name == "COMPLETE" and retried.params == stopped[0].params
    row = load_results(results).set_index("trial_key").loc[retried.user_attrs["trial_key"]]
    assert row["resumed_from_epoch"] > 0
