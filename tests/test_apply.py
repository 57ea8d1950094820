"""Using a trained model (`sweep.load_trial`, `python -m sweep.apply`): tiny trials trained
once for the module on synthetic data, applied to scikit-image's bundled photographs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweep.arch import PRESETS, ArchSpec, DenseLatentSpec
from sweep.encodings import luminance
from sweep.errors import DataError, SpecError
from sweep.use import read_images
from sweep.spec import TrainingProtocol, TrialSpec

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dataset="synthetic", epochs=1, train_fraction=1.0, train_limit=48, batch_size=16)
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A results folder with two reconstruction trials of one group (seeds 0 and 1, seed
    002's family), YCbCr colorizers (unet32_noskip, a U-Net with skips, a Dense latent), an ab
    classification colorizer and one colorizer of each other encoding; their keys by name."""
    from sweep.data import load_dataset
    from sweep.results import write_row
    from sweep.train import run_trial

    data = load_dataset("synthetic")
    root = tmp_path_factory.mktemp("apply")
    specs = {
        "recon0": TrialSpec(ArchSpec(channel_factor=1), TrainingProtocol(**TINY, seed=0), data.data_id),
        "recon1": TrialSpec(ArchSpec(channel_factor=1), TrainingProtocol(**TINY, seed=1), data.data_id),
        "noskip": TrialSpec(PRESETS["unet32_noskip"], TrainingProtocol(**TINY, task="colorize", encoding="ycbcr"), data.data_id),
        "skips": TrialSpec(PRESETS["unet32"], TrainingProtocol(**TINY, task="colorize", encoding="ycbcr"), data.data_id),
        "dense": TrialSpec(
            DenseLatentSpec(filters=(8, 16, 32), latent_dim=16), TrainingProtocol(**TINY, task="colorize", encoding="ycbcr"), data.data_id
        ),
        "classes": TrialSpec(
            ArchSpec(channel_factor=1), TrainingProtocol(**TINY, task="colorize", encoding="lab", loss="ab_classification"), data.data_id
        ),
    }
    for encoding in ("rgb", "lab", "rgb_diff", "ratio"):  # every colour encoding (ycbcr above)
        protocol = TrainingProtocol(**TINY, task="colorize", encoding=encoding)
        specs[encoding] = TrialSpec(ArchSpec(channel_factor=1), protocol, data.data_id)
    keys = {}
    for name, spec in specs.items():
        row = run_trial(spec, data, root)
        assert row["status"] == "complete", row["error"]
        write_row(root, row)
        keys[name] = spec.key
    return root, keys


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """scikit-image's chelsea (300x451 colour photograph) as a PNG."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def test_load_trial_by_key_by_best_and_by_folder(trained):
    import sweep

    root, keys = trained
    by_key = sweep.load_trial(root, keys["recon1"])
    assert by_key.key == keys["recon1"] and by_key.row["trial_key"] == keys["recon1"] and by_key.spec.protocol.seed == 1

    best = sweep.load_trial(root, best="psnr", task="reconstruct")  # a bare name ranks on validation
    from sweep.results import load_results

    frame = load_results(root)
    recon = frame[frame["task"] == "reconstruct"]
    assert best.key == recon.loc[recon["val_psnr"].idxmax(), "trial_key"]
    worst = sweep.load_trial(root, best="val_mse", task="reconstruct")
    assert worst.key == recon.loc[recon["val_mse"].idxmin(), "trial_key"]  # minimised: the direction is the schema's

    folder = sweep.load_trial(root / "trials" / keys["noskip"])
    assert folder.key == keys["noskip"] and folder.row.get("task") == "colorize"


def test_best_refuses_candidates_of_several_groups_unless_one_is_named(trained):
    from sweep.results import load_results
    from sweep.use import load_trial

    root, keys = trained
    with pytest.raises(SpecError, match="comparable groups"):
        load_trial(root, best="val_psnr")  # reconstruction and colorization trials
    frame = load_results(root)
    group = frame.loc[frame["trial_key"] == keys["noskip"], "group"].iloc[0]
    chosen = load_trial(root, best="val_psnr", task="colorize", group=group)
    assert chosen.row["group"] == group and chosen.spec.protocol.task == "colorize"
    with pytest.raises(SpecError, match="unknown best metric 'val_pnsr'; did you mean 'val_psnr'"):
        load_trial(root, best="val_pnsr")
    with pytest.raises(SpecError, match="unknown trial key"):
        load_trial(root, "0123456789abcdef")


def test_encode_decode_round_trip_equals_reconstruct_where_the_decoder_sees_only_the_latent(trained):
    from skimage import data

    from sweep.use import load_trial

    root, keys = trained
    images = [data.astronaut(), data.coffee()]  # any size: resized to the trained 32x32 as the data pipeline does
    recon = load_trial(root, keys["recon0"])
    codes = recon.encode(images)
    assert codes.shape == (2, *recon.spec.arch.latent_shape((32, 32, 3)))
    np.testing.assert_allclose(recon.decode(codes), recon.reconstruct(images), atol=1e-5)

    colorizer = load_trial(root, keys["noskip"])
    codes = colorizer.encode(images)
    assert codes.shape == (2, 4, 4, 128)
    np.testing.assert_allclose(colorizer.decode(codes, luma=images), colorizer.reconstruct(images), atol=1e-5)
    with pytest.raises(SpecError, match="luma"):
        colorizer.decode(codes)


def test_a_dense_latent_round_trips_and_colorizes_by_upsampling_only(trained, photo):
    from sweep.use import load_trial

    root, keys = trained
    dense = load_trial(root, keys["dense"])
    codes = dense.encode([photo, photo])
    assert codes.shape == (2, 16)
    np.testing.assert_allclose(dense.decode(codes, luma=[photo, photo]), dense.reconstruct([photo, photo]), atol=1e-5)
    assert dense.colorize(photo).shape == (300, 451, 3)
    with pytest.raises(SpecError, match="Dense layer.*use method='upsample'"):
        dense.colorize(photo, method="native")


def test_a_unet_with_skips_encodes_its_bottleneck_and_refuses_to_decode(trained):
    from skimage import data

    from sweep.use import load_trial

    root, keys = trained
    unet = load_trial(root, keys["skips"])
    codes = unet.encode(data.chelsea())
    assert codes.shape == (4, 4, 128)
    with pytest.raises(SpecError, match="skip connections"):
        unet.decode(codes, luma=data.chelsea())


@pytest.mark.parametrize("method", ["upsample", "native"])
def test_a_colorizer_colorizes_a_photo_at_its_own_size_keeping_its_luma(trained, method):
    from skimage import data

    from sweep.use import load_trial

    root, keys = trained
    photo = data.chelsea()
    out = load_trial(root, keys["noskip"]).colorize(photo, method=method)
    assert out.shape == photo.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    truth_luma = luminance(photo[None].astype(np.float32) / 255)[0]
    assert np.abs(luminance(out[None])[0] - truth_luma).mean() < 0.01  # the chroma is predicted; the luma is the photo's


@pytest.mark.parametrize("encoding", ["rgb", "lab", "rgb_diff", "ratio", "classes"])
def test_every_encoding_colorizes_a_photo_at_its_size_with_its_luma(trained, encoding):
    from skimage import data

    from sweep.use import load_trial

    root, keys = trained
    photo = data.astronaut()
    trial = load_trial(root, keys[encoding])
    truth_luma = luminance(photo[None].astype(np.float32) / 255)[0]
    for method in ("upsample", "native"):
        out = trial.colorize(photo, method=method)
        assert out.shape == photo.shape and np.isfinite(out).all()
        assert np.abs(luminance(out[None])[0] - truth_luma).mean() < 0.01, method
    codes = trial.encode(photo)
    np.testing.assert_allclose(trial.decode(codes, luma=photo), trial.reconstruct(photo), atol=1e-5)


def test_inputs_are_what_a_user_has(trained, photo):
    from PIL import Image

    from sweep.use import load_trial

    root, keys = trained
    trial = load_trial(root, keys["noskip"])
    from_path = trial.colorize(photo)
    gray = luminance(np.asarray(Image.open(photo), np.float32)[None] / 255)[0, ..., 0]
    from_gray = trial.colorize(gray)  # float (H, W) in [0, 1]
    assert from_path.shape == from_gray.shape == (300, 451, 3)
    both = trial.colorize([photo, np.zeros((20, 30), np.uint8)])  # sizes differ: a list
    assert [b.shape for b in both] == [(300, 451, 3), (20, 30, 3)]
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        trial.colorize(np.full((8, 8), 3.0))
    with pytest.raises(SpecError, match="cannot colorize"):
        load_trial(root, keys["recon0"]).colorize(photo)


def test_an_ab_classification_colorizer_decodes_at_its_temperature(trained):
    from skimage import data

    from sweep.use import load_trial

    root, keys = trained
    photo = data.coffee()
    warm = load_trial(root, keys["classes"]).colorize(photo, gain=1.0)
    assert warm.shape == photo.shape
    sharp = load_trial(root, keys["classes"], temperature=0.05).colorize(photo)  # the trial's s* was fitted at its own T: gain 1
    assert load_trial(root, keys["classes"], temperature=0.05).chroma_gain is None
    assert not np.allclose(warm, sharp)  # the temperature is a decoding option
    with pytest.raises(SpecError, match="'temperature' parameter of load_trial must be a number in"):
        load_trial(root, keys["classes"], temperature=0)


def load_trial_of(root, key):
    from sweep.use import load_trial

    return load_trial(root, key)


def apply(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep.apply", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_command_colorizes_a_bundled_photo_at_its_size(trained, photo, tmp_path):
    from PIL import Image

    root, keys = trained
    out = tmp_path / "colored"
    done = apply("--results", str(root), "--trial", keys["noskip"], str(photo.parent), "--out", str(out), "--latents", str(tmp_path / "codes.npz"))
    assert done.returncode == 0, done.stderr
    written = Image.open(out / "chelsea.png")
    assert written.size == Image.open(photo).size and written.mode == "RGB"
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.height > 100 and sheet.width > 3 * 128  # gray input, output, the original
    codes = np.load(tmp_path / "codes.npz")
    assert codes["latents"].shape == (1, 4, 4, 128) and list(codes["names"]) == [str(photo)]
    direct = load_trial_of(root, keys["noskip"]).encode(photo)
    np.testing.assert_allclose(codes["latents"][0], direct, atol=1e-6)
    done = apply("--results", str(root), "--trial", keys["noskip"], str(photo), "--out", str(out), "--latents", str(tmp_path / "codes.parquet"))
    assert done.returncode == 0, done.stderr
    import pandas as pd

    table = pd.read_parquet(tmp_path / "codes.parquet")
    assert list(table["name"]) == [str(photo)] and table["latent_shape"].iloc[0] == "4x4x128"
    np.testing.assert_allclose(np.asarray(table["latent"].iloc[0]).reshape(4, 4, 128), direct, atol=1e-6)


def test_the_command_reconstructs_at_the_trained_size_and_says_so(trained, photo, tmp_path):
    from PIL import Image

    root, _ = trained
    done = apply("--results", str(root), "--best", "val_psnr", "--task", "reconstruct", str(photo), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "chelsea.png").size == (32, 32)
    assert "at the trained size 32x32" in done.stderr


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing trial", "unknown trial key 'nope'"),
        ("unknown metric", "unknown best metric 'val_pnsr'"),
        ("reconstruct model asked to colorize", "is a 'reconstruct' model; it cannot colorize"),
        ("unreadable image", "not a readable image"),
        ("missing image", "no such file or folder"),
        ("latents not npz", "--latents codes.csv: the latent codes are written as .npz or Parquet"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(trained, photo, tmp_path, case, expected):
    root, keys = trained
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    args = {
        "missing trial": ["--trial", "nope", str(photo)],
        "unknown metric": ["--best", "val_pnsr", str(photo)],
        "reconstruct model asked to colorize": ["--trial", keys["recon0"], "--task", "colorize", str(photo)],
        "unreadable image": ["--trial", keys["noskip"], str(bad)],
        "missing image": ["--trial", keys["noskip"], str(tmp_path / "nowhere.jpg")],
        "latents not npz": ["--trial", keys["noskip"], str(photo), "--latents", "codes.csv"],
    }[case]
    done = apply("--results", str(root), *args, "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in done.stderr


def test_apply_help_loads_no_framework():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['sweep.apply', '--help']\n"
        "try:\n"
        "    runpy.run_module('sweep.apply', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as stop:\n"
        "    assert stop.code in (0, None), stop.code\n"
        f"print('LOADED', sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m sweep.apply" in out.stdout and out.stdout.strip().splitlines()[-1] == "LOADED []"


def test_importing_sweep_loads_no_framework_and_exports_load_trial():
    code = f"import sys, sweep; f = sweep.load_trial; print(f.__module__, sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sweep.use []"


def test_a_cluster_run_is_read_through_its_storage_url_and_artifacts(trained, tmp_path, photo):
    """Rows in a shared table (here SQLite), models in the run's --artifacts store."""
    from sweep.artifacts import Artifacts
    from sweep.results import load_results
    from sweep.results.shared import shared_rows
    from sweep.use import load_trial

    root, keys = trained
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    store = Artifacts(str(tmp_path / "artifacts"))
    table = shared_rows(url)
    for row in load_results(root).drop(columns=["group"]).to_dict("records"):
        table.push({k: v for k, v in row.items() if v == v and v is not None})  # (NaN: absent)
    store.put_trial(keys["noskip"], root / "trials" / keys["noskip"])
    remote = load_trial(url, keys["noskip"], artifacts=store.where)
    assert remote.folder != root / "trials" / keys["noskip"] and remote.row["trial_key"] == keys["noskip"]
    assert (remote.folder / "chroma_gain.json").exists() and remote.chroma_gain == load_trial(root, keys["noskip"]).chroma_gain  # the gain travels with the model
    np.testing.assert_array_equal(remote.colorize(photo), load_trial(root, keys["noskip"]).colorize(photo))
    with pytest.raises(SpecError, match="name the run's artefact store"):
        load_trial(url, keys["noskip"])
    with pytest.raises(DataError, match="no model.keras in the artefact store"):
        load_trial(url, keys["recon0"], artifacts=store.where)
    done = apply("--results", url, "--trial", keys["noskip"], str(photo), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.strip().startswith("error:") and "--artifacts DIR_OR_URL" in done.stderr


def test_best_on_a_folder_of_reconstructions_and_a_colorizer_picks_the_colorizer(trained, photo, tmp_path):
    """The issue's acceptance: --best val_psnr with no --task on the main job's trials beside
    a colorizer colorizes (reconstruction PSNRs are higher, but not of the same task)."""
    import shutil

    from PIL import Image

    root, keys = trained
    folder = tmp_path / "results"
    for name in ("recon0", "recon1", "noskip"):
        key = keys[name]
        (folder / "rows").mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "rows" / f"{key}.json", folder / "rows" / f"{key}.json")
        shutil.copytree(root / "trials" / key, folder / "trials" / key)
    done = apply("--results", str(folder), "--best", "val_psnr", str(photo), "--out", str(tmp_path / "colored"))
    assert done.returncode == 0, done.stderr
    assert f"trial {keys['noskip']} (colorize" in done.stderr
    assert Image.open(tmp_path / "colored" / "chelsea.png").size == (451, 300)


