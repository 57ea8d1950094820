"""Loading a dataset once per process: by name, by protocol, or repeated to a size.

Datasets are cached per process (`load_dataset`), so a worker that runs many trials reads
its data once.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from sweep.data.cifar import CIFAR, load_cifar
from sweep.data.dataset import Dataset
from sweep.data.folder import load_folder
from sweep.data.synthetic import synthetic
from sweep.errors import DataError, did_you_mean
from sweep.faults import failpoint

__all__ = ["DATASETS", "TRAIN_IMAGES_ENV", "dataset_for", "load_dataset", "repeated"]

DATASETS = ("cifar10", "cifar100", "folder", "synthetic")
TRAIN_IMAGES_ENV = "SWEEP_TRAIN_IMAGES"  # benchmarks: repeat the training images up to this many


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str | None = None, image_size: int | None = None) -> Dataset:
    """Load a dataset once per process. `data_dir=None` downloads CIFAR through Keras;
    `image_size` is used by folder datasets only (CIFAR is resized in `make_splits`)."""
    failpoint("data.load")
    if name == "synthetic":
        return synthetic()
    if name == "folder":
        return load_folder(data_dir, image_size)
    if name not in CIFAR:
        raise DataError(did_you_mean("dataset", name, DATASETS))
    return load_cifar(name, data_dir)


def dataset_for(protocol, data_dir: str | None = None) -> Dataset:
    """The dataset a protocol trains on, loaded once per process. With $SWEEP_TRAIN_IMAGES
    set (by `python -m sweep.bench --train-images`), its training images are repeated
    cyclically up to that count, so a small local subset can stand in for a full-size run."""
    size = protocol.image_size if protocol.dataset == "folder" else None
    dataset = load_dataset(protocol.dataset, data_dir, size)
    wanted = os.environ.get(TRAIN_IMAGES_ENV)
    return repeated(dataset, int(wanted)) if wanted else dataset


@functools.lru_cache(maxsize=4)
def repeated(dataset: Dataset, n_train: int) -> Dataset:
    """`dataset` with its training images repeated cyclically (or cut) to `n_train`; its
    `data_id` says so, since the content differs."""
    index = np.arange(n_train) % len(dataset.x_train)
    return Dataset(f"{dataset.name}-repeated", dataset.x_train[index], dataset.x_test, dataset.source)
