"""Seed 002's convolutional autoencoder family: the 36-model grid of the Maastricht study.

`ArchSpec` describes one member (seed 002, section II)::

    encoder  conv(c1) -> maxpool(f) -> [conv(c2)] -> maxpool(f) -> conv(c3)    # = latent
    decoder  upsample(f) -> [conv(c2)] -> upsample(f) -> conv(out, sigmoid)

with channels ``(c1, c2, c3) = base_channels / 2 * channel_factor``, stride-1 convolutions of
size ``kernel_size`` with matched zero padding ``P = (K - 1) / 2``, and max-pooling /
up-sampling by ``compression_factor``. ``fewer_layers`` drops the bracketed convolutions.
Everything but `build` is pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sweep.arch.base import Family, check_int, check_odd, check_shape, is_int
from sweep.arch.latent import conv_flops, conv_output_size
from sweep.errors import SpecError, must_be

__all__ = ["ArchSpec"]


@dataclass(frozen=True)
class ArchSpec(Family):
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
            raise SpecError(must_be("fewer_layers", name, "a bool", self.fewer_layers))
        check_int(self, "channel_factor")
        check_odd(self, "kernel_size")
        check_int(self, "compression_factor")
        base = tuple(self.base_channels) if isinstance(self.base_channels, (list, tuple)) else None
        if base is None or len(base) != 3 or not all(is_int(c) and c >= 2 and c % 2 == 0 for c in base):
            raise SpecError(must_be("base_channels", name, "three even ints >= 2", self.base_channels))
        object.__setattr__(self, "base_channels", base)

    @property
    def channels(self) -> tuple[int, int, int]:
        """(c1, c2, c3): the first, medium and latent convolution widths."""
        return tuple(c // 2 * self.channel_factor for c in self.base_channels)  # type: ignore[return-value]

    @property
    def padding(self) -> int:
        return (self.kernel_size - 1) // 2

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
        height, width, _ = check_shape(input_shape)
        for size in (height, width):
            for step, value in self.encoder_plan():
                if step == "pool":
                    if size % value:
                        raise SpecError(must_be(
                            "compression_factor",
                            type(self).__name__,
                            f"a factor that divides the image size at every pooling layer "
                            f"({height}x{width} input)",
                            value,
                        ))
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
                total += conv_flops(height, width, (k, k), channels, value)
                channels = value
        return total

    def output_head(self, input_shape: tuple[int, int, int], output_channels: int) -> tuple[int, int]:
        """The output convolution's kernel size and input channels (the last decoder width)."""
        return self.kernel_size, self.channels[2] if self.fewer_layers else self.channels[1]

    def params(self, input_shape: tuple[int, int, int], output_channels: int) -> int:
        """Trainable parameters (kernels and biases of the convolutions), without building."""
        k = self.kernel_size
        c1, c2, c3 = self.channels
        widths = [input_shape[-1], c1, *([] if self.fewer_layers else [c2]), c3, *([] if self.fewer_layers else [c2]), output_channels]
        return sum(k * k * cin * cout + cout for cin, cout in zip(widths, widths[1:]))

    def canonical(self) -> dict[str, Any]:
        """The layers as built: `base_channels` x `channel_factor` pairs that give the same
        widths, and any `c2` when `fewer_layers` drops the convolutions that use it, are one
        model."""
        plan = [[step, value] for step, value in self.encoder_plan()]
        return {"family": self.family, "encoder": plan, "kernel_size": self.kernel_size}

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

