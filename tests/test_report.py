"""`python -m sweep.report`: its numbers are sweep.analysis's, it covers partial sweeps, and
bad input is one line."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_cli
from sweep import analysis
from sweep.analysis.report import write_report
from sweep.results import load_results, write_row
from test_analysis import grid_frame


@pytest.fixture
def results(tmp_path, synthetic):
    """A results directory of constructed rows on the synthetic images (no training): an
    18-point grid with 2 seeds each, one failed trial, and one planned trial with no row."""
    rng = np.random.default_rng(7)
    frame = grid_frame(
        lambda p, s: 0.09 / p["channel_factor"] ** 0.3 * (1 + 0.1 * math.log2(p["compression_factor"])) * (1 + 0.05 * rng.normal()),
        seeds=(0, 1),
    )
    protocol = {"dataset": "synthetic", "data_id": synthetic.data_id, "task": "reconstruct", "encoding": "rgb", "epochs": 2,
                "train_fraction": 1.0, "val_fraction": 0.1, "train_limit": 48, "image_size": None, "n_train": 43, "n_val": 5, "n_test": 128}  # fmt: skip
    history = json.dumps([{"loss": 0.09, "val_loss": 0.08, "lr": 1e-3}, {"loss": 0.06, "val_loss": 0.07, "lr": 1e-3}])
    for row in frame.to_dict("records"):
        row.update(protocol, history=history, test_psnr=10 * math.log10(1 / row["test_mse"]), test_ssim=0.5)
        write_row(tmp_path, row)
    write_row(tmp_path, {**frame.iloc[0].to_dict(), **protocol, "trial_key": "failed01", "status": "failed", "seed": 5,
                         "test_mse": None, "error": "out of memory (ResourceExhaustedError)"})  # fmt: skip
    (tmp_path / "runs").mkdir()
    planned = [*frame["trial_key"], "failed01", "notyet01"]
    (tmp_path / "runs" / "20260101T000000-grid-1.json").write_text(json.dumps({"argv": ["-m", "sweep.grid"], "trials": planned}))
    return tmp_path


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


def test_the_numbers_in_the_report_are_the_analysis(results):
    report = write_report(results).read_text()
    frame = load_results(results)  # what a reader of the report would load

    for method, label in (("spearman", r"Spearman rho \(latent size, test MSE\)"), ("pearson", r"Pearson r \(log latent size, log test MSE\)")):
        expected = analysis.latent_correlation(frame, method)
        found = re.search(rf"\| {label} \| (\S+) \| (\S+) to (\S+) \| (\S+) \| (\d+) \|", report)
        assert found, f"no {method} row in the report"
        estimate, low, high, p, n = found.groups()
        assert number(estimate) == pytest.approx(expected.estimate, abs=5e-4)
        assert number(low) == pytest.approx(expected.ci_low, abs=5e-4) and number(high) == pytest.approx(expected.ci_high, abs=5e-4)
        assert number(p) == pytest.approx(expected.p_value, rel=0.05) and int(n) == expected.n == 18

    law = analysis.power_law(frame)
    found = re.search(r"test MSE ≈ (\S+) · latent\^(\S+)\*\* \(exponent 95% CI (\S+) to (\S+), R² = (\S+) ", report)
    a, b, low, high, r2 = map(number, found.groups())
    assert a == pytest.approx(law.a, rel=5e-4) and b == pytest.approx(law.b, abs=5e-4) and r2 == pytest.approx(law.r2, abs=5e-4)
    assert (low, high) == pytest.approx(law.b_ci, abs=5e-4)

    importance = analysis.factor_importance(frame)
    for _, row in importance.iterrows():
        found = re.search(rf"\| `{row['factor']}` \| (\S+)% \| (\S+) \| (\S+) \| (\S+) \| (\d+) \|", report)
        assert number(found.group(1)) == pytest.approx(100 * row["share"], abs=0.05)
        assert number(found.group(3)) == pytest.approx(row["effect_range"], rel=5e-4)
    top = importance.iloc[0]["factor"]
    assert f"The factor that mattered most: `{top}`" in report

    for _, row in analysis.main_effects(frame).iterrows():
        found = re.search(rf"\| `{row['factor']}` \| {row['level']} \| (\d+) \| (\S+) \| (\S+) to (\S+) \|", report)
        assert found, (row["factor"], row["level"])
        n, mean, low, high = found.groups()
        assert int(n) == row["n"] and number(mean) == pytest.approx(row["mean"], rel=5e-4)
        assert (number(low), number(high)) == pytest.approx((row["ci_low"], row["ci_high"]), rel=5e-4)

    interaction = analysis.strongest_interaction(frame)
    a, b = interaction.factors
    assert re.search(rf"\*\*`{a}` × `{b}`\*\*, {100 * interaction.share:.1f}% of the variance", report)

    ranked = analysis.best(frame, n=3)
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \| ([\d,]+) \| ([\d,]+) \| (\S+) ± (\S+) \(n=(\d)\) \|", report, re.M)
    assert [r[1] for r in rows[:3]] == list(ranked["label"])
    assert [number(r[4]) for r in rows[:3]] == pytest.approx(list(ranked["test_mse"]), rel=5e-4)
    assert all(r[6] == "2" for r in rows)

    reference = analysis.pca_reference(frame, analysis.recorded_data_dirs(results))
    for _, row in reference[reference["pca_mse"] > 0].iterrows():
        found = re.search(rf"\| {row['latent_size']:,} \| {row['components']:,} \| {row['kind']} \| (\S+) \|", report)
        assert number(found.group(1)) == pytest.approx(row["pca_mse"], rel=5e-4)

    summary = json.loads((results / "report" / "summary.json").read_text())
    assert summary["spearman"]["estimate"] == analysis.latent_correlation(frame).estimate  # unrounded: exactly equal
    assert summary["power_law"]["b"] == law.b
    assert [r["factor"] for r in summary["importance"]] == list(importance["factor"])


def test_a_partial_sweep_says_what_it_covers(results):
    report = write_report(results).read_text()
    assert "Covers **37 trials**: 36 complete, 1 failed, 0 pruned; 1 more of the 38 planned" in report
    assert "**18 configurations** (18 trained with several seeds" in report
    assert "## Failed trials (1)" in report and "out of memory" in report and "`failed01`" in report
    assert "it follows from `channel_factor`, `compression_factor`" in report
    for name in ("latent_vs_error", "factor_effects", "interaction", "params_vs_error", "learning_curves", "gallery"):
        assert (results / "report" / f"{name}.png").exists() and (results / "report" / f"{name}.svg").exists()
        assert f"]({name}.png)" in report


def test_a_report_with_no_complete_trial(tmp_path):
    write_row(tmp_path, {"trial_key": "a", "status": "failed", "error": "NaN loss", "finished_at": "1"})
    report = write_report(tmp_path).read_text()
    assert "Covers **1 trials**: 0 complete, 1 failed" in report and "nothing to analyse" in report


def test_help_does_not_load_a_framework():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "sweep.report", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "--results" in out.stdout and "--metric" in out.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"tensorflow", "keras", "jax", "torch", "optuna", "pandas", "matplotlib"}


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_bad_results_directory_is_one_line(tmp_path, make):
    target = tmp_path / "r"
    if make == "empty":
        target.mkdir()
    out = run_cli("sweep.report", "--results", str(target))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0]
    assert ("no such directory" if make == "missing" else "no trial rows") in lines[0]


@pytest.mark.slow
def test_the_report_of_a_real_sweep(synthetic_sweep, tmp_path):
    out = run_cli("sweep.report", "--results", str(synthetic_sweep), "--out", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Covers **4 trials**: 4 complete, 0 failed" in report and "Spearman rho" in report
    assert "### Linear reference (PCA)" in report and "PCA reference skipped" not in report
    for name in ("latent_vs_error", "factor_effects", "gallery", "learning_curves"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 5000


@pytest.mark.slow
def test_a_metric_no_trial_has_is_one_line(synthetic_sweep, tmp_path):
    out = run_cli("sweep.report", "--results", str(synthetic_sweep), "--out", str(tmp_path / "report"), "--metric", "test_ab_rmse")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "--metric test_ab_rmse: no complete trial in" in out.stderr and "these do: val_mse" in out.stderr
    assert not (tmp_path / "report").exists()


def test_an_error_that_is_not_about_writing_is_not_called_a_read_only_folder(results, monkeypatch):
    import sweep.analysis.report

    from sweep.cli.report import main

    def missing(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "data/cifar-10-batches-py/test_batch")

    monkeypatch.setattr(sweep.analysis.report, "write_report", missing)
    with pytest.raises(FileNotFoundError):
        main(["--results", str(results), "--no-reference"])


def test_a_read_only_results_folder_is_one_line(results, tmp_path, monkeypatch):
    """No traceback: one line naming the folder and the way out (--out), which works."""
    from pathlib import Path

    from sweep.cli.report import main
    from sweep.errors import StoreError

    real = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(results)):
            raise PermissionError(30, "Read-only file system", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(StoreError) as refused:
        main(["--results", str(results), "--no-reference"])
    message = str(refused.value)
    assert "\n" not in message and message == (
        f"--results {results}: the report cannot be written to {results / 'report'} (Read-only file system); give --out DIR to write it elsewhere"
    )
    elsewhere = tmp_path.parent / f"elsewhere-{tmp_path.name}"
    assert main(["--results", str(results), "--no-reference", "--out", str(elsewhere)]) == 0
    assert "Spearman rho" in (elsewhere / "report.md").read_text()


def test_a_url_report_goes_to_a_named_folder():
    from pathlib import Path

    from sweep.cli.report import url_folder

    assert url_folder("postgresql://user:secret@db-host:5432/sweep") == Path("report-db-host-sweep")
    assert url_folder("sqlite:////tmp/x/study.db") == Path("report-study.db")


def test_configurations_are_named_by_their_factors_never_a_hash(results):
    report = write_report(results).read_text()
    frame = load_results(results)
    configs = analysis.configurations(frame)
    assert all(key not in label for label in configs["label"] for key in configs["trial_key"])
    lone = {"trial_key": "3fa9c2d1e0", "preset": "unet32", "family": "unet"}
    assert analysis.config_label(lone, []) == "unet32"
    assert analysis.config_label({**lone, "preset": None}, []) == "unet model"
    assert "Group: **synthetic reconstruct**, the only comparable group" in report
