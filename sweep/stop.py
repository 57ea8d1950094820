"""Stopping a run on a signal: SIGINT (Ctrl-C) and SIGTERM (`kill PID`; what Slurm's scancel
and time limits, preemption, Kubernetes and systemd send) stop the whole run, every worker
included, and no finished work is lost.

Who is who: the *driver* is the command (`python -m sweep.grid`, `sweep.optuna`,
`sweep.bench`); its *workers* are the processes that train (`sweep.run.schedule.run_jobs`).
With one worker the driver trains itself.

The protocol
------------

1. **A stop signal reaches the driver**, alone (`kill PID`) or with its whole process group
   (a terminal's Ctrl-C, which the workers receive too). The driver's handler
   (`install_handlers`, installed by `sweep.cli.common.run_main`) notes it. Inside a run
   (`run_with_progress` holds `deferred()`), from then on:

   - no job is handed out any more;
   - the driver asks its workers to stop by creating their stop file (`stop_file`: a file,
     not a signal, so a worker still starting, before its handlers exist, is not killed by it);
   - each worker goes on to the end of its current epoch (an epoch is one compiled call),
     writes a checkpoint whatever `--checkpoint-every` says, and raises `Stopped`
     (`sweep.train.epochs`; packs stop the same way, but keep no checkpoint and start again).
     A job that has not begun training raises it at once; a trial whose training is over
     (being evaluated) finishes and stores its row. A stopped trial writes **no row**: a stop
     is not a trial's outcome. `Stopped` propagates out of `run_trial`/`run_pack` and out of
     the job, back to the driver;
   - `DEADLINE_S` (10 s) after the signal the driver SIGKILLs every worker still running;
     each keeps its last epoch-end checkpoint;
   - once every worker has exited or been killed, `run_with_progress` raises `Interrupted`
     in the driver, and `run_main` prints one line (its `message`: what is stored and how
     to resume) and exits with `128 + signum`: **130** for SIGINT, **143** for SIGTERM.

   Running the same command again resumes: stored trials are skipped, stopped ones resume
   from their checkpoints.

2. **A second stop signal forces**: the driver SIGKILLs its workers at once and exits (at
   most `GRACE_S` later, by `os._exit` if its main thread has not got there first).

3. **One worker** (`--workers 1`): the job runs in the driver, and stops at its epoch end as
   a worker does. At the deadline, or on a second signal, nobody else could kill it, so
   the driver prints its line and exits at once (`exit_now`), keeping the last checkpoint.

4. **Outside a run** (loading data, summarising), a stop signal raises `Interrupted` at
   once in the driver's main thread, as Ctrl-C raises KeyboardInterrupt. Whatever the
   main thread is doing, the driver is gone `DEADLINE_S + GRACE_S` after the first signal:
   a thread of the driver (woken through `signal.set_wakeup_fd`, so a main thread busy in a
   long compiled call does not delay it) enforces the deadline.

5. **Workers never outlive their driver.** Signals that reach a worker directly (the group's
   Ctrl-C, a scheduler signalling every process) only note the stop (`install_worker_handlers`):
   the worker still stops at its epoch end, and its driver, seeing a `Stopped` it did not ask
   for, stops the run. A thread of each worker checks its parent every `WATCH_S` and ends the
   worker (`os._exit`) once the driver is gone, SIGKILL of the driver included.
   (`PR_SET_PDEATHSIG` is not used: it fires when the *thread* that started the worker
   exits, and loky starts workers from whichever thread needs one.)

Hooks for other drivers (the shared, multi-machine mode): a job may catch `Stopped` (give its
trial back to the queue), then must re-raise it; a driver may catch `Interrupted` (return
the trials it holds, set `message`), then must re-raise it. `requested()` says whether a stop
was requested in this process (the signal's number, or None).

This module imports nothing heavy: the command lines import it before any framework.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

__all__ = [
    "DEADLINE_S",
    "GRACE_S",
    "SIGNALS",
    "WATCH_S",
    "Interrupted",
    "Stopped",
    "deadline",
    "default_message",
    "deferred",
    "exit_now",
    "forced",
    "hard_stop",
    "in_background",
    "install_handlers",
    "install_worker_handlers",
    "request",
    "requested",
    "reset",
    "said",
    "signal_name",
    "stop_file",
    "uninstall_handlers",
]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEADLINE_S = 10.0  # from the first signal to workers SIGKILLed (and an in-process trial abandoned)
GRACE_S = 2.0  # after the deadline or a second signal: the driver's main thread has this long to exit tidily
WATCH_S = 0.5  # how often a worker checks that its driver is still there


class Stopped(BaseException):
    """Raised in the process that trains, at the end of an epoch, when a stop was requested
    (after the checkpoint is written), or at the start of a job. It is no trial outcome: it
    propagates out of `run_trial`, `run_pack` and the job without a row.

    `keys`: the trials stopped; `epoch`: the last epoch they finished (None: stopped before
    training); `checkpointed`: whether they resume from a checkpoint (a pack keeps none: its
    trials start again); `rows`: rows a job stored before it was stopped (a pack's members
    run one by one), for the driver's count. (A lone string is taken as one key.)"""

    def __init__(self, keys=(), epoch: int | None = None, checkpointed: bool = True, rows=()):
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        super().__init__(keys, epoch, checkpointed, list(rows))
        self.keys = keys
        self.epoch = epoch
        self.checkpointed = checkpointed
        self.rows = list(rows)

    def __reduce__(self):  # (it travels from a worker back to the driver)
        return type(self), (self.keys, self.epoch, self.checkpointed, self.rows)

    def __str__(self) -> str:
        where = "before training" if self.epoch is None else f"after epoch {self.epoch + 1}"
        return f"stopped {where}: {', '.join(self.keys)}"


