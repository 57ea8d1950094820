"""Datasets: CIFAR-10/100 (read without running code), image folders, synthetic images;
splits and augmentation.

==============  ==============================================================
module          holds
==============  ==============================================================
`dataset`       `Dataset`: uint8 images and their content hash (`data_id`)
`cifar`         the official python-format files, through `SafeUnpickler`
`folder`        a directory of JPEG/PNG images
`synthetic`     smooth random images for tests and offline smoke runs
`load`          `load_dataset` / `dataset_for`: once per process
`splits`        train/validation/test splits, resizing, augmentation
==============  ==============================================================
"""

from sweep.data.cifar import CIFAR, SafeUnpickler, keras_cache_folder, read_cifar_file
from sweep.data.dataset import Dataset
from sweep.data.folder import load_folder
from sweep.data.load import DATASETS, TRAIN_IMAGES_ENV, dataset_for, load_dataset, repeated
from sweep.data.splits import SPLIT_SEED, Splits, augment, make_splits, resize

__all__ = [
    "CIFAR",
    "DATASETS",
    "Dataset",
    "SPLIT_SEED",
    "SafeUnpickler",
    "Splits",
    "TRAIN_IMAGES_ENV",
    "augment",
    "dataset_for",
    "keras_cache_folder",
    "load_dataset",
    "load_folder",
    "make_splits",
    "read_cifar_file",
    "repeated",
    "resize",
]
