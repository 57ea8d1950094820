"""`--launch slurm`'s pieces that need no cluster: the command line each array task runs, the
`--slurm` pairs, and the flags that only go with `--launch`."""

from __future__ import annotations

import pytest
from conftest import run_cli, small_space

from sweep.cli.launch import array_states, parse_options, task_argv
from sweep.errors import SpecError


@pytest.mark.parametrize(
    "typed, options, task",
    [
        (["--space", "s.yaml", "--launch", "slurm", "--workers", "8", "--slurm", "timeout_min=30", "partition=gpu", "--epochs", "2"],
         {}, ["--space", "s.yaml", "--epochs", "2", "--workers", "1"]),
        (["--launch=slurm", "--workers=8", "--slurm=partition=gpu", "--results", "r", "--detach", "--retry-failed"],
         {"cpus_per_task": 4}, ["--results", "r", "--workers", "4"]),
        (["--la", "slurm", "--workers", "8", "--slu", "a=1", "b=2", "--det", "--workers-per-gpu", "2"],  # abbreviations argparse accepts
         {"gpus_per_node": 1}, ["--workers-per-gpu", "2"]),
        (["--launch", "slurm", "--slurm", "gres=gpu:2", "--slurm", "mem_gb=8", "--study-total", "5", "--trials", "5"],
         {"gres": "gpu:2"}, ["--trials", "5"]),
    ],
)  # fmt: skip
def test_a_task_runs_the_typed_command_without_the_launch_flags_and_with_its_own_workers(typed, options, task):
    assert task_argv(typed, options) == task


def test_slurm_pairs_become_submitit_parameters():
    assert parse_options(["timeout_min=30", "partition=gpu", "mem_gb=7.5", "exclusive=true"]) == {
        "timeout_min": 30, "partition": "gpu", "mem_gb": 7.5, "exclusive": True,
    }  # fmt: skip
    with pytest.raises(SpecError, match="a KEY=VALUE pair"):
        parse_options(["timeout_min"])
    with pytest.raises(SpecError, match="cpus_per_task=two: a whole number of CPUs"):
        task_argv(["--launch", "slurm"], {"cpus_per_task": "two"})


def test_no_answer_from_squeue_is_not_an_empty_array(monkeypatch):
    """The follower ends when the array has left the queue, never because squeue did not answer."""
    from sweep.cli import launch

    monkeypatch.setattr(launch, "array_tasks", lambda job: None)
    assert array_states("123") is None
    monkeypatch.setattr(launch, "array_tasks", lambda job: {})
    assert array_states("123") == {}
    monkeypatch.setattr(launch, "array_tasks", lambda job: {"123_0": "RUNNING", "123_1": "PENDING", "123_2": "RUNNING"})
    assert array_states("123") == {"RUNNING": 2, "PENDING": 1}


@pytest.mark.parametrize("command", ["sweep.grid", "sweep.optuna"])
@pytest.mark.parametrize("flag", [["--slurm", "partition=gpu"], ["--detach"]])
def test_slurm_and_detach_without_launch_are_one_line_and_exit_2(tmp_path, command, flag):
    space = small_space(tmp_path)
    extra = ["--trials", "1"] if command == "sweep.optuna" else []
    done = run_cli(command, "--space", space, "--results", str(tmp_path / "r"), *extra, *flag)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{flag[0]} goes with --launch slurm" in errors[0]


def test_a_task_does_not_launch_another_array(tmp_path):
    space = small_space(tmp_path)
    done = run_cli("sweep.grid", "--space", space, "--results", str(tmp_path / "r"), "--launch", "slurm", "--storage", "postgresql://u@h/db",
                   "--artifacts", str(tmp_path / "a"), env={"SWEEP_SLURM_TASK": "12_3"})  # fmt: skip
    assert done.returncode == 2 and "this is already task 12_3 of a Slurm array" in done.stderr, done.stderr[-2000:]
