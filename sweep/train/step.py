"""The training step: the model as initialised, its optimizer and loss, the batches of each
epoch, and `fit`, shared by a lone trial, a pack, and a resumed trial.

Conventions (the README's): epoch `e` presents the training images in the order
`numpy.random.default_rng([seed, e]).permutation(n)` (`epoch_order`); the validation loss is
the protocol's loss averaged over every validation image, from eager forward passes
(`validation_loss`); a partial last batch is padded with weight-0 images so every step has
one shape and is traced once.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from typing import Any

import numpy as np

from sweep.arch import build_autoencoder
from sweep.data import Splits, augment
from sweep.encodings import Task
from sweep.spec import TrainingProtocol, TrialSpec, digest

__all__ = [
    "PREDICT_VALUES",
    "build_model",
    "chunk_size",
    "compile_model",
    "epoch_batches",
    "epoch_order",
    "epoch_plan",
    "fit",
    "forget_models",
    "kept_models",
    "has_batch_norm",
    "make_loss",
    "make_optimizer",
    "precision",
    "step_key",
    "trial_model",
    "validation_loss",
]

PREDICT_VALUES = 2**25  # model outputs decoded per step (128 MB): a classification head has 261 a pixel


@contextlib.contextmanager
def precision(protocol: TrainingProtocol):
    """Models built inside use the protocol's dtype policy: `float32`, or half-precision
    compute with float32 weights (`mixed_bfloat16`, `mixed_float16` with loss scaling). The
    protocol names it, so the trial key decides the computation on every device."""
    if protocol.precision == "float32":
        yield
        return
    import keras

    keras.config.set_dtype_policy(protocol.precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


def build_model(spec: TrialSpec, input_shape: tuple[int, ...], task: Task, name: str = "autoencoder"):
    """The trial's model, initialised from the protocol's seed (the same weights whether it is
    trained alone, in a pack, or rebuilt to resume)."""
    import keras

    keras.utils.set_random_seed(spec.protocol.seed)
    classes = spec.protocol.loss == "ab_classification"  # logits for the bins, from a 1x1 head
    with precision(spec.protocol):
        return build_autoencoder(
            spec.arch, input_shape, task.output_channels, name=name,
            output_activation="linear" if classes else "sigmoid", pointwise_output=classes,
        )  # fmt: skip


_KEPT: OrderedDict[str, Any] = OrderedDict()  # step_key -> a compiled model whose traced step is reused
KEPT_MODELS = 4  # per process: the most recent shapes (a worker's repeats of a configuration come together)

# What a compiled training step depends on besides the architecture and the data: the
# protocol fields that change the computation. Not the seed or the learning rate (variables
# of the model and the optimizer), nor epochs, early stopping or the plateau (outside the step).
STEP_FIELDS = ("task", "encoding", "loss", "optimizer", "batch_size", "precision",
               "image_size", "train_fraction", "val_fraction", "train_limit")  # fmt: skip


def step_key(spec: TrialSpec) -> str:
    """Trials with equal keys train with the same compiled step: the same architecture as
    built, the same step fields, the same data (ab classification's loss weights come from
    the training targets)."""
    protocol = spec.protocol.to_dict()
    fields = {"arch": spec.arch.canonical(), "step": {k: protocol[k] for k in STEP_FIELDS}, "data": spec.data_id}
    return digest(fields)


def trial_model(spec: TrialSpec, input_shape: tuple[int, ...], task: Task, loss):
    """The trial's compiled model, initialised from its seed as `build_model` and
    `compile_model` make it, with a fresh optimizer at its learning rate. An earlier trial's
    model of the same `step_key` (another seed, repeat or learning rate) is reused with
    these values assigned to all its variables, so its traced training step is reused
    instead of traced again; the numbers are those of a new model (a test holds them equal)."""
    fresh = build_model(spec, input_shape, task)
    compile_model(fresh, spec.protocol, loss)
    key = step_key(spec)
    kept = _KEPT.get(key)
    if kept is None:
        _KEPT[key] = fresh
        while len(_KEPT) > KEPT_MODELS:
            _KEPT.popitem(last=False)
        return fresh
    _KEPT.move_to_end(key)
    for group, values in ((kept.variables, fresh.variables), (kept.optimizer.variables, fresh.optimizer.variables)):
        for variable, value in zip(group, values, strict=True):
            variable.assign(value)  # weights, random-seed states; optimizer moments, iteration count, learning rate
    kept.reset_metrics()
    kept.stop_training = False
    return kept


def forget_models() -> None:
    """Drop the kept models (a test that patches model building must not get an old one)."""
    _KEPT.clear()


def kept_models() -> int:
    """How many compiled models this process keeps for reuse."""
    return len(_KEPT)


def make_optimizer(protocol: TrainingProtocol):
    import keras

    if protocol.optimizer == "adam":
        return keras.optimizers.Adam(protocol.learning_rate)
    if protocol.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(protocol.learning_rate)
    return keras.optimizers.SGD(protocol.learning_rate, momentum=0.9)


def make_loss(protocol: TrainingProtocol, y_train: np.ndarray):
    """The compiled loss; ab classification takes its rebalancing weights from the training targets."""
    if protocol.loss == "ab_classification":
        from sweep.encodings import ab_bins, rebalancing_weights
        from sweep.losses import ABClassificationLoss

        return ABClassificationLoss(ab_bins(), rebalancing_weights(y_train))
    import keras

    return {"mse": keras.losses.MeanSquaredError, "mae": keras.losses.MeanAbsoluteError, "huber": keras.losses.Huber}[protocol.loss]()


def compile_model(model, protocol: TrainingProtocol, loss) -> None:
    """Compile with a fresh optimizer and build its variables now (built while tracing the
    first step instead, the step would be traced twice)."""
    model.compile(optimizer=make_optimizer(protocol), loss=loss)
    model.optimizer.build(model.trainable_variables)


def chunk_size(x: np.ndarray, output_channels: int) -> int:
    """Images per eager forward pass: sized by the output (a classification head has 261
    values a pixel), at most 256."""
    return int(np.clip(PREDICT_VALUES // (math.prod(x.shape[1:3]) * output_channels), 1, 256))


def validation_loss(model, x: np.ndarray, y: np.ndarray, loss) -> float:
    """`loss` over the whole validation split, the mean over images (each image weighs the
    same whatever the batching), from eager forward passes on the device-resident split:
    the same number for a model trained alone or in a pack, and no evaluation function to
    trace."""
    import keras

    from sweep import backend

    chunk = chunk_size(x, max(y.shape[-1], model.output_shape[-1]))
    x_dev, y_dev = backend.resident(x), backend.resident(y)
    total = 0.0
    for i in range(0, len(x), chunk):
        value = loss(y_dev[i : i + chunk], model(x_dev[i : i + chunk], training=False))
        total += float(keras.ops.convert_to_numpy(value)) * len(x[i : i + chunk])
    return total / len(x)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training images in `epoch`: the same for a trial alone, in a pack,
    and after a resume, so all three see exactly the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_plan(protocol: TrainingProtocol, epoch: int, n: int, pad: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The images of each step of `epoch`, as indices into the training split in `epoch_order`
    (int32, shape (steps, batch)), and their per-image sample weights (or None).

    With `pad`, a partial last batch is padded to full size with weight-0 images and its
    real images weighted batch / real, so its loss is still exactly their mean: every step
    has one shape and the training step is traced once, not twice. Without padding (models
    with batch normalisation: the padding would enter their batch statistics), or when the
    images fill whole batches, the order is returned flat (and no weights), for the caller
    to split into batches."""
    batch = protocol.batch_size
    order = epoch_order(protocol.seed, epoch, n)
    real = len(order) % batch
    if not (real and pad):
        return order.astype(np.int32), None
    order = np.concatenate([order, order[np.arange(batch - real) % len(order)]])
    weights = np.ones(len(order), np.float32)
    weights[-batch : -batch + real] = batch / real
    weights[-batch + real :] = 0.0
    return order.astype(np.int32).reshape(-1, batch), weights.reshape(-1, batch)


