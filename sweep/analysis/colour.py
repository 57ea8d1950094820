"""Colorization as the analysis reads it: what each configuration adds over the grayscale
baseline, how colourful it is, and why an encoding fails.

    colour_configurations(frame)   # one row per configuration: means and 95% t-intervals over seeds
    colour_pareto(frame)           # the configurations no other beats on both PSNR gain and colourfulness
    colour_effects(frame)          # each factor's levels: mean PSNR gain and colourfulness with CIs
    paired_effect(frame, "arch", "unet32", "unet32_noskip")   # e.g. what the U-Net's skips add
    colour_configurations(frame, gain=1.5)   # PSNR gain and colourfulness at chroma gain 1.5

Per trial: `psnr_gain` is its test PSNR minus the grayscale baseline's (the luma copied to
RGB, scored on the same images; both by dataset-level MSE), `colorfulness_ratio` its mean
colourfulness over the truth's (1: as colourful as the photographs; 0: gray). Replicates
(the same configuration with other seeds) are merged into a mean with a t-interval over
the seeds, so a figure is never a single lucky seed's. `arch` names a configuration's
architecture (its preset, or its family with a star when changed). Nothing here trains.

The calibrated chroma gain (`sweep.chroma`): a trial trained with calibration stores s*
(fitted on its validation split) and the test split's scores at s* and along a curve of
gains; its headline metrics stay at gain 1. A configuration is `calibrated` when every seed
is; its `CALIBRATED` columns are then the means at s*, and `psnr_gain_x<r>`,
`colorfulness_ratio_x<r>` the means at r·s* (r in `MULTIPLES`, read off each trial's
curve). `gain=S` gives the headline PSNR gain and colourfulness at gain S instead, for
the calibrated configurations (the others stay at gain 1: `at_gain` says which).
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from sweep.analysis.stats import CONFIDENCE, complete, configurations, main_effects, plain, varied_factors
from sweep.chroma import ABSOLUTE, curve_at
from sweep.results.schema import COLUMNS

__all__ = [
    "BREAK_EVEN", "CALIBRATED", "COLOUR_METRICS", "EVIDENCE", "GAIN_RANGE", "MULTIPLES", "along", "colour_configurations", "colour_effects",
    "colour_factors", "colour_pareto", "paired_effect", "with_colour_columns",
]  # fmt: skip

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
# At the calibrated chroma gain s*: name -> label (the report's headers)
CALIBRATED = {
    "chroma_gain": "s*",
    "psnr_gain_at_gain": "PSNR gain at s* (dB)",
    "colorfulness_ratio_at_gain": "colourfulness / truth's at s*",
    "a_bias_at_gain": "a* bias at s*",
    "b_bias_at_gain": "b* bias at s*",
}
MULTIPLES = (1.0, 1.25, 1.5, 1.75, 2.0)  # the calibrated curve from s* to 2 s* (sweep.chroma stores these multiples)
# The largest gain at which the PSNR is still at least the grayscale baseline's, read off each trial's curve
BREAK_EVEN = ("break_even_gain", "break_even_multiple", "break_even_colorfulness_ratio")
GAIN_RANGE = (0.0, float(ABSOLUTE[-1]))  # the gains every stored curve covers (a report's --chroma-gain)


def along(r: float) -> tuple[str, str]:
    """The columns of the PSNR gain and the colourfulness ratio at r·s*: 'psnr_gain_x1.5', ..."""
    return f"psnr_gain_x{r:g}", f"colorfulness_ratio_x{r:g}"


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
    return _with_calibration(out, number)


def _with_calibration(out: pd.DataFrame, number) -> pd.DataFrame:
    """The trials' calibration columns (NaN for a trial trained before calibration): `calibrated`,
    the `CALIBRATED` ones, the curve's points at r·s* and its break-even gain."""
    gray, truth = number("test_gray_psnr"), number("test_colorfulness_truth")
    curves = [_curve(c) for c in (out["gain_curve"] if "gain_curve" in out else [None] * len(out))]
    out["chroma_gain"] = number("chroma_gain")
    out["calibrated"] = [bool(c) and math.isfinite(g) for c, g in zip(curves, out["chroma_gain"])]
    out["psnr_gain_at_gain"] = number("test_psnr_at_gain") - gray
    out["colorfulness_ratio_at_gain"] = number("test_colorfulness_at_gain") / truth
    out["a_bias_at_gain"], out["b_bias_at_gain"] = number("test_a_bias_at_gain"), number("test_b_bias_at_gain")
    for r in MULTIPLES:
        psnr, ratio = along(r)
        out[psnr] = [curve_at(c, r * g, "psnr") - base if ok else math.nan for c, g, base, ok in zip(curves, out["chroma_gain"], gray, out["calibrated"])]
        out[ratio] = [curve_at(c, r * g, "colorfulness") / t if ok else math.nan for c, g, t, ok in zip(curves, out["chroma_gain"], truth, out["calibrated"])]
    even = [_break_even(c, base) if ok else (math.nan, False) for c, base, ok in zip(curves, gray, out["calibrated"])]
    out["break_even_gain"] = [g for g, _ in even]
    out["break_even_beyond"] = [beyond for _, beyond in even]
    out["break_even_multiple"] = out["break_even_gain"] / out["chroma_gain"].where(out["chroma_gain"] > 0)
    out["break_even_colorfulness_ratio"] = [curve_at(c, g, "colorfulness") / t if math.isfinite(g) else math.nan for c, g, t in zip(curves, out["break_even_gain"], truth)]
    return out


