"""The registry: named presets (the seeds' architectures), the families, and the builder.

==========================  =======================  ===================  ====================
preset                      family (seed)            latent               parameters
==========================  =======================  ===================  ====================
``acml``                    conv_ae (002)            8x8x16 = 1,024       4,911 (32x32x3 -> 3)
``dense_latent``            dense_latent (000/1/4)   256                  3,431,811 (32x32x1 -> 3)
``dense_latent_dropout``    dense_latent (004)       256                  3,431,811
``fc_latent``               fc_latent (001, Net1)    256                  9,145,475
``conv_latent``             conv_latent (001, Net2)  16x16x256 = 65,536   1,330,307
``unet``                    unet (003)               5x5x512 = 12,800     9,600,438 (160x160x1 -> 3)
``unet32``                  unet (003's, at 32x32)   4x4x128 = 2,048      222,822 (32x32x1 -> 3)
``unet32_noskip``           unet (no skips)          4x4x128 = 2,048      195,171
==========================  =======================  ===================  ====================

A search space selects a preset with `arch: NAME`; its factors override the preset's fields
(`arch_from_dict`). `build_autoencoder` builds any family's spec.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sweep.arch.base import Family, check_shape
from sweep.arch.conv_ae import ArchSpec
from sweep.arch.families import ConvLatentSpec, DenseLatentSpec, FCLatentSpec, UNetSpec
from sweep.arch.latent import conv_flops
from sweep.errors import SpecError, did_you_mean

__all__ = ["ARCH_FAMILIES", "PRESETS", "arch_fields", "arch_from_dict", "build_autoencoder", "pointwise_saving", "preset", "preset_name"]

PRESETS: dict[str, Family] = {
    "acml": ArchSpec(),  # seed 002's first model (the assignment's), the family's reference point
    "dense_latent": DenseLatentSpec(),  # seeds 000/001/004
    "dense_latent_dropout": DenseLatentSpec(dropout=0.2),  # seed 004
    "fc_latent": FCLatentSpec(),  # seed 001, Net1
    "conv_latent": ConvLatentSpec(),  # seed 001, Net2
    "unet": UNetSpec(),  # seed 003
    "unet32": UNetSpec(depth=3, base_width=32, batch_norm_from=1, output_kernel=1, last_width=32),  # seed 003's design for CIFAR's 32x32
    "unet32_noskip": UNetSpec(depth=3, base_width=32, batch_norm_from=1, output_kernel=1, last_width=32, skips=False),  # ... without its skips
}

ARCH_FAMILIES: dict[str, type] = {
    spec_type.family: spec_type for spec_type in (ArchSpec, DenseLatentSpec, FCLatentSpec, ConvLatentSpec, UNetSpec)
}


def arch_fields(spec_type: type) -> list[str]:
    return [f.name for f in dataclasses.fields(spec_type)]


def arch_from_dict(values: dict[str, Any], base: Any | None = None) -> Any:
    """Build a spec from plain values (a search-space point or a stored row).

    `base` (a spec or a preset name) supplies the family and the defaults; `values` may
    carry a `family` key instead. Unknown fields raise SpecError with a "did you mean".
    """
    values = dict(values)
    if isinstance(base, str):
        base = preset(base)
    family = values.pop("family", None)
    if base is None:
        spec_type = ARCH_FAMILIES.get(family or ArchSpec.family)
        if spec_type is None:
            raise SpecError(did_you_mean("family", family, ARCH_FAMILIES))
        base = spec_type()
    elif family is not None and family != base.family:
        raise SpecError(f"family {family!r} does not match the base architecture's {base.family!r}")
    allowed = arch_fields(type(base))
    for key in values:
        if key not in allowed:
            raise SpecError(did_you_mean(f"field of {type(base).__name__}", key, allowed))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return base.with_fields(**values)


def preset(name: str) -> Any:
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise SpecError(did_you_mean("architecture preset", name, PRESETS)) from None


def preset_name(spec: Any) -> str | None:
    """The name of the preset `spec` is, unchanged; None for any other spec."""
    return next((name for name, candidate in PRESETS.items() if candidate == spec), None)


def pointwise_saving(spec: Any, input_shape: tuple[int, int, int], output_channels: int) -> tuple[int, int] | None:
    """(forward FLOPs per image, parameters) that `build_autoencoder(..., pointwise_output=True)`
    saves over the family's own k x k output layer, from the layer shapes without building;
    None for a family without the formula (`output_head`)."""
    if not hasattr(spec, "output_head"):
        return None
    k, features = spec.output_head(tuple(input_shape), output_channels)
    height, width = input_shape[:2]
    flops = conv_flops(height, width, (k, k), features, output_channels) - conv_flops(height, width, (1, 1), features, output_channels)
    return flops, (k * k - 1) * features * output_channels


def build_autoencoder(
    spec: Any,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    output_channels: int | None = None,
    name: str = "autoencoder",
    output_activation: str = "sigmoid",
    pointwise_output: bool = False,
):
    """Build the Keras model for `spec`; `output_channels` defaults to the input's. The output
    is a sigmoid (every target is in [0, 1]); classification heads ask for "linear" logits.

    `pointwise_output`: the output layer is a 1x1 convolution of the features the family's own
    output layer reads (Zhang et al.'s classification head: hundreds of bin logits a pixel
    from a k x k layer would cost k^2 times more and add nothing the features lack)."""
    check_shape(input_shape)
    model = spec.build(tuple(input_shape), output_channels or input_shape[-1], name, output_activation)
    head = model.get_layer("output")
    if not pointwise_output or tuple(head.kernel_size) == (1, 1):
        return model
    import keras

    names = {layer.name for layer in model.layers}
    features = model.get_layer("output_pad").input if "output_pad" in names else head.input  # before the k x k's padding
    outputs = keras.layers.Conv2D(head.filters, 1, activation=output_activation, name="output")(features)
    return keras.Model(model.inputs, outputs, name=name)
