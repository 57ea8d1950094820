"""`python -m sweep.grid --repeats N`: N seeds per configuration, merged again by the analysis."""

from __future__ import annotations

import pytest

from conftest import run_cli
from sweep import analysis
from sweep.grid import repeat_trials
from sweep.protocol import Protocol, TrialSpec
from sweep.arch import ArchSpec
from sweep.store import load_results
from test_grid_cli import small_space


def test_repeats_raise_the_seed_and_nothing_else():
    trials = [({"kernel_size": k}, TrialSpec(ArchSpec(kernel_size=k), Protocol(seed=7), "data")) for k in (3, 5)]
    repeated = repeat_trials(trials, 3)
    assert [(p["kernel_size"], s.protocol.seed) for p, s in repeated] == [(3, 7), (3, 8), (3, 9), (5, 7), (5, 8), (5, 9)]
    assert len({s.key for _, s in repeated}) == 6
    assert all(s.arch == trials[i // 3][1].arch and s.data_id == "data" for i, (_, s) in enumerate(repeated))
    assert repeat_trials(trials, 1) == trials
    # a space that already varies the seed: overlapping replicates are run once
    seeds = [({"seed": s}, TrialSpec(ArchSpec(), Protocol(seed=s), "data")) for s in (0, 1)]
    assert [s.protocol.seed for _, s in repeat_trials(seeds, 2)] == [0, 1, 2]


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
