"""Use what you trained: load a stored trial and apply it to your own images.

    trial = sweep.load_trial("results", "3f2a...")                         # by trial key
    trial = sweep.load_trial("results", best="val_psnr", task="colorize")  # the best colorizer
    colour = trial.colorize("photo.jpg")            # at the photo's own size
    codes = trial.encode(images)                    # the latent tensors
    again = trial.decode(codes, luma=images)        # = trial.reconstruct(images) (no skips)

Preprocessing is the trial's own: images go to float32 RGB in [0, 1], are resized to the
trained size with the data pipeline's filter (`sweep.data.resize`: Pillow's bicubic on
uint8), and a colorizer sees their BT.601 luma; outputs go back to RGB through the task's
decoding (`sweep.encodings.task_for`, the annealed temperature overridable). A colorizer
colorizes a photo of any size at that size (`colorize(..., method=)`): "upsample" (the
default, measured better) predicts the chroma at the trained size and upsamples it onto the
full-resolution luma; "native" runs the same weights rebuilt at the image's size, where the
architecture is fully convolutional.
Keras loads on first use of the model, never on import.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sweep.chroma import ABOUT, GAIN_FILE, MAX_GAIN, read_gain
from sweep.encodings import AB_SCALE, ENCODINGS, ABClassificationTask, Task, annealed_mean, luminance, task_for
from sweep.errors import DataError, SpecError, did_you_mean, must_be
from sweep.spec import TrialSpec

__all__ = ["METHODS", "TrainedTrial", "load_trial", "read_images"]

METHODS = ("upsample", "native")  # how a colorizer meets an image of another size (see the module's doc)
DEFAULT_METHOD = "upsample"  # +1.04 dB over gray against native's +0.11 on skimage's photographs (README, "Using a trained model")
CHUNK = 64  # images per forward pass


# --------------------------------------------------------------------------- images


def _as_float_rgb(image: np.ndarray, what: str) -> tuple[np.ndarray, bool]:
    """One image as float32 RGB (H, W, 3) in [0, 1], and whether it had colour."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise DataError(f"{what}: an image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {image.shape}")
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    elif np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float32)
        if not np.isfinite(image).all() or image.min() < 0.0 or image.max() > 1.0:
            raise DataError(f"{what}: a float image must hold values in [0, 1] (uint8 for 0-255); got [{np.nanmin(image):g}, {np.nanmax(image):g}]")
    else:
        raise DataError(f"{what}: images must be uint8 or float arrays; got dtype {image.dtype}")
    if image.shape[-1] == 4:
        image = image[..., :3]
    colour = image.shape[-1] == 3 and not (np.allclose(image[..., 0], image[..., 1]) and np.allclose(image[..., 1], image[..., 2]))
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image, colour


def _read(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err}); JPEG, PNG and the formats Pillow reads are") from None


def read_images(images: Any) -> tuple[list[np.ndarray], list[bool], bool]:
    """What a user has (a path, an array, a batch array (N, H, W, C), or a list of paths and
    arrays) as float32 RGB images in [0, 1], whether each had colour, and whether a single
    image was given (then methods return a single image)."""
    if isinstance(images, (str, Path)):
        rgb, colour = _as_float_rgb(_read(Path(images)), str(images))
        return [rgb], [colour], True
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            pairs = [_as_float_rgb(image, f"image {i}") for i, image in enumerate(images)]
            return [p[0] for p in pairs], [p[1] for p in pairs], False
        rgb, colour = _as_float_rgb(images, "image")
        return [rgb], [colour], True
    if isinstance(images, Sequence) and len(images) > 0:
        out, colours = [], []
        for i, item in enumerate(images):
            if isinstance(item, (str, Path)):
                rgb, colour = _as_float_rgb(_read(Path(item)), str(item))
            else:
                rgb, colour = _as_float_rgb(item, f"image {i}")
            out.append(rgb)
            colours.append(colour)
        return out, colours, False
    raise DataError(f"images: a path, an array or a non-empty list of them; got {type(images).__name__}")


def _to_size(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The data pipeline's resize (`sweep.data.resize`: Pillow's bicubic on uint8) to the
    trained size; an image already that size is used as it is."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    from PIL import Image

    uint8 = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    if size[0] == size[1]:
        from sweep.data import resize

        return resize(uint8[None], size[0])[0].astype(np.float32) / 255.0
    return np.asarray(Image.fromarray(uint8).resize((size[1], size[0]), Image.BICUBIC)).astype(np.float32) / 255.0


