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
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol as TypingProtocol

from sweep import backend
from sweep.store import write_row

__all__ = ["Job", "TrialJob", "WorkerPlan", "plan_workers", "run_jobs"]

MAX_ATTEMPTS = 2  # a trial whose worker died this many times in one run is recorded as failed
IDLE_WORKER_SECONDS = 600  # keep idle workers (and their loaded framework and data) this long
RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this driver invocation; workers inherit it in their jobs


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
    """A unit of work a worker runs: returns the row it wrote (or None), or a pack's rows."""

    def __call__(self) -> dict[str, Any] | list[dict[str, Any] | None] | None: ...


@dataclass(frozen=True)
class TrialJob:
    """Run one grid trial and store its row."""

    spec: Any  # TrialSpec
    data_dir: str | None
    results_dir: str
    row_extra: dict[str, Any] = field(default_factory=dict)
    checkpoint_every_s: float = 10.0
    run_id: str = RUN_ID  # set in the driver, so every worker counts attempts of the same run

    def __call__(self) -> dict[str, Any] | None:
        from sweep.data import dataset_for
        from sweep.trial import base_row, run_trial, trial_dir

        attempts = _count_attempt(trial_dir(self.results_dir, self.spec.key), self.run_id)
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


def _count_attempt(directory: Path, run_id: str) -> int:
    """Record that a trial is starting; return how many times it has started in this run
    without finishing. Earlier runs don't count: a driver killed by its user says nothing
    about the trial it was running."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "attempts.json"
    try:
        saved = json.loads(path.read_text())
        attempts = saved["attempts"] + 1 if saved["run"] == run_id else 1
    except (OSError, ValueError, KeyError, TypeError):
        attempts = 1
    tmp = directory / f".attempts.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"attempts": attempts, "run": run_id, "pid": os.getpid()}))
    os.replace(tmp, path)
    return attempts


def _clear_attempts(directory: Path) -> None:
    try:
        (directory / "attempts.json").unlink()
    except FileNotFoundError:
        pass


_SLOT_HANDLE = None  # the open, locked slot file that makes this process worker number N
_SLOT = 0


def worker_slot() -> int:
    """This worker's number (0 in a single-process run): seeds per-worker samplers apart."""
    return _SLOT


def _setup_worker(plan: WorkerPlan, lock_dir: str) -> None:
    """Claim a free worker slot (a file lock, released by the OS when the process dies), then
    pin the GPU that slot owns and the thread count, before any framework is imported."""
    global _SLOT_HANDLE, _SLOT
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
        _SLOT_HANDLE, _SLOT = handle, slot
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
    on_restart: Callable[[int], None],
) -> Iterator[dict[str, Any] | None]:
    """Run `jobs` on `plan`'s workers; yield each job's row as it finishes (any order).

    With one worker the jobs run in this process. With several, they run in joblib's loky
    worker processes, at most one job per worker at a time, so the jobs in flight when a
    worker dies (SIGKILL, out of memory) are known. The pool is then rebuilt; if several jobs
    were in flight, each is first run again alone, so only the one that really kills its
    worker is charged for it (the others died with the pool, not by their own doing).
    """
    lock_dir = str(lock_dir)
    if plan.workers == 1:
        for job in jobs:
            yield _run_in_worker(job, plan, lock_dir)
        return

    from concurrent.futures import FIRST_COMPLETED, wait

    from joblib.externals.loky import get_reusable_executor
    from joblib.externals.loky.process_executor import BrokenProcessPool

    pending, suspects = deque(jobs), deque()
    while pending or suspects:
        queue, width = (suspects, 1) if suspects else (pending, plan.workers)
        executor = get_reusable_executor(max_workers=width, timeout=IDLE_WORKER_SECONDS)
        running: dict[Any, Job] = {}
        try:
            while queue or running:
                while queue and len(running) < width:
                    job = queue.popleft()
                    try:
                        future = executor.submit(_run_in_worker, job, plan, lock_dir)
                    except BrokenProcessPool:
                        queue.appendleft(job)
                        raise
                    running[future] = job
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    row = future.result()  # raises BrokenProcessPool if a worker died
                    del running[future]
                    yield row
        except BrokenProcessPool:
            in_flight = list(running.values())
            if len(in_flight) == 1:
                pending.appendleft(in_flight[0])  # the culprit is known: its attempt counter decides
            else:
                suspects.extend(in_flight)
            on_restart(len(pending) + len(suspects))  # how many jobs are handed out again
