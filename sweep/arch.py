"""Architectures: the seed-002 parametric family, its latent-size formula, and the builder.

`ArchSpec` describes one member of the convolutional autoencoder family of the Maastricht
study (seed 002, section II)::

    encoder  conv(c1) -> maxpool(f) -> [conv(c2)] -> maxpool(f) -> conv(c3)    # = latent
    decoder  upsample(f) -> [conv(c2)] -> upsample(f) -> conv(out, sigmoid)

with channels ``(c1, c2, c3) = base_channels / 2 * channel_factor``, stride-1 convolutions of
size ``kernel_size`` with matched zero padding ``P = (K - 1) / 2``, and max-pooling /
up-sampling by ``compression_factor``. ``fewer_layers`` drops the bracketed convolutions.

The seed papers' colorization architectures are presets of their own families, each a
frozen dataclass with the same small interface (`family`, `to_dict`, `check_input`,
`latent_shape`, `build`), so `build_autoencoder`, `latent_size` and `arch_from_dict` work on
any of them:

==========================  =======================  ===================  ====================
preset                      family (seed)            latent               parameters
==========================  =======================  ===================  ====================
``acml``                    conv_ae (002)            8x8x16 = 1,024       4,911 (32x32x3 -> 3)
``dense_latent``            dense_latent (000/1/4)   256                  3,431,811 (32x32x1 -> 3)
``dense_latent_dropout``    dense_latent (004)       256                  3,431,811
``fc_latent``               fc_latent (001, Net1)    256                  9,145,475
``conv_latent``             conv_latent (001, Net2)  16x16x256 = 65,536   1,330,307
``unet``                    unet (003)               5x5x512 = 12,800     9,600,438 (160x160x1 -> 3)
==========================  =======================  ===================  ====================

Every layer has a predictable name (``enc_conv1``, ``latent``, ``dec_deconv1``, ``output``);
the layer named ``latent`` holds the latent tensor. ``python -m sweep.arch NAME`` prints a
model's summary, latent size and parameter count without training.

Everything here but the `build` methods and the command line is pure Python: specs
validate and the latent size is computed from the layer formulas without importing Keras.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from sweep.errors import SpecError

__all__ = [
    "ArchSpec",
    "ConvLatentSpec",
    "DenseLatentSpec",
    "FCLatentSpec",
    "PRESETS",
    "UNetSpec",
    "arch_from_dict",
    "build_autoencoder",
    "conv_output_size",
    "forward_flops",
    "latent_size",
    "model_flops",
    "preset_name",
]


def conv_output_size(width: int, kernel: int, padding: int, stride: int) -> int:
    """(W - K + 2P) / S + 1, the output width of a convolution; must be a whole number."""
    span = width - kernel + 2 * padding
    if span < 0 or span % stride:
        raise SpecError(
            f"a {kernel}x{kernel} convolution with padding {padding} and stride {stride} "
            f"does not fit a width of {width}"
        )
    return span // stride + 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid(field: str, owner: str, allowed: str, got: Any) -> SpecError:
    """scikit-learn's template: say the field, what is allowed and what was received."""
    return SpecError(f"The '{field}' parameter of {owner} must be {allowed}. Got {got!r} instead.")


