"""The test Slurm cluster on this machine (`.ci/slurm up`), and small helpers to drive it.

`.ci/slurm up` starts a controller and two nodes, n1 and n2 (two slurmd on this host), in two
partitions over both: `main`, the default, and `high`, whose jobs preempt (requeue) those of
`main`. There is no accounting database, so no `sacct`: `squeue()` reads finished jobs from the
controller, which keeps them for MinJobAge (10 minutes there).

Tests call `require_slurm()` first (the `slurm` fixture of conftest.py does), which skips them
when no such cluster answers, or fails them when SWEEP_REQUIRE_SLURM=1 (as in CI); it also makes
the Slurm tests of every pytest process on this machine take turns, as they share the cluster
(one test's preemption would push out another's jobs).

What was measured there: an array's tasks start about 1-2 s after `sbatch`; `scancel` and
preemption send SIGCONT and SIGTERM to every process of the job, and SIGKILL 5 s (KillWait)
later to those still running, but processes are tracked by parentage (no cgroups), so one that
outlives the batch script (orphaned, reparented to init) is never killed; a preempted job is
requeued and starts again, with SLURM_RESTART_COUNT set, about 15 s later.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

NODES = ("n1", "n2")
PARTITIONS = ("main", "high")
TOOLS = ("sinfo", "sbatch", "squeue", "scancel", "scontrol")
# The states of a job still in the queue. A preempted job here is requeued (PENDING) at once;
# PREEMPTED is the end of one that may not be requeued (sbatch --no-requeue).
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
          "RESIZING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED", "RESV_DEL_HOLD"}
_UP = {"idle", "mix", "alloc", "comp"}  # sinfo's short states of a node that answers
_LOCK = Path("/tmp/sweep-slurm-tests.lock")  # the Slurm tests of all pytest processes take turns
_HINT = "(.ci/slurm up installs and starts the test cluster)"
T = TypeVar("T")


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a Slurm command, raising RuntimeError with its output when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return done


@functools.cache
def slurm_available() -> str | None:
    """None when the test cluster answers here (nodes n1 and n2 up in partitions main and
    high), else why not."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"`{tool}` not found {_HINT}"
    try:
        listing = _run(["sinfo", "-h", "-N", "-o", "%N %P %t"], timeout=15).stdout
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return f"no Slurm controller answers {_HINT}: {error}"
    up = {tuple(line.split()[:2]) for line in listing.splitlines() if line.split()[2:3] and line.split()[2] in _UP}
    missing = [f"{node} in {partition.rstrip('*')}" for node in NODES for partition in PARTITIONS
               if (node, partition) not in up and (node, partition + "*") not in up]
    if missing:
        return f"Slurm nodes not up: {', '.join(missing)} {_HINT}; sinfo says:\n{listing.strip()}"
    return None


def require_slurm() -> None:
    """Skip the calling test when `slurm_available()` gives a reason, or fail it if
    SWEEP_REQUIRE_SLURM=1."""
    from conftest import require

    require(slurm_available(), "SWEEP_REQUIRE_SLURM")


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Hold the cluster for the calling test: one at a time across all pytest processes on this
    machine (xdist workers, other checkouts)."""
    with open(_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Task:
    """One job, or one task of a job array, as the controller sees it."""

    job_id: str  # "123_4" for task 4 of array 123, "123" for a plain job
    state: str  # PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, PREEMPTED, ...
    node: str  # where it runs or ran ("n1"); "" while pending

    @property
    def active(self) -> bool:
        """Still in the queue: pending, running, or on its way out or back."""
        return self.state in ACTIVE


def sbatch(*args: str, cwd: Path | str | None = None) -> str:
    """Submit a batch job (`sbatch --parsable ARGS`) and return its id."""
    done = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, timeout=30, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"sbatch {' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip().split(";")[0]


def squeue(job_id: str) -> list[Task]:
    """The tasks of a job (an array's one by one), finished ones included while the controller
    remembers them (`squeue -t all`); empty once it has forgotten the job."""
    done = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", str(job_id), "-o", "%i %T %N"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return []
        raise RuntimeError(f"squeue -j {job_id} exited with {done.returncode}: {done.stderr.strip()}")
    tasks = []
    for line in done.stdout.splitlines():
        fields = line.split()
        tasks.append(Task(job_id=fields[0], state=fields[1], node=fields[2] if len(fields) > 2 else ""))
    return sorted(tasks, key=lambda task: [int(part) for part in task.job_id.split("_") if part.isdigit()])


def finished(job_id: str) -> list[Task]:
    """The tasks of a job once none is left in the queue, else an empty list (for `wait_for`)."""
    tasks = squeue(job_id)
    return tasks if tasks and not any(task.active for task in tasks) else []


def show_job(job_id: str) -> list[dict[str, str]]:
    """`scontrol show job`'s fields for each task of a job (JobState, Reason, NodeList,
    Restarts, ExitCode, ...); values with spaces in them (Command's arguments) are cut at the
    first space. Empty once the controller has forgotten the job."""
    done = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return []
        raise RuntimeError(f"scontrol show job {job_id} exited with {done.returncode}: {done.stderr.strip()}")
    return [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in done.stdout.splitlines()]


def scancel(*job_ids: str, signal: str | None = None) -> None:
    """Cancel jobs (or, given `signal`, only send it to them: `scancel --signal`). Jobs that have
    already finished are not an error."""
    if not job_ids:
        return
    argv = ["scancel", *([f"--signal={signal}"] if signal else []), *map(str, job_ids)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    errors = [line for line in done.stderr.splitlines()
              if "already completing or completed" not in line and "Invalid job id" not in line]
    if done.returncode != 0 and errors:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}: {' '.join(errors)}")


def wait_for(predicate: Callable[[], T], timeout: float, what: str = "the condition", interval: float = 0.2) -> T:
    """Poll `predicate` until it returns something true and return that; fail the test naming
    `what` (and the last value) if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s (last seen: {value!r})")
        time.sleep(interval)