def _upsample(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, C) float values bilinearly resized to `size` (no overshoot: stays in range)."""
    from skimage.transform import resize

    return resize(values.astype(np.float64), (*size, values.shape[-1]), order=1, mode="edge", anti_aliasing=False).astype(np.float32)


def _stack_or_list(images: list[np.ndarray], single: bool):
    if single:
        return images[0]
    if len({image.shape for image in images}) == 1:
        return np.stack(images)
    return images


# --------------------------------------------------------------------------- the trial


@dataclass
class TrainedTrial:
    """A stored trial, ready to apply: its `row` (the results table's), `spec`, `folder`
    (model.keras, spec.json, ...) and `model` (Keras, loaded on first use)."""

    row: dict[str, Any]
    spec: TrialSpec
    folder: Path
    temperature: float | None = None  # ab_classification's annealed-mean temperature (None: the trial's)
    _rebuilt: dict = field(default_factory=dict, repr=False)
    _gain: float | None = field(default=None, repr=False)  # s* fitted in this session (fit_chroma_gain)

    @property
    def key(self) -> str:
        return self.spec.key

    @functools.cached_property
    def model(self):
        import keras

        from sweep import backend

        backend.keras_ready()
        path = self.folder / "model.keras"
        if not path.exists():
            raise DataError(f"trial {self.key}: no model.keras in {self.folder} (trained with save_model off, or it failed)")
        return keras.saving.load_model(path, compile=False)

    @property
    def task(self) -> Task:
        p = self.spec.protocol
        return task_for(p.task, p.encoding, p.loss, p.annealed_temperature if self.temperature is None else self.temperature)

    @property
    def input_size(self) -> tuple[int, int]:
        """The trained (height, width)."""
        return tuple(int(n) for n in self.model.input_shape[1:3])  # type: ignore[return-value]

    @property
    def is_colorizer(self) -> bool:
        return self.spec.protocol.task == "colorize"

    @property
    def chroma_gain(self) -> float | None:
        """The calibrated chroma gain s* (`sweep.chroma`): from the trial's folder
        (chroma_gain.json) or its row; None for a trial trained before calibration (then
        `fit_chroma_gain()` fits it, or colorize uses 1); None too when an ab classifier is
        decoded at another temperature than the one its gain was fitted at."""
        if self._gain is not None:
            return self._gain
        if not self.chroma_gain_is_the_trials():
            return None
        stored = read_gain(self.folder)
        if stored is None:
            value = self.row.get("chroma_gain")
            stored = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
        return stored

    def chroma_gain_is_the_trials(self) -> bool:
        """Whether this trial decodes as it was trained (its temperature), so a gain fitted now
        is the one to store in its folder."""
        return self.temperature is None or self.temperature == self.spec.protocol.annealed_temperature

    def fit_chroma_gain(self, data_dir: str | None = None) -> float:
        """Fit s* on the trial's validation split as training does (for an older trial), keep it,
        and store it in the trial's folder when that is writable. Raises DataError when the
        trial's data is not at hand (`data_dir` as `--data-dir`; None: Keras' download cache)."""
        if not self.is_colorizer:
            raise SpecError(f"trial {self.key} is a {self.spec.protocol.task!r} model: it has no chroma to calibrate")
        from sweep.chroma import calibrate, write_gain
        from sweep.data import load_dataset
        from sweep.train.arrays import splits_for

        protocol = self.spec.protocol
        dataset = load_dataset(protocol.dataset, data_dir, protocol.image_size if protocol.dataset == "folder" else None)
        if dataset.data_id != self.spec.data_id:
            raise DataError(f"trial {self.key}: the data at hand ({dataset.data_id[:12]}) is not the data it was trained on ({self.spec.data_id[:12]})")
        splits = splits_for(dataset, protocol)
        val = self.task.to_rgb(self._run(self.model, self.task.inputs(splits.val)), self.task.inputs(splits.val))
        test = self.task.to_rgb(self._run(self.model, self.task.inputs(splits.test)), self.task.inputs(splits.test))
        columns = calibrate(splits.val, val, splits.test, test)
        self._gain = columns["chroma_gain"]
        if self.chroma_gain_is_the_trials():
            try:
                write_gain(self.folder, columns, len(splits.val))
            except OSError:  # a read-only copy: the gain is kept for this session only
                pass
        return self._gain

    # ----------------------------------------------------------------- running the model

    def _run(self, model, inputs: np.ndarray) -> np.ndarray:
        import keras

        wrap = isinstance(model.input, list)  # (a model built with its input in a list wants it so)
        parts = [
            keras.ops.convert_to_numpy(model([batch] if wrap else batch, training=False))
            for batch in (inputs[i : i + CHUNK] for i in range(0, len(inputs), CHUNK))
        ]
        return np.concatenate(parts).astype(np.float32)

    def _inputs(self, images: Any) -> tuple[np.ndarray, list[bool], bool]:
        """The model's inputs at the trained size: RGB, or the luma for a colorizer."""
        rgb, colours, single = read_images(images)
        small = np.stack([_to_size(image, self.input_size) for image in rgb])
        return self.task.inputs(small), colours, single

    def reconstruct(self, images: Any):
        """The model's RGB output at the trained size (a colorizer's: colorized at that size)."""
        x, _, single = self._inputs(images)
        rgb = self.task.to_rgb(self._run(self.model, x), x)
        return rgb[0] if single else rgb

    def encode(self, images: Any):
        """The latent tensors (the output of the layer named `latent`) at the trained size."""
        x, _, single = self._inputs(images)
        codes = self._run(self._encoder(), x)
        return codes[0] if single else codes

    def decode(self, latents: np.ndarray, luma: Any = None):
        """RGB images from latent tensors; a colorizer needs `luma` (the images whose luma the
        chroma is recombined with: any images, resized to the trained size). Refuses for a
        model whose decoder also sees encoder features (a U-Net with skips)."""
        latents = np.asarray(latents, np.float32)
        decoder = self._decoder()
        single = latents.ndim == len(decoder.input_shape) - 1
        batch = latents[None] if single else latents
        out = self._run(decoder, batch)
        if self.is_colorizer:
            if luma is None:
                raise SpecError(f"decode: trial {self.key} is a colorizer; pass luma= (the images whose luma the predicted chroma goes with)")
            x, _, _ = self._inputs(luma)
            if len(x) != len(out):
                raise DataError(f"decode: {len(out)} latent tensors but {len(x)} luma images")
        else:
            x = out
        rgb = self.task.to_rgb(out, x)
        return rgb[0] if single else rgb

    def colorize(self, images: Any, method: str = DEFAULT_METHOD, gain: float | None = None, about: str = "gray"):
        """Each image colorized at its own size from its luma (a colour image's colour is
        discarded; an `rgb` colorizer's output keeps its chroma with the image's luma). `method`: "upsample" (chroma predicted at the trained size, upsampled onto
        the full-resolution luma; the default) or "native" (the weights rebuilt at the image's
        size; only a fully convolutional architecture). `gain`: the chroma gain (`sweep.chroma`;
        None: the calibrated s*, or 1 for a trial without one; 1: the model's own colours), scaled
        `about` gray or each image's own mean chroma ("mean": no cast grows with the gain)."""
        if not self.is_colorizer:
            raise SpecError(f"trial {self.key} is a {self.spec.protocol.task!r} model: it cannot colorize; use reconstruct() (or train task: colorize)")
        if method not in METHODS:
            raise SpecError(did_you_mean("method", method, METHODS))
        if gain is None:
            gain = self.chroma_gain if self.chroma_gain is not None else 1.0
        if not (isinstance(gain, numbers.Real) and 0 <= gain <= MAX_GAIN):
            raise SpecError(must_be("chroma gain", "colorize", f"a number in [0, {MAX_GAIN:g}] (1: the model's colours; 0: gray)", gain))
        if about not in ABOUT:
            raise SpecError(did_you_mean("chroma gain about", about, ABOUT))
        rgb, _, single = read_images(images)
        out = [self._colorize_one(image, method, float(gain), about) for image in rgb]
        return _stack_or_list(out, single)

    def _colorize_one(self, rgb: np.ndarray, method: str, gain: float = 1.0, about: str = "gray") -> np.ndarray:
        luma = luminance(rgb[None])[0]
        size = rgb.shape[:2]
        if method == "native" or size == self.input_size:
            full = self._native(luma)
        else:
            small = luminance(_to_size(rgb, self.input_size)[None])
            targets, encoding = _chroma_targets(self.task, self._run(self.model, small)[0])
            full = ENCODINGS[encoding].decode(_upsample(targets, size), luma)
        if self.task.encoding == "rgb":  # an rgb colorizer ignores the luma: keep its chroma, put back the image's luma
            from skimage.color import rgb2ypbpr, ypbpr2rgb

            ypbpr = rgb2ypbpr(np.clip(full, 0, 1).astype(np.float64))
            ypbpr[..., 0] = luma[..., 0]
            full = ypbpr2rgb(ypbpr)
        full = np.clip(full, 0.0, 1.0)  # (decoded and clipped, then scaled: as training fits s*, sweep.chroma.calibrate)
        if gain != 1.0:  # the chroma scaled about the image's gray or its mean chroma (sweep.chroma.with_gain)
            chroma = full - luma
            centre = chroma.mean(axis=(0, 1), keepdims=True) if about == "mean" else 0.0
            full = luma + centre + gain * (chroma - centre)
        return np.clip(full, 0.0, 1.0).astype(np.float32)

    def _native(self, luma: np.ndarray) -> np.ndarray:
        """The model at the image's size (padded by reflection to a size the architecture takes)."""
        height, width = luma.shape[:2]
        if (height, width) == self.input_size:
            model, padded = self.model, luma
        else:
            pad_h, pad_w = self._padding(height), self._padding(width)
            padded = np.pad(luma, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(height, width) > 1 else "edge")
            model = self._rebuild(padded.shape)
        out = self._run(model, padded[None])[0][:height, :width]
        return self.task.to_rgb(out[None], luma[None])[0]

    def _padding(self, size: int) -> int:
        for extra in range(0, 257):
            try:
                self.spec.arch.check_input((size + extra, size + extra, 1))
                return extra
            except SpecError:
                continue
        raise SpecError(f"trial {self.key}: no size near {size} suits its architecture; use method='upsample'")

    def _rebuild(self, shape: tuple[int, ...]):
        if shape not in self._rebuilt:
            from sweep.train.step import build_model

            model = build_model(self.spec, shape, self.task)
            try:
                model.set_weights(self.model.get_weights())
            except ValueError:
                raise SpecError(
                    f"trial {self.key}: its {self.spec.arch.family} architecture has weights tied to the trained size "
                    f"{self.input_size[0]}x{self.input_size[1]} (a Dense layer): it cannot run at {shape[0]}x{shape[1]}; use method='upsample'"
                ) from None
            self._rebuilt = {shape: model}  # one size at a time: a folder of photos of one size reuses it
        return self._rebuilt[shape]

    # ----------------------------------------------------------------- encoder and decoder

    def _encoder(self):
        import keras

        return keras.Model(self.model.input, self.model.get_layer("latent").output, name="encoder")

    def _decoder(self):
        import keras

        arch = self.spec.arch
        if getattr(arch, "skips", False):
            raise SpecError(
                f"decode: trial {self.key}'s U-Net passes encoder features to its decoder through skip connections, "
                "so the latent alone does not determine the output; encode() gives the bottleneck, reconstruct() the output"
            )
        latent = self.model.get_layer("latent")
        start = keras.Input(shape=latent.output.shape[1:], name="latent_in")
        x, after = start, False
        for layer in self.model.layers:  # a functional chain: every layer after `latent` takes the previous one's output
            if after:
                x = layer(x)
            after = after or layer is latent
        return keras.Model(start, x, name="decoder")


