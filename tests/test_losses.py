"""The ab classification loss against a plain NumPy reference of Zhang et al.'s soft-encoded,
class-rebalanced cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.encodings import AB_NEIGHBOURS, AB_SCALE, AB_SIGMA, ab_bins


def reference(y_true: np.ndarray, logits: np.ndarray, centres: np.ndarray, weights: np.ndarray) -> np.ndarray:
    ab = (y_true.astype(np.float64) - 0.5) * AB_SCALE
    d2 = ((ab[..., None, :] - centres) ** 2).sum(-1)
    nearest = np.argsort(d2, axis=-1, kind="stable")[..., :AB_NEIGHBOURS]
    close = -np.take_along_axis(d2, nearest, -1) / (2 * AB_SIGMA**2)
    soft = np.exp(close - close.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    z = logits.astype(np.float64)
    log_p = z - z.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    return weights[nearest[..., 0]] * -(soft * np.take_along_axis(log_p, nearest, -1)).sum(-1)


def test_the_loss_is_the_soft_encoded_rebalanced_cross_entropy():
    import keras

    from sweep.losses import ABClassificationLoss

    rng = np.random.default_rng(0)
    centres = ab_bins()
    weights = rng.uniform(0.5, 2.0, len(centres)).astype(np.float32)
    y_true = (0.5 + rng.normal(0, 0.08, (2, 6, 6, 2))).astype(np.float32)
    logits = rng.normal(0, 2, (2, 6, 6, len(centres))).astype(np.float32)
    loss = ABClassificationLoss(centres, weights)
    per_pixel = keras.ops.convert_to_numpy(loss.call(y_true, logits))
    assert per_pixel == pytest.approx(reference(y_true, logits, centres, weights), rel=1e-4, abs=1e-5)
    assert float(loss(y_true, logits)) == pytest.approx(reference(y_true, logits, centres, weights).mean(), rel=1e-4)
