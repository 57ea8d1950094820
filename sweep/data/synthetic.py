"""A synthetic dataset: smooth random colour images, for tests and offline smoke runs."""

from __future__ import annotations

import numpy as np

from sweep.data.dataset import Dataset

__all__ = ["synthetic"]


def synthetic(n_train: int = 512, n_test: int = 128, size: int = 32) -> Dataset:
    """Smooth random colour images: offline, deterministic, and learnable by a small model."""
    rng = np.random.default_rng(12345)
    n = n_train + n_test
    grid = np.linspace(0.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    freq = rng.uniform(0.5, 3.0, size=(n, 3, 2, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 3, 1, 1)).astype(np.float32)
    waves = np.sin(2 * np.pi * (freq[:, :, 0] * xx + freq[:, :, 1] * yy) + phase)
    base = rng.uniform(0.2, 0.8, size=(n, 3, 1, 1)).astype(np.float32)
    images = np.clip(base + 0.25 * waves, 0.0, 1.0).transpose(0, 2, 3, 1)
    images = (images * 255).round().astype(np.uint8)
    return Dataset("synthetic", images[:n_train], images[n_train:], "synthetic (seeded)")

