"""Statistics over a results DataFrame (`sweep.results.load_results`): what drives the error.

Every function takes the DataFrame of trials as `load_results` returns it (or the output
of `configurations`, which they all accept too), of **one comparable group** (`group`: a
frame that pools several is refused with a `GroupError` naming them; select one with
`frame[frame["group"] == NAME]` or `load_results(RESULTS, group=NAME)`), and works on **configurations**: the
complete trials grouped by everything that defines them but the seed. Trials that differ
only in `seed` are replicates of one configuration, so they count once, with their mean and
spread, never as separate models (a 36-configuration grid with 3 seeds has n = 36, not 108).

    frame = load_results("results", group="cifar10 reconstruct")   # one comparable group
    configurations(frame)                  # one row per configuration: means, std, n_seeds
    latent_correlation(frame)              # Spearman rho with a bootstrap 95% CI
    latent_correlation(frame, "pearson")   # Pearson r of log(latent) and log(error)
    power_law(frame)                       # error ~ a * latent**b, with b's CI and R^2
    main_effects(frame)                    # mean and CI of the error at each level of each factor
    factor_importance(frame)               # share of the variance each factor explains
    strongest_interaction(frame)           # the two-way interaction that explains most
    best(frame), worst(frame), first(frame), pareto_front(frame, cost="params")

Which columns are metrics, and which way each is better, is the results schema's
(`sweep.results.schema`). Nothing here trains, imports Keras or reads image data.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from sweep.arch import PRESETS
from sweep.errors import SpecError, did_you_mean, must_be
from sweep.results.schema import IDENTITY, METRICS, higher_is_better, metric_label
from sweep.results.store import GroupError, comparable_groups, groups, single_group

__all__ = [
    "Correlation",
    "DEFAULT_METRIC",
    "GroupError",
    "Interaction",
    "METRICS",
    "PowerLaw",
    "best",
    "complete",
    "comparable_groups",
    "config_label",
    "configurations",
    "factor_importance",
    "first",
    "groups",
    "higher_is_better",
    "interactions",
    "latent_correlation",
    "learning_curves",
    "main_effects",
    "metric_label",
    "pareto_front",
    "plain",
    "power_law",
    "single_group",
    "strongest_interaction",
    "varied_factors",
    "worst",
]

DEFAULT_METRIC = "test_mse"
CONFIDENCE = 0.95
N_RESAMPLES = 9999  # scipy's default; vectorised, the whole interval takes well under a second
BOOTSTRAP_SEED = 0  # fixed, so a report and a notebook print the same interval
MIN_BOOTSTRAP_N = 5  # fewer configurations than this give no meaningful resampling interval
MAX_LEVELS = 8  # a numeric factor with more distinct values (an Optuna range) is binned
N_BINS = 4  # ... into this many quantile bins for main effects and interactions

MEANS = ("epochs_run", "best_epoch", "train_seconds", "wall_seconds")  # averaged over replicates, no spread


# --------------------------------------------------------------------------- configurations


def _identity_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that define a trial apart from its seed: architecture, protocol, data."""
    return [n for n in IDENTITY if n in frame.columns]


def plain(value: Any) -> Any:
    """A JSON-able, hashable-by-text form of a cell (NaN and None alike)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    return value


def _config_ids(frame: pd.DataFrame) -> pd.Series:
    """Each trial's configuration: its `config_key` (the effective configuration without the
    seed), or, for rows written before there was one, its identity columns' values."""
    columns = _identity_columns(frame)
    ids = pd.Series(
        [json.dumps([plain(row[c]) for c in columns], sort_keys=True, default=str) for _, row in frame.iterrows()],
        index=frame.index,
        dtype=object,
    )
    if "config_key" in frame.columns:
        ids = frame["config_key"].where(frame["config_key"].notna(), ids)
    return ids


