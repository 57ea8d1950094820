"""Checkpoint and resume: everything that influences the rest of a trial's training, in one
file written atomically, so a trial killed at any moment and resumed (any number of times)
ends exactly as it would have uninterrupted. Checkpoints are taken at epoch ends, at most
every `every_s` seconds, and always at the epoch a trial stops after when the run is
stopped by a signal (`sweep.stop`).

A checkpoint taken after epoch `e` holds:

- every variable of the model, including the random-seed state of its dropout layers (the
  rest of training draws the same dropout masks), and of the optimizer (moments, iteration
  count and the current learning rate, which a plateau may have lowered);
- the best epoch's weights so far, whichever epoch that was (the weights a finished trial is
  evaluated and saved with);
- the epoch bookkeeping: history, best epoch and loss, early stopping, and the plateau's
  counters.

Training data order and augmentation are functions of (seed, epoch, batch), so they need no
state. A resumed trial is rebuilt exactly as a fresh one (same code, same initialisation),
then takes these values; training goes on from epoch `e + 1`.

The file is `trials/<key>/checkpoint.npz`: arrays only, read without pickle. It is replaced
atomically, so it is always a whole checkpoint or absent; one that cannot be read (a disk
error) is reported and the trial starts afresh, which gives the same result, later. With a
shared artefact store (`--artifacts`, `sweep.artifacts`), each checkpoint is also uploaded
there, and a trial with no checkpoint of its own (a retry on another machine) takes the
store's.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sweep.artifacts import Artifacts
from sweep.files import atomic_path

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "Saved", "clock"]

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT = 2  # the layout of the file; a checkpoint of another layout is not resumed
clock: Callable[[], float] = time.monotonic  # when checkpoints are due (tests substitute a fake clock)


@dataclass
class Saved:
    """A loaded checkpoint."""

    epoch: int  # the last finished epoch (0-based)
    state: dict[str, Any]  # {"tracker": ..., "plateau": ... or None}
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    best_weights: list[np.ndarray] | None


class Checkpoint:
    """The checkpoint of one trial: when one is due, and saving, loading, restoring it."""

    def __init__(self, directory: Path, key: str, every_s: float, shared: Artifacts | None = None):
        self.path = Path(directory) / CHECKPOINT_FILE
        self.key = key
        self.every_s = every_s
        self.shared = shared  # the artefact store every checkpoint is uploaded to, if any
        self.last = clock()

    def due(self) -> bool:
        """Whether `every_s` seconds have passed since the last checkpoint (0: always)."""
        return clock() - self.last >= self.every_s

    def save(self, epoch: int, model, best_weights: list | None, state: dict[str, Any]) -> None:
        import keras

        arrays = {"meta": np.array(json.dumps({"format": FORMAT, "key": self.key, "epoch": epoch, "state": state}))}
        for prefix, values in (
            ("model", model.variables),
            ("optimizer", model.optimizer.variables),
        ):
            for i, variable in enumerate(values):
                arrays[f"{prefix}_{i}"] = keras.ops.convert_to_numpy(variable)
        for i, weights in enumerate(best_weights or []):
            arrays[f"best_{i}"] = np.asarray(weights)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
        if self.shared is not None:
            try:
                self.shared.put(self.key, self.path)
            except Exception as err:  # the shared store is away: train on; the local checkpoint stands
                print(f"trial {self.key}: checkpoint not uploaded to --artifacts ({type(err).__name__}: {err})", file=sys.stderr)
        self.last = clock()

    def load(self) -> Saved | None:
        """The saved checkpoint, or None when there is none (or it cannot be used: then the
        reason is printed and the trial starts afresh). Without a local checkpoint, the shared
        store's is downloaded, if there is one."""
        if not self.path.exists() and (self.shared is None or not self.shared.get(self.key, CHECKPOINT_FILE, self.path)):
            return None
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                meta = json.loads(str(saved["meta"]))
                if meta.get("format") != FORMAT or meta.get("key") != self.key:
                    raise ValueError(f"a checkpoint of format {meta.get('format')} for trial {meta.get('key')}")

                def group(prefix: str) -> list[np.ndarray]:
                    count = sum(1 for name in saved.files if name.startswith(f"{prefix}_"))
                    return [saved[f"{prefix}_{i}"] for i in range(count)]

                best = group("best")
                return Saved(meta["epoch"], meta["state"], group("model"), group("optimizer"), best or None)
        except Exception as err:  # torn by a disk error, or not ours: the trial restarts, which is exact too
            print(f"trial {self.key}: cannot resume from {self.path} ({type(err).__name__}: {err}); training from the start", file=sys.stderr)
            return None

    @staticmethod
    def restore(saved: Saved, model) -> None:
        """Give a freshly built and compiled `model` (optimizer built) the saved values."""
        for prefix, variables, values in (
            ("model", model.variables, saved.model),
            ("optimizer", model.optimizer.variables, saved.optimizer),
        ):
            if len(variables) != len(values):
                raise ValueError(f"the checkpoint has {len(values)} {prefix} variables, the model {len(variables)}")
            for variable, value in zip(variables, values):
                variable.assign(value)
