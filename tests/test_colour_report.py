"""The colorization study through the report: a shrunken `colorization_study.yaml` (its
encodings and losses with their exclusions, the U-Net with and without skips, tiny data,
one epoch, two seeds) run by `python -m sweep.grid
--repeats 2`, then `python -m sweep.report`: per-configuration means with CIs over seeds, the
trade-off of PSNR gain against colourfulness and its front, the factors' effects, what the
U-Net's skips add, and the chroma evidence."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, run_cli
from sweep.analysis import colour as C
from sweep.results import load_results


@pytest.mark.slow
def test_a_shrunken_colorization_study_through_the_report(tmp_path):
    document = yaml.safe_load((ROOT / "search_spaces" / "colorization_study.yaml").read_text())
    document["space"]["arch"] = ["unet32", "unet32_noskip"]
    document["space"]["encoding"] = ["lab", "rgb_diff"]
    document["exclude"] = [{"loss": "ab_classification", "encoding": "rgb_diff"}]
    document["protocol"].update(dataset="synthetic", epochs=1, train_limit=32, batch_size=16, early_stopping_patience=None)
    space = tmp_path / "study.yaml"
    space.write_text(yaml.safe_dump(document, sort_keys=False))
    results = tmp_path / "results"
    grid = run_cli("sweep.grid", "--space", str(space), "--repeats", "2", "--results", str(results))
    assert grid.returncode == 0, grid.stderr
    frame = load_results(results)
    assert len(frame) == 2 * 3 * 2 and (frame["status"] == "complete").all()
    report = run_cli("sweep.report", "--results", str(results))
    assert report.returncode == 0, report.stderr
    text = (results / "report" / "report.md").read_text()
    for heading in ("## Colorization", "### PSNR gain against colourfulness", "### What each factor does", "### Why the failing ones fail"):
        assert heading in text
    for figure in ("colour_tradeoff", "chroma_evidence", "colorization"):
        assert (results / "report" / f"{figure}.png").stat().st_size > 10_000
    summary = json.loads((results / "report" / "summary.json").read_text())["colorization"]
    configs = pd.DataFrame(summary["configurations"])
    assert len(configs) == 6 and (configs["n_seeds"] == 2).all()
    assert set(configs["label"]) == {f"{a}, {e}" for a in ("unet32", "unet32_noskip") for e in ("lab", "rgb_diff", "lab, ab_classification")}
    # Every figure a mean over the two seeds, inside its interval; the gain is PSNR minus gray's.
    trials = C.with_colour_columns(frame)
    for _, row in configs.iterrows():
        seeds = trials[trials["trial_key"].isin(row["trial_keys"])]
        assert len(seeds) == 2
        assert row["psnr_gain"] == pytest.approx((seeds["test_psnr"] - seeds["test_gray_psnr"]).mean())
        assert row["colorfulness_ratio"] == pytest.approx((seeds["test_colorfulness"] / seeds["test_colorfulness_truth"]).mean())
        assert row["psnr_gain_ci_low"] <= row["psnr_gain"] <= row["psnr_gain_ci_high"]
        half = row["psnr_gain_ci_high"] - row["psnr_gain"]
        assert half == pytest.approx(12.706 * seeds["psnr_gain"].std(ddof=1) / math.sqrt(2), rel=1e-3)  # t(0.975, 1 dof)
    assert summary["gray_psnr"] == pytest.approx(frame["test_gray_psnr"].mean())
    assert summary["pareto"] and set(summary["pareto"]) <= set(configs["label"])
    effects = pd.DataFrame(summary["effects"])
    assert set(effects["factor"]) == {"arch", "encoding", "loss"} and set(effects["metric"]) == {"psnr_gain", "colorfulness_ratio"}
    skips = summary["skips_unet32"]
    assert skips["n"] == 3 and skips["ci_low"] <= skips["mean"] <= skips["ci_high"]
    assert "The U-Net's skip connections (`unet32` against `unet32_noskip`, 3 paired configurations)" in text


def test_the_pareto_front_and_paired_effects_by_hand():
    configs = pd.DataFrame({
        "arch": ["u", "u_noskip", "u", "u_noskip", "a"], "encoding": ["lab", "lab", "rgb", "rgb", "lab"], "loss": ["mse"] * 5,
        "psnr_gain": [2.0, 1.0, 0.5, 0.1, 2.0], "colorfulness_ratio": [0.3, 0.5, 0.9, 0.2, 0.2], "n_seeds": [3] * 5,
        "label": list("vwxyz"),
    })  # fmt: skip
    assert C.colour_pareto(configs)["label"].tolist() == ["v", "w", "x"]  # z is beaten by v; y by x
    paired = C.paired_effect(configs, "arch", "u", "u_noskip")
    assert paired["n"] == 2 and paired["mean"] == pytest.approx(0.7) and paired["pairs"] == ["lab|mse", "rgb|mse"]
    assert paired["ci_low"] == pytest.approx(0.7 - 12.706 * np.std([1.0, 0.4], ddof=1) / math.sqrt(2), rel=1e-3)
    assert C.paired_effect(configs, "arch", "a", "u_noskip")["n"] == 1


def test_a_paired_effect_pairs_on_every_other_factor():
    """With the annealed temperature varying too, a configuration is paired only with its
    baseline at the same temperature: the one baseline is never counted twice."""
    configs = pd.DataFrame({
        "arch": ["u", "u", "u_noskip", "u", "u", "u_noskip"], "encoding": ["lab"] * 6,
        "loss": ["ab_classification"] * 3 + ["mse"] * 3, "annealed_temperature": [0.38, 1.0, 0.38, 0.38, 1.0, 1.0],
        "psnr_gain": [2.0, 5.0, 1.0, 0.9, 0.6, 0.5], "n_seeds": [1] * 6,
    })  # fmt: skip
    paired = C.paired_effect(configs, "arch", "u", "u_noskip")
    assert paired["n"] == 2 and paired["pairs"] == ["lab|ab_classification|0.38", "lab|mse|1.0"]
    assert paired["mean"] == pytest.approx(((2.0 - 1.0) + (0.6 - 0.5)) / 2)
    # ... and an effect of the encoding holds the architecture and the temperature fixed
    configs.loc[len(configs)] = {"arch": "u", "encoding": "rgb", "loss": "mse", "annealed_temperature": 1.0, "psnr_gain": 0.1, "n_seeds": 1}
    paired = C.paired_effect(configs, "encoding", "lab", "rgb")
    assert paired["n"] == 1 and paired["mean"] == pytest.approx(0.6 - 0.1)
