"""Run trials on the devices there are: one worker process per GPU (or per K on a GPU), or
CPU workers sharing the cores. Both drivers hand their jobs to `run_jobs`.

Each worker pins itself to its GPU and sets its thread count before the deep-learning
framework loads in that process, loads its data once, and writes each trial's row to the
store itself, so a result survives even if the driver dies. A worker that dies (killed,
out of memory) is replaced and its job handed out again (`sweep.run.jobs` counts attempts,
so a trial that keeps killing its worker is recorded as failed instead of tried forever).

A stop signal to the driver stops every worker at the end of its epoch, or kills it at the
deadline, and a worker never outlives its driver: `sweep.stop` has the protocol; here the
workers get its handlers before their first job, and `run_jobs` stops them.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from sweep import backend, progress, stop
from sweep.files import atomic_write

__all__ = ["Job", "WorkerPlan", "plan_workers", "run_jobs", "worker_slot"]

IDLE_WORKER_SECONDS = 600  # keep idle workers (and their loaded framework and data) this long
POLL_S = 0.25  # how often the driver looks for a stop request while its workers train


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

    When a stop is requested (`sweep.stop`: a signal, with the driver's handlers installed),
    no job starts any more; the jobs in flight stop at their epoch end (their rows, if they
    finish instead, are still yielded) or are killed at the deadline; then `stop.Interrupted`
    is raised, counting the trials stopped and killed. No worker is left running.
    """
    lock_dir = str(lock_dir)
    if plan.workers == 1:
        yield from _run_here(jobs, plan, lock_dir)
        return

    from concurrent.futures import FIRST_COMPLETED, wait

    from joblib.externals.loky import get_reusable_executor
    from joblib.externals.loky.process_executor import BrokenProcessPool

    # loky replaces a worker whose memory grew by 300 MB over a job (the framework's caches),
    # once that job is done, and gives the jobs queued for it to the new one: nothing is lost,
    # so its "A worker stopped ... memory leak" warning, in the middle of the progress bar, is
    # not shown. (A worker that dies is said by `on_restart`.)
    warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given to the executor", category=UserWarning)
    file = stop.stop_file(lock_dir)
    for stale in Path(lock_dir).glob("stop-*"):  # left by drivers that ended at once (a second signal)
        pid = stale.name.removeprefix("stop-")
        if not pid.isdigit() or int(pid) == os.getpid() or not progress.alive(int(pid)):
            stale.unlink(missing_ok=True)
    pending, suspects = deque(jobs), deque()
    try:
        while pending or suspects:
            queue, width = (suspects, 1) if suspects else (pending, plan.workers)
            executor = get_reusable_executor(
                max_workers=width, timeout=IDLE_WORKER_SECONDS, initializer=stop.install_worker_handlers, initargs=(os.getpid(), file)
            )  # fmt: skip
            running: dict[Any, Job] = {}
            with stop.hard_stop(lambda: _kill_workers(executor)):
                try:
                    while queue or running:
                        if stop.requested():
                            yield from _wind_down(executor, running, file)  # raises stop.Interrupted
                        while queue and len(running) < width:
                            job = queue.popleft()
                            try:
                                future = executor.submit(_run_in_worker, job, plan, lock_dir)
                            except BrokenProcessPool:
                                queue.appendleft(job)
                                raise
                            running[future] = job
                        done, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                        for future in done:
                            try:
                                row = future.result()  # raises BrokenProcessPool if a worker died
                            except stop.Stopped as stopped:  # a signal reached the worker, not (yet) this driver
                                del running[future]
                                stop.request()
                                yield from stopped.rows
                                yield from _wind_down(executor, running, file, [stopped])  # (raises)
                            del running[future]
                            yield row
                except BrokenProcessPool:
                    if stop.requested():
                        yield from _wind_down(executor, running, file)
                    in_flight = list(running.values())
                    if len(in_flight) == 1:
                        pending.appendleft(in_flight[0])  # the culprit is known: its attempt counter decides
                    else:
                        suspects.extend(in_flight)
                    on_restart(len(pending) + len(suspects))  # how many jobs are handed out again
    finally:
        Path(file).unlink(missing_ok=True)


def _run_here(jobs: list[Job], plan: WorkerPlan, lock_dir: str) -> Iterator[dict[str, Any] | None]:
    """The jobs in this process, one after another. On a stop request the job in training
    stops at its epoch end; at the deadline, or on a second signal, this process is the
    worker nobody else can kill, so it ends itself (`stop.exit_now`)."""
    with stop.hard_stop(stop.exit_now):
        for job in jobs:
            signum = stop.requested()
            if signum:
                raise stop.Interrupted(signum)
            try:
                result = _run_in_worker(job, plan, lock_dir)
            except stop.Stopped as stopped:
                yield from stopped.rows
                raise _interrupted([stopped], 0, False) from None
            yield result


def _wind_down(executor, running: dict, file: str, stopped: list | None = None) -> Iterator[dict[str, Any] | None]:
    """A stop was requested: ask the workers to stop (the stop file), yield the rows of jobs
    that finish nonetheless, collect the `Stopped` ones, kill the workers still running at
    the deadline (or at once, on a second signal), and raise `stop.Interrupted`."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from joblib.externals.loky.process_executor import BrokenProcessPool

    stopped = list(stopped or [])
    Path(file).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(file), str(stop.requested() or signal.SIGTERM))
    killed = 0
    try:
        while running and not stop.forced() and time.monotonic() < (stop.deadline() or 0.0):
            done, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                try:
                    result = future.result()
                except stop.Stopped as err:
                    stopped.append(err)
                    yield from err.rows
                    continue
                except BrokenProcessPool:  # a worker died meanwhile, and the pool with it
                    killed += getattr(job, "size", 1)
                    continue
                except Exception as err:  # the job's own error (a store away, ...): said, and the stop goes on
                    print(f"a job failed while the run stopped: {type(err).__name__}: {err}", file=sys.stderr)
                    continue
                yield result
        killed += sum(getattr(job, "size", 1) for job in running.values())
    finally:
        _shut_down(executor)
    raise _interrupted(stopped, killed, stop.forced())


def _interrupted(stopped: list, killed: int, forced: bool) -> stop.Interrupted:
    resumable = sum(len(s.keys) for s in stopped if s.checkpointed and s.epoch is not None)
    restart = sum(len(s.keys) for s in stopped if not s.checkpointed and s.epoch is not None)
    return stop.Interrupted(stop.requested() or signal.SIGTERM, stopped=resumable, restart=restart, killed=killed, forced=forced)


def _kill_workers(executor) -> None:
    """SIGKILL every worker process of `executor` (from any thread)."""
    for _ in range(3):
        try:
            pids = list(executor._processes)
            break
        except RuntimeError:  # (changed size during iteration: the pool's own thread at work)
            time.sleep(0.01)
    else:
        pids = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _shut_down(executor) -> None:
    """End the pool: its workers killed (those still training lose their current epoch;
    their last checkpoint stays), its threads joined, so no process of the run is left."""
    _kill_workers(executor)
    try:
        executor.shutdown(wait=True, kill_workers=True)
    except Exception:  # a pool broken by the kill: its workers are gone all the same
        pass