COLORIZERS = ("noskip", "skips", "dense", "classes", "rgb", "lab", "rgb_diff", "ratio")


def test_every_colorizer_stores_its_calibrated_gain_beside_its_model_and_in_its_row(trained):
    import json

    from sweep.chroma import read_gain
    from sweep.results import load_results

    root, keys = trained
    frame = load_results(root).set_index("trial_key")
    for name in COLORIZERS:
        row = frame.loc[keys[name]]
        assert read_gain(root / "trials" / keys[name]) == pytest.approx(row["chroma_gain"]), name
        assert json.loads(row["gain_curve"])["gain"][0] == 0.0 and np.isfinite(row["test_psnr_at_gain"])
    assert not np.isfinite(frame.loc[keys["recon0"]].get("chroma_gain", np.nan))  # a reconstruction has no chroma to scale


def test_colorize_uses_the_calibrated_gain_unless_told_otherwise(trained, photo):
    from sweep.metrics import colorfulness

    root, keys = trained
    trial = load_trial_of(root, keys["noskip"])
    gain = trial.chroma_gain
    assert gain is not None and gain == pytest.approx(trial.row["chroma_gain"])
    np.testing.assert_array_equal(trial.colorize(photo), trial.colorize(photo, gain=gain))
    gray = trial.colorize(photo, gain=0.0)
    np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-5)  # no chroma: gray
    np.testing.assert_allclose(gray[..., 0:1], luminance(np.asarray(gray)), atol=1e-5)
    once, twice = trial.colorize(photo, gain=1.0), trial.colorize(photo, gain=2.0)
    assert colorfulness(twice[None]) > 1.5 * colorfulness(once[None]) > 0
    with pytest.raises(SpecError, match="chroma gain"):
        trial.colorize(photo, gain=-1.0)


