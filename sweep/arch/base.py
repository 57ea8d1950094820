"""What every architecture family shares: its plain-value form, its canonical form, and the
checks its fields go through (each failure in the "must be X, got Y" template)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from sweep.errors import SpecError, must_be

__all__ = [
    "Family",
    "check_bool",
    "check_divisible",
    "check_filters",
    "check_int",
    "check_odd",
    "check_rate",
    "check_shape",
    "is_int",
]


class Family:
    """The interface of an architecture family: a frozen dataclass of plain fields with
    `check_input`, `latent_shape` and `build`, and these shared forms of itself."""

    family: ClassVar[str]
    reference_input: ClassVar[tuple[int, int, int]] = (32, 32, 1)  # the seeds colorize CIFAR's 32x32

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain value (tuples as lists), with the family's name."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {"family": self.family, **values}

    def with_fields(self, **values: Any) -> Any:
        """A copy with some fields replaced (`dataclasses.replace`; a family whose fields derive
        others says how they follow)."""
        return dataclasses.replace(self, **values)

    def canonical(self) -> dict[str, Any]:
        """What determines the built model, and nothing else: two specs with equal canonical
        forms build the same model (the trial key hashes this, not `to_dict`). Families whose
        fields all matter return `to_dict()`."""
        return self.to_dict()


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(owner: Any, field: str, minimum: int = 1) -> None:
    value = getattr(owner, field)
    if not is_int(value) or value < minimum:
        raise SpecError(must_be(field, type(owner).__name__, f"an int >= {minimum}", value))


def check_bool(owner: Any, field: str) -> None:
    value = getattr(owner, field)
    if not isinstance(value, bool):
        raise SpecError(must_be(field, type(owner).__name__, "true or false", value))


def check_odd(owner: Any, field: str) -> None:
    value = getattr(owner, field)
    if not is_int(value) or value < 1 or value % 2 == 0:
        raise SpecError(must_be(field, type(owner).__name__, "an odd int >= 1", value))


def check_filters(owner: Any, field: str, length: int | None = None) -> None:
    """A sequence of positive ints (lists from YAML or JSON become tuples)."""
    value = getattr(owner, field)
    filters = tuple(value) if isinstance(value, (list, tuple)) else None
    ok = filters is not None and len(filters) >= 1 and all(is_int(c) and c >= 1 for c in filters)
    if not ok or (length is not None and len(filters) != length):
        count = f"{length} ints >= 1" if length is not None else "a list of ints >= 1"
        raise SpecError(must_be(field, type(owner).__name__, count, value))
    object.__setattr__(owner, field, filters)


def check_rate(owner: Any, field: str) -> None:
    value = getattr(owner, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise SpecError(must_be(field, type(owner).__name__, "a number in [0, 1)", value))
    object.__setattr__(owner, field, float(value))


def check_shape(input_shape: Any) -> tuple[int, int, int]:
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(is_int(v) and v >= 1 for v in input_shape)
    ):
        raise SpecError(must_be("input_shape", None, "(height, width, channels) of positive ints", input_shape))
    return tuple(input_shape)  # type: ignore[return-value]


def check_divisible(owner: Any, input_shape: Any, factor: int, why: str) -> tuple[int, int, int]:
    height, width, channels = check_shape(input_shape)
    if height % factor or width % factor:
        allowed = f"an image size divisible by {factor} ({why})"
        raise SpecError(must_be("input_shape", type(owner).__name__, allowed, f"{height}x{width}"))
    return height, width, channels
