"""The seed papers' colorization architectures, each a family of its own.

Each family is a frozen dataclass with the same small interface as `ArchSpec` (`family`,
`to_dict`, `canonical`, `check_input`, `latent_shape`, `build`), written from its seed's
layer table, with predictable layer names (``enc_conv1``, ``latent``, ``dec_deconv1``,
``output``). Their presets (the seeds' exact models) are in `sweep.arch.presets`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from sweep.arch.base import Family, check_bool, check_divisible, check_filters, check_int, check_odd, check_rate
from sweep.arch.latent import conv_flops
from sweep.errors import SpecError

__all__ = ["ConvLatentSpec", "DenseLatentSpec", "FCLatentSpec", "UNetSpec"]


@dataclass(frozen=True)
class DenseLatentSpec(Family):
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
        check_filters(self, "filters")
        check_odd(self, "kernel_size")
        check_int(self, "latent_dim")
        check_rate(self, "dropout")

    def check_input(self, input_shape: tuple[int, int, int]) -> None:
        factor = 2 ** len(self.filters)
        check_divisible(self, input_shape, factor, f"{len(self.filters)} stride-2 convolutions")

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
class FCLatentSpec(Family):
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
        check_filters(self, "filters", 3)
        check_odd(self, "kernel_size")
        check_int(self, "latent_dim")

    def check_input(self, input_shape: tuple[int, int, int]) -> None:
        check_divisible(self, input_shape, 4, "two 2x2 max-poolings")

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
class ConvLatentSpec(Family):
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
        check_filters(self, "filters", 3)
        check_odd(self, "kernel_size")
        check_int(self, "latent_filters")

    def check_input(self, input_shape: tuple[int, int, int]) -> None:
        check_divisible(self, input_shape, 2, "one 2x2 max-pooling")

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


SEED003_FILTERS = (128, 128, 256, 512, 512)


@dataclass(frozen=True)
class UNetSpec(Family):
    """Seed 003's U-Net-style colorizer, and the family of smaller U-Nets around it.

    encoder  n stride-2 conv blocks (conv -> [BatchNorm from block `batch_norm_from`] -> LeakyReLU);
             the last block's output is the latent tensor
    decoder  n stride-2 transposed-conv blocks (deconv -> [Dropout] -> LeakyReLU), each
             concatenated (with `skips`) with the encoder block of the same size, the last
             with the input image; then a `output_kernel` convolution to the output channels

    The up blocks' widths mirror the encoder's (512, 256, 128, 128) and the last has the
    output's channels, as the seed's table. 160x160x1 -> 160x160x3: 9,600,438 parameters
    (2,560 of them BatchNorm statistics). The seed's output layer is linear; here it takes
    the output activation like every preset (no parameters change).

    `depth` and `base_width` span the family by two numbers: given either, the widths are
    `base_width` x (1, 2, 4, 8, 8, ...) for `depth` blocks (the one not given is read from
    `filters`). `skips=False` is the same encoder-decoder without the concatenations;
    `last_width` widens the last up block (the seed's has the output's channels, which makes
    a 261-class head cost a 261-wide full-resolution deconvolution). The `unet32` presets are
    members for CIFAR's 32x32 images; `flops` and `latent_shape` are closed forms (tests hold
    them to the built models).
    """

    family: ClassVar[str] = "unet"

    filters: tuple[int, ...] = SEED003_FILTERS  # down blocks, each halving the size
    kernel_size: int = 3
    batch_norm_from: int = 3  # BatchNorm on down blocks 3..n (the seed: 3rd to 5th)
    dropout: float = 0.0  # after each transposed convolution but the last; the seed's is optional
    output_kernel: int = 2  # the seed's final 2x2 convolution
    negative_slope: float = 0.3  # LeakyReLU; Keras' default, which the seed used
    skips: bool = True  # concatenate each down block's output (and the image) into the up path
    depth: int | None = None  # with base_width: the widths base_width x (1, 2, 4, 8, 8, ...)[:depth]
    base_width: int | None = None
    last_width: int | None = None  # the last up block's width (None: the output's channels, as the seed)

    def __post_init__(self) -> None:
        check_filters(self, "filters")
        check_odd(self, "kernel_size")
        check_int(self, "batch_norm_from")
        check_rate(self, "dropout")
        check_int(self, "output_kernel")
        check_rate(self, "negative_slope")
        check_bool(self, "skips")
        if self.last_width is not None:
            check_int(self, "last_width")
        if self.depth is not None or self.base_width is not None:
            for name in ("depth", "base_width"):
                if getattr(self, name) is not None:
                    check_int(self, name)
            widths = self.widths(self.depth, self.base_width, self.filters)
            if self.filters not in (widths, SEED003_FILTERS):  # (the default: not given)
                decide = " and ".join(f"{name}={getattr(self, name)}" for name in ("depth", "base_width") if getattr(self, name) is not None)
                raise SpecError(
                    f"filters {list(self.filters)} of UNetSpec would change nothing: {decide} decide the widths "
                    f"({list(widths)}); vary depth and base_width, or give filters on a U-Net without them (arch: unet)"
                )
            object.__setattr__(self, "filters", widths)

    @staticmethod
    def widths(depth: int | None, base_width: int | None, filters: tuple[int, ...]) -> tuple[int, ...]:
        """The down blocks' widths base_width x (1, 2, 4, 8, 8, ...)[:depth], either taken
        from `filters` (its length, its first width) when not given."""
        depth = depth if depth is not None else len(filters)
        base = base_width if base_width is not None else filters[0]
        return tuple(base * 2 ** min(i, 3) for i in range(depth))

    def with_fields(self, **values: Any) -> "UNetSpec":
        """A copy with some fields replaced; with `depth` or `base_width` set, widths not
        given follow them (they are not this spec's derived ones)."""
        depth, base = values.get("depth", self.depth), values.get("base_width", self.base_width)
        if "filters" not in values and (depth is not None or base is not None):
            values["filters"] = self.widths(depth, base, self.filters)
        return dataclasses.replace(self, **values)

    @property
    def reference_input(self) -> tuple[int, int, int]:  # type: ignore[override]
        """Seed 003's 160x160 images for its own model; CIFAR's 32x32 for the rest of the family."""
        return (160, 160, 1) if self.filters == SEED003_FILTERS else (32, 32, 1)

    def check_input(self, input_shape: tuple[int, int, int]) -> None:
        n = len(self.filters)
        check_divisible(self, input_shape, 2**n, f"{n} stride-2 down blocks")

    def canonical(self) -> dict[str, Any]:
        """`batch_norm_from` past the last down block means no batch norm, whatever its value;
        one block has no up block to drop out of; `depth` and `base_width` are in `filters`;
        `skips` and `last_width` are left out at their defaults, so the keys of earlier U-Net
        trials stand."""
        values = self.to_dict()
        values["batch_norm_from"] = min(self.batch_norm_from, len(self.filters) + 1)
        if len(self.filters) == 1:
            values["dropout"] = 0.0
        del values["depth"], values["base_width"]
        if self.last_width is None:
            del values["last_width"]
        if self.skips:
            del values["skips"]
        return values

    def latent_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
        self.check_input(input_shape)
        factor = 2 ** len(self.filters)
        return (input_shape[0] // factor, input_shape[1] // factor, self.filters[-1])

    def up_widths(self, output_channels: int) -> list[int]:
        return [*reversed(self.filters[:-1]), self.last_width or output_channels]

    def output_head(self, input_shape: tuple[int, int, int], output_channels: int) -> tuple[int, int]:
        """The output convolution's kernel size and input channels (the last up block's, with
        the input image concatenated when there are skips)."""
        return self.output_kernel, self.up_widths(output_channels)[-1] + (input_shape[2] if self.skips else 0)

    def flops(self, input_shape: tuple[int, int, int], output_channels: int) -> int:
        """Forward FLOPs per image (2 per multiply-add) of the convolutions, as
        `sweep.arch.latent.model_flops` counts them on the built model."""
        self.check_input(input_shape)
        height, width, channels = input_shape
        k, total, sizes = self.kernel_size, 0, []
        for filters in self.filters:  # down: output positions x kernel x in x out
            height, width = height // 2, width // 2
            total += conv_flops(height, width, (k, k), channels, filters)
            sizes.append(filters)
            channels = filters
        partners = [*reversed(sizes[:-1]), input_shape[2]]
        for filters, partner in zip(self.up_widths(output_channels), partners):  # up: input positions
            total += conv_flops(height, width, (k, k), channels, filters)
            height, width = height * 2, width * 2
            channels = filters + (partner if self.skips else 0)
        return total + conv_flops(height, width, (self.output_kernel, self.output_kernel), channels, output_channels)

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
        partners = [*reversed(skips[:-1]), inputs]
        for i, (filters, skip) in enumerate(zip(self.up_widths(output_channels), partners), 1):
            x = layers.Conv2DTranspose(filters, k, strides=2, padding="same", name=f"dec_deconv{i}")(x)
            if self.dropout and i < n:
                x = layers.Dropout(self.dropout, name=f"dec_drop{i}")(x)
            x = layers.LeakyReLU(self.negative_slope, name=f"dec_act{i}")(x)
            if self.skips:
                x = layers.Concatenate(name=f"dec_concat{i}")([x, skip])
        outputs = layers.Conv2D(
            output_channels, self.output_kernel, padding="same", activation=output_activation, name="output"
        )(x)
        return keras.Model(inputs, outputs, name=name)
