"""A trial's arrays: the protocol's splits and the task's inputs and targets, made once per
process, so trials that differ only in architecture, seed or optimiser share them."""

from __future__ import annotations

import functools

import numpy as np

from sweep.data import Dataset, Splits, make_splits
from sweep.encodings import Task, task_for
from sweep.spec import TrainingProtocol

__all__ = ["clear_caches", "splits_for", "task_arrays"]


@functools.lru_cache(maxsize=8)
def _splits(dataset: Dataset, train_fraction: float, val_fraction: float, limit: int | None, size: int | None) -> Splits:
    return make_splits(dataset, train_fraction, val_fraction, limit, size)


def splits_for(dataset: Dataset, protocol: TrainingProtocol) -> Splits:
    """The protocol's splits of `dataset`, made once per process."""
    return _splits(dataset, protocol.train_fraction, protocol.val_fraction, protocol.train_limit, protocol.image_size)


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


def task_arrays(dataset: Dataset, protocol: TrainingProtocol) -> tuple[Task, Splits, dict[str, np.ndarray]]:
    """The task, the protocol's splits, and the task's inputs and targets of each split
    (`x_train`, `y_train`, `x_val`, `y_val`, `x_test`), computed once per process."""
    _, splits, arrays = _task_arrays(
        dataset,
        (protocol.task, protocol.encoding, protocol.loss),
        (protocol.train_fraction, protocol.val_fraction, protocol.train_limit, protocol.image_size),
    )  # the decoding temperature changes no input or target
    return task_for(protocol.task, protocol.encoding, protocol.loss, protocol.annealed_temperature), splits, arrays


def clear_caches() -> None:
    """Forget the cached splits and arrays (a test that changes a task must not see old ones)."""
    _task_arrays.cache_clear()
    _splits.cache_clear()
