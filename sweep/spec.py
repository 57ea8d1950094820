"""What a trial is: an architecture, a training protocol, and the data, with a canonical key.

Anything that changes a trial's result belongs in `TrainingProtocol` and so in the trial
key; anything that does not (paths, worker counts, devices) stays out of it. The key hashes
the *effective* configuration (`TrialSpec.canonical`): fields that change nothing, such as
`reduce_lr_factor` while the plateau is off, or two `base_channels` x `channel_factor`
pairs that give the same widths, give one key, so the same model is never trained twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.arch import arch_from_dict, forward_flops, pointwise_saving
from sweep.data import DATASETS
from sweep.encodings import ANNEALED_T, ENCODINGS, TASKS, task_for
from sweep.errors import SpecError, did_you_mean, must_be

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "PRECISIONS",
    "TrainingProtocol",
    "TrialSpec",
    "current_backend",
    "digest",
    "protocol_fields",
    "protocol_from_dict",
    "protocol_key_error",
    "selected_images",
    "train_images_of",
]

OPTIMIZERS = ("adam", "rmsprop", "sgd")
LOSSES = ("mse", "mae", "huber", "ab_classification")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policies
# Protocol fields added after trials and studies were stored, with their defaults: left out of
# trial keys and study names while at them, so those stand (`TrainingProtocol.identity`).
LATER_FIELDS = {"annealed_temperature": ANNEALED_T}
RENAMED = {  # old protocol keys: what replaced them
    "mixed_precision": "precision (float32, mixed_bfloat16 or mixed_float16: the protocol names the dtype)",
}


@dataclass(frozen=True)
class TrainingProtocol:
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
    annealed_temperature: float = ANNEALED_T  # ab_classification: decode bins by the annealed mean at this T (1: the mean; towards 0: the mode)
    early_stopping_patience: int | None = None  # epochs without val improvement; None: off
    reduce_lr_patience: int | None = None  # seed 001: factor sqrt(0.1), patience 5, min_lr 5e-7
    reduce_lr_factor: float = math.sqrt(0.1)
    reduce_lr_min: float = 5e-7
    augment_flip: bool = False  # random horizontal flips of the training images
    augment_rotation: float = 0.0  # random rotation range in degrees (seed 001 used 15)
    precision: str = "float32"  # or half-precision compute with float32 weights: mixed_bfloat16, mixed_float16
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(field: str, allowed: str) -> SpecError:
            return SpecError(must_be(field, "TrainingProtocol", allowed, getattr(self, field)))

        for field, choices in (
            ("dataset", DATASETS),
            ("task", TASKS),
            ("encoding", ENCODINGS),
            ("optimizer", OPTIMIZERS),
            ("loss", LOSSES),
            ("precision", PRECISIONS),
        ):
            if getattr(self, field) not in choices:
                raise SpecError(did_you_mean(field, getattr(self, field), choices))
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
            ("annealed_temperature", 0.0, 10.0, True),
            ("reduce_lr_factor", 0.0, 1.0, True),
            ("reduce_lr_min", 0.0, 1.0, False),
        ):
            value = getattr(self, field)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not (low < value if low_open else low <= value) or value > high:
                raise bad(field, f"a number in {'(' if low_open else '['}{low:g}, {high:g}]")
            object.__setattr__(self, field, float(value))
        if not isinstance(self.augment_flip, bool):
            raise bad("augment_flip", "a bool")
        value = self.augment_rotation
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 180:
            raise bad("augment_rotation", "a number of degrees in [0, 180]")
        object.__setattr__(self, "augment_rotation", float(value))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields as trial keys and study names hash them: `LATER_FIELDS` at their
        defaults left out."""
        return {k: v for k, v in self.to_dict().items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}

    def canonical(self, native_size: int | None = None, train_images: int | None = None) -> dict[str, Any]:
        """The fields as they act on training, on images whose own square size is
        `native_size` and of which the data has `train_images` for training (each when known).
        Those that cannot change anything are left out or normalised: the annealed-mean
        temperature of any loss but ab classification, or at its default (the keys of earlier
        trials stand); the plateau's factor and floor while the plateau is off, or while its
        patience is too long to lower the rate before the last epoch; an early-stopping
        patience that could stop training only after its last epoch; an `image_size` equal to
        the images' own; fractions that select the same images (`train_fraction`,
        `val_fraction`: one spelling each, see `_spelling`), a `train_limit` spelt as the
        fraction that selects as many."""
        values = self.identity()
        if train_images is not None:
            values.update(self._split(train_images))
        if self.loss != "ab_classification":
            values.pop("annealed_temperature", None)  # decodes nothing
        if self.reduce_lr_patience is not None and self.reduce_lr_patience >= self.epochs - 1:
            values["reduce_lr_patience"] = None  # a rate lowered after the last epoch trains nothing
        if values["reduce_lr_patience"] is None:
            del values["reduce_lr_factor"], values["reduce_lr_min"]
        if self.early_stopping_patience is not None and self.early_stopping_patience >= self.epochs - 1:
            values["early_stopping_patience"] = None  # the earliest stop, after epoch patience + 1, is the end
        if self.image_size is not None and self.image_size == native_size and self.dataset != "folder":
            values["image_size"] = None  # resizes nothing
        return values

    def _split(self, train_images: int) -> dict[str, Any]:
        """`train_fraction`, `val_fraction` and `train_limit` as the images they select from
        `train_images`: the first N of a fixed shuffle, so N alone decides. N is spelt as the
        fraction that selects it without a limit (`_spelling`), the limit left out; the
        validation count likewise."""
        default = TrainingProtocol()
        selected = selected_images(self.train_fraction, self.train_limit, train_images)
        limit = self.train_limit if selected < 2 else None  # (under 2: only a limit selects so few)
        fraction = _spelling(lambda f: selected_images(f, limit, train_images), selected, 1.0, default.train_fraction)
        n_val = validation_images(self.val_fraction, selected)
        val = _spelling(lambda f: validation_images(f, selected), n_val, 0.5, default.val_fraction)
        return {"train_fraction": fraction or self.train_fraction, "val_fraction": val or self.val_fraction, "train_limit": limit}


