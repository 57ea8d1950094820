"""Exporting a stored trial (`sweep.export`, `python -m sweep.apply --export`): the ONNX file,
run in ONNX Runtime, and the SavedModel, run in TensorFlow, give the Keras model's outputs,
and processing.json says truly how a photograph becomes the model's input and its output RGB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweep.arch import ArchSpec
from sweep.encodings import BT601, ENCODINGS, ab_bins, lab_to_rgb_with_luma
from sweep.errors import SpecError
from sweep.spec import TrainingProtocol, TrialSpec

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dataset="synthetic", epochs=1, train_fraction=1.0, train_limit=48, batch_size=16)
TOLERANCE = 1e-5  # |exported - Keras| on every output value; measured: ONNX 1.5e-7 (float32 sums reordered), SavedModel 0
DECODED_TOLERANCE = 1e-5  # RGB decoded by processing.json's formulas against sweep's own; measured 5.3e-7

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A results folder with a reconstruction trial, a YCbCr colorizer and an ab
    classification colorizer (seed 002's smallest family, one epoch); their keys by name."""
    from sweep.data import load_dataset
    from sweep.results import write_row
    from sweep.train import run_trial

    data = load_dataset("synthetic")
    root = tmp_path_factory.mktemp("export")
    protocols = {
        "reconstruct": TrainingProtocol(**TINY),
        "ycbcr": TrainingProtocol(**TINY, task="colorize", encoding="ycbcr"),
        "classes": TrainingProtocol(**TINY, task="colorize", encoding="lab", loss="ab_classification"),
    }
    keys = {}
    for name, protocol in protocols.items():
        spec = TrialSpec(ArchSpec(channel_factor=1), protocol, data.data_id)
        row = run_trial(spec, data, root)
        assert row["status"] == "complete", row["error"]
        write_row(root, row)
        keys[name] = spec.key
    return root, keys


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """export(name, format) -> (trial, model path, processing.json), each exported once."""
    from sweep.export import export_trial
    from sweep.use import load_trial

    root, keys = trained
    done = {}

    def export(name: str, format: str):
        if (name, format) not in done:
            trial = load_trial(root, keys[name])
            path = export_trial(trial, tmp_path_factory.mktemp(f"{name}-{format}"), format)  # (an empty folder is taken)
            done[name, format] = trial, path, json.loads((path.parent / "processing.json").read_text())
        return done[name, format]

    return export


def photos() -> list[np.ndarray]:
    """scikit-image's bundled colour photographs (uint8, several sizes) and a noise image."""
    from skimage import data

    noise = (np.random.default_rng(0).random((40, 24, 3)) * 255).astype(np.uint8)
    return [data.astronaut(), data.coffee(), data.chelsea(), noise]


def resized(info: dict, images: list[np.ndarray]) -> np.ndarray:
    """uint8 photographs at the trained size, as processing.json says: float32 RGB in [0, 1]."""
    from PIL import Image

    height, width = info["input"]["shape"][1:3]
    assert f"Image.resize(({width}, {height}), Image.BICUBIC)" in info["input"]["resize"]
    return np.stack([np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC)) for image in images]).astype(np.float32) / 255