def _curve(value) -> dict | None:
    """A row's `gain_curve` (JSON text or a mapping), or None when it has none or it is unreadable."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) and value.get("gain") and len(value.get("psnr", ())) == len(value["gain"]) else None


def _break_even(curve: dict, gray: float) -> tuple[float, bool]:
    """The largest gain on `curve` whose PSNR is at least `gray` (linear between its points),
    and whether the curve ends still above it (the gain is then a lower bound); NaN when no
    point is."""
    gains, margin = np.asarray(curve["gain"], float), np.asarray(curve["psnr"], float) - gray
    above = np.flatnonzero(margin >= 0)
    if not math.isfinite(gray) or above.size == 0:
        return math.nan, False
    i = int(above[-1])
    if i == len(gains) - 1:
        return float(gains[i]), True
    return float(gains[i] + (gains[i + 1] - gains[i]) * margin[i] / (margin[i] - margin[i + 1])), False


def _intervals(configs: pd.DataFrame, values: pd.Series, name: str, confidence: float, where: Sequence[bool] | None = None) -> pd.DataFrame:
    """`name`, `<name>_std`, `<name>_ci_low`, `<name>_ci_high` of each configuration (indexed as
    `configs`): the mean of the trials' `values` (indexed by trial key) over its seeds, with
    the t-interval over those that have one; NaN where `where` is False."""
    rows = []
    for keys, keep in zip(configs["trial_keys"], where if where is not None else [True] * len(configs)):
        seeds = pd.to_numeric(values.reindex(list(keys)), errors="coerce").dropna() if keep else pd.Series(dtype=float)
        n = len(seeds)
        mean, std = (seeds.mean() if n else math.nan), (seeds.std(ddof=1) if n > 1 else math.nan)
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
        rows.append((mean, std, mean - half, mean + half))
    return pd.DataFrame(rows, index=configs.index, columns=[name, f"{name}_std", f"{name}_ci_low", f"{name}_ci_high"], dtype=float)


def colour_configurations(frame: pd.DataFrame, confidence: float = CONFIDENCE, gain: float | None = None) -> pd.DataFrame:
    """One row per colorization configuration (replicates merged): for every metric of
    `COLOUR_METRICS` and `EVIDENCE`, its mean, `<m>_std` and the t-interval `<m>_ci_low`,
    `<m>_ci_high` over the seeds (NaN with one seed); `n_seeds`, `arch`, `label` (arch,
    encoding, loss), sorted by PSNR gain, best first.

    Calibration: `calibrated` (every seed has a calibrated gain; `n_calibrated` counts them),
    and, for the calibrated configurations, the `CALIBRATED` columns, `along(r)` for r in
    `MULTIPLES` and `BREAK_EVEN` with the same intervals (`break_even_beyond`: some seed's
    curve ends above gray, so its break-even gain is a lower bound). `gain`: the PSNR gain
    and colourfulness ratio of the calibrated configurations at that chroma gain (in
    `GAIN_RANGE`; interpolated along each trial's curve) instead of 1; `at_gain` says each
    configuration's."""
    if gain is not None and not GAIN_RANGE[0] <= gain <= GAIN_RANGE[1]:
        raise ValueError(f"gain must lie in [{GAIN_RANGE[0]:g}, {GAIN_RANGE[1]:g}] (the stored curves' range). Received gain={gain!r}")
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
    configs = _calibration(configs, trials.set_index("trial_key"), confidence, gain)
    return configs.sort_values("psnr_gain", ascending=False, kind="stable").reset_index(drop=True)


def _calibration(configs: pd.DataFrame, trials: pd.DataFrame, confidence: float, gain: float | None) -> pd.DataFrame:
    """`configs` with their calibration columns (see `colour_configurations`), from the trials
    indexed by key."""
    keys = [list(k) for k in configs["trial_keys"]]
    counted = [int(trials["calibrated"].reindex(k).fillna(False).astype(bool).sum()) for k in keys]
    calibrated = pd.Series(counted, index=configs.index) == configs["n_seeds"]
    parts = [_intervals(configs, trials[name], name, confidence, where=calibrated) for name in [*CALIBRATED, *(c for r in MULTIPLES for c in along(r)), *BREAK_EVEN]]
    flags = pd.DataFrame({
        "n_calibrated": counted, "calibrated": calibrated,
        "break_even_beyond": [bool(trials["break_even_beyond"].reindex(k).fillna(False).any()) and ok for k, ok in zip(keys, calibrated)],
        "at_gain": [gain if ok and gain is not None else 1.0 for ok in calibrated],
    }, index=configs.index)  # fmt: skip
    new = pd.concat([flags, *parts], axis=1)
    configs = pd.concat([configs.drop(columns=[c for c in new.columns if c in configs]), new], axis=1)
    if gain is None or not calibrated.any():
        return configs
    curves = [_curve(c) if ok else None for c, ok in zip(trials["gain_curve"], trials["calibrated"])]
    at = {
        "psnr_gain": pd.Series([curve_at(c, gain, "psnr") for c in curves], index=trials.index) - pd.to_numeric(trials["test_gray_psnr"], errors="coerce"),
        "colorfulness_ratio": pd.Series([curve_at(c, gain, "colorfulness") for c in curves], index=trials.index)
        / pd.to_numeric(trials["test_colorfulness_truth"], errors="coerce"),
    }
    for name, values in at.items():
        scaled = _intervals(configs, values, name, confidence)
        configs[scaled.columns] = configs[scaled.columns].where(~calibrated, scaled)
    return configs


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
