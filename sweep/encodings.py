"""Tasks: what a model sees and what it must predict, with the exact way back to RGB.

A `Task` turns RGB images (float32 in [0, 1], shape (N, H, W, 3)) into model inputs and
targets, and turns model outputs back into RGB, so every metric is computed on RGB images
whatever the task and encoding.

Colorization (`task_for("colorize", encoding)`): the model sees the ITU-R BT.601 luma
``y = 0.299 R + 0.587 G + 0.114 B`` (the seeds' ``rgb2gray``) and predicts the colour in
one of five encodings. Every encoding maps to targets in [0, 1], so a sigmoid output can
reach all of them, and has an exact inverse given the luma:

==========  ========  ===================================================================
encoding    channels  target (all in [0, 1])
==========  ========  ===================================================================
rgb         3         R, G, B (seeds 000/001/004)
ycbcr       2         JPEG full-range Cb, Cr: scikit-image's YPbPr chroma + 0.5 (seed 002, 1)
lab         2         CIE a*, b* (D65) as ab / 256 + 0.5 (seed 003's future work)
rgb_diff    3         (C - m) * 3/4 + 1/2 for C in R, G, B, m the channel mean (seed 002, 3)
ratio       3         (C + eps) / (m + eps) / 3, m the channel mean (seed 002, 2)
==========  ========  ===================================================================

The way back keeps the input's luma: ycbcr recombines Cb, Cr with Y = y; rgb_diff and
ratio recover the channel mean from y (``y = w . C`` and the weights sum to 1); lab takes
the lightness L* at which (L*, a*, b*) has luma y, found by a bracketed 1-D solve (luma
grows monotonically with L* at fixed a*b*). Only `rgb` ignores the input.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sweep.errors import SpecError, did_you_mean

__all__ = [
    "ENCODINGS",
    "TASKS",
    "ABClassificationTask",
    "Encoding",
    "Task",
    "ab_bin_index",
    "ab_bins",
    "annealed_mean",
    "gray_baseline",
    "luminance",
    "rebalancing_weights",
    "task_for",
]

BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # the seeds' rgb2gray weights
_BT601_64 = BT601.astype(np.float64)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of RGB in [0, 1], keeping a channel axis: (N, H, W, 1)."""
    return (rgb @ BT601)[..., None].astype(np.float32)


def gray_baseline(rgb: np.ndarray) -> np.ndarray:
    """The zero-chroma colorization: the luma copied into R, G and B."""
    return np.repeat(luminance(rgb), 3, axis=-1)


class Encoding:
    """How a colorization target represents colour. `decode(encode(rgb), y)` returns `rgb`."""

    name: ClassVar[str]
    channels: ClassVar[int]

    def encode(self, rgb: np.ndarray) -> np.ndarray:
        """RGB (..., 3) in [0, 1] -> float32 targets (..., channels) in [0, 1]."""
        raise NotImplementedError

    def decode(self, targets: np.ndarray, luma: np.ndarray) -> np.ndarray:
        """Targets (..., channels) and the luma (..., 1) -> float32 RGB (unclipped)."""
        raise NotImplementedError


class RGBEncoding(Encoding):
    name = "rgb"
    channels = 3

    def encode(self, rgb):
        return np.asarray(rgb, dtype=np.float32)

    def decode(self, targets, luma):
        return np.asarray(targets, dtype=np.float32)


class YCbCrEncoding(Encoding):
    """JPEG's full-range YCbCr. scikit-image's YPbPr has exactly JPEG's coefficients, with
    Pb, Pr in [-0.5, 0.5]; JPEG's Cb, Cr are those plus 0.5. (`skimage.color.rgb2ycbcr` is
    the studio range 16-235 and `tf.image.rgb_to_yuv` analog YUV: neither is JPEG's.)"""

    name = "ycbcr"
    channels = 2

    def encode(self, rgb):
        from skimage.color import rgb2ypbpr

        return (rgb2ypbpr(np.asarray(rgb, dtype=np.float64))[..., 1:] + 0.5).astype(np.float32)

    def decode(self, targets, luma):
        from skimage.color import ypbpr2rgb

        ypbpr = np.concatenate([np.asarray(luma, np.float64), np.asarray(targets, np.float64) - 0.5], axis=-1)
        return ypbpr2rgb(ypbpr).astype(np.float32)