def _is_configurations(frame: pd.DataFrame) -> bool:
    return "n_seeds" in frame.columns


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials that finished (status 'complete'); a frame without `status` is taken as is."""
    if "status" not in frame.columns or _is_configurations(frame):
        return frame
    return frame[frame["status"] == "complete"]


def configurations(frame: pd.DataFrame, metrics: Iterable[str] = METRICS) -> pd.DataFrame:
    """One row per configuration of the complete trials; replicates (same everything but seed)
    are merged: each metric becomes its mean over seeds, with `<metric>_std` (sample standard
    deviation, NaN for one seed), `<metric>_min`, `<metric>_max`; `n_seeds`, `seeds` and
    `trial_keys` say which trials were merged; `trial_key` is the replicate with the lowest
    seed (the one whose artefacts a gallery shows); `label` names the configuration briefly.
    Ordered by first appearance, as `load_results` orders trials.
    """
    single_group(frame)  # (a frame of several groups is refused: their trials are not comparable)
    if _is_configurations(frame):
        return frame
    done = complete(frame).reset_index(drop=True)
    if done.empty:
        out = done.copy()
        for extra in ("n_seeds", "seeds", "trial_keys", "label", "config_id"):
            out[extra] = pd.Series(dtype=object)
        return out
    ids = _config_ids(done)
    metrics = [m for m in metrics if m in done.columns]
    rows = []
    for config_id, group in done.groupby(ids, sort=False):  # in order of first appearance
        if "seed" in group.columns:
            group = group.sort_values("seed", kind="stable", na_position="last")
        row = group.iloc[0].to_dict()
        row["config_id"] = config_id
        row["n_seeds"] = len(group)
        row["seeds"] = [plain(s) for s in group["seed"]] if "seed" in group.columns else [None] * len(group)
        row["trial_keys"] = list(group["trial_key"]) if "trial_key" in group.columns else []
        for metric in metrics:
            values = pd.to_numeric(group[metric], errors="coerce")
            row[metric] = values.mean()
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
            row[f"{metric}_min"] = values.min()
            row[f"{metric}_max"] = values.max()
        for column in MEANS:
            if column in group.columns:
                row[column] = pd.to_numeric(group[column], errors="coerce").mean()
        rows.append(row)
    out = pd.DataFrame(rows)
    varied = varied_factors(out)
    out["label"] = [config_label(row, varied) for _, row in out.iterrows()]
    return out


def varied_factors(frame: pd.DataFrame) -> list[str]:
    """The identity columns that take more than one value among the complete trials (the
    factors the sweep varied), in architecture-then-protocol order; never `seed`."""
    done = complete(frame)
    out = []
    for column in _identity_columns(done):
        if column == "data_id":
            continue
        values = {json.dumps(plain(v), default=str) for v in done[column]}
        if len(values) > 1:
            out.append(column)
    return out


def config_label(row: pd.Series | dict, varied: Sequence[str]) -> str:
    """'5 conv, ch 2, k 3, f 2' for the seed-002 family, then other varied factors as name=value."""
    parts = []
    arch = ("fewer_layers", "channel_factor", "kernel_size", "compression_factor")
    if all(c in row and plain(row[c]) is not None for c in arch):
        parts.append(
            f"{3 if bool(row['fewer_layers']) else 5} conv, ch {int(row['channel_factor'])}, "
            f"k {int(row['kernel_size'])}, f {int(row['compression_factor'])}"
        )
    for name in varied:
        if name not in arch:
            parts.append(f"{name}={plain(row[name])}")
    if not parts:  # nothing varied: the architecture's name, never a hash
        preset, family = plain(row.get("preset")), plain(row.get("family"))
        parts.append(str(preset) if preset else f"{family or 'the'} model")
    return "; ".join(parts)


# --------------------------------------------------------------------------- selections


def _ranked(frame: pd.DataFrame, metric: str, best_first: bool) -> pd.DataFrame:
    configs = configurations(frame)
    if metric not in configs.columns:
        raise SpecError(did_you_mean("metric", metric, [m for m in METRICS if m in configs]))
    configs = configs[configs[metric].notna()]
    ascending = not higher_is_better(metric)
    if not best_first:
        ascending = not ascending
    return configs.sort_values(metric, ascending=ascending, kind="stable")


def best(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, n: int = 1) -> pd.DataFrame:
    """The `n` best configurations by `metric` (lowest MSE/MAE, highest PSNR/SSIM), best first."""
    return _ranked(frame, metric, best_first=True).head(n)


def worst(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, n: int = 1) -> pd.DataFrame:
    """The `n` worst configurations by `metric`, worst first."""
    return _ranked(frame, metric, best_first=False).head(n)


def first(frame: pd.DataFrame, reference: str = "acml") -> pd.DataFrame:
    """The configurations whose architecture is the preset `reference` unchanged (seed 002's
    "first model", the assignment's: 5 conv, ch 2, k 3, f 2). Usually one row; several when
    the sweep varied protocol values too; none when the sweep never ran it."""
    configs = configurations(frame)
    target = PRESETS[reference].to_dict()
    mask = pd.Series(True, index=configs.index)
    compared = 0
    for name, value in target.items():
        if name in configs.columns:
            mask &= configs[name].map(lambda v: plain(v) == plain(value))
            compared += 1
    return configs[mask] if compared else configs.iloc[0:0]


def pareto_front(frame: pd.DataFrame, cost: str = "latent_size", metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """The configurations no other beats on both `cost` (smaller is better: a smaller latent
    or fewer parameters) and `metric`: for each one, every configuration at most as costly has
    a worse error. Sorted by cost. Equal points are all kept (neither dominates the other)."""
    configs = configurations(frame)
    configs = configs[configs[cost].notna() & configs[metric].notna()]
    c = configs[cost].to_numpy(dtype=float)
    e = configs[metric].to_numpy(dtype=float) * (-1 if higher_is_better(metric) else 1)
    no_worse = (c[None, :] <= c[:, None]) & (e[None, :] <= e[:, None])  # [i, j]: j at least as good as i
    better = (c[None, :] < c[:, None]) | (e[None, :] < e[:, None])
    dominated = (no_worse & better).any(axis=1)
    return configs[~dominated].sort_values([cost, metric], kind="stable")


# --------------------------------------------------------------------------- correlation and power law


@dataclass(frozen=True)
class Correlation:
    """A correlation coefficient with its bootstrap confidence interval (BCa, paired
    resampling of configurations) and the usual test's p-value."""

    method: str  # "spearman" or "pearson" (Pearson is computed on log10 x and log10 y)
    x: str
    y: str
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int  # configurations (replicates merged)
    confidence: float = CONFIDENCE

    @property
    def symbol(self) -> str:
        return "rho" if self.method == "spearman" else "r"

    def describe(self) -> str:
        what = "Spearman" if self.method == "spearman" else "Pearson (log-log)"
        ci = (
            f"{self.confidence:.0%} CI {self.ci_low:.3f} to {self.ci_high:.3f}"
            if math.isfinite(self.ci_low)
            else f"no CI: fewer than {MIN_BOOTSTRAP_N} configurations"
        )
        return f"{what} {self.symbol} = {self.estimate:.3f} ({ci}, p = {self.p_value:.2g}, n = {self.n})"


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=axis) / np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return _pearson(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis)


