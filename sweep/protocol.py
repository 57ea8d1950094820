"""The training protocol, and the trial: one architecture under one protocol on one dataset.

Anything that changes a trial's result belongs in `Protocol` and so in the trial key;
anything that does not (paths, worker counts, devices) stays out of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from sweep.arch import _unknown, arch_from_dict
from sweep.errors import SpecError

__all__ = ["Protocol", "TrialSpec", "protocol_from_dict"]

DATASETS = ("cifar10", "cifar100", "folder", "synthetic")
TASKS = ("reconstruct", "colorize")
ENCODINGS = ("rgb", "ycbcr", "lab", "rgb_diff", "ratio")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
LOSSES = ("mse", "mae", "huber", "ab_classification")


@dataclass(frozen=True)
class Protocol:
    """How a trial is trained and evaluated. Defaults follow seed 002's study."""

    dataset: str = "cifar10"
    task: str = "reconstruct"  # reconstruct: image -> image; colorize: luminance -> colour
    encoding: str = "rgb"  # colorize: what the model predicts (reconstruct always uses rgb)
    image_size: int | None = None  # resize images to this square size (None: keep the data's)
    train_fraction: float = 0.1  # seed 002 trained on 10% of the data
    train_limit: int | None = None  # at most this many images after the fraction (smoke runs)
    val_fraction: float = 0.1  # carved from the selected training images, deterministically
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-3  # Keras' Adam default, which the seeds used
    loss: str = "mse"
    early_stopping_patience: int | None = None  # epochs without val improvement; None: off
    reduce_lr_patience: int | None = None  # seed 001: factor sqrt(0.1), patience 5, min_lr 5e-7
    reduce_lr_factor: float = math.sqrt(0.1)
    reduce_lr_min: float = 5e-7
    augment_flip: bool = False  # random horizontal flips of the training images
    augment_rotation: float = 0.0  # random rotation range in degrees (seed 001 used 15)
    mixed_precision: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(field: str, allowed: str) -> SpecError:
            value = getattr(self, field)
            return SpecError(f"The '{field}' parameter of Protocol must be {allowed}. Got {value!r} instead.")

        for field, choices in (
            ("dataset", DATASETS),
            ("task", TASKS),
            ("encoding", ENCODINGS),
            ("optimizer", OPTIMIZERS),
            ("loss", LOSSES),
        ):
            if getattr(self, field) not in choices:
                raise SpecError(_unknown(field, getattr(self, field), choices))
        if self.task == "reconstruct" and self.encoding != "rgb":
            raise SpecError(f"encoding {self.encoding!r} needs task 'colorize'; reconstruction predicts rgb")
        if self.loss == "ab_classification" and not (self.task == "colorize" and self.encoding == "lab"):
            raise SpecError("loss 'ab_classification' needs task 'colorize' with encoding 'lab'")
        if self.dataset == "folder" and self.image_size is None:
            raise SpecError("dataset 'folder' needs image_size, the square size its images are resized to (seed 003: 160)")
        for field in ("epochs", "batch_size", "seed"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if field == "seed" else 1):
                raise bad(field, "an int >= 0" if field == "seed" else "an int >= 1")
        for field in ("image_size", "train_limit", "early_stopping_patience", "reduce_lr_patience"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise bad(field, "an int >= 1 or null")
        for field, low, high, low_open in (
            ("train_fraction", 0.0, 1.0, True),
            ("val_fraction", 0.0, 0.5, True),
            ("learning_rate", 0.0, 10.0, True),
            ("reduce_lr_factor", 0.0, 1.0, True),
            ("reduce_lr_min", 0.0, 1.0, False),
        ):
            value = getattr(self, field)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not (low < value if low_open else low <= value) or value > high:
                raise bad(field, f"a number in {'(' if low_open else '['}{low:g}, {high:g}]")
            object.__setattr__(self, field, float(value))
        for field in ("augment_flip", "mixed_precision"):
            if not isinstance(getattr(self, field), bool):
                raise bad(field, "a bool")
        value = self.augment_rotation
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 180:
            raise bad("augment_rotation", "a number of degrees in [0, 180]")
        object.__setattr__(self, "augment_rotation", float(value))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def protocol_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Protocol)]


def protocol_from_dict(values: dict[str, Any], base: Protocol | None = None) -> Protocol:
    allowed = protocol_fields()
    for key in values:
        if key not in allowed:
            raise SpecError(_unknown("protocol key", key, allowed))
    return dataclasses.replace(base or Protocol(), **values)


@dataclass(frozen=True)
class TrialSpec:
    """One trial: an architecture, a protocol, and the identity of the data it runs on.

    `data_id` is a content hash of the dataset as loaded (see `sweep.data`), so the same
    configuration on the shared 5,085-image subset and on full CIFAR-10 are different trials,
    while moving the data to another path changes nothing.
    """

    arch: Any
    protocol: Protocol
    data_id: str

    @property
    def key(self) -> str:
        """A stable hash of the normalised spec, protocol and data: equal configurations, equal keys."""
        canonical = json.dumps(
            {"arch": self.arch.to_dict(), "protocol": self.protocol.to_dict(), "data": self.data_id},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "protocol": self.protocol.to_dict(), "data_id": self.data_id}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialSpec":
        return cls(
            arch=arch_from_dict(values["arch"]),
            protocol=protocol_from_dict(values["protocol"]),
            data_id=values["data_id"],
        )