AB_SCALE = 256.0  # lab targets are ab / 256 + 0.5: every a*, b* of sRGB (|ab| < 110) lands inside [0, 1]


class LabEncoding(Encoding):
    """CIE L*a*b* (D65, 2 degrees) through scikit-image; the model predicts a*, b*."""

    name = "lab"
    channels = 2

    def encode(self, rgb):
        from skimage.color import rgb2lab

        return (rgb2lab(np.asarray(rgb, dtype=np.float64))[..., 1:] / AB_SCALE + 0.5).astype(np.float32)

    def decode(self, targets, luma):
        ab = (np.asarray(targets, np.float64) - 0.5) * AB_SCALE
        return lab_to_rgb_with_luma(ab, np.asarray(luma, np.float64)[..., 0]).astype(np.float32)


DIFF_SCALE = 0.75  # C - m lies in [-2/3, 2/3]; times 3/4 plus 1/2 maps it onto [0, 1]


class RGBDiffEncoding(Encoding):
    """Each channel minus the channel mean m = (R + G + B) / 3 (seed 002's approach 3)."""

    name = "rgb_diff"
    channels = 3

    def encode(self, rgb):
        rgb = np.asarray(rgb, dtype=np.float64)
        diff = rgb - rgb.mean(axis=-1, keepdims=True)
        return (diff * DIFF_SCALE + 0.5).astype(np.float32)

    def decode(self, targets, luma):
        diff = (np.asarray(targets, np.float64) - 0.5) / DIFF_SCALE
        mean = np.asarray(luma, np.float64) - (diff @ _BT601_64)[..., None]  # y = w . (diff + m), sum(w) = 1
        return (diff + mean).astype(np.float32)


RATIO_EPS = 1.0 / 255  # one 8-bit step: keeps the denominator away from zero, black maps to ratio 1


class RatioEncoding(Encoding):
    """Each channel over the channel mean, (C + eps) / (m + eps), divided by its maximum of 3
    (seed 002's approach 2). A black pixel has ratios (1, 1, 1): neutral."""

    name = "ratio"
    channels = 3

    def encode(self, rgb):
        rgb = np.asarray(rgb, dtype=np.float64)
        ratio = (rgb + RATIO_EPS) / (rgb.mean(axis=-1, keepdims=True) + RATIO_EPS)
        return (ratio / 3.0).astype(np.float32)

    def decode(self, targets, luma):
        ratio = np.asarray(targets, np.float64) * 3.0
        weighted = np.maximum(ratio @ _BT601_64, 1e-6)[..., None]  # w . ratio = (y + eps) / (m + eps)
        mean_eps = (np.asarray(luma, np.float64) + RATIO_EPS) / weighted
        return (ratio * mean_eps - RATIO_EPS).astype(np.float32)


ENCODINGS: dict[str, Encoding] = {
    e.name: e for e in (RGBEncoding(), YCbCrEncoding(), LabEncoding(), RGBDiffEncoding(), RatioEncoding())
}
TASKS = ("reconstruct", "colorize")


def _luma_of_lab(lightness: np.ndarray, ab: np.ndarray) -> np.ndarray:
    from skimage.color import lab2rgb

    lab = np.concatenate([lightness[:, None, None], ab[:, None, :]], axis=-1)
    with warnings.catch_warnings():  # predicted a*b* may leave the gamut; lab2rgb clips and says so
        warnings.simplefilter("ignore")
        return lab2rgb(lab)[:, 0, :] @ _BT601_64


