"""Run one trial: build, train under the protocol, evaluate, save artefacts, return a row.

A trial never reads the results store and never decides what runs next. It returns a
plain dict (one row) whether it completed, failed or was pruned; only an interrupt or a
dead process stops it without a row. While it trains it checkpoints its whole state
(weights, optimizer, early-stopping bookkeeping, history) so a rerun after a crash
resumes from the last finished epoch.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import socket
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sweep import backend
from sweep.arch import build_autoencoder, latent_size, preset_name
from sweep.data import Dataset, Splits, augment, make_splits
from sweep.encodings import Task, gray_baseline, task_for
from sweep.faults import failpoint
from sweep.metrics import colour_metrics, image_metrics
from sweep.protocol import Protocol, TrialSpec

__all__ = ["run_trial", "trial_dir"]

PrunePolicy = Callable[[int, float], bool]  # (epoch, val_loss) -> stop now as pruned?
PREDICT_VALUES = 2**25  # model outputs decoded per step (128 MB): a classification head has 261 a pixel


def trial_dir(results_dir: str | Path, key: str) -> Path:
    return Path(results_dir) / "trials" / key


@functools.lru_cache(maxsize=8)
def _splits(dataset: Dataset, train_fraction: float, val_fraction: float, limit: int | None, size: int | None) -> Splits:
    return make_splits(dataset, train_fraction, val_fraction, limit, size)


def splits_for(dataset: Dataset, protocol: Protocol) -> Splits:
    """The protocol's splits of `dataset`, made once per process."""
    return _splits(dataset, protocol.train_fraction, protocol.val_fraction, protocol.train_limit, protocol.image_size)


def _optimizer(protocol: Protocol):
    import keras

    if protocol.optimizer == "adam":
        return keras.optimizers.Adam(protocol.learning_rate)
    if protocol.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(protocol.learning_rate)
    return keras.optimizers.SGD(protocol.learning_rate, momentum=0.9)


def _loss(protocol: Protocol, y_train: np.ndarray):
    """The compiled loss; ab classification takes its rebalancing weights from the training targets."""
    if protocol.loss == "ab_classification":
        from sweep.encodings import ab_bins, rebalancing_weights
        from sweep.losses import ABClassificationLoss

        return ABClassificationLoss(ab_bins(), rebalancing_weights(y_train))
    return {"mse": "mean_squared_error", "mae": "mean_absolute_error", "huber": "huber"}[protocol.loss]


def _augmented_batches(rgb: np.ndarray, task: Task, protocol: Protocol, first_epoch: int):
    """Training batches augmented afresh every epoch (flips, rotations). Inputs and targets are
    both derived from the same augmented RGB images, so they always move together. Each epoch's
    order and each batch's draws are seeded by (seed, epoch, batch): reruns and resumes repeat them."""
    import keras

    class AugmentedBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = first_epoch
            self.order = self._shuffle()

        def _shuffle(self) -> np.ndarray:
            return np.random.default_rng([protocol.seed, self.epoch]).permutation(len(rgb))

        def __len__(self) -> int:
            return math.ceil(len(rgb) / protocol.batch_size)

        def __getitem__(self, index: int):
            chosen = self.order[index * protocol.batch_size : (index + 1) * protocol.batch_size]
            rng = np.random.default_rng([protocol.seed, self.epoch, index])
            images = augment(rgb[chosen], rng, protocol.augment_flip, protocol.augment_rotation)
            return task.inputs(images), task.targets(images)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = self._shuffle()

    return AugmentedBatches()


_GRAY_SCORES: dict[int, tuple[np.ndarray, dict[str, float]]] = {}  # id(split) -> (split, scores), the last 8


def gray_scores(truth: np.ndarray) -> dict[str, float]:
    """The grayscale baseline's scores (luma copied to RGB), once per evaluated split."""
    cached = _GRAY_SCORES.get(id(truth))
    if cached is None or cached[0] is not truth:
        gray = gray_baseline(truth)
        cached = (truth, {**image_metrics(truth, gray), **colour_metrics(truth, gray)})
        _GRAY_SCORES[id(truth)] = cached
        while len(_GRAY_SCORES) > 8:
            del _GRAY_SCORES[next(iter(_GRAY_SCORES))]
    return cached[1]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Tracker:
    """Per-epoch bookkeeping shared by the Keras callback: history, best epoch, stopping."""

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
        for key, value in state.items():
            setattr(self, key, value)