class Interrupted(KeyboardInterrupt):
    """Raised in the driver once the run stopped on signal `signum` (every worker exited or
    killed); `message` is the line `run_main` prints (None: `default_message`). It is a
    KeyboardInterrupt, so code that handles Ctrl-C handles it. `stopped`, `restart` and
    `killed` count the trials stopped at an epoch end (resuming from their checkpoints),
    stopped without a checkpoint (packs: they start again), and killed at the deadline or on
    a second signal (`forced`)."""

    def __init__(self, signum: int = signal.SIGINT, message: str | None = None, *, stopped: int = 0, restart: int = 0, killed: int = 0, forced: bool = False):
        super().__init__(signum, message)
        self.signum = signum
        self.message = message
        self.stopped = stopped
        self.restart = restart
        self.killed = killed
        self.forced = forced

    def __reduce__(self):
        return type(self), (self.signum, self.message), {"stopped": self.stopped, "restart": self.restart, "killed": self.killed, "forced": self.forced}

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return self.message or default_message(self.signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def default_message(signum: int) -> str:
    return f"interrupted by {signal_name(signum)}: completed trials are stored; run the same command again to resume"


# The state of this process. `_signum` and `_count` are written by the signal handler (main
# thread) and the watcher thread; both only ever move forward, so no lock is needed.
_signum: int | None = None  # the first stop signal, once one came
_first_at: float | None = None  # when (time.monotonic)
_count = 0  # stop signals seen by the watcher: 2 forces
_handled = False  # the stop has been turned into an Interrupted: later signals only force
_deferring = 0  # > 0 while a run handles stops itself (`deferred`)
_actions: list[Callable[[], None]] = []  # what the deadline or a second signal does (`hard_stop`)
_last_words: list[Callable[[int], str]] = []  # the line `exit_now` prints
_said = False  # the interrupted line has been printed
_stop_file: str | None = None  # a worker: the file its driver creates to stop it
_installed: dict | None = None  # the driver's handlers: what they replaced, and the watcher's pipe


def reset() -> None:
    """Forget any stop (a new run in the same process; tests)."""
    global _signum, _first_at, _count, _handled, _said
    _signum, _first_at, _count, _handled, _said = None, None, 0, False, False


def _note(signum: int) -> None:
    global _signum, _first_at
    if _signum is None:
        _first_at = time.monotonic()
        _signum = signum


def request(signum: int = signal.SIGTERM) -> None:
    """Request a stop in this process, as signal `signum` would."""
    _note(signum)


def requested() -> int | None:
    """The number of the signal that asked this process to stop, or None. In a worker, a stop
    file its driver created counts too."""
    if _signum is None and _stop_file is not None:
        try:
            text = Path(_stop_file).read_text().strip()
        except OSError:
            return None
        _note(int(text) if text.isdigit() else signal.SIGTERM)
    return _signum


def forced() -> bool:
    """Whether a second stop signal came: kill, do not wait."""
    return _count >= 2


def deadline() -> float | None:
    """When (time.monotonic) workers still running are killed; None: no stop requested."""
    if _first_at is None:
        return None
    return time.monotonic() if _count >= 2 else _first_at + DEADLINE_S


def said() -> None:
    """The interrupted line has been printed (`exit_now` does not print it again)."""
    global _said
    _said = True


def exit_now(signum: int | None = None) -> None:
    """Print the interrupted line (unless printed already) and end this process at once with
    128 + signum, without cleanup: what is stored stays, nothing else is waited for."""
    signum = signum or _signum or signal.SIGTERM
    if not _said:
        try:
            line = _last_words[-1](signum) if _last_words else default_message(signum)
        except Exception:
            line = default_message(signum)
        try:
            os.write(2, f"\n{line}\n".encode())  # not through sys.stderr: another thread may hold its lock
        except OSError:
            pass
    os._exit(128 + signum)


@contextmanager
def hard_stop(action: Callable[[], None]) -> Iterator[None]:
    """While inside, the deadline or a second stop signal calls `action` (from the watcher
    thread): kill the workers, or `exit_now` where the work runs in this process."""
    _actions.append(action)
    try:
        yield
    finally:
        _actions.remove(action)


def in_background(action: Callable[[], object], delay: float = 0.0, timeout: float | None = None) -> None:
    """Run `action` in a thread of its own, `delay` seconds from now, and wait for it at most
    `timeout` seconds (default: what is left of GRACE_S): for a `hard_stop` action that talks
    to a database (it runs after the actions before it, such as killing the workers, and
    never holds up the exit)."""
    def run() -> None:
        time.sleep(delay)
        try:
            action()
        except Exception as err:
            os.write(2, f"stopping: {type(err).__name__}: {err}\n".encode())

    thread = threading.Thread(target=run, name="sweep-stop-action", daemon=True)
    thread.start()
    thread.join(timeout if timeout is not None else max(GRACE_S - 0.5, 0.1))


@contextmanager
def deferred(last_words: Callable[[int], str] | None = None) -> Iterator[None]:
    """A run that handles stops itself: inside, a stop signal only notes the request (the
    run polls `requested()`, stops its workers and raises `Interrupted`); `last_words(signum)`
    is the line `exit_now` prints. Installs the driver's handlers if none are (and removes
    them after). On leaving normally with a stop requested, raises `Interrupted`."""
    global _deferring, _handled
    installed_here = install_handlers()
    _deferring += 1
    if last_words is not None:
        _last_words.append(last_words)
    try:
        yield
    except BaseException:
        if _signum is not None:
            _handled = True
        raise
    finally:
        _deferring -= 1
        if last_words is not None:
            _last_words.remove(last_words)
        if installed_here:
            uninstall_handlers()
    if _signum is not None and not _handled:
        _handled = True
        raise Interrupted(_signum)


def _driver_handler(signum: int, frame) -> None:
    global _handled
    _note(signum)
    if _deferring or _handled:
        return  # a run stops itself; or this is a second signal, which the watcher turns into an exit
    _handled = True
    raise Interrupted(signum)


def install_handlers() -> bool:
    """Install the driver's handlers of SIGINT and SIGTERM (see the module's protocol) and
    the thread that enforces the deadline. False if already installed, or if this is not the
    main thread (signals can only be handled there): then nothing changes."""
    global _installed
    if _installed is not None or threading.current_thread() is not threading.main_thread():
        return False
    reset()
    read, write = os.pipe()
    os.set_blocking(write, False)
    previous = {signum: signal.signal(signum, _driver_handler) for signum in SIGNALS}
    wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch, args=(read,), name="sweep-stop", daemon=True)
    _installed = {"previous": previous, "wakeup": wakeup, "write": write, "watcher": watcher}
    watcher.start()
    return True