def model_inputs(info: dict, images: list[np.ndarray]) -> np.ndarray:
    """What processing.json says the model takes, made from uint8 photographs."""
    rgb = resized(info, images)
    if info["task"] == "colorize":
        assert "0.299 R + 0.587 G + 0.114 B" in info["input"]["image"]
        return (rgb @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    assert info["input"]["image"] == "RGB in [0, 1]"
    return rgb


def run_exported(path: Path, info: dict, x: np.ndarray) -> np.ndarray:
    if info["model"]["format"] == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        return session.run(None, {info["model"]["input"]: x})[0]
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # (kept: the endpoint's variables live as long as it)
    served = np.asarray(loaded.serve(x))
    signed = loaded.signatures["serving_default"](**{info["model"]["input"]: tf.constant(x)})[info["model"]["output"]]
    np.testing.assert_array_equal(served, np.asarray(signed))
    return served


def keras_outputs(trial, x: np.ndarray) -> np.ndarray:
    import keras

    model = trial.model
    return keras.ops.convert_to_numpy(model([x] if isinstance(model.input, list) else x, training=False))


def decode(info: dict, outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """A user's decoding, written from processing.json: its formulas, bins and temperature."""
    recipe = "reconstruct" if info["task"] == "reconstruct" else "ab_classification" if info["loss"] == "ab_classification" else info["encoding"]
    return as_written(recipe, info["output"]["decode"], outputs, inputs, info["output"].get("temperature"), info["output"].get("bins"))


def as_written(recipe: str, text: str, outputs: np.ndarray, inputs: np.ndarray, temperature=None, bins=None) -> np.ndarray:
    """RGB from the outputs O and the luma Y by the formula `text` states (checked to be the one implemented)."""
    out, luma = np.asarray(outputs, np.float64), np.asarray(inputs, np.float64)[..., 0]
    w = np.array([0.299, 0.587, 0.114])
    lab = "L* = the lightness in [0, 100] at which sRGB(L*, a*, b*)"  # ... the search sweep.encodings.lab_to_rgb_with_luma does
    written = {
        "reconstruct": ("RGB = O", lambda: out),
        "rgb": ("RGB = O", lambda: out),
        "ycbcr": (
            "Cb = O[0] - 0.5, Cr = O[1] - 0.5; R = Y + 1.402 Cr, G = Y - 0.344136 Cb - 0.714136 Cr, B = Y + 1.772 Cb",
            lambda: np.stack([luma + 1.402 * (out[..., 1] - 0.5), luma - 0.344136 * (out[..., 0] - 0.5) - 0.714136 * (out[..., 1] - 0.5), luma + 1.772 * (out[..., 0] - 0.5)], axis=-1),
        ),
        "lab": (f"a* = 256 (O[0] - 0.5), b* = 256 (O[1] - 0.5); {lab}", lambda: lab_to_rgb_with_luma(256 * (out - 0.5), luma)),
        "rgb_diff": (
            "D = (O - 0.5) / 0.75; m = Y - (0.299 D_R + 0.587 D_G + 0.114 D_B); RGB = D + m",
            lambda: (out - 0.5) / 0.75 + (luma - ((out - 0.5) / 0.75) @ w)[..., None],
        ),
        "ratio": (
            "Q = 3 O; w = max(0.299 Q_R + 0.587 Q_G + 0.114 Q_B, 1e-6); RGB = Q (Y + e) / w - e, e = 1/255",
            lambda: 3 * out * ((luma + 1 / 255) / np.maximum((3 * out) @ w, 1e-6))[..., None] - 1 / 255,
        ),
        "ab_classification": (
            f"p = softmax(O / temperature) over the bins; (a*, b*) = sum_q p_q bins[q]; {lab}",
            lambda: lab_to_rgb_with_luma(softmax(out / temperature) @ np.array(bins, np.float64), luma),
        ),
    }
    formula, rgb = written[recipe]
    assert formula in text, text
    return np.clip(rgb(), 0.0, 1.0)


def softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def with_gain(info: dict, rgb: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """The decoded RGB with processing.json's chroma gain, where the trial has one."""
    if "chroma_gain" not in info:
        return rgb
    assert "RGB' = clip(Y + s (RGB - Y), 0, 1), Y the model's input" in info["chroma_gain"]["apply"]
    return np.clip(inputs + info["chroma_gain"]["value"] * (rgb - inputs), 0.0, 1.0)


@pytest.mark.parametrize("name", ["reconstruct", "ycbcr", "classes"])
def test_the_onnx_file_gives_the_keras_outputs(exported, name):
    trial, path, info = exported(name, "onnx")
    assert path.name == "model.onnx" and info["model"]["format"] == "onnx"
    x = model_inputs(info, photos())
    got, want = run_exported(path, info, x), keras_outputs(trial, x)
    assert got.shape == want.shape == (len(x), *info["output"]["shape"][1:])
    assert np.abs(got - want).max() <= TOLERANCE, np.abs(got - want).max()


@pytest.mark.backends  # a SavedModel from any backend (under JAX through jax2tf), run by TensorFlow
@pytest.mark.parametrize("name", ["reconstruct", "ycbcr", "classes"])
def test_the_saved_model_gives_the_keras_outputs(exported, name):
    trial, path, info = exported(name, "tf_saved_model")
    assert path.name == "saved_model" and (path / "saved_model.pb").exists()
    x = model_inputs(info, photos())
    got, want = run_exported(path, info, x), keras_outputs(trial, x)
    assert got.shape == want.shape == (len(x), *info["output"]["shape"][1:])
    assert np.abs(got - want).max() <= TOLERANCE, np.abs(got - want).max()


@pytest.mark.parametrize("name", ["reconstruct", "ycbcr", "classes"])
def test_processing_json_takes_a_photo_to_the_trials_rgb(exported, name):
    """Resize, input, the exported model, the decoding and the chroma gain, each as
    processing.json says: the trial's own reconstruct() (and colorize() at the trained size)."""
    import sweep

    trial, path, info = exported(name, "onnx")
    p = trial.spec.protocol
    assert (info["trial_key"], info["task"], info["encoding"], info["loss"]) == (trial.key, p.task, p.encoding, p.loss)
    assert info["sweep_version"] == sweep.__version__
    assert info["input"]["shape"] == [None, 32, 32, 1 if p.task == "colorize" else 3] and info["input"]["dtype"] == "float32"
    assert info["input"]["layout"] == "NHWC" and info["input"]["range"] == [0.0, 1.0]
    images = photos()
    x = model_inputs(info, images)
    rgb = decode(info, run_exported(path, info, x), x)
    np.testing.assert_allclose(rgb, trial.reconstruct(images), atol=DECODED_TOLERANCE)
    if trial.is_colorizer:
        gain_file = trial.folder / "chroma_gain.json"
        assert ("chroma_gain" in info) == gain_file.exists()
        if gain_file.exists():
            assert info["chroma_gain"]["value"] == json.loads(gain_file.read_text())["chroma_gain"]
        np.testing.assert_allclose(with_gain(info, rgb, x), trial.colorize(resized(info, images)), atol=DECODED_TOLERANCE)
    if p.loss == "ab_classification":
        np.testing.assert_array_equal(np.array(info["output"]["bins"]), ab_bins())
        assert info["output"]["temperature"] == trial.task.temperature and len(info["output"]["bins"]) == info["output"]["shape"][-1]


@pytest.mark.parametrize("recipe", [*ENCODINGS, "ab_classification"])
def test_every_encodings_written_decoding_is_its_decode(recipe):
    """The formulas processing.json carries, followed literally, give what sweep decodes."""
    from sweep.encodings import task_for
    from sweep.export import DECODING

    assert set(DECODING) == {*ENCODINGS, "reconstruct", "ab_classification"}
    rng = np.random.default_rng(1)
    luma = (rng.random((2, 5, 6, 3)) @ BT601)[..., None].astype(np.float32)
    loss = "ab_classification" if recipe == "ab_classification" else "mse"
    task = task_for("colorize", "lab" if loss == "ab_classification" else recipe, loss)
    outputs = (rng.normal(0, 3, (2, 5, 6, task.output_channels)) if loss == "ab_classification" else rng.random((2, 5, 6, task.output_channels))).astype(np.float32)
    written = as_written(recipe, DECODING[recipe], outputs, luma, getattr(task, "temperature", None), ab_bins().tolist())
    np.testing.assert_allclose(written, task.to_rgb(outputs, luma), atol=DECODED_TOLERANCE)


@pytest.mark.backends
def test_onnx_is_exported_under_tensorflow_and_refused_in_one_line_under_another_backend(trained, tmp_path):
    import keras

    from sweep.export import export_trial
    from sweep.use import load_trial

    root, keys = trained
    trial = load_trial(root, keys["ycbcr"])
    if keras.backend.backend() == "tensorflow":
        assert export_trial(trial, tmp_path / "out", "onnx").stat().st_size > 1000
    else:
        with pytest.raises(SpecError, match="KERAS_BACKEND=tensorflow"):
            export_trial(trial, tmp_path / "out", "onnx")
        assert not (tmp_path / "out").exists()


def apply(*args: str, code: str = "") -> subprocess.CompletedProcess:
    """`python -m sweep.apply ARGS`, after `code` (run first in the same interpreter)."""
    run = f"{code}\nimport runpy, sys\nsys.argv = ['sweep.apply', *{list(args)!r}]\nrunpy.run_module('sweep.apply', run_name='__main__', alter_sys=True)"
    return subprocess.run([sys.executable, "-c", run], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_command_exports_a_trial_without_inputs(trained, tmp_path):
    root, keys = trained
    done = apply("--results", str(root), "--trial", keys["classes"], "--export", str(tmp_path / "onnx"), "--format", "onnx")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["model.onnx", "processing.json"]
    info = json.loads((tmp_path / "onnx" / "processing.json").read_text())
    assert info["trial_key"] == keys["classes"] and info["model"]["path"] == "model.onnx"
    assert f"exported to {tmp_path / 'onnx' / 'model.onnx'}" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unknown format", "argument --format: invalid choice: 'tflite'"),
        ("folder not empty", "a folder that is not empty; name a new or empty folder"),
        ("neither inputs nor export", "give INPUT images (files or folders) to apply the trial to, or --export DIR"),
        ("format without export", "--format onnx: the format of an export; give --export DIR too"),
        ("inputs without out", "--out DIR: name the folder"),
        ("onnx converter missing", "--format onnx needs tf2onnx (Keras exports ONNX through tf2onnx), not installed here; install sweep's onnx extra, pip install -e '.[onnx]'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, case, expected):
    root, keys = trained
    used = tmp_path / "used"
    used.mkdir()
    (used / "model.onnx").write_text("an earlier export")
    head = ["--results", str(root), "--trial", keys["ycbcr"]]
    args = {
        "unknown format": [*head, "--export", str(tmp_path / "new"), "--format", "tflite"],
        "folder not empty": [*head, "--export", str(used)],
        "neither inputs nor export": head,
        "format without export": [*head, "--format", "onnx", str(used / "model.onnx"), "--out", str(tmp_path / "out")],
        "inputs without out": [*head, str(used / "model.onnx")],
        "onnx converter missing": [*head, "--export", str(tmp_path / "new"), "--format", "onnx"],
    }[case]
    done = apply(*args, code="import sys; sys.modules['tf2onnx'] = None" if case == "onnx converter missing" else "")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "new").exists() and [p.name for p in used.iterdir()] == ["model.onnx"]
