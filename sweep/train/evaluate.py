"""Scoring a trained model: predictions back to RGB, every metric of the row, the grayscale
baseline, and the artefacts a trial leaves (model, reconstructions, history)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from sweep.chroma import calibrate, write_gain
from sweep.data import Splits
from sweep.encodings import Task, gray_baseline
from sweep.errors import did_you_mean
from sweep.faults import failpoint
from sweep.metrics import colour_metrics, image_metrics, mae, mse, psnr, ssim
from sweep.spec import TrialSpec
from sweep.train.epochs import Tracker
from sweep.train.step import chunk_size

__all__ = ["PER_EPOCH", "evaluate", "gray_scores", "predict_rgb", "save_gallery", "validation_metric"]


def predict_rgb(model, x: np.ndarray, task: Task) -> np.ndarray:
    """The model's RGB images for inputs `x`, decoded in chunks sized by the output, from the
    device-resident `x` (`sweep.backend.resident`: pass the cached task arrays). Called
    eagerly: one forward pass per chunk costs less than tracing a predict function."""
    import keras

    from sweep import backend

    chunk = chunk_size(x, task.output_channels)
    on_device = backend.resident(x)
    parts = []
    for i in range(0, len(x), chunk):
        output = keras.ops.convert_to_numpy(model(on_device[i : i + chunk], training=False)).astype(np.float32)
        parts.append(task.to_rgb(output, x[i : i + chunk]))
    return np.concatenate(parts)


PER_EPOCH = {"val_mse": mse, "val_mae": mae, "val_psnr": psnr, "val_ssim": ssim}  # what `validation_metric` measures


def validation_metric(model, name: str, task: Task, splits: Splits, arrays: dict[str, np.ndarray]) -> float:
    """A validation metric of the model as it is now (after an epoch), computed as the row's
    column of that name is (on the clipped RGB images): one of `PER_EPOCH`, which are the
    values the results schema names as tracking a metric epoch by epoch."""
    if name not in PER_EPOCH:
        raise ValueError(did_you_mean("per-epoch value", name, PER_EPOCH))
    return PER_EPOCH[name](splits.val, predict_rgb(model, arrays["x_val"], task))


_GRAY_SCORES: dict[int, tuple[np.ndarray, dict[str, float]]] = {}  # id(split) -> (split, scores), the last 8


def gray_scores(truth: np.ndarray) -> dict[str, float]:
    """The grayscale baseline's scores (luma copied to RGB), once per evaluated split."""
    cached = _GRAY_SCORES.get(id(truth))
    if cached is None or cached[0] is not truth:
        gray = gray_baseline(truth)
        cached = (truth, {**image_metrics(truth, gray), **colour_metrics(truth, gray)})
        _GRAY_SCORES[id(truth)] = cached
        while len(_GRAY_SCORES) > 8:
            del _GRAY_SCORES[next(iter(_GRAY_SCORES))]
    return cached[1]


def evaluate(
    spec: TrialSpec,
    model,
    task: Task,
    splits: Splits,
    arrays: dict[str, np.ndarray],
    tracker: Tracker,
    row: dict[str, Any],
    out: Path,
    save_model: bool,
) -> None:
    """Fill `row` with the trained model's scores and write its artefacts (the model holds its
    best weights already). Raises if training diverged."""
    history = tracker.history
    row.update(
        epochs_run=len(history),
        best_epoch=tracker.best_epoch + 1 if tracker.best_epoch >= 0 else None,
        stop_reason=tracker.stop_reason,
        history=json.dumps(history),
    )
    t0 = time.perf_counter()
    if tracker.stop_reason == "nan" or not history:
        bad = next((i + 1 for i, h in enumerate(history) if not math.isfinite(h.get("loss", math.nan))), len(history))
        raise FloatingPointError(f"loss became NaN or infinite in epoch {max(bad, 1)}")
    val_rgb = predict_rgb(model, arrays["x_val"], task)
    test_rgb = predict_rgb(model, arrays["x_test"], task)
    for name, value in image_metrics(splits.val, val_rgb).items():
        row[f"val_{name}"] = value
    for name, value in image_metrics(splits.test, test_rgb).items():
        row[f"test_{name}"] = value
    if spec.protocol.task == "colorize":  # colour error, and what zero chroma would have scored
        for name, value in colour_metrics(splits.test, test_rgb).items():
            row[f"test_{name}"] = value
        for name, value in gray_scores(splits.test).items():
            row[f"test_gray_{name}"] = value
        calibration = calibrate(splits.val, val_rgb, splits.test, test_rgb)  # the chroma gain s*, and the test split along gains
        row.update(calibration)
        write_gain(out, calibration, len(splits.val))
    if save_model:
        model.save(out / "model.keras")
    save_gallery(out / "reconstructions.png", arrays["x_test"], splits.test, test_rgb)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    failpoint("trial.artifacts_saved", spec.key)
    row["eval_seconds"] = time.perf_counter() - t0
    row["status"] = "pruned" if tracker.stop_reason == "pruned" else "complete"


def save_gallery(path: Path, inputs: np.ndarray, truth: np.ndarray, pred: np.ndarray, n: int = 8) -> None:
    """A PNG of `n` test images: originals above predictions (grayscale inputs on top when
    colorizing), each scaled up 3x. Written with Pillow: a figure per trial in matplotlib
    costs more than training a small model for an epoch."""
    from PIL import Image

    n = min(n, len(truth))
    rows = ([inputs] if inputs.shape[-1] == 1 else []) + [truth, pred]
    tiles = []
    for images in rows:
        images = np.clip(images[:n], 0, 1)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        tiles.append(np.concatenate(list(images), axis=1))  # one strip of n images
    grid = (np.concatenate(tiles, axis=0) * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(grid)
    image.resize((image.width * 3, image.height * 3), Image.Resampling.NEAREST).save(path)
