"""Export a stored trial's model for use without sweep: a TensorFlow SavedModel or an ONNX
file, written by Keras' own `model.export`, with the pre- and post-processing beside it.

    trial = sweep.load_trial("results", "3f2a...")
    export_trial(trial, "exported/", "onnx")   # exported/model.onnx and exported/processing.json

The folder holds the model (`model.onnx`, or the SavedModel folder `saved_model/`, whose
`serve` endpoint runs it) and `processing.json`: what goes in (float32 NHWC in [0, 1] at the
trained size: RGB, or a colorizer's BT.601 luma, after Pillow's bicubic resize on uint8),
how the outputs decode to RGB for the trial's encoding (formulas; an `ab_classification`
trial's bin centres and annealed-mean temperature), the calibrated chroma gain where the
trial has one, and the trial key, task, encoding, loss and sweep's version.

ONNX goes through tf2onnx, so it needs the `onnx` extra (`pip install -e '.[onnx]'`) and
the TensorFlow backend (Keras' JAX path, jax2onnx, writes MaxPool nodes ONNX Runtime
refuses); the SavedModel needs nothing beyond sweep's own dependencies, under TensorFlow or
JAX. Keras loads on the first export, never on import.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.encodings import AB_SCALE, BT601, DIFF_SCALE, RATIO_EPS, ABClassificationTask, Task, ab_bins
from sweep.errors import SpecError, did_you_mean
from sweep.files import atomic_write, held_native_stderr

if TYPE_CHECKING:
    from sweep.use import TrainedTrial

__all__ = ["DEFAULT_FORMAT", "FORMATS", "PROCESSING_FILE", "check_export", "export_trial", "processing"]

FORMATS = ("tf_saved_model", "onnx")  # Keras' `model.export` formats offered
DEFAULT_FORMAT = "tf_saved_model"  # needs only TensorFlow (a core dependency) and works under the JAX backend too
MODEL_NAMES = {"tf_saved_model": "saved_model", "onnx": "model.onnx"}  # the model's name inside the export folder
PROCESSING_FILE = "processing.json"
ONNX_MODULES = ("tf2onnx", "onnx")  # what Keras' ONNX export imports under TensorFlow
ONNX_EXTRA = "sweep's onnx extra, pip install -e '.[onnx]' in its folder (tf2onnx, onnx, onnxruntime)"

_Y = " + ".join(f"{w:.3f} {c}" for w, c in zip(BT601.tolist(), "RGB"))  # "0.299 R + 0.587 G + 0.114 B"
_YD = " + ".join(f"{w:.3f} D_{c}" for w, c in zip(BT601.tolist(), "RGB"))
_YQ = _YD.replace("D_", "Q_")
_LAB_TO_RGB = (
    "L* = the lightness in [0, 100] at which sRGB(L*, a*, b*) (CIE L*a*b*, D65, 2 degrees; clipped to [0, 1]) has "
    "BT.601 luma Y, found per pixel by a bracketed 1-D root search (the luma grows with L*; a luma no L* reaches takes "
    "the nearer end); RGB = sRGB(L*, a*, b*) (sweep.encodings.lab_to_rgb_with_luma)"
)
# How each encoding's outputs O (per pixel, channels in order) decode to RGB with the input
# luma Y: the formulas of `sweep.encodings` (each Encoding's `decode`), written out.
DECODING = {
    "reconstruct": "RGB = O",
    "rgb": "RGB = O (R, G, B; the input luma is not used)",
    "ycbcr": (
        "JPEG full-range YCbCr: Cb = O[0] - 0.5, Cr = O[1] - 0.5; "
        "R = Y + 1.402 Cr, G = Y - 0.344136 Cb - 0.714136 Cr, B = Y + 1.772 Cb"
    ),
    "lab": f"a* = {AB_SCALE:g} (O[0] - 0.5), b* = {AB_SCALE:g} (O[1] - 0.5); {_LAB_TO_RGB}",
    "rgb_diff": f"D = (O - 0.5) / {DIFF_SCALE:g}; m = Y - ({_YD}); RGB = D + m",
    "ratio": f"Q = 3 O; w = max({_YQ}, 1e-6); RGB = Q (Y + e) / w - e, e = 1/255 = {RATIO_EPS:.8f}",
    "ab_classification": (
        "O holds one logit per ab bin (bins: their a*, b* centres, in order): p = softmax(O / temperature) over the "
        f"bins; (a*, b*) = sum_q p_q bins[q]; {_LAB_TO_RGB}"
    ),
}


def check_export(directory: str | Path, format: str) -> None:
    """Refuse, before any model loads, an unknown format, an ONNX export whose converter is
    not installed, and a folder that exists and is not empty."""
    if format not in FORMATS:
        raise SpecError(did_you_mean("export format", format, FORMATS))
    if format == "onnx":
        missing = [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            raise SpecError(f"--format onnx needs {' and '.join(missing)} (Keras exports ONNX through tf2onnx), not installed here; install {ONNX_EXTRA}")
    path = Path(directory)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SpecError(f"--export {directory}: {'a file' if not path.is_dir() else 'a folder that is not empty'}; name a new or empty folder")


def export_trial(trial: TrainedTrial, directory: str | Path, format: str = DEFAULT_FORMAT) -> Path:
    """Export `trial`'s model to `directory` (new or empty) in `format` ("tf_saved_model" or
    "onnx") through Keras' `model.export`, with `processing.json` beside it; return the
    model's path. The folder appears whole or not at all."""
    from sweep import backend

    check_export(directory, format)
    name = backend.keras_ready()
    if format == "onnx" and name != "tensorflow":
        raise SpecError(
            f"--format onnx: Keras exports ONNX through tf2onnx under the TensorFlow backend, and this process runs "
            f"KERAS_BACKEND={name}; export with KERAS_BACKEND=tensorflow (the default), or use --format tf_saved_model"
        )
    import keras
    import numpy as np

    model = trial.model
    if isinstance(model.input, list):  # a classification head rebuilt on `model.inputs` takes its one input in a list
        image = keras.Input(shape=model.input_shape[1:], name=model.inputs[0].name)
        model = keras.Model(image, model([image]), name=model.name)  # ... served bare, as every other model
    model(np.zeros((1, *model.input_shape[1:]), np.float32), training=False)  # (Keras exports only a model that has run)
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # (mkdtemp's is 0700: the export is for others to read)
    try:
        model_path = staging / MODEL_NAMES[format]
        with warnings.catch_warnings(), held_native_stderr():  # (TensorFlow's graph-optimiser notes; shown if it fails)
            warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)  # Keras' NumPy 2 patch of tf2onnx
            model.export(str(model_path), format=format, verbose=False)
        info = processing(trial, format, _endpoint(model_path, format))
        atomic_write(staging / PROCESSING_FILE, _compact_json(info) + "\n")
        if target.exists():
            target.rmdir()  # empty (checked above)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target / MODEL_NAMES[format]


