"""The report at the calibrated chroma gain: per configuration s*, the PSNR gain, colourfulness
and colour cast at s* and along s* to 2 s* (means over seeds of what the rows store), the
trade-off figure's curves, `--chroma-gain S` read off each trial's stored curve, and rows
trained before calibration reported at gain 1."""

from __future__ import annotations

import json
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from sweep.analysis import colour as C
from sweep.analysis import figures
from sweep.analysis.report import write_report
from sweep.chroma import ABSOLUTE, RELATIVE, curve_at
from sweep.errors import SpecError
from sweep.results import load_results, write_row

GRAY = 20.0  # the grayscale baseline's test PSNR (dB)
TRUTH = 30.0  # the truth's colourfulness
# configuration -> per seed (s*, peak PSNR gain at s*, curvature, colourfulness per unit gain); None: trained before calibration
TRIALS = {
    ("unet32", "lab"): [(1.2, 0.9, 0.5, 12.0), (1.4, 1.1, 0.45, 10.0), (1.3, 1.0, 0.6, 11.0)],
    ("unet32", "ycbcr"): [(2.0, 0.4, 0.2, 6.0), (1.8, 0.5, 0.25, 7.0)],
    ("acml", "lab"): [None, None],
    ("acml", "ycbcr"): [(1.1, 0.3, 0.4, 9.0), None],  # half calibrated: not a calibrated configuration
}


def psnr_at(trial, s: float) -> float:
    """The PSNR of a constructed trial at gain s: a parabola peaking at s*."""
    gain, peak, curvature, _ = trial
    return GRAY + peak - curvature * (s - gain) ** 2


def curve(trial) -> dict:
    """The constructed trial's gain curve, at the gains `sweep.chroma.gain_curve` stores."""
    gain = trial[0]
    gains = sorted({round(float(s), 4) for s in (*(r * gain for r in RELATIVE), *ABSOLUTE)})
    return {"gain": gains, "psnr": [psnr_at(trial, s) for s in gains], "colorfulness": [trial[3] * s for s in gains]}


def rows(calibrated: bool = True) -> list[dict]:
    out = []
    history = json.dumps([{"loss": 0.05, "val_loss": 0.05, "lr": 1e-3}, {"loss": 0.04, "val_loss": 0.045, "lr": 1e-3}])
    for (preset, encoding), trials in TRIALS.items():
        for seed, trial in enumerate(trials):
            key = f"{preset}-{encoding}-{seed}"
            stand_in = trial or (1.0, 0.2 + 0.1 * seed, 0.3, 8.0 + seed)  # its headline metrics only
            psnr = psnr_at(stand_in, 1.0)
            row = {
                "trial_key": key, "status": "complete", "task": "colorize", "dataset": "synthetic", "epochs": 2, "seed": seed,
                "preset": preset, "family": "unet", "base_width": 32 if preset == "unet32" else 16, "encoding": encoding, "loss": "mse",
                "config_key": f"{preset}-{encoding}", "varied": json.dumps(["arch", "encoding", "seed"]), "finished_at": f"2026-01-01T00:00:{len(out):02d}",
                "latent_size": 2048 if preset == "unet32" else 512, "params": 200_000 if preset == "unet32" else 50_000,
                "test_mse": 10 ** (-psnr / 10), "test_psnr": psnr, "test_gray_psnr": GRAY, "test_ssim": 0.9, "test_gray_ssim": 0.91,
                "test_ab_rmse": 18.0, "test_ab_auc": 0.9, "test_colorfulness": stand_in[3], "test_colorfulness_truth": TRUTH,
                "test_a_slope": 0.1, "test_b_slope": 0.2, "test_a_corr": 0.3, "test_b_corr": 0.4, "test_a_bias": -0.5, "test_b_bias": -1.5,
                "history": history,
            }  # fmt: skip
            if trial is not None and calibrated:
                gain = trial[0]
                row.update({
                    "chroma_gain": gain, "test_psnr_at_gain": psnr_at(trial, gain), "test_colorfulness_at_gain": trial[3] * gain,
                    "test_a_bias_at_gain": -0.4 - 0.1 * seed, "test_b_bias_at_gain": -1.0 + 0.2 * seed, "gain_curve": json.dumps(curve(trial)),
                })  # fmt: skip
            out.append(row)
    return out


@pytest.fixture
def results(tmp_path):
    for row in rows():
        write_row(tmp_path / "results", row)
    return tmp_path / "results"


def seeds_of(configuration) -> pd.DataFrame:
    """The stored rows of one configuration, as a reader of the report would load them."""
    preset, encoding = configuration
    return pd.DataFrame([r for r in rows() if r["preset"] == preset and r["encoding"] == encoding])


