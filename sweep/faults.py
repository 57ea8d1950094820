"""Failpoints: named places where a test can make a sweep process die or fail on purpose.

The fault-injection tests use them to kill a driver or worker at an exact moment (while
loading data, after an epoch, between writing a row and renaming it into place) and then
check that a rerun ends with every trial complete exactly once. They cost one dictionary
lookup when no failpoint is set, which is always, outside those tests.

    SWEEP_FAILPOINTS="trial.epoch_end=kill@2,store.write_row.before_rename=raise"
    SWEEP_FAILPOINTS="trial.epoch_end:3fa9c2d1e0b84f67=kill"   # only in the trial with this key
    SWEEP_FAILPOINT_DIR=/tmp/fired     # each failpoint fires once across all processes

`kill` sends SIGKILL to the current process (no cleanup, no `finally`, like the OOM killer or
a preempted machine); `raise` raises `InjectedFault`; `interrupt` raises KeyboardInterrupt
(a user's Ctrl-C); `@N` fires on the Nth time the point is reached in a process (default:
the first). A fired failpoint leaves a marker file in SWEEP_FAILPOINT_DIR, so a restarted
worker or a rerun of the command does not fire it again. Tests that run trials in their own
process set failpoints with `configure` instead of the variable.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

__all__ = ["InjectedFault", "armed", "configure", "failpoint"]


class InjectedFault(RuntimeError):
    """Raised by a `raise` failpoint."""


def _parse(text: str) -> dict[str, tuple[str, int]]:
    points = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, action = item.partition("=")
        action, _, nth = (action or "kill").partition("@")
        points[name] = (action, int(nth or 1))
    return points


_POINTS = _parse(os.environ.get("SWEEP_FAILPOINTS", ""))
_HITS: Counter[str] = Counter()


def configure(text: str) -> None:
    """Set this process's failpoints as SWEEP_FAILPOINTS would ("" clears them), with fresh counts."""
    global _POINTS
    _POINTS = _parse(text)
    _HITS.clear()


def armed(name: str) -> bool:
    """Whether the failpoint `name` is set, for any trial or for one."""
    return any(point == name or point.startswith(f"{name}:") for point in _POINTS)


def failpoint(name: str, qualifier: str | None = None) -> None:
    """Fire the failpoint `name` (or `name:qualifier`) if it is set for this run."""
    if not _POINTS:
        return
    if qualifier is not None and f"{name}:{qualifier}" in _POINTS:
        name = f"{name}:{qualifier}"
    elif name not in _POINTS:
        return
    action, nth = _POINTS[name]
    _HITS[name] += 1
    if _HITS[name] != nth:
        return
    state = os.environ.get("SWEEP_FAILPOINT_DIR")
    if state:
        try:
            Path(state).mkdir(parents=True, exist_ok=True)
            os.close(os.open(Path(state) / f"{name}.fired", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "interrupt":
        raise KeyboardInterrupt(f"failpoint {name}")
    raise InjectedFault(f"failpoint {name}")
