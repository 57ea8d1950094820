"""Packed training: several small trials in one compiled step, so an accelerator is kept busy.

The grid's models are tiny; trained one at a time, a GPU spends most of each step waiting
for kernel launches and Python. `python -m sweep.grid --pack K` groups the trials into
packs of up to K that share a protocol and a dataset (`make_packs`, balanced by FLOPs) and
trains each pack as one model (`run_pack`): same batches, disjoint parameters, one summed
loss, so every member's gradients and Adam updates are exactly its own and its row means
what a separate trial's row means.

A pack stops with the run (`sweep.stop`) at the end of an epoch, as a lone trial does, but
keeps no checkpoint: a rerun trains its trials again from the start.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sweep import backend
from sweep.data import Dataset
from sweep.errors import must_be
from sweep.faults import failpoint
from sweep.spec import TrialSpec
from sweep.stop import Stopped, requested
from sweep.train.arrays import task_arrays
from sweep.train.evaluate import evaluate
from sweep.train.epochs import Tracker
from sweep.train.rows import close_row, data_columns, record_failure, start_row, trial_dir
from sweep.train.step import build_model, compile_model, epoch_plan, fit, make_loss, make_optimizer, validation_loss

__all__ = ["make_packs", "pack_model", "packable", "probe_pack_size", "run_pack", "step_seconds", "time_shares"]


def packable(spec: TrialSpec) -> bool:
    """Whether `spec` can share a training step with others. Not if its protocol adapts the
    learning rate (a pack's one optimizer would apply it to every member), nor in mixed
    precision (one loss scale for the pack: a member's overflow would skip every member's step)."""
    return spec.protocol.reduce_lr_patience is None and spec.protocol.precision == "float32"


def make_packs(specs: list[Any], size: int, cost: Callable[[Any], float]) -> list[list[Any]]:
    """Group `specs` into packs of at most `size` that share a protocol and a dataset, as few
    packs as that allows, with their total `cost` as even as possible (longest-processing-
    time first, so workers taking packs from one queue finish together); the costliest pack
    first. Trials that cannot be packed (`packable`) are packs of one."""
    if size < 1:
        raise ValueError(must_be("size", "make_packs", "an int >= 1", size))
    groups: dict[tuple, list[Any]] = {}
    singles = []
    for spec in specs:
        if size > 1 and packable(spec):
            groups.setdefault((spec.protocol, spec.data_id), []).append(spec)
        else:
            singles.append([spec])
    packs = []
    for members in groups.values():
        count = math.ceil(len(members) / size)
        bins: list[list[Any]] = [[] for _ in range(count)]
        totals = [0.0] * count
        for spec in sorted(members, key=cost, reverse=True):
            # The lightest pack with room; a full pack takes nothing more.
            i = min((i for i in range(count) if len(bins[i]) < size), key=lambda i: totals[i])
            bins[i].append(spec)
            totals[i] += cost(spec)
        packs.extend(bins)
    packs.extend(singles)
    return sorted(packs, key=lambda pack: sum(cost(s) for s in pack), reverse=True)


def time_shares(specs: list[TrialSpec], image_shape: tuple[int, ...]) -> list[float]:
    """Each member's share of a pack's common time (building, tracing, training): in
    proportion to its training FLOPs per image, since every member trains on the same
    batches for the same epochs; equal shares when a family has no FLOP formula."""
    try:
        flops = [float(spec.training_flops(image_shape)) for spec in specs]
    except Exception:  # a family without the formula
        flops = []
    if len(flops) != len(specs) or not all(f > 0 for f in flops):
        return [1 / len(specs)] * len(specs)
    total = sum(flops)
    return [f / total for f in flops]


def pack_model(members: list, names: list[str], input_shape: tuple[int, ...], protocol, loss):
    """One compiled Keras model whose heads `names` are the `members`, with one optimizer
    (built) and the sum of the members' losses."""
    import keras

    inputs = keras.Input(shape=input_shape, name="image")
    pack = keras.Model(inputs, {name: member(inputs) for name, member in zip(names, members)}, name="pack")
    pack.compile(optimizer=make_optimizer(protocol), loss={name: loss for name in names})
    pack.optimizer.build(pack.trainable_variables)
    return pack


PROBE_STEPS = 20  # training steps timed per pack size
PROBE_GAIN = 1.10  # a bigger pack must train this much faster (images/s) to be chosen


def probe_pack_size(specs: list[TrialSpec], dataset: Dataset, max_size: int = 16) -> tuple[int, dict[int, float]]:
    """Measure the pack size that trains fastest on this process's device: packs of 1, 2,
    4, ... copies of the median-cost packable trial, each timed over PROBE_STEPS steps after
    a first (compiling) call; grow while images/s improves by PROBE_GAIN and memory fits.
    Returns the chosen size and the measured images/s per size tried."""

    candidates = [s for s in specs if packable(s)]
    if not candidates:
        return 1, {}
    backend.keras_ready()
    task, splits, arrays = task_arrays(dataset, candidates[0].protocol)
    input_shape = arrays["x_train"].shape[1:]
    spec = sorted(candidates, key=lambda s: (s.forward_flops(input_shape), s.key))[len(candidates) // 2]
    protocol = spec.protocol
    x, y = backend.resident(arrays["x_train"]), backend.resident(arrays["y_train"])
    order, weights = _probe_plan(protocol, len(splits.train), PROBE_STEPS)
    rates: dict[int, float] = {}
    best, size = 1, 1
    while size <= max(1, min(max_size, len(specs))):
        try:
            rates[size] = size * order.size / _timed_pack(spec, size, input_shape, task, arrays, x, y, order, weights)
        except Exception as err:  # out of memory: the last size that fitted
            if not _out_of_memory(err):
                raise
            break
        if size > 1 and rates[size] < rates[best] * PROBE_GAIN:
            break
        best, size = size, size * 2
    return best, rates


def step_seconds(spec: TrialSpec, dataset: Dataset, size: int = 1, steps: int = PROBE_STEPS) -> float:
    """Seconds one training step of `spec` takes on this process's device, per member of a
    pack of `size` copies (1: a lone trial), timed over `steps` steps after a first
    (compiling) call on `dataset`'s images. For `--dry-run`'s timing probe."""
    backend.keras_ready()
    task, splits, arrays = task_arrays(dataset, spec.protocol)
    input_shape = arrays["x_train"].shape[1:]
    protocol = spec.protocol
    x, y = backend.resident(arrays["x_train"]), backend.resident(arrays["y_train"])
    order, weights = _probe_plan(protocol, len(splits.train), steps)
    return _timed_pack(spec, size, input_shape, task, arrays, x, y, order, weights) / len(order) / size


def _probe_plan(protocol, n_train: int, steps: int):
    """`steps` steps of whole batches (the epoch's order repeated), and their weights."""
    order, weights = epoch_plan(protocol, 0, n_train, pad=True)
    if order.ndim == 1:  # flat (whole batches, or unpadded for batch normalisation): whole batches only
        order = order[: max(len(order) // protocol.batch_size, 1) * protocol.batch_size].reshape(-1, protocol.batch_size)
    reps = -(-steps // len(order))
    return np.tile(order, (reps, 1))[:steps], None if weights is None else np.tile(weights, (reps, 1))[:steps]


def _timed_pack(spec: TrialSpec, size: int, input_shape, task, arrays, x, y, order, weights) -> float:
    """Seconds a pack of `size` copies of `spec` takes for `order`'s steps, after a first
    (compiling) call; the models are cleared after."""
    names = [f"m{i}" for i in range(size)]
    try:
        members = [build_model(spec, input_shape, task, name=f"autoencoder_{i}") for i in range(size)]
        model = pack_model(members, names, input_shape, spec.protocol, make_loss(spec.protocol, arrays["y_train"]))
        loop = backend.train_loop(model, names)
        loop(x, y, order, weights)  # compile
        t0 = time.perf_counter()
        loop(x, y, order, weights)
        backend.synchronize(model)
        return time.perf_counter() - t0
    finally:
        members = model = loop = None
        backend.clear()


def _out_of_memory(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, MemoryError) or "resource_exhausted" in text or "resourceexhausted" in text or "out of memory" in text


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
    not checkpoint: after a crash, its unfinished members run again from the start. When a
    stop is requested (`sweep.stop`) it raises `Stopped` at its epoch end, with no rows.

    A member's `train_seconds` and `wall_seconds` are its share of the pack's (`time_shares`),
    plus, for the wall time, its own evaluation: the members' times add up to the pack's.
    """
    protocol = specs[0].protocol
    if any(s.protocol != protocol or s.data_id != specs[0].data_id for s in specs):
        raise ValueError("a pack's trials must share one protocol and one dataset")
    if not packable(specs[0]):
        raise ValueError("trials with reduce_lr_patience or mixed precision cannot be packed (see packable)")
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    outs = [trial_dir(results_dir, spec.key) for spec in specs]
    rows = [start_row(spec, started) for spec in specs]
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
    names = [f"m{i}" for i in range(len(specs))]
    trackers = [Tracker(protocol.epochs, protocol.early_stopping_patience) for _ in specs]
    best: list[Any] = [None] * len(specs)
    members: list[Any] = []
    shares = [1 / len(specs)] * len(specs)
    train_seconds = 0.0
    try:
        backend_name = backend.keras_ready()
        import keras

        task, splits, arrays = task_arrays(dataset, protocol)
        input_shape = arrays["x_train"].shape[1:]
        shares = time_shares(specs, input_shape)
        members = [build_model(spec, input_shape, task, name=f"autoencoder_{i}") for i, spec in enumerate(specs)]
        loss = make_loss(protocol, arrays["y_train"])
        pack = pack_model(members, names, input_shape, protocol, loss)
        for spec, row, member in zip(specs, rows, members):
            row.update(data_columns(spec, arrays, backend_name), pack_size=len(specs), resumed_from_epoch=None, params=int(member.count_params()))

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
                if not self.model.stop_training and requested() is not None:
                    raise Stopped([s.key for s in specs], epoch, checkpointed=False)

        if requested() is not None:
            raise Stopped([s.key for s in specs], None, checkpointed=False)
        t_fit = time.perf_counter()
        fit(pack, splits, arrays, task, protocol, 0, [PackTracker()], outputs=names)
        train_seconds = time.perf_counter() - t_fit
    except Stopped:
        members = best = []
        try:
            backend.clear()
        except Exception:  # cleaning up must never hide the stop
            pass
        raise
    except Exception as err:  # the whole pack failed (data, build, memory): every member says why
        for row, out in zip(rows, outs):
            record_failure(row, out, err)
        members = []
    common = time.perf_counter() - t0  # what the members did together, shared out by `shares`
    own = [0.0] * len(specs)  # what each did alone: its evaluation
    for i, (spec, row, out) in enumerate(zip(specs, rows, outs)):
        if not members:
            break
        t_own = time.perf_counter()
        try:
            row["train_seconds"] = shares[i] * train_seconds
            if best[i] is not None and trackers[i].stop_reason != "nan":
                members[i].set_weights(best[i])
            # Saved ready to evaluate, like a lone trial's (a fresh optimizer: the pack's moments are shared).
            compile_model(members[i], protocol, loss)
            evaluate(spec, members[i], task, splits, arrays, trackers[i], row, out, save_model)
        except Exception as err:
            record_failure(row, out, err)
        own[i] = time.perf_counter() - t_own
    members = best = []
    try:
        backend.clear()
    except Exception:  # cleaning up must never hide the trials' own outcome
        pass
    for spec, row, out, share, alone in zip(specs, rows, outs, shares, own):
        close_row(spec, row, out, time.perf_counter() - (share * common + alone))  # (its wall time: its share and its own)
    return rows