def lightness_for_luma(ab: np.ndarray, luma: np.ndarray, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """L* in [0, 100] at which the sRGB colour (L*, a*, b*) has BT.601 luma `luma`.

    Luma grows monotonically with L* at fixed a*b*, so each pixel's root is bracketed by
    [0, 100] and found by the Illinois variant of false position; a luma no lightness
    reaches (out-of-gamut predictions) gets the nearer end. Converged pixels drop out, so
    a CIFAR-sized batch costs about eight colour conversions.
    """
    shape = luma.shape
    ab = np.asarray(ab, np.float64).reshape(-1, 2)
    target = np.asarray(luma, np.float64).reshape(-1)
    result = np.empty_like(target)
    lo, hi = np.zeros_like(target), np.full_like(target, 100.0)
    f_lo, f_hi = _luma_of_lab(lo, ab) - target, _luma_of_lab(hi, ab) - target
    result[f_lo >= 0] = 0.0
    result[f_hi <= 0] = 100.0
    active = np.flatnonzero((f_lo < 0) & (f_hi > 0))
    lo, hi, f_lo, f_hi, ab, target = lo[active], hi[active], f_lo[active], f_hi[active], ab[active], target[active]
    for _ in range(max_iter):
        if not len(active):
            break
        mid = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        f_mid = _luma_of_lab(mid, ab) - target
        crossed = f_mid * f_hi < 0
        lo, f_lo = np.where(crossed, hi, lo), np.where(crossed, f_hi, f_lo / 2)  # Illinois: halve the stale end
        hi, f_hi = mid, f_mid
        done = np.abs(f_hi) <= tol
        result[active[done]] = hi[done]
        keep = ~done
        active, lo, hi, f_lo, f_hi, ab, target = (v[keep] for v in (active, lo, hi, f_lo, f_hi, ab, target))
    result[active] = hi
    return result.reshape(shape)


def lab_to_rgb_with_luma(ab: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """sRGB from predicted a*b* (..., 2) and the given luma (...): the colour with that chroma
    whose BT.601 luma is the input's."""
    from skimage.color import lab2rgb

    lightness = lightness_for_luma(ab, luma)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lab2rgb(np.concatenate([lightness[..., None], ab], axis=-1))


# --- ab classification (Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016) ---

AB_GRID = 10  # the paper's quantisation step in ab space
AB_SIGMA = 5.0  # Gaussian width (ab units) of the soft encoding and of the prior's smoothing
AB_NEIGHBOURS = 5  # soft encoding over the 5 nearest bins
REBALANCE_LAMBDA = 0.5  # mix of the smoothed prior with the uniform distribution
ANNEALED_T = 0.38  # temperature of the annealed-mean decoding
_GRID_HALF = 13  # lookup table over grid points -130 .. 130 in a and b


@functools.cache
def ab_bins() -> np.ndarray:
    """Centres (Q, 2) of the in-gamut ab bins: every grid-10 cell that some sRGB colour
    (the cube sampled at 64 levels per channel) falls into. Q = 261 here; the paper's 313
    counts a wider gamut at 224 px."""
    from skimage.color import rgb2lab

    levels = np.linspace(0.0, 1.0, 64)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    ab = rgb2lab(cube).reshape(-1, 3)[:, 1:]
    cells = np.unique(np.round(ab / AB_GRID).astype(int), axis=0)
    return (cells * AB_GRID).astype(np.float64)


@functools.cache
def _nearest_bin_table() -> np.ndarray:
    centres = ab_bins()
    axis = np.arange(-_GRID_HALF, _GRID_HALF + 1) * AB_GRID
    points = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 1, 2)
    nearest = np.argmin(((points - centres[None]) ** 2).sum(-1), axis=1)
    return nearest.reshape(len(axis), len(axis))


def ab_bin_index(ab: np.ndarray) -> np.ndarray:
    """Index of the in-gamut bin nearest to each a*b* pair (..., 2)."""
    cell = np.clip(np.round(np.asarray(ab) / AB_GRID).astype(int), -_GRID_HALF, _GRID_HALF) + _GRID_HALF
    return _nearest_bin_table()[cell[..., 0], cell[..., 1]]


def rebalancing_weights(targets: np.ndarray, lam: float = REBALANCE_LAMBDA, sigma: float = AB_SIGMA) -> np.ndarray:
    """Per-bin loss weights from lab targets (..., 2): the empirical bin distribution,
    smoothed with a Gaussian of `sigma` ab units, mixed with the uniform one by `lam`,
    inverted and normalised so that its expectation under the smoothed prior is 1."""
    from scipy.ndimage import gaussian_filter

    centres = ab_bins()
    q = len(centres)
    ab = (np.asarray(targets, np.float64) - 0.5) * AB_SCALE
    counts = np.bincount(ab_bin_index(ab).ravel(), minlength=q).astype(np.float64)
    cells = (centres / AB_GRID).astype(int) + _GRID_HALF
    grid = np.zeros((2 * _GRID_HALF + 1,) * 2)
    grid[cells[:, 0], cells[:, 1]] = counts / counts.sum()
    smooth = gaussian_filter(grid, sigma / AB_GRID, mode="constant")[cells[:, 0], cells[:, 1]]
    prior = smooth / smooth.sum()
    weights = 1.0 / ((1.0 - lam) * prior + lam / q)
    return (weights / (prior * weights).sum()).astype(np.float32)


def annealed_mean(logits: np.ndarray, temperature: float = ANNEALED_T) -> np.ndarray:
    """a*b* (..., 2) from bin logits (..., Q): the mean of the distribution re-sharpened by
    `temperature` (1 gives the mean, towards 0 the mode)."""
    p = np.asarray(logits, np.float32) / np.float32(temperature)  # float32, in place: logits are large
    p -= p.max(axis=-1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ ab_bins().astype(np.float32)


# --- tasks ---


@dataclass(frozen=True)
class Task:
    name: str
    encoding: str
    input_channels: int
    output_channels: int

    def inputs(self, rgb: np.ndarray) -> np.ndarray:
        return rgb if self.name == "reconstruct" else luminance(rgb)

    def targets(self, rgb: np.ndarray) -> np.ndarray:
        return rgb if self.name == "reconstruct" else ENCODINGS[self.encoding].encode(rgb)

    def to_rgb(self, outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """Model outputs back to RGB in [0, 1]; colorization recombines them with the input luma."""
        if self.name == "reconstruct":
            return np.clip(outputs, 0.0, 1.0)
        return np.clip(ENCODINGS[self.encoding].decode(outputs, inputs), 0.0, 1.0)


@dataclass(frozen=True)
class ABClassificationTask(Task):
    """Colorization as classification over the in-gamut ab bins: targets stay the lab
    encoding's a*b* (the loss soft-encodes them), outputs are per-bin logits decoded by the
    annealed mean and recombined with the input luma."""

    temperature: float = ANNEALED_T

    def to_rgb(self, outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        targets = annealed_mean(outputs, self.temperature) / AB_SCALE + 0.5
        return np.clip(ENCODINGS["lab"].decode(targets, inputs), 0.0, 1.0)


def task_for(task: str, encoding: str = "rgb", loss: str | None = None, temperature: float = ANNEALED_T) -> Task:
    """The task a protocol trains: `loss="ab_classification"` makes lab colorization a
    classification over ab bins, decoded by the annealed mean at `temperature`."""
    if task == "reconstruct":
        if encoding != "rgb":
            raise SpecError(f"encoding {encoding!r} needs task 'colorize'; reconstruction predicts rgb")
        return Task("reconstruct", "rgb", 3, 3)
    if task != "colorize":
        raise SpecError(did_you_mean("task", task, TASKS))
    if encoding not in ENCODINGS:
        raise SpecError(did_you_mean("encoding", encoding, ENCODINGS))
    if loss == "ab_classification":
        if encoding != "lab":
            raise SpecError("loss 'ab_classification' needs task 'colorize' with encoding 'lab'")
        return ABClassificationTask("colorize", "lab", 1, len(ab_bins()), temperature)
    return Task("colorize", encoding, 1, ENCODINGS[encoding].channels)