def _chroma_targets(task: Task, outputs: np.ndarray) -> tuple[np.ndarray, str]:
    """A colorizer's outputs as targets of a colour encoding (ab classification: the annealed
    mean's a*b*, in the lab encoding), which can be upsampled and decoded with any luma."""
    if isinstance(task, ABClassificationTask):
        return annealed_mean(outputs, task.temperature) / AB_SCALE + 0.5, "lab"
    return outputs, task.encoding


# --------------------------------------------------------------------------- finding a trial


def _metric_column(best: str, columns) -> str:
    from sweep.results.schema import METRICS, goal

    ranked = [name for name in METRICS if goal(name) is not None]
    name = best if best in ranked else f"val_{best}" if f"val_{best}" in ranked else None  # validation unless said
    if name is None:
        raise SpecError(did_you_mean("best metric", best, ranked))
    if name not in columns:
        raise SpecError(f"best metric {name!r}: no trial of these results has it")
    return name


def load_trial(
    results: str | Path,
    trial_key: str | None = None,
    *,
    best: str | None = None,
    task: str | None = None,
    group: str | None = None,
    artifacts: str | None = None,
    temperature: float | None = None,
) -> TrainedTrial:
    """A stored trial: `trial_key` in `results` (a results folder, a storage URL with its
    `artifacts`, or one trial's folder, RESULTS/trials/<key>/), or the `best` complete trial
    by a metric (a bare name means the validation split's: "psnr" is "val_psnr"; the test
    split only when named), ranked within one `task` and one comparable `group`: candidates
    of several groups are refused with their names."""
    from sweep.results import is_url

    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 < temperature <= 10):
        raise SpecError(must_be("temperature", "load_trial", "a number in (0, 10] (1: the mean; towards 0: the mode)", temperature))
    where = str(results)
    if not is_url(where) and (Path(where) / "spec.json").exists():  # one trial's folder
        folder = Path(where)
        spec = TrialSpec.from_dict(json.loads((folder / "spec.json").read_text()))
        row = _row_of(folder.parent.parent, spec.key)
        return TrainedTrial(row, spec, folder, temperature)
    if (trial_key is None) == (best is None):
        raise SpecError("load_trial: give a trial key or best=METRIC, not both and not neither")
    if is_url(where) and artifacts is None:
        raise SpecError(f"{where}: a storage URL holds rows, not models; name the run's artefact store (--artifacts DIR_OR_URL; artifacts= in Python)")
    if not is_url(where) and not Path(where).is_dir():
        raise DataError(f"{where}: no such results folder")
    from sweep.results import load_results

    frame = load_results(where)
    if trial_key is not None:
        match = frame[frame["trial_key"] == trial_key]
        if match.empty:
            raise SpecError(did_you_mean("trial key", trial_key, list(frame["trial_key"])) + f" (in {where})")
        row = match.iloc[-1].to_dict()
    else:
        row = _best_row(frame, best, task, group, where)
    key = row["trial_key"]
    folder = Path(where) / "trials" / key if artifacts is None else _download(artifacts, key)
    spec_path = folder / "spec.json"
    if not spec_path.exists():
        raise DataError(f"trial {key}: no spec.json in {folder}")
    spec = TrialSpec.from_dict(json.loads(spec_path.read_text()))
    return TrainedTrial(row, spec, folder, temperature)


