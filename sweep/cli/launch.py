"""Launching a shared run on Slurm: N array tasks through submitit, each the same command's
own driver with one worker, and a follower that watches the study.

    python -m sweep.grid --storage URL --artifacts DIR --launch slurm --workers 4 --slurm timeout_min=120 partition=gpu

`submit` sends one job array (submitit's `map_array`, the launcher Hydra uses) whose tasks
each run `task(command, argv)`: the command line as typed, less `--launch`, `--slurm` and
`--detach`, with one worker per task. Inside a task the driver installs sweep's own handlers
(`sweep.stop`; submitit's SIGTERM handler ignores the signal): `scancel` and preemption send
SIGTERM, the running trial keeps its last epoch-end checkpoint (in `--artifacts`) and goes back
to the queue (no retry used up), and Slurm requeues a preempted task itself. The time limit is
signalled with SIGUSR2 ahead of the end (submitit's `--signal`): the task stops the same way and
requeues itself (`scontrol requeue`), so an array whose every task hits its limit carries on.

The follower (`follow`) reads progress from the study's own tables (`sweep.run.queue`), not
from `squeue`, which forgets finished tasks; `squeue` only says how many of the array's tasks
are pending or running. Ctrl-C on the follower detaches: the tasks are Slurm's jobs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from sweep.errors import SpecError

__all__ = ["LAUNCHERS", "array_states", "array_tasks", "executor", "follow", "parse_options", "submit", "task", "task_argv"]

LAUNCHERS = ("slurm",)
SIGNAL_DELAY_S = 120  # the time limit's warning (SIGUSR2) comes this long before the end: a trial checkpoints at its next epoch end
POLL_S = 5.0  # the follower's pace
FLAGS_WITH_VALUE = ("--launch", "--workers", "--study-total")  # dropped from a task's command line with their value
FLAGS_ALONE = ("--detach", "--retry-failed")  # dropped too (--retry-failed: applied once, by the follower, not at every task start)
TASK_ENV = "SWEEP_SLURM_TASK"  # set in a task: its id ("123_4"); a task never launches another array
MAX_REQUEUES = 20  # a task requeues itself near its time limit at most this often (an epoch longer than the limit would loop)
GPU_KEYS = ("gpus_per_node", "gpus_per_task", "slurm_gpus_per_node", "slurm_gpus_per_task", "cpus_per_gpu", "slurm_cpus_per_gpu")


def parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """`--slurm KEY=VALUE` pairs as submitit parameters: numbers as numbers; a key may drop
    submitit's `slurm_` prefix (`partition=gpu` is `slurm_partition=gpu`)."""
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError(f"--slurm {pair}: a KEY=VALUE pair, e.g. --slurm timeout_min=120 partition=gpu")
        parsed: Any = value
        if value.lower() in ("true", "false"):  # (exclusive=true: a flag)
            options[key.strip()] = value.lower() == "true"
            continue
        for kind in (int, float):
            try:
                parsed = kind(value)
                break
            except ValueError:
                continue
        options[key.strip()] = parsed
    return options


def executor(folder: Path, options: dict[str, Any]):
    """submitit's executor for Slurm with `options` checked against its parameters."""
    if shutil.which("sbatch") is None:
        raise SpecError("--launch slurm: no sbatch on this machine's PATH; run the command on a Slurm login node (or start workers by hand: README, Slurm)")
    try:
        import submitit
    except ImportError:
        raise SpecError("--launch slurm needs submitit: pip install 'submitit>=1.5'") from None
    made = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="slurm")
    given, known = {}, ""
    for key, value in options.items():
        for name in (key, f"slurm_{key}") if not key.startswith("slurm_") else (key,):
            try:
                made.update_parameters(**{name: value})
            except NameError as err:  # not one of submitit's parameters under this name
                known = next((line.split("Valid arguments: ", 1)[1] for line in str(err).splitlines() if "Valid arguments: " in line), "")
                continue
            except (AssertionError, TypeError, ValueError) as err:
                raise SpecError(f"--slurm {key}={value}: {str(err).strip() or 'a value of the wrong type'}") from None
            given[name] = value
            break
        else:
            hint = f"; submitit's Slurm parameters: timeout_min, mem_gb, gpus_per_node, cpus_per_task, nodes, tasks_per_node, name, {known}" if known else ""
            raise SpecError(f"--slurm {key}={value}: not a parameter of submitit's Slurm executor{hint}")
    defaults = {"timeout_min": 60, "slurm_signal_delay_s": SIGNAL_DELAY_S}
    made.update_parameters(**{name: value for name, value in defaults.items() if name not in given})
    return made


def task_argv(argv: Sequence[str], options: dict[str, Any]) -> list[str]:
    """The command line one array task runs: the typed one less `--launch`, `--slurm`,
    `--detach` and `--workers`, plus its own workers (one per GPU Slurm gives it, else one per
    CPU it asks for, `cpus_per_task`, default 1)."""
    def spelled(name: str, flag: str) -> bool:  # the flag, or an abbreviation argparse accepted for it (only it starts so)
        return name == flag or (len(name) > 2 and flag.startswith(name) and not "--workers-per-gpu".startswith(name))

    out: list[str] = []
    skip = 0
    items = list(argv)
    for i, item in enumerate(items):
        if skip:
            skip -= 1
            continue
        name = item.split("=", 1)[0]
        if any(spelled(name, flag) for flag in FLAGS_WITH_VALUE):
            skip = 0 if "=" in item else 1
            continue
        if spelled(name, "--slurm"):
            if "=" in item:
                continue
            while i + 1 + skip < len(items) and not items[i + 1 + skip].startswith("-"):
                skip += 1  # its KEY=VALUE pairs
            continue
        if any(spelled(name, flag) for flag in FLAGS_ALONE):
            continue
        out.append(item)
    gpus = any(key in options for key in GPU_KEYS) or "gpu" in str(options.get("gres", options.get("slurm_gres", "")))
    if not gpus:
        cpus = options.get("cpus_per_task", options.get("slurm_cpus_per_task", 1))
        if not isinstance(cpus, int) or cpus < 1:
            raise SpecError(f"--slurm cpus_per_task={cpus}: a whole number of CPUs, 1 or more")
        out += ["--workers", str(cpus)]
    return out