@dataclass(frozen=True)
class ArchSpec:
    """One member of the seed-002 convolutional autoencoder family.

    The defaults are the assignment's first model: 5 convolutions, 3x3 kernels, channels
    (8, 12, 16), pooling by 2, giving a 8x8x16 = 1024-value latent tensor on 32x32 input.
    """

    family: ClassVar[str] = "conv_ae"
    reference_input: ClassVar[tuple[int, int, int]] = (32, 32, 3)  # seed 002 reconstructs CIFAR-10

    fewer_layers: bool = False  # True: 3 convolutions instead of 5 (pooling layers stay)
    channel_factor: int = 2  # channels = base_channels / 2 * factor: 1 halves, 2 keeps, 4 doubles
    kernel_size: int = 3  # odd, so the matched padding (K - 1) / 2 is whole
    compression_factor: int = 2  # pool and up-sample factor; 1 means no spatial compression
    base_channels: tuple[int, int, int] = (8, 12, 16)  # the assignment's first model

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.fewer_layers, bool):
            raise _invalid("fewer_layers", name, "a bool", self.fewer_layers)
        _check_int(self, "channel_factor")
        _check_odd(self, "kernel_size")
        _check_int(self, "compression_factor")
        base = tuple(self.base_channels) if isinstance(self.base_channels, (list, tuple)) else None
        if base is None or len(base) != 3 or not all(_is_int(c) and c >= 2 and c % 2 == 0 for c in base):
            raise _invalid("base_channels", name, "three even ints >= 2", self.base_channels)
        object.__setattr__(self, "base_channels", base)

    @property
    def channels(self) -> tuple[int, int, int]:
        """(c1, c2, c3): the first, medium and latent convolution widths."""
        return tuple(c // 2 * self.channel_factor for c in self.base_channels)  # type: ignore[return-value]

    @property
    def padding(self) -> int:
        return (self.kernel_size - 1) // 2

    @property
    def n_conv(self) -> int:
        return 3 if self.fewer_layers else 5

    def encoder_plan(self) -> list[tuple[str, int]]:
        """The encoder as ("conv", filters) / ("pool", factor) steps, up to the latent tensor."""
        c1, c2, c3 = self.channels
        f = self.compression_factor
        plan = [("conv", c1), ("pool", f)]
        if not self.fewer_layers:
            plan.append(("conv", c2))
        plan += [("pool", f), ("conv", c3)]
        return plan

    def check_input(self, input_shape: tuple[int, int, int]) -> None:
        """Raise SpecError unless this spec maps `input_shape` back onto itself exactly."""
        height, width, _ = _check_shape(input_shape)
        for size in (height, width):
            for step, value in self.encoder_plan():
                if step == "pool":
                    if size % value:
                        raise _invalid(
                            "compression_factor",
                            type(self).__name__,
                            f"a factor that divides the image size at every pooling layer "
                            f"({height}x{width} input)",
                            value,
                        )
                    size //= value
                else:
                    size = conv_output_size(size, self.kernel_size, self.padding, 1)

    def latent_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The latent tensor's (H, W, C) from the convolution formula, without building."""
        self.check_input(input_shape)
        height, width, channels = input_shape
        for step, value in self.encoder_plan():
            if step == "pool":
                height, width = height // value, width // value
            else:
                height = conv_output_size(height, self.kernel_size, self.padding, 1)
                width = conv_output_size(width, self.kernel_size, self.padding, 1)
                channels = value
        return (height, width, channels)

    def flops(self, input_shape: tuple[int, int, int], output_channels: int) -> int:
        """Forward-pass FLOPs per image of the convolutions (2 per multiply-add), from the
        layer shapes alone; pooling, up-sampling, biases and activations are left out."""
        self.check_input(input_shape)
        height, width, channels = input_shape
        k, f = self.kernel_size, self.compression_factor
        medium = [] if self.fewer_layers else [("conv", self.channels[1])]
        steps = [*self.encoder_plan(), ("up", f), *medium, ("up", f), ("conv", output_channels)]
        total = 0
        for step, value in steps:
            if step == "pool":
                height, width = height // value, width // value
            elif step == "up":
                height, width = height * value, width * value
            else:  # matched padding: the convolution keeps the size
                total += 2 * height * width * k * k * channels * value
                channels = value
        return total

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["base_channels"] = list(self.base_channels)
        return {"family": self.family, **values}

    def build(self, input_shape: tuple[int, int, int], output_channels: int, name: str, output_activation: str = "sigmoid"):
        import keras
        from keras import layers

        self.check_input(input_shape)
        k, p, f = self.kernel_size, self.padding, self.compression_factor
        c1, c2, c3 = self.channels

        def conv(x, filters: int, layer: str, activation: str = "relu"):
            # Explicit matched padding: the kernel never changes a tensor's size.
            x = layers.ZeroPadding2D(p, name=f"{layer}_pad")(x)
            return layers.Conv2D(filters, k, strides=1, padding="valid", activation=activation, name=layer)(x)

        inputs = keras.Input(shape=input_shape, name="image")
        x = conv(inputs, c1, "enc_conv1")
        x = layers.MaxPooling2D(f, name="enc_pool1")(x)
        if not self.fewer_layers:
            x = conv(x, c2, "enc_conv2")
        x = layers.MaxPooling2D(f, name="enc_pool2")(x)
        x = conv(x, c3, "latent")
        x = layers.UpSampling2D(f, name="dec_up1")(x)
        if not self.fewer_layers:
            x = conv(x, c2, "dec_conv1")
        x = layers.UpSampling2D(f, name="dec_up2")(x)
        outputs = conv(x, output_channels, "output", activation=output_activation)
        return keras.Model(inputs, outputs, name=name)


# --- the seeds' colorization architectures ---


def _check_int(owner: Any, field: str, minimum: int = 1) -> None:
    value = getattr(owner, field)
    if not _is_int(value) or value < minimum:
        raise _invalid(field, type(owner).__name__, f"an int >= {minimum}", value)


def _check_odd(owner: Any, field: str) -> None:
    value = getattr(owner, field)
    if not _is_int(value) or value < 1 or value % 2 == 0:
        raise _invalid(field, type(owner).__name__, "an odd int >= 1", value)


def _check_filters(owner: Any, field: str, length: int | None = None) -> None:
    """A sequence of positive ints (lists from YAML or JSON become tuples)."""
    value = getattr(owner, field)
    filters = tuple(value) if isinstance(value, (list, tuple)) else None
    ok = filters is not None and len(filters) >= 1 and all(_is_int(c) and c >= 1 for c in filters)
    if not ok or (length is not None and len(filters) != length):
        count = f"{length} ints >= 1" if length is not None else "a list of ints >= 1"
        raise _invalid(field, type(owner).__name__, count, value)
    object.__setattr__(owner, field, filters)


def _check_rate(owner: Any, field: str) -> None:
    value = getattr(owner, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise _invalid(field, type(owner).__name__, "a number in [0, 1)", value)
    object.__setattr__(owner, field, float(value))


def _check_divisible(owner: Any, input_shape: Any, factor: int, why: str) -> tuple[int, int, int]:
    height, width, channels = _check_shape(input_shape)
    if height % factor or width % factor:
        raise SpecError(
            f"{type(owner).__name__} needs an image size divisible by {factor} ({why}). "
            f"Got {height}x{width} instead."
        )
    return height, width, channels


class _Preset:
    """What every architecture family shares: its plain-value form."""

    family: ClassVar[str]
    reference_input: ClassVar[tuple[int, int, int]] = (32, 32, 1)  # the seeds colorize CIFAR's 32x32

    def to_dict(self) -> dict[str, Any]:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {"family": self.family, **values}


@dataclass(frozen=True)
class DenseLatentSpec(_Preset):
    """Seeds 000, 001 (its Keras model) and 004: strided convolutions around a Dense latent vector.

    encoder  conv(f1, /2) -> conv(f2, /2) -> conv(f3, /2) -> flatten -> dense(latent_dim)  = latent
    decoder  dense(H/8 * W/8 * f3) -> reshape -> deconv(f3, x2) -> deconv(f2, x2)
             -> deconv(f1, x2) -> deconv(out, sigmoid)

    'same' padding and ReLU after every (transposed) convolution, linear Dense layers, as the
    seeds' layer tables. `dropout` adds Dropout after each encoder convolution (seed 004: 0.2).
    For 32x32x1 -> 32x32x3: encoder 1,418,496 and decoder 2,013,315 parameters.
    """

    family: ClassVar[str] = "dense_latent"

    filters: tuple[int, ...] = (64, 128, 256)  # encoder convolutions, each halving the size
    kernel_size: int = 3
    latent_dim: int = 256
    dropout: float = 0.0  # after each encoder convolution; seed 004 used 0.2

    def __post_init__(self) -> None:
        _check_filters(self, "filters")
        _check_odd(self, "kernel_size")
        _check_int(self, "latent_dim")
        _check_rate(self, "dropout")

    def check_input(self, input_shape: tuple[int, int, int]) -> None:
        factor = 2 ** len(self.filters)
        _check_divisible(self, input_shape, factor, f"{len(self.filters)} stride-2 convolutions")

    def latent_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
        self.check_input(input_shape)
        return (self.latent_dim,)

    def build(self, input_shape: tuple[int, int, int], output_channels: int, name: str, output_activation: str = "sigmoid"):
        import keras
        from keras import layers

        self.check_input(input_shape)
        k, n = self.kernel_size, len(self.filters)
        inputs = keras.Input(shape=input_shape, name="image")
        x = inputs
        for i, filters in enumerate(self.filters, 1):
            x = layers.Conv2D(filters, k, strides=2, padding="same", activation="relu", name=f"enc_conv{i}")(x)
            if self.dropout:
                x = layers.Dropout(self.dropout, name=f"enc_drop{i}")(x)
        grid = (input_shape[0] // 2**n, input_shape[1] // 2**n, self.filters[-1])
        x = layers.Flatten(name="enc_flatten")(x)
        x = layers.Dense(self.latent_dim, name="latent")(x)
        x = layers.Dense(math.prod(grid), name="dec_dense")(x)
        x = layers.Reshape(grid, name="dec_reshape")(x)
        for i, filters in enumerate(reversed(self.filters), 1):
            x = layers.Conv2DTranspose(filters, k, strides=2, padding="same", activation="relu", name=f"dec_deconv{i}")(x)
        outputs = layers.Conv2DTranspose(output_channels, k, padding="same", activation=output_activation, name="output")(x)
        return keras.Model(inputs, outputs, name=name)


@dataclass(frozen=True)
class FCLatentSpec(_Preset):
    """Seed 001's PyTorch Net1 in Keras: a fully connected latent between pooled convolutions.

    encoder  conv(f1) -> conv(f2) -> maxpool(2) -> conv(f3) -> maxpool(2) -> flatten
             -> dense(latent_dim, relu)  = latent
    decoder  dense(H/4 * W/4 * f3, relu) -> reshape -> up(2, bilinear) -> deconv(f2)
             -> up(2, bilinear) -> deconv(f1) -> deconv(out, sigmoid)

    Stride-1 'same' convolutions with ReLU (PyTorch's padding=1 for K=3). 32x32x1 -> 32x32x3:
    9,145,475 parameters, almost all in the two Dense layers.
    """

    family: ClassVar[str] = "fc_latent"

    filters: tuple[int, int, int] = (64, 128, 256)
    kernel_size: int = 3
    latent_dim: int = 256

    def __post_init__(self) -> None:
        _check_filters(self, "filters", 3)
        _check_odd(self, "kernel_size")
        _check_int(self, "latent_dim")

    def check_input(self, input_shape: tuple[int, int, int]) -> None:
        _check_divisible(self, input_shape, 4, "two 2x2 max-poolings")

    def latent_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
        self.check_input(input_shape)
        return (self.latent_dim,)

    def build(self, input_shape: tuple[int, int, int], output_channels: int, name: str, output_activation: str = "sigmoid"):
        import keras
        from keras import layers

        self.check_input(input_shape)
        k, (f1, f2, f3) = self.kernel_size, self.filters
        grid = (input_shape[0] // 4, input_shape[1] // 4, f3)

        def conv(x, filters, layer):
            return layers.Conv2D(filters, k, padding="same", activation="relu", name=layer)(x)

        def deconv(x, filters, layer, activation="relu"):
            return layers.Conv2DTranspose(filters, k, padding="same", activation=activation, name=layer)(x)

        inputs = keras.Input(shape=input_shape, name="image")
        x = conv(inputs, f1, "enc_conv1")
        x = conv(x, f2, "enc_conv2")
        x = layers.MaxPooling2D(2, name="enc_pool1")(x)
        x = conv(x, f3, "enc_conv3")
        x = layers.MaxPooling2D(2, name="enc_pool2")(x)
        x = layers.Flatten(name="enc_flatten")(x)
        x = layers.Dense(self.latent_dim, activation="relu", name="latent")(x)
        x = layers.Dense(math.prod(grid), activation="relu", name="dec_dense")(x)
        x = layers.Reshape(grid, name="dec_reshape")(x)
        x = layers.UpSampling2D(2, interpolation="bilinear", name="dec_up1")(x)
        x = deconv(x, f2, "dec_deconv1")
        x = layers.UpSampling2D(2, interpolation="bilinear", name="dec_up2")(x)
        x = deconv(x, f1, "dec_deconv2")
        outputs = deconv(x, output_channels, "output", activation=output_activation)
        return keras.Model(inputs, outputs, name=name)


@dataclass(frozen=True)
class ConvLatentSpec(_Preset):
    """Seed 001's PyTorch Net2 in Keras: a convolutional latent at half the image size.

    encoder  conv(f1) -> conv(f2) -> maxpool(2) -> conv(f3) -> conv(latent_filters, linear)  = latent
    decoder  deconv(f2) -> up(2, bilinear) -> deconv(f1) -> deconv(out, sigmoid)

    Stride-1 'same' convolutions with ReLU. 32x32x1 -> 32x32x3: 1,330,307 parameters and a
    16x16x256 latent tensor.
    """

    family: ClassVar[str] = "conv_latent"

    filters: tuple[int, int, int] = (64, 128, 256)
    kernel_size: int = 3
    latent_filters: int = 256

    def __post_init__(self) -> None:
        _check_filters(self, "filters", 3)
        _check_odd(self, "kernel_size")
        _check_int(self, "latent_filters")

    def check_input(self, input_shape: tuple[int, int, int]) -> None:
        _check_divisible(self, input_shape, 2, "one 2x2 max-pooling")

    def latent_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
        self.check_input(input_shape)
        return (input_shape[0] // 2, input_shape[1] // 2, self.latent_filters)

    def build(self, input_shape: tuple[int, int, int], output_channels: int, name: str, output_activation: str = "sigmoid"):
        import keras
        from keras import layers

        self.check_input(input_shape)
        k, (f1, f2, f3) = self.kernel_size, self.filters
        inputs = keras.Input(shape=input_shape, name="image")
        x = layers.Conv2D(f1, k, padding="same", activation="relu", name="enc_conv1")(inputs)
        x = layers.Conv2D(f2, k, padding="same", activation="relu", name="enc_conv2")(x)
        x = layers.MaxPooling2D(2, name="enc_pool1")(x)
        x = layers.Conv2D(f3, k, padding="same", activation="relu", name="enc_conv3")(x)
        x = layers.Conv2D(self.latent_filters, k, padding="same", name="latent")(x)
        x = layers.Conv2DTranspose(f2, k, padding="same", activation="relu", name="dec_deconv1")(x)
        x = layers.UpSampling2D(2, interpolation="bilinear", name="dec_up1")(x)
        x = layers.Conv2DTranspose(f1, k, padding="same", activation="relu", name="dec_deconv2")(x)
        outputs = layers.Conv2DTranspose(output_channels, k, padding="same", activation=output_activation, name="output")(x)
        return keras.Model(inputs, outputs, name=name)


@dataclass(frozen=True)
class UNetSpec(_Preset):
    """Seed 003's U-Net-style colorizer.

    encoder  n stride-2 conv blocks (conv -> [BatchNorm from block `batch_norm_from`] -> LeakyReLU);
             the last block's output is the latent tensor
    decoder  n stride-2 transposed-conv blocks (deconv -> [Dropout] -> LeakyReLU), each
             concatenated with the encoder block of the same size, the last with the input
             image; then a `output_kernel` convolution to the output channels

    The up blocks' widths mirror the encoder's (512, 256, 128, 128) and the last has the
    output's channels, as the seed's table. 160x160x1 -> 160x160x3: 9,600,438 parameters
    (2,560 of them BatchNorm statistics). The seed's output layer is linear; here it takes
    the output activation like every preset (no parameters change).
    """

    family: ClassVar[str] = "unet"
    reference_input: ClassVar[tuple[int, int, int]] = (160, 160, 1)  # seed 003's images

    filters: tuple[int, ...] = (128, 128, 256, 512, 512)  # down blocks, each halving the size
    kernel_size: int = 3
    batch_norm_from: int = 3  # BatchNorm on down blocks 3..n (the seed: 3rd to 5th)
    dropout: float = 0.0  # after each transposed convolution but the last; the seed's is optional
    output_kernel: int = 2  # the seed's final 2x2 convolution
    negative_slope: float = 0.3  # LeakyReLU; Keras' default, which the seed used

    def __post_init__(self) -> None:
        _check_filters(self, "filters")
        _check_odd(self, "kernel_size")
        _check_int(self, "batch_norm_from")
        _check_rate(self, "dropout")
        _check_int(self, "output_kernel")
        _check_rate(self, "negative_slope")

    def check_input(self, input_shape: tuple[int, int, int]) -> None:
        n = len(self.filters)
        _check_divisible(self, input_shape, 2**n, f"{n} stride-2 down blocks")

    def latent_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
        self.check_input(input_shape)
        factor = 2 ** len(self.filters)
        return (input_shape[0] // factor, input_shape[1] // factor, self.filters[-1])

    def build(self, input_shape: tuple[int, int, int], output_channels: int, name: str, output_activation: str = "sigmoid"):
        import keras
        from keras import layers

        self.check_input(input_shape)
        k, n = self.kernel_size, len(self.filters)
        inputs = keras.Input(shape=input_shape, name="image")
        x, skips = inputs, []
        for i, filters in enumerate(self.filters, 1):
            x = layers.Conv2D(filters, k, strides=2, padding="same", name=f"enc_conv{i}")(x)
            if i >= self.batch_norm_from:
                x = layers.BatchNormalization(name=f"enc_bn{i}")(x)
            x = layers.LeakyReLU(self.negative_slope, name="latent" if i == n else f"enc_act{i}")(x)
            skips.append(x)
        widths = [*reversed(self.filters[:-1]), output_channels]
        partners = [*reversed(skips[:-1]), inputs]
        for i, (filters, skip) in enumerate(zip(widths, partners), 1):
            x = layers.Conv2DTranspose(filters, k, strides=2, padding="same", name=f"dec_deconv{i}")(x)
            if self.dropout and i < n:
                x = layers.Dropout(self.dropout, name=f"dec_drop{i}")(x)
            x = layers.LeakyReLU(self.negative_slope, name=f"dec_act{i}")(x)
            x = layers.Concatenate(name=f"dec_concat{i}")([x, skip])
        outputs = layers.Conv2D(
            output_channels, self.output_kernel, padding="same", activation=output_activation, name="output"
        )(x)
        return keras.Model(inputs, outputs, name=name)


# Presets: named architectures a search space can select with `arch: NAME`.
PRESETS: dict[str, Any] = {
    "acml": ArchSpec(),  # seed 002's first model (the assignment's), the family's reference point
    "dense_latent": DenseLatentSpec(),  # seeds 000/001/004
    "dense_latent_dropout": DenseLatentSpec(dropout=0.2),  # seed 004
    "fc_latent": FCLatentSpec(),  # seed 001, Net1
    "conv_latent": ConvLatentSpec(),  # seed 001, Net2
    "unet": UNetSpec(),  # seed 003
}

ARCH_FAMILIES: dict[str, type] = {
    spec_type.family: spec_type for spec_type in (ArchSpec, DenseLatentSpec, FCLatentSpec, ConvLatentSpec, UNetSpec)
}


def _check_shape(input_shape: Any) -> tuple[int, int, int]:
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(_is_int(v) and v >= 1 for v in input_shape)
    ):
        raise SpecError(f"input_shape must be (height, width, channels) of positive ints. Got {input_shape!r} instead.")
    return tuple(input_shape)  # type: ignore[return-value]


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
            raise SpecError(_unknown("family", family, ARCH_FAMILIES))
        base = spec_type()
    elif family is not None and family != base.family:
        raise SpecError(f"family {family!r} does not match the base architecture's {base.family!r}")
    allowed = arch_fields(type(base))
    for key in values:
        if key not in allowed:
            raise SpecError(_unknown(f"field of {type(base).__name__}", key, allowed))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return dataclasses.replace(base, **values)


def preset(name: str) -> Any:
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise SpecError(_unknown("architecture preset", name, PRESETS)) from None


def preset_name(spec: Any) -> str | None:
    """The name of the preset `spec` is, unchanged; None for any other spec."""
    return next((name for name, candidate in PRESETS.items() if candidate == spec), None)


def _unknown(what: str, got: Any, allowed: Any) -> str:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(str(got), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {got!r}{hint} (allowed: {', '.join(allowed)})"


def latent_size(spec: Any, input_shape: tuple[int, int, int] = (32, 32, 3)) -> int:
    """Number of values in the latent tensor, from ((W - K + 2P) / S + 1)^2 * C per layer
    (or the width of a flat latent vector)."""
    return math.prod(spec.latent_shape(input_shape))


def build_autoencoder(
    spec: Any,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    output_channels: int | None = None,
    name: str = "autoencoder",
    output_activation: str = "sigmoid",
):
    """Build the Keras model for `spec`; `output_channels` defaults to the input's. The output
    is a sigmoid (every target is in [0, 1]); classification heads ask for "linear" logits."""
    _check_shape(input_shape)
    return spec.build(tuple(input_shape), output_channels or input_shape[-1], name, output_activation)


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
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            total += 2 * out[1] * out[2] * kh * kw * c_in * layer.filters
        elif kind == "Dense":
            positions = math.prod(layer.input.shape[1:-1]) if len(layer.input.shape) > 2 else 1
            total += 2 * positions * layer.input.shape[-1] * layer.units
    return int(total)


def forward_flops(spec: Any, input_shape: tuple[int, int, int], output_channels: int | None = None) -> int:
    """Forward FLOPs per image of `spec`'s model: from the formula where the family has one,
    else counted on the built model (which imports Keras)."""
    output_channels = output_channels or input_shape[-1]
    if hasattr(spec, "flops"):
        return spec.flops(tuple(input_shape), output_channels)
    return model_flops(build_autoencoder(spec, input_shape, output_channels))


# --- python -m sweep.arch ---


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise SpecError(f"--input-shape must be HxWxC with positive ints, e.g. 32x32x1. Got {text!r} instead.")
    return shape  # type: ignore[return-value]


def spec_from_cli(arch: str, fields: list[str]) -> tuple[str, Any]:
    """(label, spec) from a preset name or a JSON spec, with FIELD=VALUE overrides (YAML values)."""
    from sweep.space import _Loader  # the search-space files' YAML reading: 1e-3 is a float there too

    import yaml

    if arch.lstrip().startswith("{"):
        try:
            values = json.loads(arch)
        except json.JSONDecodeError as err:
            raise SpecError(f"the architecture {arch!r} is not valid JSON ({err.msg})") from None
        values = values.get("arch", values) if isinstance(values, dict) else values  # a results row's `spec`
        if not isinstance(values, dict):
            raise SpecError(f"a JSON architecture must be an object of fields. Got {arch!r} instead.")
        base, label = arch_from_dict(values), values.get("family", ArchSpec.family)
    else:
        base, label = preset(arch), arch
    overrides = {}
    for item in fields:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SpecError(f"expected FIELD=VALUE (e.g. kernel_size=5). Got {item!r} instead.")
        try:
            overrides[key.strip()] = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError:
            raise SpecError(f"{key}: cannot read the value {text!r}") from None
    spec = arch_from_dict(overrides, base) if overrides else base
    return (label if not overrides else f"{label}*"), spec


def describe(spec: Any, input_shape: tuple[int, int, int], output_channels: int, label: str, summary: bool = True) -> str:
    """Build `spec` and say its shapes, latent size and parameter counts (prints the Keras
    summary first when `summary`)."""
    from sweep import backend

    backend.keras_ready()
    import keras

    name = label.rstrip("*").replace("{", "").strip() or "autoencoder"
    model = build_autoencoder(spec, input_shape, output_channels, name=name if name.isidentifier() else "autoencoder")
    if summary:
        model.summary()
    total = model.count_params()
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    encoder = keras.Model(model.inputs, model.get_layer("latent").output).count_params()
    latent = spec.latent_shape(input_shape)
    shape = "x".join(map(str, latent)) if len(latent) > 1 else f"vector of {latent[0]}"
    out_shape = "x".join(str(d) for d in model.output.shape[1:])
    lines = [
        f"architecture  {label}: {json.dumps(spec.to_dict())}",
        f"input         {'x'.join(map(str, input_shape))} -> output {out_shape}",
        f"latent        {shape} = {latent_size(spec, input_shape):,} values",
        f"parameters    {total:,} (encoder up to 'latent' {encoder:,}, decoder {total - encoder:,}; "
        f"trainable {trainable:,}, non-trainable {total - trainable:,})",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.arch",
        description="Print the Keras summary, latent size and parameter count of an architecture, without training.",
        epilog="Examples: python -m sweep.arch unet | python -m sweep.arch acml kernel_size=5 channel_factor=4 "
        "--input-shape 32x32x1 | python -m sweep.arch '{\"family\": \"dense_latent\", \"latent_dim\": 128}'",
    )
    parser.add_argument(
        "arch",
        help=f"a preset ({', '.join(PRESETS)}) or a JSON spec, e.g. a results row's 'spec' column",
    )
    parser.add_argument(
        "fields", nargs="*", metavar="FIELD=VALUE", help="fields to change, as in a search space: kernel_size=5 filters=[32,64,128]"
    )
    parser.add_argument(
        "--input-shape",
        metavar="HxWxC",
        help="input images (default: the seed's, 32x32x1 for the colorization presets, 32x32x3 for acml, 160x160x1 for unet)",
    )
    parser.add_argument("--output-channels", type=int, default=3, help="output channels (default: %(default)s, RGB)")
    parser.add_argument("--no-summary", action="store_true", help="skip the Keras layer table")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    label, spec = spec_from_cli(args.arch, args.fields)
    input_shape = _parse_shape(args.input_shape) if args.input_shape else spec.reference_input
    if args.output_channels < 1:
        raise SpecError(f"--output-channels must be >= 1. Got {args.output_channels} instead.")
    latent_size(spec, input_shape)  # a spec that does not fit the input fails here, before Keras loads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # a summary needs no accelerator
    print(describe(spec, input_shape, args.output_channels, label, summary=not args.no_summary))
    return 0


if __name__ == "__main__":
    from sweep.cli import run_main

    run_main(main)