def cells(report: str, label: str, heading: str) -> list[str]:
    """The cells of `label`'s row in the first table after `heading`."""
    section = report[report.index(heading):]
    line = next(line for line in section.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def mean_of(cell: str) -> float:
    return float(re.match(r"[-+]?[\d.]+", cell).group(0))


CALIBRATED_LABELS = {("unet32", "lab"): "unet32, lab", ("unet32", "ycbcr"): "unet32, ycbcr"}


def test_the_table_and_summary_at_s_star_are_the_rows_means(results):
    report = write_report(results, reference=False).read_text()
    summary = json.loads((results / "report" / "summary.json").read_text())["colorization"]["calibrated"]
    assert summary["multiples"] == [1.0, 1.25, 1.5, 1.75, 2.0]
    by_label = {c["label"]: c for c in summary["configurations"]}
    assert set(by_label) == set(CALIBRATED_LABELS.values())
    for configuration, label in CALIBRATED_LABELS.items():
        seeds = seeds_of(configuration)
        trials = TRIALS[configuration]
        expected = {
            "chroma_gain": seeds["chroma_gain"].mean(),
            "psnr_gain_at_gain": (seeds["test_psnr_at_gain"] - seeds["test_gray_psnr"]).mean(),
            "colorfulness_ratio_at_gain": (seeds["test_colorfulness_at_gain"] / seeds["test_colorfulness_truth"]).mean(),
            "a_bias_at_gain": seeds["test_a_bias_at_gain"].mean(),
            "b_bias_at_gain": seeds["test_b_bias_at_gain"].mean(),
            "psnr_gain_x2": np.mean([psnr_at(t, 2 * t[0]) - GRAY for t in trials]),  # the parabola at 2 s*, a stored point of each curve
            "colorfulness_ratio_x2": np.mean([t[3] * 2 * t[0] / TRUTH for t in trials]),
            "psnr_gain_x1.5": np.mean([psnr_at(t, 1.5 * t[0]) - GRAY for t in trials]),
        }
        found = by_label[label]
        for name, value in expected.items():
            assert found[name] == pytest.approx(value, rel=1e-9), (label, name)
        half = found["chroma_gain_ci_high"] - found["chroma_gain"]
        from scipy import stats

        n = len(trials)
        assert half == pytest.approx(stats.t.ppf(0.975, n - 1) * seeds["chroma_gain"].std(ddof=1) / math.sqrt(n))
        # ... and the report's table says the same, rounded
        row = cells(report, label, "### At the calibrated chroma gain")
        assert int(row[1]) == n
        shown = dict(zip(["chroma_gain", "psnr_gain_at_gain", "colorfulness_ratio_at_gain", "a_bias_at_gain", "b_bias_at_gain", "psnr_gain_x2", "colorfulness_ratio_x2"], row[2:9]))
        for name, cell in shown.items():
            assert mean_of(cell) == pytest.approx(expected[name], abs=0.006), (label, name, cell)
        # the break-even gain: where the parabola meets gray, s* + sqrt(peak / curvature), as a multiple of s*
        multiple = np.mean([(t[0] + math.sqrt(t[1] / t[2])) / t[0] for t in trials])
        assert found["break_even_multiple"] == pytest.approx(multiple, rel=0.02)
        assert mean_of(row[9]) == pytest.approx(multiple, abs=0.03) and row[9].endswith(")")
    assert "Each trial fits a chroma gain s* on its validation split" in report and "python -m sweep.apply --chroma-gain S" in report
    assert "Not calibrated (trained before calibration): " in report
    line = next(line for line in report.splitlines() if line.startswith("Not calibrated"))
    assert "acml, lab" in line and "acml, ycbcr (1 of 2 seeds calibrated)" in line
    assert set(summary["not_calibrated"]) == {"acml, lab", "acml, ycbcr"}
    # the headline table stays at gain 1
    configs = pd.DataFrame(json.loads((results / "report" / "summary.json").read_text())["colorization"]["configurations"])
    for configuration, label in CALIBRATED_LABELS.items():
        seeds = seeds_of(configuration)
        (gain_1,) = configs.loc[configs["label"] == label, "psnr_gain"]
        assert gain_1 == pytest.approx((seeds["test_psnr"] - seeds["test_gray_psnr"]).mean(), rel=1e-9)


def test_chroma_gain_reads_each_trials_curve(results):
    gain = 1.7
    out = run_cli("sweep.report", "--results", str(results), "--no-reference", "--chroma-gain", str(gain))
    assert out.returncode == 0, out.stderr
    report = (results / "report" / "report.md").read_text()
    summary = json.loads((results / "report" / "summary.json").read_text())["colorization"]
    assert summary["chroma_gain"] == gain
    configs = {c["label"]: c for c in summary["configurations"]}
    for configuration, label in CALIBRATED_LABELS.items():
        seeds = seeds_of(configuration)
        psnr = np.mean([curve_at(c, gain, "psnr") - GRAY for c in seeds["gain_curve"]])
        ratio = np.mean([curve_at(c, gain, "colorfulness") / TRUTH for c in seeds["gain_curve"]])
        assert configs[label]["psnr_gain"] == pytest.approx(psnr, rel=1e-9) and configs[label]["colorfulness_ratio"] == pytest.approx(ratio, rel=1e-9)
        assert configs[label]["at_gain"] == gain and configs[label]["calibrated"]
        row = cells(report, label, "## Colorization")
        assert mean_of(row[2]) == pytest.approx(psnr, abs=0.006) and mean_of(row[6]) == pytest.approx(ratio, abs=0.0006) and row[7] == f"{gain:g}"
    for label in ("acml, lab", "acml, ycbcr"):  # trained before calibration: at gain 1, and marked
        seeds = seeds_of(("acml", label.split(", ")[1]))
        assert configs[label]["psnr_gain"] == pytest.approx((seeds["test_psnr"] - GRAY).mean(), rel=1e-9)
        assert configs[label]["at_gain"] == 1.0 and not configs[label]["calibrated"]
        assert cells(report, label, "## Colorization")[7] == "1 (not calibrated)"
    top = report[report.index("## Colorization"):report.index("| configuration | seeds | PSNR gain (dB)")]
    assert f"**PSNR gain and colourfulness are at chroma gain {gain:g}** (`--chroma-gain`) for the 2 calibrated configurations" in top
    assert "2 configuration(s) trained before calibration stay at gain 1" in top
    # the table at s* does not move with --chroma-gain
    found = {c["label"]: c for c in summary["calibrated"]["configurations"]}
    seeds = seeds_of(("unet32", "lab"))
    assert found["unet32, lab"]["psnr_gain_at_gain"] == pytest.approx((seeds["test_psnr_at_gain"] - GRAY).mean(), rel=1e-9)


@pytest.mark.parametrize("value", ["-0.5", "4.5", "nan"])
def test_a_bad_chroma_gain_is_one_line(results, value):
    out = run_cli("sweep.report", "--results", str(results), "--chroma-gain", value)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"error: --chroma-gain {float(value):g}: a gain in [0, 4]"), out.stderr
    assert not (results / "report").exists()
    with pytest.raises(SpecError, match=r"--chroma-gain 9: a gain in \[0, 4\]"):
        write_report(results, chroma_gain=9.0)