def _best_row(frame, best: str, task: str | None, group: str | None, where: str) -> dict[str, Any]:
    from sweep.encodings import TASKS
    from sweep.results.schema import higher_is_better

    metric = _metric_column(best, frame.columns)
    candidates = frame[(frame["status"] == "complete") & frame[metric].notna()]
    if task is not None:
        if task not in TASKS:
            raise SpecError(did_you_mean("task", task, TASKS))
        candidates = candidates[candidates["task"] == task]
    if group is not None:
        names = list(dict.fromkeys(frame["group"]))
        if group not in names:
            raise SpecError(f"group {group!r}: not a group of {where}; its groups: {'; '.join(map(repr, names))}")
        candidates = candidates[candidates["group"] == group]
    if candidates.empty:
        what = " and ".join(f"{k} {v!r}" for k, v in (("task", task), ("group", group)) if v is not None)
        raise SpecError(f"best {metric}: no complete trial in {where}{' of ' + what if what else ''} has it")
    names = list(dict.fromkeys(candidates["group"]))
    if len(names) > 1:
        raise SpecError(
            f"best {metric}: the candidates in {where} span {len(names)} comparable groups ({'; '.join(map(repr, names))}), "
            f"which are not ranked together; name one with group= (--group){'' if task else ' or a task with task= (--task)'}"
        )
    order = candidates[metric].sort_values(ascending=not higher_is_better(metric), kind="stable")
    return candidates.loc[order.index[0]].to_dict()


def _row_of(results: Path, key: str) -> dict[str, Any]:
    """The trial's row when its folder sits in a results folder; else just its key."""
    try:
        from sweep.results import load_results

        frame = load_results(results)
        match = frame[frame["trial_key"] == key]
        if not match.empty:
            return match.iloc[-1].to_dict()
    except Exception:  # a copied trial folder has no table beside it: the spec is all there is
        pass
    return {"trial_key": key}


def _download(where: str, key: str) -> Path:
    from sweep.artifacts import Artifacts

    folder = Path(tempfile.mkdtemp(prefix=f"sweep-trial-{key[:12]}-"))
    store = Artifacts(where)
    for name in ("model.keras", "spec.json"):
        if not store.get(key, name, folder / name):
            raise DataError(f"trial {key}: no {name} in the artefact store {where} (was the run given --artifacts {where}?)")
    store.get(key, GAIN_FILE, folder / GAIN_FILE)  # the calibrated chroma gain, where the trial has one
    return folder