def submit(slurm, command: str, argv: list[str], tasks: int) -> tuple[str, list]:
    """Submit through `slurm` (`executor(...)`) `tasks` array tasks of `python -m
    sweep.<command> argv`; the array's job id and submitit's jobs."""
    slurm.update_parameters(slurm_array_parallelism=tasks)
    try:
        jobs = slurm.map_array(task, [command] * tasks, [argv] * tasks)
    except Exception as err:  # sbatch refused it (a partition, account or value it does not know): its own words, one line
        said = " ".join(str(err).split())
        raise SpecError(f"--launch slurm: sbatch refused the job array: {said[-600:]}") from None
    return str(jobs[0].job_id).split("_")[0], jobs


def task(command: str, argv: list[str]) -> int:
    """One array task: the command's driver, as if typed on the node, under sweep's own
    signal handlers. SIGUSR2 (the time limit is near) stops it as SIGTERM does, then the task
    requeues itself. Returns the command's exit status."""
    import importlib

    from sweep.cli.common import run_main

    def limit(signum, frame):  # submitit's warning: requeue first (it holds however this process ends); Slurm's requeue then sends
        if not _requeue_self():  # SIGTERM, which stops the task as scancel does (a second SIGTERM of ours would force it)
            os.kill(os.getpid(), signal.SIGTERM)

    main = importlib.import_module(f"sweep.cli.{command}").main
    os.environ[TASK_ENV] = _task_name() or "?"
    signal.signal(signal.SIGUSR2, limit)
    try:
        run_main(main, argv)
        status = 0
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else 1
    return status


def _task_name() -> str | None:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    index = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{index}" if job and index else os.environ.get("SLURM_JOB_ID")


def _requeue_self() -> bool:
    """Requeue this task (`scontrol requeue`); whether Slurm took it."""
    name = _task_name()
    if not name:
        return False
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if restarts >= MAX_REQUEUES:
        print(f"sweep: time limit near: task {name} not requeued (already {restarts} times: is an epoch longer than timeout_min?)", file=sys.stderr)
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", name], capture_output=True, text=True, timeout=10)
        failed = "" if done.returncode == 0 else f" (failed: {done.stderr.strip()})"
    except (OSError, subprocess.TimeoutExpired) as err:
        failed = f" (failed: {err})"
    print(f"sweep: time limit near: task {name} requeued{failed}", file=sys.stderr)
    return not failed


def array_tasks(job_id: str) -> dict[str, str] | None:
    """The array's tasks Slurm holds now, task id ("123_4") to state (PENDING, RUNNING, ...);
    finished tasks leave `squeue`, so they are absent. None when Slurm does not answer."""
    if shutil.which("squeue") is None:
        return None
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return {} if "Invalid job id" in done.stderr else None  # (an array whose tasks have all left the queue)
    return dict(line.split(None, 1) for line in done.stdout.splitlines() if " " in line)


def array_states(job_id: str) -> dict[str, int] | None:
    """How many of the array's tasks Slurm holds now, by state (empty: none); None when Slurm
    does not answer."""
    tasks = array_tasks(job_id)
    if tasks is None:
        return None
    states: dict[str, int] = {}
    for state in tasks.values():
        states[state] = states.get(state, 0) + 1
    return states


def watch_lines(job_id: str, storage: str, folder: Path) -> list[str]:
    from sweep.results.shared import paste_url

    return [
        f"watch it: python -m sweep.status --storage {paste_url(storage)}   (squeue -r -j {job_id}: the array's tasks)",
        f"cancel it: scancel {job_id}   (logs: {folder}/{job_id}_*/)",
    ]


def follow(counts: Callable[[], tuple[int, int, int]], size: int, job_id: str, tasks: int, unit: str = "point", poll: float = POLL_S) -> bool:
    """Show the run's progress from the study's own tables until it is done (True), or until
    the array has no task left in Slurm while work still waits (False). `counts()` gives
    (finished, running, waiting) and does the study's upkeep (a task killed outright: its
    point waits again after the grace period). Ctrl-C raises `sweep.stop.Interrupted`, which
    the caller turns into a detach."""
    from tqdm import tqdm

    gone_since = None
    with tqdm(total=size, desc="slurm", unit=unit, file=sys.stderr, dynamic_ncols=True) as bar:
        while True:
            done, running, waiting = counts()
            bar.update(min(done, size) - bar.n)
            states = array_states(job_id)
            known = states is not None
            states = states or {}
            bar.set_postfix_str(
                f"{running} running, {waiting} waiting; array {job_id}: "
                f"{states.get('PENDING', 0)} pending, {states.get('RUNNING', 0)} running, {max(0, tasks - sum(states.values())) if known else '?'} ended",
                refresh=True,
            )
            if done >= size and not running:
                return True
            if known and not states:  # (no answer from squeue is not an empty array)
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > 3 * poll:  # (squeue can miss a task for a moment while it is requeued)
                    return False
            else:
                gone_since = None
            time.sleep(poll)
