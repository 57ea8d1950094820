"""Run one trial: build, train under the protocol, evaluate, save artefacts, return a row.

A trial never reads the results store and never decides what runs next. It returns a
plain dict (one row) whether it completed, failed or was pruned; only a stop (`Stopped`,
when the run is interrupted: `sweep.stop`), an interrupt or a dead process ends it without
a row. While it trains it checkpoints its whole state (`sweep.train.checkpoint`), and
always at the epoch it stops after, so a rerun resumes from the last checkpointed epoch and
ends with the row the uninterrupted trial would have had.
"""

from __future__ import annotations

import functools
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sweep import backend, progress
from sweep.artifacts import Artifacts
from sweep.data import Dataset
from sweep.spec import TrialSpec
from sweep.stop import Stopped, requested
from sweep.train.arrays import task_arrays
from sweep.train.checkpoint import CHECKPOINT_FILE, Checkpoint, Saved
from sweep.train.epochs import Plateau, Pruning, Tracker, batch_failpoint_callback, epoch_callback
from sweep.train.evaluate import evaluate, validation_metric
from sweep.train.rows import close_row, data_columns, record_failure, start_row, trial_dir
from sweep.train.step import build_model, compile_model, fit, make_loss, trial_model, validation_loss

__all__ = ["run_trial"]


def run_trial(
    spec: TrialSpec,
    dataset: Dataset,
    results_dir: str | Path,
    *,
    pruning: Pruning | None = None,
    checkpoint_every_s: float = 10.0,
    save_model: bool = True,
    artifacts: Artifacts | None = None,
) -> dict[str, Any]:
    """Train and evaluate `spec` on `dataset`; return its row (status complete/failed/pruned).

    `pruning` reports a validation value after every epoch and may stop the trial (status
    'pruned'); `checkpoint_every_s` bounds the work a crash can cost (0: a checkpoint after
    every epoch; inf: none). With `artifacts`, checkpoints go to that shared store as well
    (a retry on another machine resumes from them) and so do the finished trial's files.

    When a stop is requested (`sweep.stop`) the trial checkpoints at the end of its current
    epoch and raises `Stopped`, with no row (before training: at once)."""
    t0 = time.perf_counter()
    out = trial_dir(results_dir, spec.key)
    out.mkdir(parents=True, exist_ok=True)
    protocol = spec.protocol
    row = start_row(spec, datetime.now(timezone.utc))
    try:
        backend_name = backend.keras_ready()
        task, splits, arrays = task_arrays(dataset, protocol)
        row.update(data_columns(spec, arrays, backend_name), pack_size=1)
        loss = make_loss(protocol, arrays["y_train"])
        model = trial_model(spec, arrays["x_train"].shape[1:], task, loss)
        row["params"] = int(model.count_params())

        tracker = Tracker(protocol.epochs, protocol.early_stopping_patience)
        plateau = None
        if protocol.reduce_lr_patience is not None:
            plateau = Plateau(protocol.reduce_lr_patience, protocol.reduce_lr_factor, protocol.reduce_lr_min)
        checkpoint = Checkpoint(out, spec.key, checkpoint_every_s, artifacts)
        saved = checkpoint.load()
        if saved is not None and not _resume(saved, model, tracker, plateau, spec.key):
            saved = None  # not this model's checkpoint: start afresh from a fresh model
            model = build_model(spec, arrays["x_train"].shape[1:], task)
            compile_model(model, protocol, loss)
        first_epoch = saved.epoch + 1 if saved is not None else 0
        row["resumed_from_epoch"] = first_epoch if saved is not None else None
        progress.report(spec.key, first_epoch, protocol.epochs)

        def save(epoch: int, callback, now: bool = False) -> None:
            progress.report(spec.key, epoch + 1, protocol.epochs)  # (for the driver's progress bar)
            if now or checkpoint.due():
                state = {"tracker": tracker.state(), "plateau": plateau.state() if plateau else None}
                checkpoint.save(epoch, callback.model, callback.best_weights, state)

        callback = epoch_callback(
            key=spec.key,
            tracker=tracker,
            validate=functools.partial(validation_loss, x=arrays["x_val"], y=arrays["y_val"], loss=loss),
            plateau=plateau,
            prune=None if pruning is None else functools.partial(_should_prune, pruning, task, splits, arrays),
            checkpoint=save,
            best_weights=saved.best_weights if saved is not None else None,
        )
        per_step = batch_failpoint_callback(spec.key)  # None unless a test kills the trial mid-epoch
        if requested() is not None and not tracker.done:  # (building and compiling take a while)
            raise Stopped((spec.key,), None if saved is None else saved.epoch)
        t_fit = time.perf_counter()
        if not tracker.done:
            callbacks = [callback] if per_step is None else [callback, per_step]
            fit(model, splits, arrays, task, protocol, first_epoch, callbacks, steps_per_call=None if per_step is None else 1)
        row["train_seconds"] = time.perf_counter() - t_fit
        if callback.best_weights is not None and tracker.stop_reason != "nan":
            model.set_weights(callback.best_weights)
        evaluate(spec, model, task, splits, arrays, tracker, row, out, save_model)
    except Exception as err:  # the sweep goes on; the row says why this trial did not
        record_failure(row, out, err)
    finally:
        progress.clear()
        try:
            backend.clear()
        except Exception:  # cleaning up must never hide the trial's own outcome
            pass
    close_row(spec, row, out, t0)
    if artifacts is not None:  # a failure to upload is the store's, not the trial's: the files stay in `out`
        try:
            artifacts.remove(spec.key, CHECKPOINT_FILE)
            artifacts.put_trial(spec.key, out)
        except Exception as err:
            print(f"trial {spec.key}: files not uploaded to --artifacts ({type(err).__name__}: {err}); they are in {out}", file=sys.stderr)
    return row


def _resume(saved: Saved, model, tracker: Tracker, plateau: Plateau | None, key: str) -> bool:
    """Give the freshly built `model` and the bookkeeping the checkpoint's state; False (and
    a line on stderr) if the checkpoint does not fit the model."""
    try:
        Checkpoint.restore(saved, model)
    except Exception as err:  # a checkpoint of another model: starting afresh gives the same result, later
        print(f"trial {key}: cannot resume ({type(err).__name__}: {err}); training from the start", file=sys.stderr)
        return False
    tracker.restore(saved.state["tracker"])
    if plateau is not None:
        plateau.restore(saved.state["plateau"])
    return True


def _should_prune(pruning: Pruning, task, splits, arrays, epoch: int, model) -> bool:
    """Report the validation value `pruning` asks for, measured now, and ask whether to stop."""
    return pruning.should_prune(epoch, validation_metric(model, pruning.metric, task, splits, arrays))