def _make_callback(
    key: str,
    tracker: _Tracker,
    ckpt_dir: Path,
    checkpoint_every_s: float,
    should_prune: PrunePolicy | None,
):
    import keras

    class EpochTracker(keras.callbacks.Callback):
        """Records history, keeps the best-validation weights, stops early, checkpoints."""

        def __init__(self):
            super().__init__()
            self.best_weights = None
            self.last_save = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            lr = self.model.optimizer.learning_rate
            logs["lr"] = float(keras.ops.convert_to_numpy(lr))
            tracker.history.append(logs)
            val = logs.get("val_loss", math.nan)
            if not (math.isfinite(logs.get("loss", math.nan)) and math.isfinite(val)):
                tracker.stop_reason = "nan"
                self.model.stop_training = True
                return
            if val < tracker.best_val:
                tracker.best_val, tracker.best_epoch = val, epoch
                self.best_weights = self.model.get_weights()
            elif tracker.patience is not None and epoch - tracker.best_epoch >= tracker.patience:
                tracker.stop_reason = "early_stopping"
                self.model.stop_training = True
            if should_prune is not None and should_prune(epoch, val):
                tracker.stop_reason = "pruned"
                self.model.stop_training = True
            done = self.model.stop_training or epoch + 1 >= tracker.epochs
            if not done and time.monotonic() - self.last_save >= checkpoint_every_s:
                self.save(epoch)
            failpoint("trial.epoch_end", key)

        def save(self, epoch: int) -> None:
            """Checkpoint everything needed to resume after `epoch`; the state file is written last."""
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            tmp = ckpt_dir / f".model.{os.getpid()}.keras"
            self.model.save(tmp)
            os.replace(tmp, ckpt_dir / "model.keras")
            if self.best_weights is not None and tracker.best_epoch == epoch:
                best = ckpt_dir / f".best.{os.getpid()}.npz"
                with open(best, "wb") as handle:
                    np.savez(handle, *self.best_weights)
                os.replace(best, ckpt_dir / "best.npz")
            _atomic_write(ckpt_dir / "state.json", json.dumps({"epoch": epoch, **tracker.state()}))
            self.last_save = time.monotonic()

        def load_best(self) -> None:
            with np.load(ckpt_dir / "best.npz") as saved:
                self.best_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]

    return EpochTracker()


def _resume(ckpt_dir: Path, tracker: _Tracker, callback) -> tuple[Any, int]:
    """Load the checkpointed model and bookkeeping; (None, 0) if there is nothing usable."""
    state_file = ckpt_dir / "state.json"
    if not state_file.exists():
        return None, 0
    import keras

    import sweep.losses  # noqa: F401  (registers the custom losses a checkpoint may be compiled with)

    try:
        state = json.loads(state_file.read_text())
        model = keras.models.load_model(ckpt_dir / "model.keras")
        tracker.restore({k: state[k] for k in tracker.state()})
        if tracker.best_epoch >= 0:
            callback.load_best()
    except Exception:  # a checkpoint torn by a crash: start the trial afresh
        return None, 0
    return model, state["epoch"] + 1


