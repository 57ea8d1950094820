"""Splits and augmentation: which images train, validate and test, and how they are varied.

`train_fraction` of the training images is selected by a fixed shuffle (`SPLIT_SEED`), so
replicates of a configuration with other seeds share one split; `val_fraction` of those
validate; the official test set tests. Augmentation transforms RGB images before a task
derives inputs and targets from them, so both move together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweep.data.dataset import Dataset

__all__ = ["SPLIT_SEED", "Splits", "augment", "make_splits", "resize"]

SPLIT_SEED = 20200401  # fixed, so replicates of a configuration (other seeds) share one split


@dataclass(frozen=True)
class Splits:
    """float32 images in [0, 1]: training, validation (carved from training) and test."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray



def make_splits(
    dataset: Dataset,
    train_fraction: float,
    val_fraction: float,
    train_limit: int | None = None,
    image_size: int | None = None,
) -> Splits:
    """Select `train_fraction` of the training images (deterministic shuffle), carve
    `val_fraction` of those off as validation, and scale everything to float32 [0, 1]."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(dataset.x_train))
    n_selected = max(2, int(round(train_fraction * len(order))))
    if train_limit is not None:
        n_selected = min(n_selected, train_limit)
    selected = order[:n_selected]
    n_val = max(1, int(round(val_fraction * n_selected)))
    train_idx, val_idx = np.sort(selected[n_val:]), np.sort(selected[:n_val])
    def scale(images: np.ndarray) -> np.ndarray:
        if image_size is not None and images.shape[1:3] != (image_size, image_size):
            images = resize(images, image_size)
        return images.astype(np.float32) / 255.0

    return Splits(scale(dataset.x_train[train_idx]), scale(dataset.x_train[val_idx]), scale(dataset.x_test))


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, size, size, 3) with Pillow's antialiased bicubic filter."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC)) for img in images])


def augment(images: np.ndarray, rng: np.random.Generator, flip: bool, rotation: float) -> np.ndarray:
    """Random horizontal flips (p = 0.5) and rotations uniform in [-rotation, rotation]
    degrees of float images (N, H, W, C), each image its own draw. Rotation is bilinear and
    fills the corners by reflection (Keras' RandomRotation default) rather than with black.
    Augment the RGB images before deriving inputs and targets, so both move together."""
    from scipy.ndimage import rotate

    out = np.array(images, copy=True)
    if flip:
        flipped = rng.random(len(out)) < 0.5
        out[flipped] = out[flipped, :, ::-1]
    if rotation:
        angles = rng.uniform(-rotation, rotation, size=len(out))
        for i, angle in enumerate(angles):
            out[i] = rotate(out[i], angle, axes=(1, 0), reshape=False, order=1, mode="reflect")
    return np.clip(out, 0.0, 1.0)
