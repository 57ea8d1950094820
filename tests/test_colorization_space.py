"""The colorization search spaces as data, and the sweep summary that answers seed 002's
colorization question."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sweep.arch import PRESETS
from sweep.encodings import task_for
from sweep.errors import SpecError
from sweep.cli.grid import summarize
from sweep.encodings import ENCODINGS
from sweep.space import load_space
from sweep.results import load_results, write_row
from sweep.results.schema import varied_text

ROOT = Path(__file__).resolve().parents[1]
PRESETS_32 = ["acml", "dense_latent", "dense_latent_dropout", "fc_latent", "conv_latent"]


def test_colorization_space_is_every_encoding_on_every_32px_preset():
    space = load_space(ROOT / "search_spaces" / "colorization.yaml")
    points = space.grid_points()
    assert {(p["arch"], p["encoding"]) for p in points} == set(itertools.product(PRESETS_32, ENCODINGS))
    assert len(points) == 25
    specs = [space.spec(p, "data") for p in points]
    assert len({s.key for s in specs}) == 25
    for point, spec in zip(points, specs):
        assert spec.arch == PRESETS[point["arch"]] and spec.protocol.task == "colorize"
        assert spec.protocol.encoding == point["encoding"] and spec.protocol.dataset == "cifar10"
        spec.arch.check_input((32, 32, task_for("colorize", point["encoding"]).input_channels))


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_space_validates(path):
    space = load_space(path)
    if space.is_grid:
        assert space.grid_points()
    else:  # a space with continuous ranges is for sweep.optuna: a sampled point makes a valid trial
        import optuna

        trial = optuna.create_study().ask()
        spec = space.spec(space.suggest(trial), "data")
        for name, value in trial.params.items():
            assert getattr(spec.protocol if name in spec.protocol.to_dict() else spec.arch, name) == value


def test_colorization_mistakes_are_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("arch: dense_latent\nspace: {encoding: [rgb, hsv]}\nprotocol: {task: colorize}\n")
    with pytest.raises(SpecError, match=r"bad.yaml: space.encoding: unknown encoding 'hsv'"):
        load_space(path)
    path.write_text("space: {loss: [mse, ab_classification]}\nprotocol: {task: colorize, encoding: rgb}\n")
    with pytest.raises(SpecError, match="ab_classification' needs task 'colorize' with encoding 'lab'"):
        load_space(path)
    path.write_text("arch: unet\nspace: {latent_dim: [64]}\nprotocol: {task: colorize}\n")
    with pytest.raises(SpecError, match="space.latent_dim: .*unknown factor 'latent_dim'"):
        load_space(path)


def test_the_summary_tables_encodings_by_architecture_against_the_gray_baseline(tmp_path):
    gray = {"test_gray_psnr": 21.81, "test_gray_ab_rmse": 19.7, "test_gray_ssim": 0.93, "test_gray_ab_auc": 0.9}
    for i, (preset, encoding) in enumerate(itertools.product(["acml", "conv_latent"], ["rgb", "lab"])):
        write_row(tmp_path, {
            "trial_key": f"k{i}", "status": "complete", "family": PRESETS[preset].family, "preset": preset,
            "task": "colorize", "encoding": encoding, "loss": "mse", "latent_size": 1024 + i,
            "test_mse": 0.01 - i / 1000, "test_psnr": 20.0 + i, "test_ab_rmse": 15.0 - i, "finished_at": str(i), **gray,
            "varied": varied_text(["arch", "encoding"]),  # (one space swept both: one comparable group)
        })  # fmt: skip
    text = summarize(load_results(tmp_path), reference_key="k0")
    table = text[text.index("colorization, test PSNR dB / ab RMSE") :].splitlines()
    assert "(grayscale baseline, luma copied to RGB: 21.81 / 19.7)" in table[0]
    assert table[1].split() == ["encoding", "rgb", "lab"]
    rows = {line.split()[0]: line.split()[1:] for line in table[3:]}
    assert rows == {"acml": ["20.00", "/", "15.0", "21.00", "/", "14.0"], "conv_latent": ["22.00", "/", "13.0", "23.00", "/", "12.0"]}


def test_arch_from_the_command_line_replaces_the_files():
    space = load_space(ROOT / "search_spaces" / "colorization.yaml").with_arch("conv_latent")
    points = space.grid_points()
    assert [p["encoding"] for p in points] == list(ENCODINGS)
    assert {space.spec(p, "data").arch for p in points} == {PRESETS["conv_latent"]}
    with pytest.raises(SpecError, match=r"--arch: unknown architecture preset 'unetz'; did you mean 'unet'\?"):
        space.with_arch("unetz")
    seed002 = load_space(ROOT / "search_spaces" / "seed002_grid.yaml")
    with pytest.raises(SpecError, match="space.fewer_layers: unknown factor 'fewer_layers'"):
        seed002.with_arch("dense_latent")


@pytest.mark.slow
def test_a_colorization_sweep_from_the_command_line(tmp_path):
    from conftest import run_cli

    space = tmp_path / "tiny.yaml"
    space.write_text(
        "space: {encoding: [lab]}\n"
        "protocol: {dataset: synthetic, task: colorize, epochs: 1, train_fraction: 1.0, train_limit: 48, batch_size: 16}\n"
    )
    out = run_cli("sweep.grid", "--space", str(space), "--results", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert "colorization, test PSNR dB / ab RMSE (grayscale baseline, luma copied to RGB:" in out.stdout
    assert "5conv ch2 k3 f2 lab: latent 1024" in out.stderr  # progress lines go to stderr
    row = load_results(tmp_path / "r").iloc[0]
    assert row["status"] == "complete" and row["preset"] == "acml" and row["encoding"] == "lab"
    assert row["test_gray_psnr"] > 0 and row["test_ab_rmse"] > 0 and 0 < row["test_ab_auc"] <= 1