def test_rows_without_calibration_columns_still_report(tmp_path):
    for row in rows(calibrated=False):
        write_row(tmp_path, row)
    frame = load_results(tmp_path)
    assert "chroma_gain" not in frame or frame["chroma_gain"].isna().all()
    report = write_report(tmp_path, reference=False).read_text()
    assert "## Colorization" in report and "### At the calibrated chroma gain" not in report and "at chroma gain" not in report
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())["colorization"]
    assert "calibrated" not in summary and not any(c["calibrated"] for c in summary["configurations"])
    report = write_report(tmp_path, reference=False, chroma_gain=2.0).read_text()
    assert "`--chroma-gain 2`: no configuration here was trained with calibration" in report
    configs = pd.DataFrame(json.loads((tmp_path / "report" / "summary.json").read_text())["colorization"]["configurations"])
    seeds = pd.DataFrame(rows(calibrated=False))
    expected = (seeds["test_psnr"] - seeds["test_gray_psnr"]).groupby([seeds["preset"], seeds["encoding"]]).mean()
    assert sorted(configs["psnr_gain"]) == pytest.approx(sorted(expected))  # at gain 1
    assert (configs["at_gain"] == 1.0).all()
    assert (tmp_path / "report" / "colour_tradeoff.png").exists()


def test_the_tradeoff_figure_draws_each_calibrated_curve_from_s_star_to_twice_it(tmp_path):
    for row in rows():
        write_row(tmp_path, row)
    configs = C.colour_configurations(load_results(tmp_path))
    fig = figures.colour_tradeoff(configs, C.colour_pareto(configs))
    ax = fig.axes[0]
    points = [tuple(line.get_xydata()[0]) for line in ax.lines if line.get_marker() not in ("None", "", None, "|", "_") and len(line.get_xydata()) == 1]  # (not the caps)
    assert np.allclose(sorted(points), sorted(zip(configs["psnr_gain"], configs["colorfulness_ratio"])))  # the configurations, kept
    curves = sorted((line.get_xydata().tolist() for line in ax.lines if len(line.get_xydata()) == len(C.MULTIPLES) and line.get_marker() == "o"))
    expected = sorted([[[r[a], r[b]] for a, b in map(C.along, C.MULTIPLES)] for _, r in configs[configs["calibrated"]].iterrows()])
    assert len(curves) == 2 and np.allclose(curves, expected)
    for line in ax.lines:
        if len(line.get_xydata()) == len(C.MULTIPLES):
            assert list(line.get_markevery()) == [0]  # the marker at s*
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels.count("calibrated gain s* → 2 s*") == 1
    plt.close(fig)
