"""Image-quality metrics, one convention each, on float images in [0, 1] of shape (N, H, W, C).

PSNR convention (used everywhere in sweep): computed from the dataset-level MSE,
``10 * log10(1 / MSE)`` over every pixel of the evaluated split. It needs no cap for
images that happen to be reproduced exactly, and it ranks models exactly as MSE does.

SSIM: scikit-image's `structural_similarity` per image (7x7 Gaussian-free window, the
library's defaults, channels treated separately), averaged over images.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["image_metrics", "mae", "mse", "psnr", "ssim"]


def mse(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean((truth.astype(np.float64) - pred.astype(np.float64)) ** 2))


def mae(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(truth.astype(np.float64) - pred.astype(np.float64))))


def psnr(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dataset-level PSNR in dB for images in [0, 1]; +inf only if every pixel is exact."""
    error = mse(truth, pred)
    return math.inf if error == 0 else 10.0 * math.log10(1.0 / error)


def ssim(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-image SSIM (scikit-image), data range 1."""
    from skimage.metrics import structural_similarity

    channel_axis = -1 if truth.ndim == 4 and truth.shape[-1] > 1 else None
    scores = [
        structural_similarity(t.squeeze(), p.squeeze(), data_range=1.0, channel_axis=channel_axis)
        for t, p in zip(truth.astype(np.float64), pred.astype(np.float64))
    ]
    return float(np.mean(scores))


def image_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MSE, MAE, PSNR and SSIM of predictions clipped to [0, 1]."""
    pred = np.clip(pred, 0.0, 1.0)
    return {"mse": mse(truth, pred), "mae": mae(truth, pred), "psnr": psnr(truth, pred), "ssim": ssim(truth, pred)}
