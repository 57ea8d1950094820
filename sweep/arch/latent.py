"""The latent-size formula and FLOP counting, from layer shapes alone.

A convolution of kernel K, padding P and stride S maps a width W to ``(W - K + 2P) / S + 1``
and C filters make a latent tensor of ``((W - K + 2P) / S + 1)^2 * C`` values; pooling by F
maps W to ``floor(W / F)``. Each family applies these steps in its `latent_shape`, so the
latent size is computed without building (or importing) anything; a regression test pins
the 36 values of seed 002's grid and checks every built model against this formula.

FLOPs are counted the same way: 2 per multiply-add of every convolution and dense layer,
from the layer shapes (`conv_flops`), either by a family's formula or over a built model.
"""

from __future__ import annotations

import math
from typing import Any

from sweep.errors import SpecError

__all__ = ["conv_flops", "conv_output_size", "forward_flops", "latent_size", "model_flops"]


def conv_output_size(width: int, kernel: int, padding: int, stride: int) -> int:
    """(W - K + 2P) / S + 1, the output width of a convolution; must be a whole number."""
    span = width - kernel + 2 * padding
    if span < 0 or span % stride:
        raise SpecError(
            f"a {kernel}x{kernel} convolution with padding {padding} and stride {stride} "
            f"does not fit a width of {width}"
        )
    return span // stride + 1


def latent_size(spec: Any, input_shape: tuple[int, int, int] = (32, 32, 3)) -> int:
    """Number of values in the latent tensor, from ((W - K + 2P) / S + 1)^2 * C per layer
    (or the width of a flat latent vector)."""
    return math.prod(spec.latent_shape(input_shape))


def conv_flops(height: int, width: int, kernel: tuple[int, int], channels_in: int, channels_out: int) -> int:
    """Forward FLOPs of a convolution over a `height` x `width` grid of output positions."""
    return 2 * height * width * kernel[0] * kernel[1] * channels_in * channels_out


def model_flops(model) -> int:
    """Forward-pass FLOPs per sample of a built Keras model's convolutions and dense layers
    (2 per multiply-add), counted from the layer shapes; nested models are counted through."""
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            total += model_flops(layer)
            continue
        kind = type(layer).__name__
        if kind in ("Conv2D", "Conv2DTranspose"):
            out = layer.output.shape if kind == "Conv2D" else layer.input.shape
            total += conv_flops(out[1], out[2], layer.kernel_size, layer.input.shape[-1], layer.filters)
        elif kind == "Dense":
            positions = math.prod(layer.input.shape[1:-1]) if len(layer.input.shape) > 2 else 1
            total += 2 * positions * layer.input.shape[-1] * layer.units
    return int(total)


def forward_flops(spec: Any, input_shape: tuple[int, int, int], output_channels: int | None = None) -> int:
    """Forward FLOPs per image of `spec`'s model: from the family's formula where it has one
    (`flops`), else counted over the built model (which imports Keras)."""
    output_channels = output_channels or input_shape[-1]
    if hasattr(spec, "flops"):
        return spec.flops(tuple(input_shape), output_channels)
    return model_flops(spec.build(tuple(input_shape), output_channels, "autoencoder"))
