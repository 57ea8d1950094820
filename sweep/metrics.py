"""Image-quality metrics, one convention each, on float images in [0, 1] of shape (N, H, W, C).

PSNR convention (used everywhere in sweep): computed from the dataset-level MSE,
``10 * log10(1 / MSE)`` over every pixel of the evaluated split. It needs no cap for
images that happen to be reproduced exactly, and it ranks models exactly as MSE does.

SSIM: scikit-image's `structural_similarity` per image (7x7 Gaussian-free window, the
library's defaults, channels treated separately), averaged over images; computed for many
images at once with the library's formula (`ssim`; a test holds it to the library's values).

Colour (colorization), on the final RGB clipped to [0, 1] and converted to CIE Lab (D65):

- ``ab_rmse``: root of the mean squared per-pixel ab distance, over every pixel of the split
  (dataset level, like PSNR).
- ``ab_auc``: Zhang et al.'s (2016) raw accuracy: the fraction of pixels whose ab distance
  is within a threshold, swept over thresholds 0..150 and integrated (trapezoid),
  normalised to [0, 1]; 1 is perfect.
- ``colorfulness``: Hasler & Suesstrunk's (2003) M = sigma_rgyb + 0.3 mu_rgyb per image on
  the 0-255 scale (their "not colourful" is below 15, "extremely colourful" above 109),
  averaged over images; reported for the prediction and the ground truth.
- ``a_slope``, ``b_slope``, ``a_corr``, ``b_corr``, ``a_bias``, ``b_bias``: the predicted
  a*, b* against the true ones over every pixel (least-squares slope, correlation, mean
  offset), the evidence of why an encoding fails: a slope near 0 is a model that paints one
  colour whatever the truth, a bias a colour cast (`chroma_agreement`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ab_auc", "ab_errors", "ab_rmse", "chroma_agreement", "colorfulness", "colour_metrics", "image_metrics", "mae", "mse", "psnr", "ssim"]

AUC_MAX_THRESHOLD = 150  # ab units, as Zhang et al. sweep them


def mse(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean((truth.astype(np.float64) - pred.astype(np.float64)) ** 2))


def mae(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(truth.astype(np.float64) - pred.astype(np.float64))))


def psnr(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dataset-level PSNR in dB for images in [0, 1]; +inf only if every pixel is exact."""
    error = mse(truth, pred)
    return math.inf if error == 0 else 10.0 * math.log10(1.0 / error)


SSIM_WINDOW = 7  # scikit-image's default window: 7x7, uniform
SSIM_CHUNK = 256  # images per vectorised pass (bounds the float64 temporaries)


def ssim(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-image SSIM with scikit-image's `structural_similarity` defaults (7x7 uniform
    window, sample covariance, K1 0.01, K2 0.03, data range 1, channels separately, the
    mean over the window positions that fit inside the image), computed for many images at
    once: the same values as scikit-image's image-by-image loop to 1e-10, several times faster."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.ndim == 3:
        truth, pred = truth[..., None], pred[..., None]
    if min(truth.shape[1:3]) < SSIM_WINDOW:  # scikit-image's own error for images this small
        from skimage.metrics import structural_similarity

        return float(structural_similarity(truth[0], pred[0], data_range=1.0, channel_axis=-1))
    total = 0.0
    for start in range(0, len(truth), SSIM_CHUNK):
        scores = _ssim_maps(truth[start : start + SSIM_CHUNK].astype(np.float64), pred[start : start + SSIM_CHUNK].astype(np.float64))
        total += scores.mean(axis=(1, 2, 3)).sum()  # each image: the mean over its positions and channels
    return float(total / len(truth))


