"""Run one trial: build, train under the protocol, evaluate, save artefacts, return a row.

A trial never reads the results store and never decides what runs next. It returns a
plain dict (one row) whether it completed, failed or was pruned; only an interrupt or a
dead process stops it without a row. While it trains it checkpoints its whole state
(weights, optimizer, early-stopping bookkeeping, history) so a rerun after a crash
resumes from the last finished epoch.
"""

from __future__ import annotations

import contextlib
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

__all__ = ["epoch_order", "packable", "predict_rgb", "run_pack", "run_trial", "task_arrays", "trial_dir"]

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
    import keras

    return {"mse": keras.losses.MeanSquaredError, "mae": keras.losses.MeanAbsoluteError, "huber": keras.losses.Huber}[protocol.loss]()


def validation_loss(model, x: np.ndarray, y: np.ndarray, loss) -> float:
    """`loss` over the whole validation split, the mean over images (each image weighs the
    same whatever the batching), from eager forward passes: the same number for a model
    trained alone or in a pack, and no evaluation function to trace."""
    import keras

    chunk = _chunk(x, max(y.shape[-1], model.output_shape[-1]))
    total = 0.0
    for i in range(0, len(x), chunk):
        value = loss(y[i : i + chunk], model(x[i : i + chunk], training=False))
        total += float(keras.ops.convert_to_numpy(value)) * len(x[i : i + chunk])
    return total / len(x)


