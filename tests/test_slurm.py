"""`--launch slurm` against a real Slurm (`.ci/slurm up`: two nodes, partitions `main` and
`high`, whose jobs preempt `main`'s), a PostgreSQL study and a shared artefact folder: the
README's command on a small space and the test cluster's partition, the array in `squeue` and
`sweep.status`, `scancel` of one task, preemption, the time limit, Ctrl-C on the follower,
`sweep.optuna`'s study total, and bad input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_cli, small_space
from slurm import finished, scancel, show_job, squeue, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]

FACTORS = {"channel_factor": [1, 2], "kernel_size": [3, 5]}


def launch(space: str, tmp_path, url: str, *extra: str, workers: int = 2) -> subprocess.Popen:
    """The README's command (a small space, fast heartbeats), as a follower process."""
    command = [sys.executable, "-m", "sweep.grid", "--space", space, "--results", str(tmp_path / "results"), "--storage", url,
               "--artifacts", str(tmp_path / "artifacts"), "--launch", "slurm", "--workers", str(workers),
               "--checkpoint-every", "0", "--heartbeat-interval", "1", "--grace-period", "30", *extra]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def queue_rows(url: str) -> list:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT slot, state, attempts, job, trial_key FROM sweep_queue ORDER BY slot")).all()
    except sa.exc.ProgrammingError:  # (not created yet)
        return []
    finally:
        engine.dispose()


def array_of(url: str) -> str | None:
    jobs = {row.job for row in queue_rows(url) if row.job}
    return next(iter(jobs)).split("_")[0] if jobs else None


def checkpointed(tmp_path, keys) -> set:
    """The trials among `keys` with a checkpoint in the artefact folder (mid-trial)."""
    return {key for key in keys if (tmp_path / "artifacts" / key / "checkpoint.npz").exists()}


def rows_of(url: str):
    from sweep.results import load_results

    return load_results(url)


def finish(process: subprocess.Popen, timeout: float = 420) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"the follower did not end in {timeout} s:\n{out[-3000:]}")
    return out


def test_the_readme_command_runs_the_grid_as_an_array_and_survives_scancel_of_a_task(slurm, tmp_path, postgres_url):
    space = small_space(tmp_path, FACTORS, "array", epochs=12, train_limit=256)
    started = time.monotonic()
    follower = launch(space, tmp_path, postgres_url, "--slurm", "timeout_min=10", "partition=main")
    running = wait_for(lambda: [r for r in queue_rows(postgres_url) if r.state == "running" and r.job], 120, "a task running a point")
    first_trial = time.monotonic() - started
    array = running[0].job.split("_")[0]
    both = wait_for(lambda: {r.job: r.trial_key for r in queue_rows(postgres_url) if r.state == "running" and r.job} if len(
        {r.job for r in queue_rows(postgres_url) if r.state == "running" and r.job}) == 2 else None, 120, "both tasks running a point")  # fmt: skip
    assert {task.state for task in squeue(array) if task.job_id in both} == {"RUNNING"} and len(squeue(array)) == 2
    status = run_cli("sweep.status", "--storage", postgres_url)
    assert status.returncode == 0, status.stderr
    assert f"Slurm job {array}_" in status.stdout and re.search(rf"Slurm job array {array}: 0 pending, 2 running", status.stdout), status.stdout
    victim = sorted(both)[1]
    wait_for(lambda: checkpointed(tmp_path, [both[victim]]), 120, "the task's trial checkpointed an epoch")
    scancel(victim)
    handed = wait_for(lambda: [r for r in queue_rows(postgres_url) if r.trial_key == both[victim] and r.state != "running"], 20,
                      "the cancelled task's point handed back")  # fmt: skip
    assert handed[0].attempts == 0  # a cancelled task's point waits again, no retry used up
    out = finish(follower)
    assert follower.returncode == 0, out[-3000:]
    assert f"submitted Slurm job array {array}: 2 task(s)" in out and "4 grid points: 4 complete, 0 failed" in out, out[-3000:]
    rows = queue_rows(postgres_url)
    assert [r.state for r in rows] == ["complete"] * 4
    frame = rows_of(postgres_url).set_index("trial_key")
    assert frame.loc[both[victim], "resumed_from_epoch"] > 0  # from its checkpoint, on the other task
    assert wait_for(lambda: finished(array), 60, "the array's tasks leaving the queue")
    print(f"submit to the first trial running: {first_trial:.1f} s")