def _endpoint(path: Path, format: str) -> dict[str, Any]:
    """How to call the exported model: its input and output names, read back from the file."""
    if format == "onnx":
        import onnx

        graph = onnx.load(str(path)).graph
        return {"input": graph.input[0].name, "output": graph.output[0].name, "run": "onnxruntime.InferenceSession(path).run(None, {input: x})[0]"}
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    _, inputs = signature.structured_input_signature  # (positional, keyword): a signature takes keywords
    return {
        "input": next(iter(inputs)),
        "output": next(iter(signature.structured_outputs)),
        "run": "m = tf.saved_model.load(path); m.serve(x) (or m.signatures[\"serving_default\"](**{input: x})[output])",
    }


def processing(trial: TrainedTrial, format: str, endpoint: dict[str, Any]) -> dict[str, Any]:
    """`processing.json`: the model file and how to call it, the input it takes, and how its
    output decodes to RGB."""
    import sweep

    p = trial.spec.protocol
    task: Task = trial.task
    height, width = trial.input_size
    model = trial.model
    colorizer = p.task == "colorize"
    recipe = "ab_classification" if isinstance(task, ABClassificationTask) else p.encoding if colorizer else "reconstruct"
    info: dict[str, Any] = {
        "sweep_version": sweep.__version__,
        "trial_key": trial.key,
        "task": p.task,
        "encoding": p.encoding,
        "loss": p.loss,
        "model": {"format": format, "path": MODEL_NAMES[format], **endpoint},
        "input": {
            "layout": "NHWC",
            "shape": [None, *model.input_shape[1:]],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "image": f"the BT.601 luma Y = {_Y} of RGB in [0, 1]" if colorizer else "RGB in [0, 1]",
            "resize": (
                f"first, to {height}x{width} (height x width): RGB as uint8 (round(255 x)), Pillow "
                f"Image.resize(({width}, {height}), Image.BICUBIC), then / 255; an image already that size as it is"
            ),
        },
        "output": {
            "shape": [None, *model.output_shape[1:]],
            "decode": DECODING[recipe] + ("; Y is the model's input" if colorizer and recipe != "rgb" else ""),
            "then": "clip RGB to [0, 1]",
        },
    }
    if recipe == "ab_classification":
        info["output"]["temperature"] = float(task.temperature)
        info["output"]["bins"] = ab_bins().astype(int).tolist()  # (a*, b*) centres, one per output channel
    gain = trial.chroma_gain if trial.is_colorizer else None  # (None too when decoded at another temperature than it was fitted at)
    if gain is not None:
        info["chroma_gain"] = {
            "value": gain,
            "apply": "the trial's calibrated gain s, which sweep's colorize applies after decoding: RGB' = clip(Y + s (RGB - Y), 0, 1), Y the model's input "
            "(any other gain the same way; about each image's mean chroma m = mean(RGB - Y): RGB' = clip(Y + m + s (RGB - Y - m), 0, 1))",
        }
    return info


def _compact_json(value: Any, depth: int = 0) -> str:
    """Indented JSON with each list of numbers on one line (a shape, a bin centre)."""
    inner, outer = " " * (depth + 1), " " * depth
    if isinstance(value, dict) and value:
        items = (f"{inner}{json.dumps(str(k))}: {_compact_json(v, depth + 1)}" for k, v in value.items())
        return "{\n" + ",\n".join(items) + f"\n{outer}}}"
    if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
        return "[\n" + ",\n".join(f"{inner}{_compact_json(v, depth + 1)}" for v in value) + f"\n{outer}]"
    return json.dumps(value)