def test_the_command_states_its_gain_fits_one_for_an_older_trial_and_otherwise_says_it_uses_1(trained, photo, tmp_path):
    import json
    import os
    import shutil

    from PIL import Image

    from sweep.chroma import GAIN_FILE, read_gain

    root, keys = trained
    original = read_gain(root / "trials" / keys["noskip"])
    done = apply("--results", str(root), "--trial", keys["noskip"], str(photo), "--out", str(tmp_path / "a"))
    assert done.returncode == 0 and f"chroma gain {original:.3g} (the trial's calibrated s*" in done.stderr
    old = tmp_path / "old"  # a trial folder from before calibration: no chroma_gain.json
    shutil.copytree(root / "trials" / keys["noskip"], old)
    (old / GAIN_FILE).unlink()
    done = apply("--results", str(old), str(photo), "--out", str(tmp_path / "b"))  # its (synthetic) data is at hand: fitted now
    assert done.returncode == 0 and "s* fitted now on the trial's validation split (stored in" in done.stderr, done.stderr
    assert read_gain(old) == pytest.approx(original, abs=2e-3)
    done = apply("--results", str(old), str(photo), "--out", str(tmp_path / "c"), "--chroma-gain", "0")
    assert done.returncode == 0 and "chroma gain 0 (--chroma-gain" in done.stderr
    gray = np.asarray(Image.open(tmp_path / "c" / "chelsea.png")).astype(int)
    assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 1
    cifar = tmp_path / "cifar"  # a CIFAR trial with no data here (no --data-dir, an empty Keras cache): gain 1, said
    shutil.copytree(old, cifar)
    (cifar / GAIN_FILE).unlink()
    spec = json.loads((cifar / "spec.json").read_text())
    spec["protocol"]["dataset"] = "cifar10"
    (cifar / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-m", "sweep.apply", "--results", str(cifar), str(photo), "--out", str(tmp_path / "d")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "KERAS_HOME": str(tmp_path / "keras")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "chroma gain 1: trial" in done.stderr and "no cifar10 in Keras' download cache" in done.stderr and read_gain(cifar) is None
    done = apply("--results", str(old), str(photo), "--out", str(tmp_path / "e"), "--chroma-gain", "-1")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: --chroma-gain -1: a gain in [0, 8]")


def test_a_gain_about_each_photos_mean_chroma_keeps_its_average_colour(trained, photo):
    root, keys = trained
    trial = load_trial_of(root, keys["noskip"])
    once = trial.colorize(photo, gain=1.0)
    twice = trial.colorize(photo, gain=2.0, about="mean")

    def mean_chroma(image):
        return (image - luminance(np.asarray(image))).mean(axis=(0, 1))

    np.testing.assert_allclose(mean_chroma(twice), mean_chroma(once), atol=2e-3)  # (clipping aside)
    with pytest.raises(SpecError, match="chroma gain about"):
        trial.colorize(photo, gain=2.0, about="neutral")
    done = apply("--results", str(root), "--trial", keys["noskip"], str(photo), "--out", str(Path(trial.folder).parent.parent / "about"),
                 "--chroma-gain", "2", "--chroma-about", "mean")  # fmt: skip
    assert done.returncode == 0 and "chroma gain 2, about each image's mean chroma" in done.stderr, done.stderr


def test_a_gain_scales_the_clipped_decoded_colours_as_calibration_does(trained, photo, monkeypatch):
    """Training fits s* on decoded, clipped images (`sweep.chroma.calibrate`); colorize applies
    a gain the same way at any size: gain s is clip(Y + s·(P1 − Y)), P1 the output at gain 1.
    The model is made to predict saturated chroma, so that decoding leaves [0, 1]."""
    root, keys = trained
    trial = load_trial_of(root, keys["noskip"])
    saturated = lambda model, inputs: np.tile(np.array([0.05, 0.98], np.float32), (*inputs.shape[:3], 1))  # noqa: E731 (Cb, Cr)
    monkeypatch.setattr(trial, "_run", saturated)
    once = trial.colorize(photo, gain=1.0)
    luma = luminance(read_images(photo)[0][0][None])[0]
    assert (once == 1.0).any() or (once == 0.0).any()  # (the decoded colours clipped)
    for gain in (0.5, 1.7):
        np.testing.assert_allclose(trial.colorize(photo, gain=gain), np.clip(luma + np.float32(gain) * (once - luma), 0, 1), atol=2e-6)
    assert trial.colorize(photo, gain=np.float32(0.5)).shape == once.shape  # a NumPy number is a number
