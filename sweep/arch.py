"""Architectures: the seed-002 parametric family, its latent-size formula, and the builder.

`ArchSpec` describes one member of the convolutional autoencoder family of the Maastricht
study (seed 002, section II)::

    encoder  conv(c1) -> maxpool(f) -> [conv(c2)] -> maxpool(f) -> conv(c3)    # = latent
    decoder  upsample(f) -> [conv(c2)] -> upsample(f) -> conv(out, sigmoid)

with channels ``(c1, c2, c3) = base_channels / 2 * channel_factor``, stride-1 convolutions of
size ``kernel_size`` with matched zero padding ``P = (K - 1) / 2``, and max-pooling /
up-sampling by ``compression_factor``. ``fewer_layers`` drops the bracketed convolutions.

Everything here but `build_autoencoder` is pure Python: specs validate and the latent size
is computed from the convolution formula without importing Keras.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, ClassVar

from sweep.errors import SpecError

__all__ = [
    "ArchSpec",
    "PRESETS",
    "arch_from_dict",
    "build_autoencoder",
    "conv_output_size",
    "latent_size",
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

    fewer_layers: bool = False  # True: 3 convolutions instead of 5 (pooling layers stay)
    channel_factor: int = 2  # channels = base_channels / 2 * factor: 1 halves, 2 keeps, 4 doubles
    kernel_size: int = 3  # odd, so the matched padding (K - 1) / 2 is whole
    compression_factor: int = 2  # pool and up-sample factor; 1 means no spatial compression
    base_channels: tuple[int, int, int] = (8, 12, 16)  # the assignment's first model

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.fewer_layers, bool):
            raise _invalid("fewer_layers", name, "a bool", self.fewer_layers)
        if not _is_int(self.channel_factor) or self.channel_factor < 1:
            raise _invalid("channel_factor", name, "an int >= 1", self.channel_factor)
        if not _is_int(self.kernel_size) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise _invalid("kernel_size", name, "an odd int >= 1", self.kernel_size)
        if not _is_int(self.compression_factor) or self.compression_factor < 1:
            raise _invalid("compression_factor", name, "an int >= 1", self.compression_factor)
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

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["base_channels"] = list(self.base_channels)
        return {"family": self.family, **values}

    def build(self, input_shape: tuple[int, int, int], output_channels: int, name: str):
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
        outputs = conv(x, output_channels, "output", activation="sigmoid")
        return keras.Model(inputs, outputs, name=name)


# Presets: named architectures a search space can select with `arch: NAME`.
PRESETS: dict[str, Any] = {
    "acml": ArchSpec(),  # seed 002's first model (the assignment's), the family's reference point
}

ARCH_FAMILIES: dict[str, type] = {ArchSpec.family: ArchSpec}


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
    if "base_channels" in values and isinstance(values["base_channels"], list):
        values["base_channels"] = tuple(values["base_channels"])
    return dataclasses.replace(base, **values)


def preset(name: str) -> Any:
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecError(_unknown("architecture preset", name, PRESETS)) from None


def _unknown(what: str, got: Any, allowed: Any) -> str:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(str(got), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {got!r}{hint} (allowed: {', '.join(allowed)})"


def latent_size(spec: Any, input_shape: tuple[int, int, int] = (32, 32, 3)) -> int:
    """Number of values in the latent tensor, from ((W - K + 2P) / S + 1)^2 * C per layer."""
    height, width, channels = spec.latent_shape(input_shape)
    return height * width * channels


def build_autoencoder(
    spec: Any,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    output_channels: int | None = None,
    name: str = "autoencoder",
):
    """Build the Keras model for `spec`; `output_channels` defaults to the input's."""
    _check_shape(input_shape)
    return spec.build(tuple(input_shape), output_channels or input_shape[-1], name)