def _xy(frame: pd.DataFrame, x: str, y: str, log: bool) -> tuple[np.ndarray, np.ndarray]:
    configs = configurations(frame)
    for column in (x, y):
        if column not in configs.columns:
            raise SpecError(f"no column {column!r} in the results")
    values = configs[[x, y]].apply(pd.to_numeric, errors="coerce").dropna()
    if log:
        values = values[(values[x] > 0) & (values[y] > 0)]
        return np.log10(values[x].to_numpy(float)), np.log10(values[y].to_numpy(float))
    return values[x].to_numpy(float), values[y].to_numpy(float)


def latent_correlation(
    frame: pd.DataFrame,
    method: str = "spearman",
    metric: str = DEFAULT_METRIC,
    x: str = "latent_size",
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Correlation:
    """Correlation of `x` (latent size) with `metric` over configurations.

    `method="spearman"`: rank correlation (unchanged by logs). `method="pearson"`: Pearson's r
    of log10(x) and log10(metric), the correlation a power law predicts. The interval is
    scipy's BCa bootstrap over configurations (x and y resampled together), seeded so it is
    reproducible; it is NaN with fewer than `MIN_BOOTSTRAP_N` configurations.
    """
    if method not in ("spearman", "pearson"):
        raise SpecError(must_be("method", "latent_correlation", "'spearman' or 'pearson'", method))
    xs, ys = _xy(frame, x, metric, log=method == "pearson")
    n = len(xs)
    if n < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Correlation(method, x, metric, math.nan, math.nan, math.nan, math.nan, n, confidence)
    test = stats.spearmanr(xs, ys) if method == "spearman" else stats.pearsonr(xs, ys)
    statistic = _spearman if method == "spearman" else _pearson
    low = high = math.nan
    if n >= MIN_BOOTSTRAP_N:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate resamples (one distinct x) give NaN, reported as such
            result = stats.bootstrap(
                (xs, ys), statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                confidence_level=confidence, method="BCa", rng=np.random.default_rng(seed),
            )  # fmt: skip
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return Correlation(method, x, metric, float(statistic(xs, ys)), low, high, float(test.pvalue), n, confidence)


@dataclass(frozen=True)
class PowerLaw:
    """error ~ a * x**b, fitted by least squares on log10 x and log10 error (configurations).

    `b_ci` is the t-interval of the slope; `r2` the fit's R^2 on log-log axes (the square of
    the log-log Pearson r).
    """

    x: str
    y: str
    a: float
    b: float
    b_ci: tuple[float, float]
    r2: float
    n: int
    confidence: float = CONFIDENCE

    def predict(self, x: Any) -> np.ndarray:
        return self.a * np.asarray(x, dtype=float) ** self.b

    def describe(self) -> str:
        return (
            f"{self.y} ~ {self.a:.4g} * {self.x}^{self.b:.4f} "
            f"(exponent {self.confidence:.0%} CI {self.b_ci[0]:.4f} to {self.b_ci[1]:.4f}, R^2 = {self.r2:.3f}, n = {self.n})"
        )


def power_law(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, x: str = "latent_size", confidence: float = CONFIDENCE) -> PowerLaw:
    """Fit `metric` ~ a * x**b over configurations (NaN fields with fewer than 3 of them)."""
    xs, ys = _xy(frame, x, metric, log=True)
    n = len(xs)
    if n < 3 or np.ptp(xs) == 0:
        return PowerLaw(x, metric, math.nan, math.nan, (math.nan, math.nan), math.nan, n, confidence)
    fit = stats.linregress(xs, ys)
    t = stats.t.ppf(0.5 + confidence / 2, n - 2)
    return PowerLaw(
        x, metric, float(10**fit.intercept), float(fit.slope),
        (float(fit.slope - t * fit.stderr), float(fit.slope + t * fit.stderr)), float(fit.rvalue**2), n, confidence,
    )  # fmt: skip


# --------------------------------------------------------------------------- factor effects


def _levels(configs: pd.DataFrame, factor: str) -> pd.Series:
    """The factor's level of each configuration; a numeric factor with many values (a
    sampled range) is cut into `N_BINS` quantile bins so each level holds several configurations."""
    values = configs[factor].map(plain)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and numeric.nunique() > MAX_LEVELS:
        return pd.qcut(numeric, N_BINS, duplicates="drop").astype(str)
    shown = [(lambda v: "none" if v is None else tuple(v) if isinstance(v, list) else v)(plain(v)) for v in configs[factor]]  # (None is a level, not a gap)
    return pd.Series(shown, index=configs.index, dtype=object, name=factor)


def _chosen(configs: pd.DataFrame, chosen: Sequence[str] | None) -> list[str]:
    names = list(chosen) if chosen is not None else varied_factors(configs)
    for name in names:
        if name not in configs.columns:
            raise SpecError(did_you_mean("factor (of those the sweep varied)", name, varied_factors(configs)))
    return [name for name in names if _levels(configs, name).nunique() > 1]  # one level: no effect to measure


def main_effects(
    frame: pd.DataFrame, metric: str = DEFAULT_METRIC, factors: Sequence[str] | None = None, confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """Each factor's main effect: for every level, the mean `metric` over the configurations
    at that level (averaging over all other factors) with its t-interval.

    Columns: factor, level, n (configurations), mean, std, ci_low, ci_high (NaN for n = 1).
    """
    configs = configurations(frame)
    rows = []
    for factor in _chosen(configs, factors):
        levels = _levels(configs, factor)
        for level, values in configs[metric].groupby(levels, sort=True):
            values = values.dropna()
            n, mean = len(values), values.mean()
            std = values.std(ddof=1) if n > 1 else math.nan
            half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
            rows.append({"factor": factor, "level": level, "n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half})
    return pd.DataFrame(rows, columns=["factor", "level", "n", "mean", "std", "ci_low", "ci_high"])


def _sum_squares(values: pd.Series, groups: list[pd.Series]) -> float:
    """Between-group sum of squares of `values` for the cells defined by `groups`."""
    means = values.groupby(groups).transform("mean")
    return float(((means - values.mean()) ** 2).sum())


def factor_importance(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, factors: Sequence[str] | None = None) -> pd.DataFrame:
    """A variance decomposition: each factor's share of the total sum of squares of `metric`
    over configurations (eta squared of its main effect), with the one-way ANOVA p-value, the
    spread of its level means and its best level. In a balanced full grid the main-effect
    shares and the interactions add up to 1; `residual` is what the main effects leave.
    Sorted by share, largest first.
    """
    configs = configurations(frame)
    configs = configs[configs[metric].notna()]
    values = configs[metric].astype(float)
    total = float(((values - values.mean()) ** 2).sum())
    rows = []
    for factor in _chosen(configs, factors):
        levels = _levels(configs, factor)
        means = values.groupby(levels).mean()
        groups = [g.to_numpy() for _, g in values.groupby(levels)]
        p = stats.f_oneway(*groups).pvalue if len(groups) > 1 and all(len(g) > 1 for g in groups) else math.nan
        best_level = means.idxmax() if higher_is_better(metric) else means.idxmin()
        rows.append({
            "factor": factor,
            "share": _sum_squares(values, [levels]) / total if total > 0 else math.nan,
            "p_value": float(p),
            "effect_range": float(means.max() - means.min()),
            "best_level": best_level,
            "levels": len(means),
        })  # fmt: skip
    out = pd.DataFrame(rows, columns=["factor", "share", "p_value", "effect_range", "best_level", "levels"])
    return out.sort_values("share", ascending=False, kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Interaction:
    """A two-way interaction: the share of the total sum of squares of the metric that the
    cell means of (a, b) explain beyond both main effects, and the table of cell means."""

    factors: tuple[str, str]
    share: float
    table: pd.DataFrame  # mean metric: rows the levels of factors[0], columns those of factors[1]

    def describe(self) -> str:
        return f"{self.factors[0]} x {self.factors[1]}: {self.share:.1%} of the variance beyond their main effects"


def interactions(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, factors: Sequence[str] | None = None) -> pd.DataFrame:
    """Every pair of factors with its interaction share SS_AB / SS_total, where SS_AB =
    SS(cells of A x B) - SS(A) - SS(B) (exact for a balanced grid). Largest first."""
    configs = configurations(frame)
    configs = configs[configs[metric].notna()]
    values = configs[metric].astype(float)
    total = float(((values - values.mean()) ** 2).sum())
    names = _chosen(configs, factors)
    levels = {f: _levels(configs, f) for f in names}
    rows = []
    for a, b in itertools.combinations(names, 2):
        cells = _sum_squares(values, [levels[a], levels[b]])
        ss = cells - _sum_squares(values, [levels[a]]) - _sum_squares(values, [levels[b]])
        rows.append({"a": a, "b": b, "share": max(ss, 0.0) / total if total > 0 else math.nan})
    out = pd.DataFrame(rows, columns=["a", "b", "share"])
    return out.sort_values("share", ascending=False, kind="stable").reset_index(drop=True)


def strongest_interaction(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, factors: Sequence[str] | None = None) -> Interaction | None:
    """The pair of factors whose interaction explains most variance (None with < 2 factors)."""
    configs = configurations(frame)
    pairs = interactions(configs, metric, factors)
    if pairs.empty:
        return None
    a, b, share = pairs.iloc[0][["a", "b", "share"]]
    table = configs[metric].groupby([_levels(configs, a), _levels(configs, b)]).mean().unstack(b)
    table.index.name, table.columns.name = a, b
    return Interaction((a, b), float(share), table)


# --------------------------------------------------------------------------- learning curves


def learning_curves(frame: pd.DataFrame, trial_keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-epoch logs of trials in long form: trial_key, epoch (1-based), loss, val_loss, lr.
    Without `trial_keys`, every complete trial."""
    done = complete(frame)
    if trial_keys is not None:
        wanted = list(trial_keys)
        done = done[done["trial_key"].isin(wanted)]
    rows = []
    for _, row in done.iterrows():
        history = row.get("history")
        if not isinstance(history, str):
            continue
        for epoch, logs in enumerate(json.loads(history), start=1):
            rows.append({"trial_key": row["trial_key"], "epoch": epoch, **logs})
    return pd.DataFrame(rows, columns=["trial_key", "epoch", "loss", "val_loss", "lr"] if not rows else None)


