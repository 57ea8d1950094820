"""Run trials on the devices there are: one worker process per GPU (or per K on a GPU), or
CPU workers sharing the cores. Both drivers hand their jobs to `run_jobs`.

Each worker pins itself to its GPU and sets its thread count before the deep-learning
framework loads in that process, loads its data once, and writes each trial's row to the
store itself, so a result survives even if the driver dies. A worker that dies (killed,
out of memory) is replaced; its trial is run again, and a trial that has now killed its
worker `MAX_ATTEMPTS` times is recorded as failed instead of being tried forever.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol as TypingProtocol

from sweep import backend
from sweep.store import write_row

__all__ = ["Job", "TrialJob", "WorkerPlan", "plan_workers", "run_jobs"]

MAX_ATTEMPTS = 2  # a trial whose worker died this many times is recorded as failed


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    gpus: tuple[str, ...]
    workers_per_gpu: int
    threads: int

    def describe(self) -> str:
        if self.gpus:
            return f"{self.workers} worker(s) on {len(self.gpus)} GPU(s) ({self.workers_per_gpu} per GPU)"
        return f"{self.workers} CPU worker(s), {self.threads} thread(s) each"


def plan_workers(workers: int | None = None, workers_per_gpu: int = 1) -> WorkerPlan:
    """Default: one worker per visible GPU (times `workers_per_gpu`), else one CPU worker
    using every core. `workers` overrides the count."""
    gpus = tuple(backend.visible_gpus())
    cores = os.cpu_count() or 1
    if gpus:
        count = workers or len(gpus) * workers_per_gpu
        count = min(count, len(gpus) * workers_per_gpu) if workers is None else count
        per_gpu = max(1, -(-count // len(gpus)))
    else:
        count, per_gpu = workers or 1, workers_per_gpu
    return WorkerPlan(count, gpus, per_gpu, max(1, cores // count))


class Job(TypingProtocol):
    """A unit of work a worker runs: returns the row it wrote (or None)."""

    label: str

    def __call__(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class TrialJob:
    """Run one grid trial and store its row."""

    spec: Any  # TrialSpec
    dataset: str
    data_dir: str | None
    results_dir: str
    row_extra: dict[str, Any] = field(default_factory=dict)
    checkpoint_every_s: float = 10.0

    @property
    def label(self) -> str:
        return self.spec.key

    def __call__(self) -> dict[str, Any] | None:
        from sweep.data import dataset_for
        from sweep.trial import base_row, run_trial, trial_dir

        attempts = _count_attempt(trial_dir(self.results_dir, self.spec.key))
        if attempts > MAX_ATTEMPTS:
            row = {
                **base_row(self.spec),
                **self.row_extra,
                "status": "failed",
                "error": f"the worker running this trial died {attempts - 1} times (killed, or out of memory)",
            }
        else:
            dataset = dataset_for(self.spec.protocol, self.data_dir)
            row = {**run_trial(self.spec, dataset, self.results_dir, checkpoint_every_s=self.checkpoint_every_s), **self.row_extra}
        write_row(self.results_dir, row)
        _clear_attempts(trial_dir(self.results_dir, self.spec.key))
        return row


def _count_attempt(directory: Path) -> int:
    """Record that a trial is starting; return how many times it has started without finishing."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "attempts.json"
    try:
        attempts = json.loads(path.read_text())["attempts"] + 1
    except (OSError, ValueError, KeyError, TypeError):
        attempts = 1
    tmp = directory / f".attempts.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"attempts": attempts, "pid": os.getpid()}))
    os.replace(tmp, path)
    return attempts


def _clear_attempts(directory: Path) -> None:
    try:
        (directory / "attempts.json").unlink()
    except FileNotFoundError:
        pass


_SLOT_HANDLE = None  # the open, locked slot file that makes this process worker number N


def _setup_worker(plan: WorkerPlan, lock_dir: str) -> None:
    """Claim a free worker slot (a file lock, released by the OS when the process dies), then
    pin the GPU that slot owns and the thread count, before any framework is imported."""
    global _SLOT_HANDLE
    if _SLOT_HANDLE is not None:
        return
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    slot = 0
    for slot in range(plan.workers * 4):  # more slots than workers: replaced workers overlap briefly
        handle = open(Path(lock_dir) / f"slot-{slot}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _SLOT_HANDLE = handle
        break
    gpu = plan.gpus[(slot // plan.workers_per_gpu) % len(plan.gpus)] if plan.gpus else None
    backend.configure_process(gpu, plan.threads, gpus_shared=plan.workers_per_gpu > 1)


def _run_in_worker(job: Job, plan: WorkerPlan, lock_dir: str) -> dict[str, Any] | None:
    _setup_worker(plan, lock_dir)
    return job()


def run_jobs(
    jobs: list[Job],
    plan: WorkerPlan,
    lock_dir: str | Path,
    on_restart: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any] | None]:
    """Run `jobs` on `plan`'s workers; yield each job's row as it finishes (any order).

    With one worker the jobs run in this process. With several, a dead worker (SIGKILL,
    out of memory) is replaced and the unfinished jobs are handed out again.
    """
    lock_dir = str(lock_dir)
    if plan.workers == 1:
        for job in jobs:
            yield _run_in_worker(job, plan, lock_dir)
        return

    from joblib import Parallel, delayed
    from joblib.externals.loky.process_executor import BrokenProcessPool

    remaining = list(jobs)
    while remaining:
        finished: set[int] = set()
        parallel = Parallel(n_jobs=plan.workers, backend="loky", return_as="generator_unordered", pre_dispatch="n_jobs")
        try:
            for index, row in parallel(delayed(_indexed)(i, job, plan, lock_dir) for i, job in enumerate(remaining)):
                finished.add(index)
                yield row
            remaining = []
        except BrokenProcessPool:
            remaining = [job for i, job in enumerate(remaining) if i not in finished]
            if on_restart is not None:
                on_restart(len(remaining))
            else:
                print(f"a worker died; restarting {len(remaining)} unfinished job(s)", file=sys.stderr)


def _indexed(index: int, job: Job, plan: WorkerPlan, lock_dir: str) -> tuple[int, dict[str, Any] | None]:
    return index, _run_in_worker(job, plan, lock_dir)
