"""Run trials on the devices there are: one worker process per GPU (or per K on a GPU), or
CPU workers sharing the cores. Both drivers hand their jobs to `run_jobs`.

Each worker pins itself to its GPU and sets its thread count before the deep-learning
framework loads in that process, loads its data once, and writes each trial's row to the
store itself, so a result survives even if the driver dies. A worker that dies (killed,
out of memory) is replaced and its job handed out again (`sweep.run.jobs` counts attempts,
so a trial that keeps killing its worker is recorded as failed instead of tried forever).
"""

from __future__ import annotations

import fcntl
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from sweep import backend

__all__ = ["Job", "WorkerPlan", "plan_workers", "run_jobs", "worker_slot"]

IDLE_WORKER_SECONDS = 600  # keep idle workers (and their loaded framework and data) this long


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


CPU_WORKER_MEMORY = 2 * 2**30  # bytes a CPU worker may need (the seed grid's peak ~1.3 GiB, BENCHMARKS.md)


def plan_workers(workers: int | None = None, workers_per_gpu: int = 1) -> WorkerPlan:
    """Default: one worker per visible GPU (times `workers_per_gpu`); without a GPU, one
    single-threaded worker per core, as many as memory allows (CPU_WORKER_MEMORY each), the
    cores shared among them. Measured (BENCHMARKS.md): a small trial's tracing and
    evaluation run on one core, so separate processes keep every core busy where one
    multi-threaded process would not. `workers` overrides the count."""
    gpus = tuple(backend.visible_gpus())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if gpus:
        count = workers or len(gpus) * workers_per_gpu
        count = min(count, len(gpus) * workers_per_gpu) if workers is None else count
        per_gpu = max(1, -(-count // len(gpus)))
    else:
        count, per_gpu = workers or max(1, min(cores, _memory_bytes() // CPU_WORKER_MEMORY)), workers_per_gpu
    return WorkerPlan(count, gpus, per_gpu, max(1, cores // count))


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return CPU_WORKER_MEMORY


class Job(Protocol):
    """A unit of work a worker runs: returns the row it wrote (or None), or a pack's rows."""

    def __call__(self) -> dict[str, Any] | list[dict[str, Any] | None] | None: ...


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
