"""Losses beyond Keras' own, written with `keras.ops` so that every Keras backend runs them.

Importing this module registers them with Keras' serialization, so a saved model that was
compiled with one loads again (`import sweep.losses` before `keras.models.load_model`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from sweep.encodings import AB_NEIGHBOURS, AB_SCALE, AB_SIGMA

__all__ = ["ABClassificationLoss"]


@keras.saving.register_keras_serializable(package="sweep")
class ABClassificationLoss(keras.losses.Loss):
    """Zhang, Isola & Efros (2016), "Colorful Image Colorization": a class-rebalanced
    multinomial cross-entropy over quantised ab bins.

    `y_true` holds the lab encoding's targets (ab / `ab_scale` + 0.5, shape (..., 2)) and
    `y_pred` per-bin logits (..., Q). Each true colour is soft-encoded over its
    `neighbours` nearest bin centres with a Gaussian of width `sigma` (ab units), and each
    pixel's cross-entropy is weighted by its nearest bin's rebalancing weight.
    """

    def __init__(
        self,
        centres: Any,
        weights: Any,
        sigma: float = AB_SIGMA,
        neighbours: int = AB_NEIGHBOURS,
        ab_scale: float = AB_SCALE,
        name: str = "ab_classification",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.centres = np.asarray(centres, dtype=np.float32).reshape(-1, 2).tolist()
        self.weights = np.asarray(weights, dtype=np.float32).reshape(-1).tolist()
        if len(self.weights) != len(self.centres):
            raise ValueError(f"one weight per bin centre is needed. Received {len(self.weights)} weights for {len(self.centres)} centres")
        self.sigma = float(sigma)
        self.neighbours = int(neighbours)
        self.ab_scale = float(ab_scale)

    def call(self, y_true, y_pred):
        centres = ops.convert_to_tensor(self.centres, dtype="float32")
        weights = ops.convert_to_tensor(self.weights, dtype="float32")
        ab = (ops.cast(y_true, "float32") - 0.5) * self.ab_scale
        # |ab - c|^2 as |ab|^2 - 2 ab.c + |c|^2: a matrix product, five times faster than the
        # broadcast difference (..., Q, 2) on a CPU
        distance2 = ops.sum(ops.square(ab), axis=-1, keepdims=True) - 2.0 * ops.matmul(ab, ops.transpose(centres)) + ops.sum(ops.square(centres), axis=-1)
        closeness, nearest = ops.top_k(-distance2, k=self.neighbours)
        soft = ops.softmax(closeness / (2.0 * self.sigma**2), axis=-1)  # Gaussian weights, normalised
        log_p = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        cross_entropy = -ops.sum(soft * ops.take_along_axis(log_p, nearest, axis=-1), axis=-1)
        return ops.take(weights, nearest[..., 0]) * cross_entropy

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "centres": self.centres,
            "weights": self.weights,
            "sigma": self.sigma,
            "neighbours": self.neighbours,
            "ab_scale": self.ab_scale,
        }