def uninstall_handlers() -> None:
    """Put back what `install_handlers` replaced and end its thread."""
    global _installed
    if _installed is None:
        return
    for signum, handler in _installed["previous"].items():
        signal.signal(signum, handler)
    signal.set_wakeup_fd(_installed["wakeup"])
    os.close(_installed["write"])  # the watcher reads end-of-file and ends
    _installed["watcher"].join(timeout=5)
    _installed = None
    reset()


def _watch(read: int) -> None:
    """The driver's watcher thread: it learns of every signal as it arrives (the wakeup file
    descriptor gets its number even while the main thread is busy in a compiled call), and at
    the deadline or on a second signal calls the `hard_stop` actions; GRACE_S later, if the
    process still runs, it ends it (`exit_now`)."""
    global _count
    act_at = exit_at = None
    while True:
        now = time.monotonic()
        waits = [t - now for t in (act_at, exit_at) if t is not None]
        ready, _, _ = select.select([read], [], [], max(0.0, min(waits)) if waits else None)
        if ready:
            data = os.read(read, 64)
            if not data:  # uninstalled
                os.close(read)
                return
            for signum in data:
                if signum in SIGNALS:
                    _note(signum)
                    _count += 1
                    act_at = time.monotonic() + DEADLINE_S if _count == 1 else time.monotonic()
        now = time.monotonic()
        if act_at is not None and now >= act_at:
            act_at = None
            for action in list(_actions):
                try:
                    action()
                except Exception as err:  # (a worker already gone, ...): the exit below still comes
                    os.write(2, f"stopping: {type(err).__name__}: {err}\n".encode())
            exit_at = now + GRACE_S
        if exit_at is not None and now >= exit_at:
            exit_now()


def stop_file(folder: str | Path, driver_pid: int | None = None) -> str:
    """The file whose existence tells the workers of driver `driver_pid` (default: this
    process) to stop; it holds the signal's number."""
    return str(Path(folder) / f"stop-{driver_pid or os.getpid()}")


def install_worker_handlers(driver_pid: int, file: str | None = None) -> None:
    """In a worker process, before its first job (a loky initializer): SIGINT and SIGTERM
    only note a stop (the trial stops at its epoch end: `requested()`), as does `file`
    appearing; and a thread ends this process once its parent is no longer `driver_pid`
    (the driver died, even by SIGKILL)."""
    global _stop_file
    reset()
    _stop_file = file
    for signum in SIGNALS:
        signal.signal(signum, lambda signum, frame: _note(signum))
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # (Slurm's time-limit warning reaches every process of a task: its driver answers it)
    threading.Thread(target=_orphan_watch, args=(driver_pid,), name="sweep-orphan-watch", daemon=True).start()


def _orphan_watch(driver_pid: int) -> None:
    while os.getppid() == driver_pid:
        time.sleep(WATCH_S)
    os._exit(128 + signal.SIGHUP)  # the driver is gone: so is its worker (its last checkpoint stays)
