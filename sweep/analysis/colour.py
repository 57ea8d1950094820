"""Colorization as the analysis reads it: what each configuration adds over the grayscale
baseline, how colourful it is, and why an encoding fails.

    colour_configurations(frame)   # one row per configuration: means and 95% t-intervals over seeds
    colour_pareto(frame)           # the configurations no other beats on both PSNR gain and colourfulness
    colour_effects(frame)          # each factor's levels: mean PSNR gain and colourfulness with CIs
    paired_effect(frame, "arch", "unet32", "unet32_noskip")   # e.g. what the U-Net's skips add

Per trial: `psnr_gain` is its test PSNR minus the grayscale baseline's (the luma copied to
RGB, scored on the same images; both by dataset-level MSE), `colorfulness_ratio` its mean
colourfulness over the truth's (1: as colourful as the photographs; 0: gray). Replicates
(the same configuration with other seeds) are merged into a mean with a t-interval over
the seeds, so a figure is never a single lucky seed's. `arch` names a configuration's
architecture (its preset, or its family with a star when changed). Nothing here trains.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from sweep.analysis.stats import CONFIDENCE, complete, configurations, main_effects, plain, varied_factors
from sweep.results.schema import COLUMNS

__all__ = ["COLOUR_METRICS", "EVIDENCE", "colour_configurations", "colour_effects", "colour_factors", "colour_pareto", "paired_effect", "with_colour_columns"]

# The configuration table's columns: name -> (label, higher is better)
COLOUR_METRICS = {
    "psnr_gain": ("PSNR gain over gray (dB)", True),
    "test_psnr": ("test PSNR (dB)", True),
    "test_ssim": ("SSIM", True),
    "test_ab_rmse": ("ab RMSE", False),
    "test_ab_auc": ("ab AuC", True),
    "colorfulness_ratio": ("colourfulness / truth's", True),
}
# How the predicted chroma follows the true one (sweep.metrics.chroma_agreement)
EVIDENCE = ("a_slope", "b_slope", "a_corr", "b_corr", "a_bias", "b_bias")
FACTORS = ("arch", "encoding", "loss")
ARCH_COLUMNS = frozenset(c.name for c in COLUMNS if c.group == "arch") | {"preset"}  # what `arch` summarises


def with_colour_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The colorization trials (task 'colorize') with `psnr_gain`, `colorfulness_ratio`, the
    chroma evidence as plain columns (`a_slope`, ...) and `arch` (preset or family*)."""
    if "task" not in frame.columns:
        return frame.iloc[0:0]
    out = frame[frame["task"] == "colorize"].copy()
    number = lambda name: pd.to_numeric(out[name], errors="coerce") if name in out else pd.Series(np.nan, index=out.index)  # noqa: E731
    out["psnr_gain"] = number("test_psnr") - number("test_gray_psnr")
    out["colorfulness_ratio"] = number("test_colorfulness") / number("test_colorfulness_truth")
    for name in EVIDENCE:
        out[name] = number(f"test_{name}")
    preset = out["preset"] if "preset" in out else pd.Series(None, index=out.index, dtype=object)
    out["arch"] = preset.where(preset.notna(), out["family"].astype(str) + "*")
    return out