def _ssim_maps(x: np.ndarray, y: np.ndarray, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """SSIM at every window position inside (N, H, W, C) images: scikit-image's formula."""
    count = SSIM_WINDOW**2
    cov_norm = count / (count - 1)
    ux, uy = _window_mean(x), _window_mean(y)
    vx = cov_norm * (_window_mean(x * x) - ux * ux)
    vy = cov_norm * (_window_mean(y * y) - uy * uy)
    vxy = cov_norm * (_window_mean(x * y) - ux * uy)
    c1, c2 = k1**2, k2**2  # data range 1
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def _window_mean(a: np.ndarray) -> np.ndarray:
    """The mean of every SSIM_WINDOW x SSIM_WINDOW window inside (N, H, W, C) images (the
    positions whose window fits, which are all scikit-image averages): two 1-D running means."""
    from scipy.ndimage import uniform_filter1d

    w, pad = SSIM_WINDOW, SSIM_WINDOW // 2
    a = uniform_filter1d(a, w, axis=1)[:, pad : a.shape[1] - pad]
    return uniform_filter1d(a, w, axis=2)[:, :, pad : a.shape[2] - pad]


def image_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MSE, MAE, PSNR and SSIM of predictions clipped to [0, 1]."""
    pred = np.clip(pred, 0.0, 1.0)
    return {"mse": mse(truth, pred), "mae": mae(truth, pred), "psnr": psnr(truth, pred), "ssim": ssim(truth, pred)}


def _ab(rgb: np.ndarray) -> np.ndarray:
    """The a*, b* channels (CIE Lab, D65) of RGB images in [0, 1] (clipped), shape (..., 2)."""
    from skimage.color import rgb2lab

    return rgb2lab(np.clip(rgb, 0.0, 1.0).astype(np.float64))[..., 1:]


def _distances(ab_truth: np.ndarray, ab_pred: np.ndarray) -> np.ndarray:
    return np.sqrt(((ab_truth - ab_pred) ** 2).sum(axis=-1)).ravel()


def ab_errors(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean distance in the ab plane of CIE Lab, flattened."""
    return _distances(_ab(truth), _ab(pred))


def chroma_agreement(ab_truth: np.ndarray, ab_pred: np.ndarray) -> dict[str, float]:
    """How the predicted chroma follows the true one, per channel (a*, b*) over every pixel:
    the least-squares slope of predicted on true (1: the truth's full range; 0: one colour
    whatever the truth, the desaturated or "brown" result), the Pearson correlation (NaN
    when either is constant) and the bias, the mean predicted minus the mean true value (a
    colour cast: b* > 0 is yellow, a* > 0 red, so a brown tone is both positive)."""
    out = {}
    for index, channel in enumerate("ab"):
        t, p = ab_truth[..., index].ravel(), ab_pred[..., index].ravel()
        dt, dp = t - t.mean(), p - p.mean()
        var_t, var_p = float(dt @ dt), float(dp @ dp)
        out[f"{channel}_slope"] = float(dt @ dp / var_t) if var_t > 0 else math.nan
        out[f"{channel}_corr"] = float(dt @ dp / math.sqrt(var_t * var_p)) if var_t > 0 and var_p > 1e-12 * var_t else math.nan
        out[f"{channel}_bias"] = float(p.mean() - t.mean())
    return out


def ab_rmse(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean(ab_errors(truth, pred) ** 2)))


def _auc(errors: np.ndarray, max_threshold: int = AUC_MAX_THRESHOLD) -> float:
    thresholds = np.arange(max_threshold + 1, dtype=np.float64)
    within = np.searchsorted(np.sort(errors), thresholds, side="right") / len(errors)
    return float(np.trapezoid(within, thresholds) / max_threshold)


def ab_auc(truth: np.ndarray, pred: np.ndarray, max_threshold: int = AUC_MAX_THRESHOLD) -> float:
    """Area under the cumulative curve of per-pixel ab error over thresholds 0..max, in [0, 1]."""
    return _auc(ab_errors(truth, pred), max_threshold)


def colorfulness(rgb: np.ndarray) -> float:
    """Mean Hasler-Suesstrunk colourfulness of images (N, H, W, 3) in [0, 1], on the 0-255 scale."""
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float64) * 255.0
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    axes = (1, 2)
    sigma = np.sqrt(rg.var(axis=axes) + yb.var(axis=axes))
    mu = np.sqrt(rg.mean(axis=axes) ** 2 + yb.mean(axis=axes) ** 2)
    return float(np.mean(sigma + 0.3 * mu))


def colour_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """ab RMSE, ab AuC, the colourfulness of the prediction and of the truth, and how the
    predicted chroma follows the true one (`chroma_agreement`), on clipped RGB."""
    ab_truth, ab_pred = _ab(truth), _ab(pred)
    errors = _distances(ab_truth, ab_pred)
    return {
        "ab_rmse": float(np.sqrt(np.mean(errors**2))),
        "ab_auc": _auc(errors),
        "colorfulness": colorfulness(pred),
        "colorfulness_truth": colorfulness(truth),
        **chroma_agreement(ab_truth, ab_pred),
    }
