"""The chroma gain: a colorizer's predicted colour scaled about gray, and its calibration.

A decoding option, not a protocol field (it changes no weights, so no trial key): the decoded
RGB image P becomes `clip(Y + s * (P - Y))`, Y the BT.601 luma the model was given (the
image's own), which scales the image's YCbCr chroma by s and keeps its luma and hue (every
chroma encoding decodes to that luma; gain 0 is the grayscale baseline). Hasler-Suesstrunk
colourfulness grows linearly with s until colours clip. Scaling about gray also scales each
image's mean colour, so a large gain turns a model's small average tint into a cast; `about=
"mean"` scales the chroma about each image's own mean chroma instead, `clip(Y + m + s * (P -
Y - m))` with m the image's mean of P - Y: the variation grows, the average colour stays the
model's (what a gain above about 1.4 needs to stay free of a cast on CIFAR-10: README).

Calibration: at the end of training each colorization trial fits on its validation split the
gain s* that minimises the RGB squared error of the decoded, clipped images. Before clipping
the error is a quadratic in s, smallest at the closed form s0 = sum<T - Y, P - Y> / sum|P - Y|^2
(T the truth); clipping bends it, so a bounded 1-D search around s0 refines it on the clipped
images. The error stays below the grayscale baseline's (s = 0, for a model that keeps the
luma) for every s between 0 and about 2 s*. The gain is stored beside the model
(`chroma_gain.json`, so a trial folder or an artefact copy carries it) and in the row
(`chroma_gain`; the row's headline metrics stay at gain 1), with the test split's PSNR and
colourfulness along a curve of gains (`gain_curve`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sweep.encodings import luminance
from sweep.files import atomic_write
from sweep.metrics import chroma_agreement, colorfulness, psnr

__all__ = ["ABOUT", "GAIN_FILE", "MAX_GAIN", "calibrate", "curve_at", "fit_gain", "gain_curve", "read_gain", "with_gain", "write_gain"]

ABOUT = ("gray", "mean")  # what the chroma is scaled about: neutral, or each image's own mean chroma
GAIN_FILE = "chroma_gain.json"  # beside model.keras in a trial's folder
MAX_GAIN = 8.0  # the search's upper bound, and the largest gain a user may ask for
RELATIVE = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5)  # the curve at these multiples of s* ...
ABSOLUTE = tuple(np.round(np.arange(0.25, 4.01, 0.25), 2))  # ... and at these gains (any gain in [0, 4] interpolates)


def with_gain(rgb: np.ndarray, gain: float, luma: np.ndarray | None = None, about: str = "gray") -> np.ndarray:
    """RGB images (..., H, W, 3) in [0, 1] with their chroma scaled by `gain` about gray (`luma`
    (..., H, W, 1), the luma the model was given; None: the images' own) or about each image's
    mean chroma (`about="mean"`), clipped."""
    rgb = np.asarray(rgb, np.float32)
    if gain == 1.0:
        return np.clip(rgb, 0.0, 1.0)
    luma = luminance(rgb) if luma is None else np.asarray(luma, np.float32)
    chroma = rgb - luma
    if about == "mean":
        centre = chroma.mean(axis=(-3, -2), keepdims=True)
        return np.clip(luma + centre + np.float32(gain) * (chroma - centre), 0.0, 1.0)
    if about != "gray":
        raise ValueError(f"about: one of {ABOUT}; got {about!r}")
    return np.clip(luma + np.float32(gain) * chroma, 0.0, 1.0)


def _error(truth: np.ndarray, pred: np.ndarray, gain: float) -> float:
    return float(np.mean((truth.astype(np.float64) - with_gain(pred, gain, luminance(truth))) ** 2))


def fit_gain(truth: np.ndarray, pred: np.ndarray) -> float:
    """The gain minimising the squared RGB error of `with_gain(pred, s)` about the truth's luma
    (the model's input) against `truth`: the closed form before clipping, refined on the
    clipped images by a bounded 1-D search."""
    from scipy.optimize import minimize_scalar

    truth64, pred64 = truth.astype(np.float64), pred.astype(np.float64)
    luma = luminance(truth).astype(np.float64)
    chroma = pred64 - luma
    power = float(np.sum(chroma**2))
    if power <= 1e-10 * chroma.size:  # a model that predicts gray (to rounding): no chroma to scale
        return 1.0
    closed = float(np.clip(np.sum((truth64 - luma) * chroma) / power, 0.0, MAX_GAIN))
    found = minimize_scalar(lambda s: _error(truth, pred, s), bounds=(0.0, min(MAX_GAIN, max(2.0, 2.5 * closed))), method="bounded", options={"xatol": 1e-3})
    best = float(found.x) if _error(truth, pred, float(found.x)) <= _error(truth, pred, closed) else closed
    return round(best, 4)


def gain_curve(truth: np.ndarray, pred: np.ndarray, gain: float) -> dict[str, list[float]]:
    """PSNR and colourfulness of `with_gain(pred, s)` for s at multiples of `gain`
    (0 to 2.5 s*) and on a fixed grid (0.25 to 4), sorted by s: what the report draws and reads."""
    gains = sorted({round(float(s), 4) for s in (*(r * gain for r in RELATIVE), *ABSOLUTE)})
    curve: dict[str, list[float]] = {"gain": gains, "psnr": [], "colorfulness": []}
    luma = luminance(truth)
    for s in gains:
        scaled = with_gain(pred, s, luma)
        curve["psnr"].append(round(psnr(truth, scaled), 5))
        curve["colorfulness"].append(round(colorfulness(scaled), 5))
    return curve


def curve_at(curve: dict[str, list[float]] | str | None, gain: float, name: str) -> float:
    """`name` ("psnr" or "colorfulness") at `gain`, interpolated linearly along a stored curve
    (NaN outside it or without one)."""
    if isinstance(curve, str):
        curve = json.loads(curve)
    if not curve or not curve.get("gain") or not (curve["gain"][0] <= gain <= curve["gain"][-1]):
        return math.nan
    return float(np.interp(gain, curve["gain"], curve[name]))


def calibrate(val_truth: np.ndarray, val_pred: np.ndarray, test_truth: np.ndarray, test_pred: np.ndarray) -> dict[str, Any]:
    """The row's calibration columns: s* fitted on the validation split, the test split's
    scores at s* and its gain curve."""
    gain = fit_gain(val_truth, val_pred)
    scaled = with_gain(test_pred, gain, luminance(test_truth))
    agreement = chroma_agreement(_ab(test_truth), _ab(scaled))
    return {
        "chroma_gain": gain,
        "test_psnr_at_gain": psnr(test_truth, scaled),
        "test_colorfulness_at_gain": colorfulness(scaled),
        "test_a_bias_at_gain": agreement["a_bias"],
        "test_b_bias_at_gain": agreement["b_bias"],
        "gain_curve": json.dumps(gain_curve(test_truth, test_pred, gain)),
    }


def _ab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab a*, b* (D65) of clipped RGB: what the row's colour metrics measure."""
    from skimage.color import rgb2lab

    return rgb2lab(np.clip(rgb, 0.0, 1.0).astype(np.float64))[..., 1:]


def write_gain(folder: Path, columns: dict[str, Any], n_val: int) -> None:
    """`chroma_gain.json` in a trial's folder: the gain and how it was fitted."""
    payload = {
        "chroma_gain": columns["chroma_gain"],
        "fitted_on": f"the validation split ({n_val} images): the RGB squared error of the decoded, clipped images",
        "decoding": "clip(Y + s * (P - Y)): P the decoded RGB, Y the BT.601 luma the model was given",
        "test_psnr_at_gain": columns.get("test_psnr_at_gain"),
        "test_colorfulness_at_gain": columns.get("test_colorfulness_at_gain"),
    }
    atomic_write(Path(folder) / GAIN_FILE, json.dumps(payload, indent=1))


def read_gain(folder: Path) -> float | None:
    """The calibrated gain stored in a trial's folder, or None (an older trial, or none written)."""
    path = Path(folder) / GAIN_FILE
    try:
        value = float(json.loads(path.read_text())["chroma_gain"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if math.isfinite(value) and value >= 0 else None
