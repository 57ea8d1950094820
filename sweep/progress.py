"""Where each worker's running trial is, for the driver's progress bar.

A trial reports its epoch as it trains (`report`): a small file per worker process,
`<dir>/<pid>.json`, in the folder the driver names in `SWEEP_PROGRESS_DIR` (workers
inherit it). The driver reads them (`running`) to show the epochs of the trials in flight
and to count their finished share of the work in its ETA. Without the variable nothing is
written. Files of processes that are gone are ignored.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sweep.files import atomic_write

__all__ = ["ENV", "alive", "clear", "report", "running"]

ENV = "SWEEP_PROGRESS_DIR"


def _path() -> Path | None:
    folder = os.environ.get(ENV)
    return Path(folder) / f"{os.getpid()}.json" if folder else None


def report(key: str, epoch: int, epochs: int) -> None:
    """This process's trial `key` has finished `epoch` of its `epochs` epochs."""
    path = _path()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"key": key, "epoch": epoch, "epochs": epochs, "time": time.time()}))


def clear() -> None:
    """This process runs no trial now."""
    path = _path()
    if path is not None:
        path.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether a process with this id exists (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(folder: str | Path) -> list[dict[str, Any]]:
    """The trials in flight: {"key", "epoch", "epochs", "time", "pid"} per live worker."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            pid = int(path.stem)
        except (OSError, ValueError):
            continue
        if alive(pid):
            found.append({**entry, "pid": pid})
    return found