def selected_images(train_fraction: float, train_limit: int | None, train_images: int) -> int:
    """How many of `train_images` training images a protocol selects (as `sweep.data.splits`)."""
    selected = max(2, int(round(train_fraction * train_images)))
    return selected if train_limit is None else min(selected, train_limit)


def validation_images(val_fraction: float, selected: int) -> int:
    """How many of the `selected` images validate (as `sweep.data.splits`)."""
    return max(1, int(round(val_fraction * selected)))


def _spelling(count: Any, target: int, high: float, default: float) -> float | None:
    """The one spelling of every fraction whose `count` of images is `target`: the default
    if it is one of them (the keys of trials at a limit that cuts the default fraction
    stand), else the smallest of the decimals in (0, high] with the fewest digits. `count`
    is non-decreasing in the fraction, so each digit count is one bisection."""
    if count(default) == target:
        return default  # (the keys of earlier trials at the default stand)
    for digits in range(16):
        def value(m: int) -> float:
            return float(f"{m}e-{digits}")  # the exact decimal: 3e-1 is 0.3, not 0.30000000000000004

        low, high_m = 1, int(round(high * 10**digits))
        if high_m < 1:
            continue
        while low < high_m:  # the smallest multiple of 10^-digits that selects at least `target`
            mid = (low + high_m) // 2
            low, high_m = (low, mid) if count(value(mid)) >= target else (mid + 1, high_m)
        if count(value(low)) == target:
            return value(low)
    return None  # (none of 15 digits: the fraction stays as given)


def protocol_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainingProtocol)]


def protocol_key_error(key: Any) -> str | None:
    """Why `key` is not a protocol key (None if it is one)."""
    if key in RENAMED:
        return f"protocol key {key!r} was replaced by {RENAMED[key]}"
    if key not in protocol_fields():
        return did_you_mean("protocol key", key, protocol_fields())
    return None


def protocol_from_dict(values: dict[str, Any], base: TrainingProtocol | None = None) -> TrainingProtocol:
    for key in values:
        error = protocol_key_error(key)
        if error:
            raise SpecError(error)
    return dataclasses.replace(base or TrainingProtocol(), **values)


