"""`python -m sweep.grid --repeats N`: N seeds per configuration, merged again by the analysis."""

from __future__ import annotations

import pytest

from conftest import run_cli, small_space
from sweep import analysis
from sweep.space import load_space
from sweep.results import load_results


def test_repeats_raise_the_seed_and_nothing_else(tmp_path):
    space = load_space(small_space(tmp_path, {"kernel_size": [3, 5]}, seed=7)).with_repeats(3)
    specs = [space.spec(point, "data") for point in space.grid_points()]
    assert [(s.arch.kernel_size, s.protocol.seed) for s in specs] == [(3, 7), (3, 8), (3, 9), (5, 7), (5, 8), (5, 9)]
    assert len({s.key for s in specs}) == 6
    assert {s.protocol.to_dict()["epochs"] for s in specs} == {1}
    one = load_space(small_space(tmp_path, {"kernel_size": [3, 5]}, seed=7))
    assert one.with_repeats(1) == one
    # a space that already varies the seed: overlapping replicates are run once
    seeded = load_space(small_space(tmp_path, {"seed": [0, 1]})).with_repeats(2)
    assert [p["seed"] for p in seeded.grid_points()] == [0, 1, 2]
    # --seed on the command line moves the replicates
    moved = load_space(small_space(tmp_path, {"kernel_size": [3]})).with_protocol(seed=4).with_repeats(2)
    assert [moved.spec(p, "d").protocol.seed for p in moved.grid_points()] == [4, 5]


def test_repeats_must_be_positive(tmp_path):
    out = run_cli("sweep.grid", "--space", small_space(tmp_path), "--results", str(tmp_path / "r"), "--repeats", "0")
    assert out.returncode == 2 and out.stderr.strip() == "error: --repeats must be >= 1. Got 0 instead."


@pytest.mark.slow
def test_a_repeated_configuration_is_one_configuration(tmp_path):
    space = small_space(tmp_path, {"kernel_size": [3]})
    out = run_cli("sweep.grid", "--space", space, "--results", str(tmp_path / "r"), "--repeats", "2")
    assert out.returncode == 0, out.stderr
    assert "2 trials from" in out.stderr
    frame = load_results(tmp_path / "r")
    assert sorted(frame["seed"]) == [0, 1] and set(frame["status"]) == {"complete"}
    configs = analysis.configurations(frame)
    assert len(configs) == 1 and configs.iloc[0]["n_seeds"] == 2 and configs.iloc[0]["seeds"] == [0, 1]
    assert configs.iloc[0]["test_mse"] == pytest.approx(frame["test_mse"].mean())
