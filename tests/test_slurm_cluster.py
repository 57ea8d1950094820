"""The test Slurm cluster itself (`.ci/slurm up`): a job array spreads over both nodes, and a
job of the `high` partition pushes one of `main` out (SIGTERM, then requeued). The Slurm
launcher's tests rely on both."""

from __future__ import annotations

import pytest

from slurm import finished, sbatch, scancel, show_job, wait_for

pytestmark = [pytest.mark.slurm]


def test_an_array_runs_on_both_nodes_and_leaves_the_queue(slurm, tmp_path):
    # Each task takes 2 s, so the four overlap and need both nodes' CPUs at once.
    job = sbatch("--array=0-3", "--job-name=sweep-test-array", f"--output={tmp_path}/%a.out",
                 "--wrap", "hostname; echo $SLURM_ARRAY_TASK_ID $SLURMD_NODENAME; sleep 2")
    try:
        tasks = wait_for(lambda: finished(job), timeout=30, what=f"every task of array {job} leaving the queue")
    finally:
        scancel(job)
    assert [task.state for task in tasks] == ["COMPLETED"] * 4, tasks
    assert {task.node for task in tasks} == {"n1", "n2"}
    printed = {}
    for index in range(4):
        hostname, task_id, node = (tmp_path / f"{index}.out").read_text().split()
        printed[int(task_id)] = node
    assert printed == {int(task.job_id.split("_")[1]): task.node for task in tasks}


def test_a_job_of_the_high_partition_preempts_one_of_main(slurm, tmp_path):
    started, terminated = tmp_path / "started", tmp_path / "terminated"
    # The script notes a SIGTERM (Slurm sends it to every process of the job) before it exits.
    script = f"trap 'touch {terminated}; exit 143' TERM; touch {started}; sleep 300 & wait"
    low = sbatch("--partition=main", "--nodelist=n2", "--job-name=sweep-test-low", "--output=/dev/null",
                 "--wrap", script)
    high = None
    try:
        wait_for(started.exists, timeout=30, what=f"job {low} starting in main")
        # --exclusive: the whole of n2, where the job of main runs.
        high = sbatch("--partition=high", "--nodelist=n2", "--exclusive", "--job-name=sweep-test-high",
                      "--output=/dev/null", "--wrap", "true")
        wait_for(terminated.exists, timeout=30, what=f"job {low} of main getting SIGTERM from job {high} of high")
        [done] = wait_for(lambda: finished(high), timeout=30, what=f"job {high} of high finishing")
        [requeued] = show_job(low)
    finally:
        scancel(*[job for job in (low, high) if job])
    assert (done.state, done.node) == ("COMPLETED", "n2")
    # Preempted, then requeued (pending, or already running again), not cancelled.
    assert int(requeued["Restarts"]) >= 1, requeued
    assert requeued["JobState"] in {"PENDING", "RUNNING", "REQUEUED", "COMPLETING"}, requeued