def _chunk(x: np.ndarray, output_channels: int) -> int:
    """Images per eager forward pass: sized by the output (a classification head has 261
    values a pixel), at most 256."""
    return int(np.clip(PREDICT_VALUES // (math.prod(x.shape[1:3]) * output_channels), 1, 256))


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training images in `epoch`: the same for a trial alone, in a pack,
    and after a resume, so all three see exactly the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _epoch_arrays(
    rgb: np.ndarray, x: np.ndarray, y: np.ndarray, task: Task, protocol: Protocol, epoch: int, pad: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The training inputs, targets and sample weights of `epoch`, in `epoch_order`.

    With `pad`, a partial last batch is padded to full size with weight-0 images and its
    real images weighted batch / real, so its loss is still exactly their mean: every step
    has one shape and the training step is traced once, not twice. (Models with batch
    normalisation are not padded: the padding would enter their batch statistics.)

    With augmentation, flips and rotations are drawn afresh every epoch, seeded by (seed,
    epoch, batch), and inputs and targets are both derived from the same augmented RGB
    images."""
    batch = protocol.batch_size
    order = epoch_order(protocol.seed, epoch, len(rgb))
    real = len(order) % batch
    weights = None
    if real and pad:
        order = np.concatenate([order, order[np.arange(batch - real) % len(order)]])
        weights = np.ones(len(order), np.float32)
        weights[-batch:-batch + real] = batch / real
        weights[-batch + real :] = 0.0
    if weights is not None:  # one weight per image, broadcast over the per-pixel losses
        weights = weights.reshape(-1, *[1] * (y.ndim - 2))
    if not (protocol.augment_flip or protocol.augment_rotation):
        return x[order], y[order], weights
    inputs, targets = [], []
    for index, start in enumerate(range(0, len(order), batch)):
        rng = np.random.default_rng([protocol.seed, epoch, index])
        images = augment(rgb[order[start : start + batch]], rng, protocol.augment_flip, protocol.augment_rotation)
        inputs.append(task.inputs(images))
        targets.append(task.targets(images))
    return np.concatenate(inputs), np.concatenate(targets), weights


def _fit(
    model,
    splits: Splits,
    arrays: dict[str, np.ndarray],
    task: Task,
    protocol: Protocol,
    first_epoch: int,
    callbacks: list,
    outputs: list[str] | None = None,
) -> None:
    """Train epoch by epoch on explicitly ordered in-memory arrays (one `fit` call per
    epoch; the compiled step is reused), until the protocol's epochs are over or a callback
    stops training (`model.stop_training` outlives the `fit` call that set it).
    The callbacks compute the validation loss themselves (`validation_loss`).
    `outputs` names the heads of a pack: every head gets the same targets."""

    def per_head(values: np.ndarray):
        return values if outputs is None else {name: values for name in outputs}

    pad = not _has_batch_norm(model)

    for epoch in range(first_epoch, protocol.epochs):
        x, y, weights = _epoch_arrays(splits.train, arrays["x_train"], arrays["y_train"], task, protocol, epoch, pad)
        model.fit(
            x,
            per_head(y),
            sample_weight=None if weights is None else per_head(weights),
            batch_size=protocol.batch_size,
            shuffle=False,
            epochs=epoch + 1,
            initial_epoch=epoch,
            verbose=0,
            callbacks=callbacks,
        )
        if model.stop_training:
            break


def _has_batch_norm(model) -> bool:
    """Whether `model` (or a model nested in it) normalises by batch statistics."""
    return any(
        _has_batch_norm(layer) if hasattr(layer, "layers") else type(layer).__name__ == "BatchNormalization"
        for layer in model.layers
    )


def _plateau_callback(protocol: Protocol):
    """Keras' ReduceLROnPlateau, kept across the per-epoch `fit` calls (it resets itself at
    the start of every call otherwise)."""
    import keras

    class Plateau(keras.callbacks.ReduceLROnPlateau):
        started = False

        def on_train_begin(self, logs=None):
            if not self.started:
                self.started = True
                super().on_train_begin(logs)

    return Plateau(factor=protocol.reduce_lr_factor, patience=protocol.reduce_lr_patience, min_lr=protocol.reduce_lr_min)


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

    def end_epoch(self, epoch: int, logs: dict[str, float], should_prune: PrunePolicy | None = None) -> bool:
        """Record `epoch`; return True if it is the best so far (its weights are to be kept).
        Sets `stop_reason` when training should stop after it."""
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
        if should_prune is not None and should_prune(epoch, val):
            self.stop_reason = "pruned"
        return improved

    @property
    def done(self) -> bool:
        return self.stop_reason is not None or len(self.history) >= self.epochs


def _validation_callback(validate: Callable[[Any], float]):
    """Adds the validation loss to an epoch's logs, for the callbacks after it (the
    learning-rate plateau, then the tracker)."""
    import keras

    class Validation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["val_loss"] = validate(self.model)

    return Validation()


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
            logs = {k: float(v) for k, v in (logs or {}).items()}  # val_loss: added by _validation_callback
            lr = self.model.optimizer.learning_rate
            logs["lr"] = float(keras.ops.convert_to_numpy(lr))
            if tracker.end_epoch(epoch, logs, should_prune):
                self.best_weights = self.model.get_weights()
            self.model.stop_training = tracker.stop_reason is not None
            if tracker.stop_reason == "nan":
                return
            if not (self.model.stop_training or epoch + 1 >= tracker.epochs) and time.monotonic() - self.last_save >= checkpoint_every_s:
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
    """A PNG of `n` test images: originals above predictions (grayscale inputs on top when
    colorizing), each scaled up 3x. Written with Pillow: a figure per trial in matplotlib
    costs more than training a small model for an epoch."""
    from PIL import Image

    n = min(n, len(truth))
    rows = ([inputs] if inputs.shape[-1] == 1 else []) + [truth, pred]
    tiles = []
    for images in rows:
        images = np.clip(images[:n], 0, 1)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        tiles.append(np.concatenate(list(images), axis=1))  # one strip of n images
    grid = (np.concatenate(tiles, axis=0) * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(grid)
    image.resize((image.width * 3, image.height * 3), Image.Resampling.NEAREST).save(path)


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


@functools.lru_cache(maxsize=4)
def _task_arrays(dataset: Dataset, task_key: tuple, split_key: tuple) -> tuple[Task, Splits, dict[str, np.ndarray]]:
    task = task_for(*task_key)
    splits = _splits(dataset, *split_key)
    arrays = {
        "x_train": task.inputs(splits.train),
        "y_train": task.targets(splits.train),
        "x_val": task.inputs(splits.val),
        "y_val": task.targets(splits.val),
        "x_test": task.inputs(splits.test),
    }
    return task, splits, arrays


def task_arrays(dataset: Dataset, protocol: Protocol) -> tuple[Task, Splits, dict[str, np.ndarray]]:
    """The protocol's splits and the task's inputs and targets, computed once per process
    (trials that differ only in architecture, seed or optimiser share them)."""
    return _task_arrays(
        dataset,
        (protocol.task, protocol.encoding, protocol.loss),
        (protocol.train_fraction, protocol.val_fraction, protocol.train_limit, protocol.image_size),
    )


def _start_row(spec: TrialSpec, started: datetime) -> dict[str, Any]:
    row = base_row(spec)
    row.update(status="failed", error=None, started_at=started.isoformat(), host=socket.gethostname())
    return row


def _data_columns(spec: TrialSpec, arrays: dict[str, np.ndarray], backend_name: str) -> dict[str, Any]:
    return {
        "latent_size": latent_size(spec.arch, arrays["x_train"].shape[1:]),
        "n_train": len(arrays["x_train"]),
        "n_val": len(arrays["x_val"]),
        "n_test": len(arrays["x_test"]),
        "backend": backend_name,
        "device": backend.device_description(),
        "versions": json.dumps(backend.versions(), sort_keys=True),
    }


@contextlib.contextmanager
def _precision(protocol: Protocol):
    """Models built inside use the protocol's precision: with `mixed_precision`, half-precision
    compute and float32 weights (float16, with loss scaling, where a GPU has the tensor cores
    for it; bfloat16 elsewhere)."""
    if not protocol.mixed_precision:
        yield
        return
    import keras

    keras.config.set_dtype_policy("mixed_float16" if backend.visible_gpus() else "mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


def _build(spec: TrialSpec, input_shape: tuple[int, ...], task: Task, name: str = "autoencoder"):
    """The trial's model, initialised from the protocol's seed (the same weights whether it is
    trained alone or in a pack)."""
    import keras

    keras.utils.set_random_seed(spec.protocol.seed)
    head = "linear" if spec.protocol.loss == "ab_classification" else "sigmoid"  # logits for the bins
    with _precision(spec.protocol):
        return build_autoencoder(spec.arch, input_shape, task.output_channels, name=name, output_activation=head)


def predict_rgb(model, x: np.ndarray, task: Task) -> np.ndarray:
    """The model's RGB images for inputs `x`, decoded in chunks sized by the output. Called
    eagerly: one forward pass per chunk costs less than tracing a predict function."""
    import keras

    chunk = _chunk(x, task.output_channels)
    parts = []
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk]
        output = keras.ops.convert_to_numpy(model(part, training=False)).astype(np.float32)
        parts.append(task.to_rgb(output, part))
    return np.concatenate(parts)


def _evaluate(
    spec: TrialSpec,
    model,
    task: Task,
    splits: Splits,
    arrays: dict[str, np.ndarray],
    tracker: _Tracker,
    row: dict[str, Any],
    out: Path,
    save_model: bool,
) -> None:
    """Fill `row` with the trained model's scores and write its artefacts (the model holds its
    best weights already). Raises if training diverged."""
    history = tracker.history
    row.update(
        epochs_run=len(history),
        best_epoch=tracker.best_epoch + 1 if tracker.best_epoch >= 0 else None,
        stop_reason=tracker.stop_reason,
        history=json.dumps(history),
    )
    t0 = time.perf_counter()
    if tracker.stop_reason == "nan" or not history:
        bad = next((i + 1 for i, h in enumerate(history) if not math.isfinite(h.get("loss", math.nan))), len(history))
        raise FloatingPointError(f"loss became NaN or infinite in epoch {max(bad, 1)}")
    val_rgb = predict_rgb(model, arrays["x_val"], task)
    test_rgb = predict_rgb(model, arrays["x_test"], task)
    for name, value in image_metrics(splits.val, val_rgb).items():
        row[f"val_{name}"] = value
    for name, value in image_metrics(splits.test, test_rgb).items():
        row[f"test_{name}"] = value
    if spec.protocol.task == "colorize":  # colour error, and what zero chroma would have scored
        for name, value in colour_metrics(splits.test, test_rgb).items():
            row[f"test_{name}"] = value
        for name, value in gray_scores(splits.test).items():
            row[f"test_gray_{name}"] = value
    if save_model:
        model.save(out / "model.keras")
    _save_gallery(out / "reconstructions.png", arrays["x_test"], splits.test, test_rgb)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    failpoint("trial.artifacts_saved", spec.key)
    row["eval_seconds"] = time.perf_counter() - t0
    row["status"] = "pruned" if tracker.stop_reason == "pruned" else "complete"


def _fail(row: dict[str, Any], out: Path, err: BaseException) -> None:
    row["error"] = _classify_failure(err)
    (out / "error.txt").write_text("".join(traceback.format_exception(err)))


def _close(spec: TrialSpec, row: dict[str, Any], out: Path, t0: float) -> None:
    """Stamp the end of a trial. A finished trial (whatever its status) never resumes: a retry
    starts afresh."""
    row["wall_seconds"] = time.perf_counter() - t0
    row["finished_at"] = datetime.now(timezone.utc).isoformat()
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1, sort_keys=True))


def _clear_backend() -> None:
    try:
        backend.clear()
    except Exception:
        pass


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
    t0 = time.perf_counter()
    out = trial_dir(results_dir, spec.key)
    out.mkdir(parents=True, exist_ok=True)
    protocol = spec.protocol
    row = _start_row(spec, datetime.now(timezone.utc))
    try:
        backend_name = backend.keras_ready()
        import keras

        task, splits, arrays = task_arrays(dataset, protocol)
        input_shape = arrays["x_train"].shape[1:]
        row.update(_data_columns(spec, arrays, backend_name), pack_size=1)
        tracker = _Tracker(protocol.epochs, protocol.early_stopping_patience)
        ckpt_dir = out / "checkpoint"
        loss = _loss(protocol, arrays["y_train"])
        validate = functools.partial(validation_loss, x=arrays["x_val"], y=arrays["y_val"], loss=loss)  # (model) -> float
        callback = _make_callback(spec.key, tracker, ckpt_dir, checkpoint_every_s, should_prune)
        model, initial_epoch = _resume(ckpt_dir, tracker, callback)
        row["resumed_from_epoch"] = initial_epoch if model is not None else None
        if model is None:
            model = _build(spec, input_shape, task)
            model.compile(optimizer=_optimizer(protocol), loss=loss)
            model.optimizer.build(model.trainable_variables)  # eagerly: else built while tracing the first step, traced twice
        else:
            keras.utils.set_random_seed(protocol.seed + initial_epoch)
        row["params"] = int(model.count_params())
        # In this order: the validation loss, the learning-rate plateau reading it, then the
        # tracker, which records the epoch and checkpoints it with the rate the plateau set.
        plateau = [_plateau_callback(protocol)] if protocol.reduce_lr_patience is not None else []
        callbacks = [keras.callbacks.TerminateOnNaN(), _validation_callback(validate), *plateau, callback]
        t_fit = time.perf_counter()
        if tracker.stop_reason is None:
            _fit(model, splits, arrays, task, protocol, initial_epoch, callbacks)
        row["train_seconds"] = time.perf_counter() - t_fit
        if callback.best_weights is not None and tracker.stop_reason != "nan":
            model.set_weights(callback.best_weights)
        _evaluate(spec, model, task, splits, arrays, tracker, row, out, save_model)
    except Exception as err:  # the sweep goes on; the row says why this trial did not
        _fail(row, out, err)
    finally:
        _clear_backend()
    _close(spec, row, out, t0)
    return row


def packable(spec: TrialSpec) -> bool:
    """Whether `spec` can share a training step with others. Not if its protocol adapts the
    learning rate (a pack's one optimizer would apply it to every member), nor with mixed
    precision (one loss scale for the pack: a member's overflow would skip every member's step)."""
    return spec.protocol.reduce_lr_patience is None and not spec.protocol.mixed_precision


def run_pack(
    specs: list[TrialSpec],
    dataset: Dataset,
    results_dir: str | Path,
    *,
    save_model: bool = True,
) -> list[dict[str, Any]]:
    """Train several trials of one protocol in one compiled step on the same batches; return
    their rows, each the same in meaning as `run_trial`'s.

    The pack is one Keras model with one head per member and disjoint parameters; its loss is
    the sum of the members' losses, so each member's gradients, and its Adam moments and
    updates, are exactly its own. Each member keeps its own history, best weights and early
    stopping; a member that has stopped keeps training in the pack (the step is shared) but
    nothing it does afterwards is used. The pack ends when every member has. A pack does
    not checkpoint: after a crash, its unfinished members run again from the start.
    """
    protocol = specs[0].protocol
    if any(s.protocol != protocol or s.data_id != specs[0].data_id for s in specs):
        raise ValueError("a pack's trials must share one protocol and one dataset")
    if not packable(specs[0]):
        raise ValueError("trials with reduce_lr_patience or mixed_precision cannot be packed (see packable)")
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    outs = [trial_dir(results_dir, spec.key) for spec in specs]
    rows = [_start_row(spec, started) for spec in specs]
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
    names = [f"m{i}" for i in range(len(specs))]
    trackers = [_Tracker(protocol.epochs, protocol.early_stopping_patience) for _ in specs]
    best: list[Any] = [None] * len(specs)
    members: list[Any] = []
    try:
        backend_name = backend.keras_ready()
        import keras

        task, splits, arrays = task_arrays(dataset, protocol)
        input_shape = arrays["x_train"].shape[1:]
        members = [_build(spec, input_shape, task, name=f"autoencoder_{i}") for i, spec in enumerate(specs)]
        inputs = keras.Input(shape=input_shape, name="image")
        pack = keras.Model(inputs, {name: member(inputs) for name, member in zip(names, members)}, name="pack")
        loss = _loss(protocol, arrays["y_train"])
        pack.compile(optimizer=_optimizer(protocol), loss={name: loss for name in names})
        pack.optimizer.build(pack.trainable_variables)
        for spec, row, member in zip(specs, rows, members):
            row.update(_data_columns(spec, arrays, backend_name), pack_size=len(specs), resumed_from_epoch=None, params=int(member.count_params()))

        class PackTracker(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
                for i, (spec, name, tracker) in enumerate(zip(specs, names, trackers)):
                    if tracker.done:
                        continue
                    prefix = f"{name}_" if len(names) > 1 else ""  # Keras names a lone head's loss plainly
                    own = {
                        "loss": float(logs.get(f"{prefix}loss", math.nan)),
                        "val_loss": validation_loss(members[i], arrays["x_val"], arrays["y_val"], loss),
                        "lr": lr,
                    }
                    if tracker.end_epoch(epoch, own):
                        best[i] = members[i].get_weights()
                    failpoint("trial.epoch_end", spec.key)
                self.model.stop_training = all(t.done for t in trackers)

        t_fit = time.perf_counter()
        _fit(pack, splits, arrays, task, protocol, 0, [PackTracker()], outputs=names)
        train_seconds = time.perf_counter() - t_fit
    except Exception as err:  # the whole pack failed (data, build, memory): every member says why
        for row, out in zip(rows, outs):
            _fail(row, out, err)
        members = []
    for i, (spec, row, out) in enumerate(zip(specs, rows, outs)):
        if not members:
            break
        try:
            row["train_seconds"] = train_seconds
            if best[i] is not None and trackers[i].stop_reason != "nan":
                members[i].set_weights(best[i])
            members[i].compile(optimizer=_optimizer(protocol), loss=loss)  # saved ready to evaluate, like a lone trial's
            members[i].optimizer.build(members[i].trainable_variables)  # (a fresh optimizer: the pack's moments are shared)
            _evaluate(spec, members[i], task, splits, arrays, trackers[i], row, out, save_model)
        except Exception as err:
            _fail(row, out, err)
    members = best = []
    _clear_backend()
    for spec, row, out in zip(specs, rows, outs):
        _close(spec, row, out, t0)
    return rows
