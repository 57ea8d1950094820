"""The shipped colorization recipes are configurations of the colorization study: the same
trials (protocol, seeds, keys), so the study's figures the README gives are theirs, and a
run of a recipe file trains exactly what the study trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.space import load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"


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
    for recipe in ("colorize_best_psnr", "colorize_vivid"):
        assert f"python -m sweep.grid --space search_spaces/{recipe}.yaml --data-dir DATA_DIR --repeats 3 --results DIR" in readme
        assert f"| `{recipe}.yaml` |" in readme  # its row of expected figures


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_best_psnr_recipe_reproduces_its_readme_figures(shared_data, tmp_path):
    """The README's commands as written (DATA_DIR and DIR filled in), on the CIFAR-10 subset:
    the mean over the three seeds falls inside the README's 95% intervals. (The vivid
    recipe, ab classification, takes 8 minutes on 2 cores: run by hand.)"""
    import json

    from conftest import run_cli

    grid = run_cli("sweep.grid", "--space", "search_spaces/colorize_best_psnr.yaml", "--data-dir", str(shared_data), "--repeats", "3", "--results", str(tmp_path))
    assert grid.returncode == 0, grid.stderr[-2000:]
    report = run_cli("sweep.report", "--results", str(tmp_path))
    assert report.returncode == 0, report.stderr[-2000:]
    (config,) = json.loads((tmp_path / "report" / "summary.json").read_text())["colorization"]["configurations"]
    assert config["n_seeds"] == 3
    assert 0.56 <= config["psnr_gain"] <= 0.85 and 0.345 <= config["colorfulness_ratio"] <= 0.435  # README: 0.70 [0.56, 0.85], 0.39 [0.35, 0.44]