def epoch_batches(
    rgb: np.ndarray, x: np.ndarray, y: np.ndarray, task: Task, protocol: TrainingProtocol, epoch: int, pad: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The training inputs, targets and sample weights of `epoch`, in `epoch_plan`'s order
    and padding, as arrays (the weights shaped to broadcast over per-pixel losses).

    With augmentation, flips and rotations are drawn afresh every epoch, seeded by (seed,
    epoch, batch), and inputs and targets are both derived from the same augmented RGB
    images."""
    batch = protocol.batch_size
    order, weights = epoch_plan(protocol, epoch, len(rgb), pad)
    order = order.ravel()
    if weights is not None:  # one weight per image, broadcast over the per-pixel losses
        weights = weights.reshape(-1, *[1] * (y.ndim - 2))
    if not augmented(protocol):
        return x[order], y[order], weights
    inputs, targets = [], []
    for index, start in enumerate(range(0, len(order), batch)):
        rng = np.random.default_rng([protocol.seed, epoch, index])
        images = augment(rgb[order[start : start + batch]], rng, protocol.augment_flip, protocol.augment_rotation)
        inputs.append(task.inputs(images))
        targets.append(task.targets(images))
    return np.concatenate(inputs), np.concatenate(targets), weights


def augmented(protocol: TrainingProtocol) -> bool:
    """Whether the protocol draws new flips or rotations every epoch."""
    return bool(protocol.augment_flip or protocol.augment_rotation)


def has_batch_norm(model) -> bool:
    """Whether `model` (or a model nested in it) normalises by batch statistics."""
    return any(
        has_batch_norm(layer) if hasattr(layer, "layers") else type(layer).__name__ == "BatchNormalization"
        for layer in model.layers
    )


def fit(
    model,
    splits: Splits,
    arrays: dict[str, np.ndarray],
    task: Task,
    protocol: TrainingProtocol,
    first_epoch: int,
    callbacks: list,
    outputs: list[str] | None = None,
    steps_per_call: int | None = None,
) -> None:
    """Train epoch by epoch, from `first_epoch` until the protocol's epochs are over or a
    callback stops training (`model.stop_training`), calling each Keras callback's
    `on_epoch_end` with the epoch's mean training loss. The callbacks compute the validation
    loss themselves (`validation_loss`). `outputs` names the heads of a pack: every head
    gets the same targets.

    Many steps run per compiled call (`sweep.backend.train_loop`): a whole epoch by default,
    or `steps_per_call` steps, after each of which the callbacks' `on_train_batch_end` runs
    (1: Keras' one step per call, for callbacks that act after every step). The training
    arrays stay on the device and each step's batch is gathered there by index
    (`epoch_plan`); with augmentation, an epoch's augmented arrays are copied there once."""
    import keras

    from sweep import backend

    callbacks = keras.callbacks.CallbackList(callbacks, add_history=False, add_progbar=False, model=model)
    loop = backend.train_loop(model, outputs)
    pad = not has_batch_norm(model)
    n = len(splits.train)
    model.stop_training = False
    callbacks.on_train_begin()
    try:
        for epoch in range(first_epoch, protocol.epochs):
            model.reset_metrics()
            if augmented(protocol):  # this epoch's augmented images, in order, copied to the device once
                xs, ys, w = epoch_batches(splits.train, arrays["x_train"], arrays["y_train"], task, protocol, epoch, pad)
                x, y = keras.ops.convert_to_tensor(xs), keras.ops.convert_to_tensor(ys)
                order = np.arange(len(xs), dtype=np.int32)
                order, weights = (order, None) if w is None else (order.reshape(-1, protocol.batch_size), w.reshape(-1, protocol.batch_size))
            else:
                x, y = backend.resident(arrays["x_train"]), backend.resident(arrays["y_train"])
                order, weights = epoch_plan(protocol, epoch, n, pad)
            parts = _calls(order, weights, protocol.batch_size, steps_per_call)
            step = 0
            for part_order, part_weights in parts:
                loop(x, y, part_order, part_weights)
                step += len(part_order)
                if steps_per_call is not None:
                    callbacks.on_train_batch_end(step - 1)
            callbacks.on_epoch_end(epoch, model.get_metrics_result())
            if model.stop_training:
                break
    finally:
        callbacks.on_train_end()


def _calls(order: np.ndarray, weights: np.ndarray | None, batch: int, steps_per_call: int | None):
    """`epoch_plan`'s steps split into compiled calls: runs of `steps_per_call` steps (all of
    them by default), and an unpadded partial last batch in a call of its own."""
    if order.ndim == 1:  # unpadded: whole batches, then the rest
        whole = len(order) // batch * batch
        parts = [(order[:whole].reshape(-1, batch), None)] if whole else []
        if whole < len(order):
            parts.append((order[whole:].reshape(1, -1), None))
    else:
        parts = [(order, weights)]
    if steps_per_call is None:
        return parts
    return [
        (o[i : i + steps_per_call], None if w is None else w[i : i + steps_per_call])
        for o, w in parts
        for i in range(0, len(o), steps_per_call)
    ]