def colour_configurations(frame: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per colorization configuration (replicates merged): for every metric of
    `COLOUR_METRICS` and `EVIDENCE`, its mean, `<m>_std` and the t-interval `<m>_ci_low`,
    `<m>_ci_high` over the seeds (NaN with one seed); `n_seeds`, `arch`, `label` (arch,
    encoding, loss), sorted by PSNR gain, best first."""
    trials = with_colour_columns(complete(frame))
    metrics = [*COLOUR_METRICS, *EVIDENCE]
    configs = configurations(trials, metrics=metrics)
    if configs.empty:
        return configs
    for metric in metrics:
        n = configs["n_seeds"].astype(float)
        half = stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)) * configs[f"{metric}_std"] / np.sqrt(n)
        half = half.where(n > 1)
        configs[f"{metric}_ci_low"], configs[f"{metric}_ci_high"] = configs[metric] - half, configs[metric] + half
    others = [f for f in varied_factors(configs) if f not in ARCH_COLUMNS and f not in FACTORS]
    configs["label"] = [label(row, others) for _, row in configs.iterrows()]
    return configs.sort_values("psnr_gain", ascending=False, kind="stable").reset_index(drop=True)


def label(row, others: Sequence[str] = ()) -> str:
    """'unet32, lab, ab_classification', then any other factor that varied as name=value."""
    loss = "" if row.get("loss") in (None, "mse") else f", {row['loss']}"
    return f"{row['arch']}, {row['encoding']}{loss}" + "".join(f", {name}={plain(row[name])}" for name in others)


def colour_factors(configs: pd.DataFrame) -> list[str]:
    """The factors of `FACTORS` that take more than one value among the configurations."""
    return [f for f in FACTORS if f in configs and configs[f].nunique(dropna=False) > 1]


def colour_pareto(frame: pd.DataFrame, x: str = "psnr_gain", y: str = "colorfulness_ratio") -> pd.DataFrame:
    """The configurations no other beats on both `x` and `y` (both higher is better: the
    trade-off between regression's safe desaturated colours and vivid ones), by `x`, best first."""
    configs = frame if "n_seeds" in frame else colour_configurations(frame)
    configs = configs[configs[x].notna() & configs[y].notna()]
    a, b = configs[x].to_numpy(float), configs[y].to_numpy(float)
    keep = [not np.any((a >= a[i]) & (b >= b[i]) & ((a > a[i]) | (b > b[i]))) for i in range(len(configs))]
    return configs[keep].sort_values(x, ascending=False, kind="stable")


def colour_effects(frame: pd.DataFrame, metrics: Sequence[str] = ("psnr_gain", "colorfulness_ratio"), confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Each varied factor's main effect on each metric: for every level the mean over the
    configurations at that level, with its t-interval. Columns: metric, factor, level, n,
    mean, std, ci_low, ci_high."""
    configs = frame if "n_seeds" in frame else colour_configurations(frame)
    factors = colour_factors(configs)
    parts = [main_effects(configs, metric, factors, confidence).assign(metric=metric) for metric in metrics if factors]
    if not parts:
        return pd.DataFrame(columns=["metric", "factor", "level", "n", "mean", "std", "ci_low", "ci_high"])
    out = pd.concat(parts, ignore_index=True)
    return out[["metric", *[c for c in out.columns if c != "metric"]]]


def paired_effect(frame: pd.DataFrame, factor: str, level: str, baseline: str, metric: str = "psnr_gain", confidence: float = CONFIDENCE) -> dict | None:
    """What `factor` = `level` adds over `baseline` with every other factor held fixed: the
    mean of the paired differences of `metric` over the configurations present at both
    levels, with its t-interval. A pair agrees on every other factor that varied (the
    encoding, the loss, a protocol field such as the annealed temperature; for `arch`, the
    architecture fields are what the two levels differ in), so no configuration is counted
    twice. None when no pair exists."""
    configs = frame if "n_seeds" in frame else colour_configurations(frame)
    mine = ARCH_COLUMNS if factor == "arch" else {factor}
    others = list(dict.fromkeys([f for f in FACTORS if f != factor and f in configs] + [f for f in varied_factors(configs) if f not in mine and f not in FACTORS]))
    key = configs[others].map(lambda v: str(plain(v))).agg("|".join, axis=1) if others else pd.Series("", index=configs.index)
    a = configs[configs[factor] == level].set_index(key[configs[factor] == level])[metric]
    b = configs[configs[factor] == baseline].set_index(key[configs[factor] == baseline])[metric]
    diff = (a - b.reindex(a.index)).dropna()
    if diff.empty:
        return None
    n, mean = len(diff), float(diff.mean())
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    return {"factor": factor, "level": level, "baseline": baseline, "metric": metric, "n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "pairs": list(diff.index)}