def _save_gallery(path: Path, inputs: np.ndarray, truth: np.ndarray, pred: np.ndarray, n: int = 8) -> None:
    """Originals above predictions (and grayscale inputs on top when colorizing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(truth))
    rows = [("input", inputs)] if inputs.shape[-1] == 1 else []
    rows += [("original", truth), ("prediction", pred)]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n, 1.3 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            image = np.clip(images[i], 0, 1)
            ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _classify_failure(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    first = text.splitlines()[0][:300]
    if "ResourceExhausted" in type(err).__name__ or "out of memory" in text.lower() or isinstance(err, MemoryError):
        return f"out of memory ({first})"
    return first


def base_row(spec: TrialSpec) -> dict[str, Any]:
    """The columns every row has before training: identity, architecture and protocol."""
    return {
        "trial_key": spec.key,
        "data_id": spec.data_id,
        "preset": preset_name(spec.arch),
        **spec.arch.to_dict(),
        **spec.protocol.to_dict(),
        "spec": json.dumps(spec.to_dict(), sort_keys=True),
    }


def run_trial(
    spec: TrialSpec,
    dataset: Dataset,
    results_dir: str | Path,
    *,
    should_prune: PrunePolicy | None = None,
    checkpoint_every_s: float = 10.0,
    save_model: bool = True,
) -> dict[str, Any]:
    """Train and evaluate `spec` on `dataset`; return its row (status complete/failed/pruned)."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    out = trial_dir(results_dir, spec.key)
    out.mkdir(parents=True, exist_ok=True)
    protocol = spec.protocol
    task = task_for(protocol.task, protocol.encoding, protocol.loss)
    row = base_row(spec)
    row.update(status="failed", error=None, started_at=started.isoformat(), host=socket.gethostname())
    try:
        backend_name = backend.keras_ready()
        import keras

        splits = splits_for(dataset, protocol)
        x_train, y_train = task.inputs(splits.train), task.targets(splits.train)
        x_val, y_val = task.inputs(splits.val), task.targets(splits.val)
        x_test = task.inputs(splits.test)
        input_shape = x_train.shape[1:]
        row.update(
            latent_size=latent_size(spec.arch, input_shape),
            n_train=len(x_train),
            n_val=len(x_val),
            n_test=len(x_test),
            backend=backend_name,
            device=backend.device_description(),
            versions=json.dumps(backend.versions(), sort_keys=True),
        )
        tracker = _Tracker(protocol.epochs, protocol.early_stopping_patience)
        ckpt_dir = out / "checkpoint"
        callback = _make_callback(spec.key, tracker, ckpt_dir, checkpoint_every_s, should_prune)
        model, initial_epoch = _resume(ckpt_dir, tracker, callback)
        row["resumed_from_epoch"] = initial_epoch if model is not None else None
        if model is None:
            keras.utils.set_random_seed(protocol.seed)
            head = "linear" if protocol.loss == "ab_classification" else "sigmoid"  # logits for the bins
            model = build_autoencoder(spec.arch, input_shape, task.output_channels, output_activation=head)
            model.compile(optimizer=_optimizer(protocol), loss=_loss(protocol, y_train))
        else:
            keras.utils.set_random_seed(protocol.seed + initial_epoch)
        row["params"] = int(model.count_params())
        callbacks = [keras.callbacks.TerminateOnNaN(), callback]
        if protocol.reduce_lr_patience is not None:
            callbacks.insert(
                0,
                keras.callbacks.ReduceLROnPlateau(
                    factor=protocol.reduce_lr_factor,
                    patience=protocol.reduce_lr_patience,
                    min_lr=protocol.reduce_lr_min,
                ),
            )
        if protocol.augment_flip or protocol.augment_rotation:
            train = {"x": _augmented_batches(splits.train, task, protocol, initial_epoch)}
        else:
            train = {"x": x_train, "y": y_train, "batch_size": protocol.batch_size, "shuffle": True}
        t_fit = time.perf_counter()
        if initial_epoch < protocol.epochs and tracker.stop_reason is None:
            model.fit(
                **train,
                validation_data=(x_val, y_val),
                validation_batch_size=protocol.batch_size,
                epochs=protocol.epochs,
                initial_epoch=initial_epoch,
                verbose=0,
                callbacks=callbacks,
            )
        row["train_seconds"] = time.perf_counter() - t_fit
        history = tracker.history
        row.update(
            epochs_run=len(history),
            best_epoch=tracker.best_epoch + 1 if tracker.best_epoch >= 0 else None,
            stop_reason=tracker.stop_reason,
            history=json.dumps(history),
        )
        if tracker.stop_reason == "nan" or not history:
            bad = next((i + 1 for i, h in enumerate(history) if not math.isfinite(h.get("loss", math.nan))), len(history))
            raise FloatingPointError(f"loss became NaN or infinite in epoch {max(bad, 1)}")
        if callback.best_weights is not None:
            model.set_weights(callback.best_weights)

        chunk = int(np.clip(PREDICT_VALUES // (math.prod(input_shape[:2]) * task.output_channels), 1, 256))

        def predict(x):
            parts = [x[i : i + chunk] for i in range(0, len(x), chunk)]
            return np.concatenate([task.to_rgb(model.predict(p, batch_size=chunk, verbose=0), p) for p in parts])

        val_rgb = predict(x_val)
        test_rgb = predict(x_test)
        for name, value in image_metrics(splits.val, val_rgb).items():
            row[f"val_{name}"] = value
        for name, value in image_metrics(splits.test, test_rgb).items():
            row[f"test_{name}"] = value
        if protocol.task == "colorize":  # colour error, and what zero chroma would have scored
            for name, value in colour_metrics(splits.test, test_rgb).items():
                row[f"test_{name}"] = value
            for name, value in gray_scores(splits.test).items():
                row[f"test_gray_{name}"] = value
        if save_model:
            model.save(out / "model.keras")
        _save_gallery(out / "reconstructions.png", x_test, splits.test, test_rgb)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        failpoint("trial.artifacts_saved", spec.key)
        row["status"] = "pruned" if tracker.stop_reason == "pruned" else "complete"
    except Exception as err:  # the sweep goes on; the row says why this trial did not
        row["error"] = _classify_failure(err)
        (out / "error.txt").write_text("".join(traceback.format_exception(err)))
    finally:
        row["wall_seconds"] = time.perf_counter() - t0
        row["finished_at"] = datetime.now(timezone.utc).isoformat()
        try:
            backend.clear()
        except Exception:
            pass
    # A finished trial (whatever its status) never resumes: a retry starts afresh.
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1, sort_keys=True))
    return row
