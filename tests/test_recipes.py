"""The shipped colorization recipes are configurations of the colorization study: the same
trials (protocol, seeds, keys), so the study's figures the README gives are theirs, and a
run of a recipe file trains exactly what the study trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.space import load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "retina", "immunohistochemistry", "hubble_deep_field")  # bundled with scikit-image


def trial_keys(name: str, repeats: int = 3) -> dict[str, dict]:
    space = load_space(SPACES / name).with_repeats(repeats)
    return {space.spec(point, "the-data").key: point for point in space.grid_points()}


@pytest.mark.parametrize(
    "recipe, configuration",
    [
        ("colorize_best_psnr.yaml", {"arch": "unet32_noskip", "encoding": "ycbcr", "loss": "mse"}),
        ("colorize_vivid.yaml", {"arch": "unet32_noskip", "encoding": "lab", "loss": "ab_classification"}),
    ],
)
def test_a_recipe_is_one_configuration_of_the_study(recipe, configuration):
    study = trial_keys("colorization_study.yaml")
    keys = trial_keys(recipe)
    assert len(keys) == 3 and keys.keys() <= study.keys()  # its three seeds, trained by the study
    for key in keys:
        assert {k: study[key][k] for k in configuration} == configuration


def test_the_readme_gives_each_recipe_command_and_its_figures():
    readme = (ROOT / "README.md").read_text()
    for recipe in ("colorize_best_psnr", "colorize_vivid", "colorize_calibrated"):
        assert f"python -m sweep.grid --space search_spaces/{recipe}.yaml --data-dir DATA_DIR --repeats 3 --results DIR" in readme
        assert f"| `{recipe}.yaml` |" in readme  # its row of expected figures


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_best_psnr_recipe_reproduces_its_readme_figures_and_colorizes_photographs(shared_data, tmp_path):
    """The README's commands as written (DATA_DIR and DIR filled in), on the CIFAR-10 subset:
    the mean over the three seeds falls inside the README's 95% intervals; then `sweep.apply
    --best val_psnr` on the folder with the main job's trials beside colorizes photographs
    above gray. (The vivid recipe, ab classification, takes 8 minutes on 2 cores, and
    colorize_calibrated.yaml 10: run by hand.)"""
    import json

    from conftest import run_cli

    grid = run_cli("sweep.grid", "--space", "search_spaces/colorize_best_psnr.yaml", "--data-dir", str(shared_data), "--repeats", "3", "--results", str(tmp_path))
    assert grid.returncode == 0, grid.stderr[-2000:]
    report = run_cli("sweep.report", "--results", str(tmp_path))
    assert report.returncode == 0, report.stderr[-2000:]
    (config,) = json.loads((tmp_path / "report" / "summary.json").read_text())["colorization"]["configurations"]
    assert config["n_seeds"] == 3
    assert 0.56 <= config["psnr_gain"] <= 0.85 and 0.345 <= config["colorfulness_ratio"] <= 0.435  # README: 0.70 [0.56, 0.85], 0.39 [0.35, 0.44]

    # Using the model (README, "Using a trained model"), as a user meets it: the same folder with
    # the main job's trials beside (seed 002's 36-model grid, cut to one epoch on a twentieth
    # of the subset); `--best val_psnr` picks the colorizer and colorizes scikit-image's bundled
    # colour photographs at their own sizes, at its calibrated chroma gain. Scored against the
    # photographs: the PSNR gain over the grayscale baseline, the colourfulness as a share of
    # the truth's and the colour cast (mean a*, b* error), with bounds around what
    # `benchmarks/any_size.py` measures for this recipe's seeds (+0.8 to +1.4 dB, 29-30% of the
    # truth's colourfulness, a* -13.5, b* -5 to -6.5: the truth's reds, under-predicted).
    import numpy as np
    from PIL import Image
    from skimage import data

    from sweep.encodings import gray_baseline
    from sweep.metrics import colour_metrics, psnr

    main = run_cli("sweep.grid", "--data-dir", str(shared_data), "--epochs", "1", "--train-fraction", "0.05", "--results", str(tmp_path))
    assert main.returncode == 0, main.stderr[-2000:]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        Image.fromarray(getattr(data, name)()[..., :3]).save(photos / f"{name}.png")
    done = run_cli("sweep.apply", "--results", str(tmp_path), "--best", "val_psnr", str(photos), "--out", str(tmp_path / "colored"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(colorize, unet, encoding ycbcr" in done.stderr and "the trial's calibrated s*" in done.stderr
    gains, shares, a_bias, b_bias = [], [], [], []
    for name in PHOTOS:
        truth = np.asarray(Image.open(photos / f"{name}.png")).astype(np.float32) / 255
        out = np.asarray(Image.open(tmp_path / "colored" / f"{name}.png")).astype(np.float32) / 255
        assert out.shape == truth.shape  # at the photograph's own size
        gains.append(psnr(truth[None], out[None]) - psnr(truth[None], gray_baseline(truth[None])))
        colour = colour_metrics(truth[None], out[None])
        shares.append(colour["colorfulness"] / colour["colorfulness_truth"])
        a_bias.append(colour["a_bias"])
        b_bias.append(colour["b_bias"])
    measured = f"gains {np.round(gains, 2)}, colourfulness {np.round(shares, 2)}, a* {np.mean(a_bias):+.1f}, b* {np.mean(b_bias):+.1f}"
    assert np.mean(gains) > 0.5 and sum(g > 0 for g in gains) >= 4, measured  # above the grayscale baseline
    assert 0.15 < np.mean(shares) < 0.6, measured  # coloured, not gray; fainter than the truth
    assert abs(np.mean(a_bias)) < 20 and abs(np.mean(b_bias)) < 12, measured  # no cast beyond the measured under-prediction