def digest(value: Any) -> str:
    """A stable 16-hex-digit hash of JSON-able `value` (trial keys, compiled-step keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def current_backend() -> str:
    """The Keras backend this process trains with, found as Keras finds it (the imported
    module's, else $KERAS_BACKEND, else the `backend` of $KERAS_HOME/keras.json or
    ~/.keras/keras.json, else tensorflow) without importing Keras."""
    if "keras" in sys.modules and hasattr(sys.modules["keras"], "backend"):
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return str(json.loads((home / "keras.json").read_text()).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


DATA_ID = re.compile(r"^.+-(\d+)-\d+-[0-9a-f]+$")  # NAME-TRAIN-TEST-HASH (`sweep.data.Dataset.data_id`)


def train_images_of(data_id: str) -> int | None:
    """The number of training images a data id names (None for an id of another form)."""
    match = DATA_ID.match(data_id or "")
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class TrialSpec:
    """One trial: an architecture, a protocol, and the identity of the data it runs on.

    `data_id` is a content hash of the dataset as loaded (see `sweep.data`), so the same
    configuration on the shared 5,085-image subset and on full CIFAR-10 are different trials,
    while moving the data to another path changes nothing.
    """

    arch: Any
    protocol: TrainingProtocol
    data_id: str
    native_size: int | None = None  # the data's own square image size, when known
    backend: str = field(default_factory=current_backend)  # the Keras backend: each draws its own weights from a seed

    def canonical(self, seed: bool = True) -> dict[str, Any]:
        """The effective configuration: the architecture as built, the protocol as it acts,
        the data's content hash (and the seed, unless `seed` is False), and the Keras backend
        unless it is TensorFlow (so the keys of earlier trials stand).

        Under `ab_classification` the head is a 1x1 convolution whatever the family's own
        output kernel; a U-Net's `last_width` equal to the output's channels is its default."""
        protocol = self.protocol.canonical(self.native_size, train_images_of(self.data_id))
        if not seed:
            del protocol["seed"]
        arch = self.arch.canonical()
        task = task_for(self.protocol.task, self.protocol.encoding, self.protocol.loss)
        if arch.get("last_width") == task.output_channels:
            del arch["last_width"]
        values = {"arch": arch, "protocol": protocol, "data": self.data_id}
        if self.protocol.loss == "ab_classification":
            if "output_kernel" in arch:
                arch["output_kernel"] = 1  # the head's own kernel: nothing else reads it
            elif getattr(self.arch, "kernel_size", 1) != 1:
                values["head"] = "pointwise"  # a 1x1 output over the bins in place of the family's k x k one
        if self.backend != "tensorflow":
            values["backend"] = self.backend
        return values

    @property
    def key(self) -> str:
        """The trial key: a stable hash of the effective configuration. Equal models trained
        the same way on the same data have equal keys, whatever fields spelled them."""
        return digest(self.canonical())

    @property
    def config_key(self) -> str:
        """The key without the seed: replicates of one configuration share it."""
        return digest(self.canonical(seed=False))

    def forward_flops(self, image_shape: tuple[int, ...]) -> int:
        """Forward FLOPs per image of the trial's model on images of `image_shape` (H, W, ...),
        with the task's input and output channels."""
        task = task_for(self.protocol.task, self.protocol.encoding, self.protocol.loss)
        shape = (*image_shape[:2], task.input_channels)
        flops = forward_flops(self.arch, shape, task.output_channels)
        if self.protocol.loss == "ab_classification":  # its 1x1 head over the bins
            saving = pointwise_saving(self.arch, shape, task.output_channels)
            if saving is None:  # a family without the formula: counted on the built model
                from sweep.arch import build_autoencoder, model_flops

                return model_flops(build_autoencoder(self.arch, shape, task.output_channels, pointwise_output=True))
            flops -= saving[0]
        return flops

    def training_flops(self, image_shape: tuple[int, ...]) -> int:
        """Training FLOPs per image: about 3x the forward pass (a backward pass costs twice)."""
        return 3 * self.forward_flops(image_shape)

    def to_dict(self) -> dict[str, Any]:
        """The trial as the user spelled it (a row's `spec` column)."""
        values = {"arch": self.arch.to_dict(), "protocol": self.protocol.to_dict(), "data_id": self.data_id}
        if self.native_size is not None:
            values["native_size"] = self.native_size
        if self.backend != "tensorflow":
            values["backend"] = self.backend
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialSpec":
        """The trial of a row's `spec` column (the inverse of `to_dict`)."""
        return cls(
            arch=arch_from_dict(values["arch"]),
            protocol=protocol_from_dict(values["protocol"]),
            data_id=values["data_id"],
            native_size=values.get("native_size"),
            backend=values.get("backend", "tensorflow"),  # (rows of earlier versions name none)
        )