def test_a_preempted_task_is_requeued_and_its_trial_resumes_from_its_checkpoint(slurm, tmp_path, postgres_url):
    space = small_space(tmp_path, FACTORS, "preempted", epochs=12, train_limit=256)
    follower = launch(space, tmp_path, postgres_url, "--slurm", "timeout_min=10", "partition=main")
    held = wait_for(lambda: {r.job: r.trial_key for r in queue_rows(postgres_url) if r.state == "running" and r.job} if len(
        {r.job for r in queue_rows(postgres_url) if r.state == "running" and r.job}) == 2 else None, 120, "both tasks running a point")  # fmt: skip
    wait_for(lambda: checkpointed(tmp_path, held.values()) == set(held.values()), 120, "both trials checkpointed an epoch")
    array = next(iter(held)).split("_")[0]
    preempted_at = time.monotonic()
    high = subprocess.run(["sbatch", "--parsable", "-p", "high", "-N", "2", "--exclusive", "--output=/dev/null", "--wrap", "sleep 5"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert high.returncode == 0, high.stderr
    wait_for(lambda: all(r.state != "running" for r in queue_rows(postgres_url) if r.trial_key in held.values()), 30, "the preempted points handed back")
    again = wait_for(lambda: [r for r in queue_rows(postgres_url) if r.state == "running" and r.job], 120, "a requeued task running a point again")
    resumed_after = time.monotonic() - preempted_at
    out = finish(follower)
    assert follower.returncode == 0 and "4 grid points: 4 complete, 0 failed" in out, out[-3000:]
    assert all(r.attempts == 0 for r in queue_rows(postgres_url))  # preemption uses up no retry
    frame = rows_of(postgres_url).set_index("trial_key")
    assert all(frame.loc[key, "resumed_from_epoch"] > 0 for key in held.values())
    assert any(int(task.get("Restarts", 0)) > 0 for task in show_job(array))  # Slurm requeued them
    print(f"preemption to a requeued task running a point again: {resumed_after:.1f} s ({again[0].job})")


def test_a_task_near_its_time_limit_stops_at_an_epoch_end_and_requeues_itself(slurm, tmp_path, postgres_url):
    """timeout_min=1 and the warning 45 s ahead: SIGUSR2 some 15 s into every start; each task
    hands its point back and requeues itself, and the grid still completes."""
    space = small_space(tmp_path, {"kernel_size": [3, 5]}, "limited", epochs=60, train_limit=256)  # (about 30 s a trial here: longer than the 15 s before the warning)
    follower = launch(space, tmp_path, postgres_url, "--slurm", "timeout_min=1", "signal_delay_s=45", "partition=main")
    array = wait_for(lambda: array_of(postgres_url), 120, "a task running a point")
    restarted = wait_for(lambda: [t for t in show_job(array) if int(t.get("Restarts", 0)) > 0], 120, "a task requeued near its time limit")
    out = finish(follower, timeout=600)
    assert follower.returncode == 0 and "2 grid points: 2 complete, 0 failed" in out, out[-3000:]
    logs = "".join(path.read_text() for path in (tmp_path / "results" / "slurm").glob("*/*.err"))
    assert "time limit near: task" in logs and "interrupted by SIGTERM" in logs
    assert "second signal" not in logs  # (stopped at an epoch end, not forced)
    assert all(r.attempts == 0 for r in queue_rows(postgres_url))
    assert restarted


def test_ctrl_c_on_the_follower_detaches_and_the_array_runs_on(slurm, tmp_path, postgres_url):
    space = small_space(tmp_path, FACTORS, "detached", epochs=12, train_limit=256)
    follower = launch(space, tmp_path, postgres_url, "--slurm", "timeout_min=10", "partition=main")
    array = wait_for(lambda: array_of(postgres_url), 120, "a task running a point")
    follower.send_signal(signal.SIGINT)
    out = finish(follower, timeout=30)
    assert follower.returncode == 130, out[-2000:]
    assert f"detached: job array {array} runs on in Slurm" in out and f"scancel {array}" in out and "python -m sweep.status --storage" in out
    assert "run the same command again" not in out  # (that would submit another array)
    assert any(task.active for task in squeue(array))  # the tasks are Slurm's: still there
    done = run_cli("sweep.grid", "--space", space, "--results", str(tmp_path / "r2"), "--storage", postgres_url, "--artifacts",
                   str(tmp_path / "artifacts"), "--launch", "slurm", "--workers", "1", "--detach", "--slurm", "partition=main")  # fmt: skip
    assert done.returncode == 0 and "scancel" in done.stderr, done.stderr  # --detach: submit and return
    second = re.search(r"submitted Slurm job array (\d+)", done.stderr).group(1)
    wait_for(lambda: all(r.state == "complete" for r in queue_rows(postgres_url)) and len(queue_rows(postgres_url)) == 4, 300, "the grid complete")
    scancel(array, second)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--slurm", "partitoin=main"], "--slurm partitoin=main: not a parameter of submitit's Slurm executor"),
        (["--slurm", "timeout_min"], "--slurm timeout_min: a KEY=VALUE pair"),
        (["--slurm", "partition=nowhere"], "--launch slurm: sbatch refused the job array"),
        (["--no-storage"], "--launch slurm: the array's tasks share the grid through a database"),
        (["--no-artifacts"], "--launch slurm: give --artifacts DIR"),
        (["--no-sbatch"], "--launch slurm: no sbatch on this machine's PATH"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, postgres_url, extra, expected):
    """(No cluster needed: refused before anything is submitted.)"""
    space = small_space(tmp_path, FACTORS, "bad")
    args = ["sweep.grid", "--space", space, "--results", str(tmp_path / "results"), "--launch", "slurm", "--workers", "2"]
    env = None
    if extra != ["--no-storage"]:
        args += ["--storage", postgres_url]
    if extra != ["--no-artifacts"]:
        args += ["--artifacts", str(tmp_path / "artifacts")]
    if extra == ["--no-sbatch"]:
        env = {"PATH": os.path.dirname(sys.executable)}
    elif extra[0] == "--slurm":
        args += extra
        if not os.path.exists("/usr/bin/sbatch"):
            pytest.skip("the --slurm keys are checked by submitit once sbatch is found")
    done = run_cli(*args, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_sweep_optuna_launches_an_array_that_stops_at_the_studys_total(slurm, tmp_path, postgres_url):
    """--trials is the study's total: two tasks share it, each asking no trial once the study
    holds that many (two tasks checking at the same moment may each start one more: at most
    one over with two tasks)."""
    import optuna

    space = small_space(tmp_path, FACTORS, "sampled", epochs=3, train_limit=128)
    command = ["sweep.optuna", "--space", space, "--trials", "5", "--results", str(tmp_path / "results"), "--storage", postgres_url,
               "--artifacts", str(tmp_path / "artifacts"), "--launch", "slurm", "--workers", "2", "--slurm", "timeout_min=10", "partition=main",
               "--pruner", "none", "--heartbeat-interval", "1"]  # fmt: skip
    done = run_cli(*command, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    array = re.search(r"submitted Slurm job array (\d+): 2 task\(s\)", done.stderr).group(1)
    (summary,) = optuna.get_all_study_summaries(storage=postgres_url)
    trials = optuna.load_study(study_name=summary.study_name, storage=postgres_url).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert 5 <= len(complete) <= 6 and not [t for t in trials if t.state.name == "RUNNING"], [t.state.name for t in trials]
    assert {row.job.split("_")[0] for row in queue_rows(postgres_url)} == {array}  # every trial ran in the array's tasks
    assert wait_for(lambda: finished(array), 60, "the array's tasks leaving the queue")
