"""What happens at the end of every epoch: the validation loss, the learning-rate plateau,
the history and best epoch, early stopping, pruning, checkpoints, and stopping the run.

An epoch is one compiled call, so its end is where a trial can stop when the run is
interrupted (`sweep.stop`): a checkpoint is written then, whatever is due, and `Stopped` is
raised; the rerun resumes from that checkpoint.

The state all of this keeps is plain values (`Tracker.state`, `Plateau.state`), so a
checkpoint holds it whole and a resumed trial continues exactly where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sweep.faults import armed, failpoint
from sweep.stop import Stopped, requested

__all__ = ["Plateau", "Pruning", "Tracker", "batch_failpoint_callback", "epoch_callback"]


class Tracker:
    """Per-epoch bookkeeping: the history, the best epoch (lowest validation loss), and why
    training stopped early, if it did."""

    def __init__(self, epochs: int, patience: int | None):
        self.epochs = epochs
        self.patience = patience
        self.history: list[dict[str, float]] = []
        self.best_epoch = -1
        self.best_val = math.inf
        self.stop_reason: str | None = None  # "nan", "early_stopping", "pruned"

    def state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("history", "best_epoch", "best_val", "stop_reason")}

    def restore(self, state: dict[str, Any]) -> None:
        for key in ("history", "best_epoch", "best_val", "stop_reason"):
            setattr(self, key, state[key])

    def end_epoch(self, epoch: int, logs: dict[str, float]) -> bool:
        """Record `epoch` (its `loss`, `val_loss` and `lr`); return True if it is the best so
        far (its weights are to be kept). Sets `stop_reason` when training should stop."""
        self.history.append(logs)
        val = logs.get("val_loss", math.nan)
        if not (math.isfinite(logs.get("loss", math.nan)) and math.isfinite(val)):
            self.stop_reason = "nan"
            return False
        improved = val < self.best_val
        if improved:
            self.best_val, self.best_epoch = val, epoch
        elif self.patience is not None and epoch - self.best_epoch >= self.patience:
            self.stop_reason = "early_stopping"
        return improved

    @property
    def done(self) -> bool:
        return self.stop_reason is not None or len(self.history) >= self.epochs


@dataclass
class Plateau:
    """Keras' ReduceLROnPlateau on the validation loss (its defaults: an improvement is a drop
    of more than `min_delta`, no cooldown), with its state as plain values."""

    patience: int
    factor: float
    min_lr: float
    min_delta: float = 1e-4
    best: float = math.inf
    wait: int = 0

    def new_rate(self, val_loss: float, lr: float) -> float | None:
        """The learning rate to use from the next epoch on, or None to keep `lr`."""
        if val_loss < self.best - self.min_delta:
            self.best, self.wait = val_loss, 0
            return None
        self.wait += 1
        if self.wait >= self.patience and lr > np.float32(self.min_lr):
            self.wait = 0
            return max(lr * self.factor, self.min_lr)
        return None

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def restore(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], state["wait"]


@dataclass(frozen=True)
class Pruning:
    """Report a validation value after every epoch and ask whether to stop: `metric` names the
    value (`val_mse`, `val_psnr`, ...: see `sweep.results.schema.per_epoch_metric`),
    `should_prune(epoch, value)` answers (an Optuna trial's report and should_prune)."""

    metric: str
    should_prune: Callable[[int, float], bool]


def epoch_callback(
    *,
    key: str,
    tracker: Tracker,
    validate: Callable[[Any], float],
    plateau: Plateau | None = None,
    prune: Callable[[int, Any], bool] | None = None,
    checkpoint: Callable[[int, Any, bool], None] | None = None,
    best_weights: list | None = None,
):
    """The Keras callback that runs the end of every epoch, in this order: the validation
    loss (`validate(model)`), the history and best weights (`tracker`), the learning-rate
    plateau, pruning (`prune(epoch, model)`: stop now?), then a checkpoint
    (`checkpoint(epoch, callback, now)`, which decides itself whether one is due, unless
    `now`). The history's `lr` is the rate the epoch trained with. The callback keeps the best
    epoch's weights in `best_weights` (starting from those given, when resuming).

    When a stop was requested (`sweep.stop.requested`), the checkpoint is written now, and
    `Stopped` is raised unless training is over anyway (then the trial is evaluated, and a
    rerun after a kill meanwhile resumes from this last checkpoint and only evaluates)."""
    import keras

    class EpochEnd(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best_weights = best_weights

        def on_epoch_end(self, epoch, logs=None):
            optimizer = self.model.optimizer
            lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            record = {"loss": float((logs or {}).get("loss", math.nan)), "val_loss": validate(self.model), "lr": lr}
            if tracker.end_epoch(epoch, record):
                self.best_weights = self.model.get_weights()
            if tracker.stop_reason != "nan":
                if plateau is not None:
                    new = plateau.new_rate(record["val_loss"], lr)
                    if new is not None:
                        optimizer.learning_rate = new
                if prune is not None and prune(epoch, self.model):
                    tracker.stop_reason = "pruned"
            self.model.stop_training = tracker.stop_reason is not None
            stopping = requested() is not None
            if checkpoint is not None and (stopping or not tracker.done):
                checkpoint(epoch, self, stopping)
            failpoint("trial.epoch_end", key)
            if stopping and not tracker.done:
                raise Stopped((key,), epoch, checkpointed=checkpoint is not None)

    return EpochEnd()


def batch_failpoint_callback(key: str):
    """A callback that fires the `trial.batch_end` failpoint after every training step (the
    fault-injection tests kill a trial mid-epoch with it); None unless that failpoint is set,
    so a normal run has no per-step Python."""
    if not armed("trial.batch_end"):
        return None
    import keras

    class BatchEnd(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            failpoint("trial.batch_end", key)

    return BatchEnd()
