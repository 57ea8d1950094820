"""Figures of a sweep (matplotlib + seaborn), each returned as a Figure and saved by `save`.

    fig = latent_scatter(frame, power=power_law(frame), reference=pca_reference(frame, dirs))
    save(fig, "results/report", "latent_vs_error")   # latent_vs_error.png and .svg

Every figure works on configurations (replicates merged, with their spread as error bars),
labels its axes with units, and uses log axes where the quantity spans decades (latent
size, parameter count, error). Galleries compose the `reconstructions.png` each trial
saved, rather than reloading models: the figure needs neither Keras nor the data, and every
trial's panel shows the same first test images through its best-validation weights, so
panels compare like with like.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt  # the backend is the caller's: inline in notebooks, Agg in `sweep.report`
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from sweep.analysis import stats
from sweep.analysis.colour import MULTIPLES, along
from sweep.analysis.studies import load_study, optuna_importance

__all__ = [
    "chroma_evidence",
    "colorization_gallery",
    "colour_tradeoff",
    "error_scatter",
    "factor_effects",
    "gallery",
    "interaction_plot",
    "latent_scatter",
    "learning_curves",
    "optuna_figures",
    "save",
]

DPI = 150  # PNGs sharp enough to read on a laptop screen and in a PDF
FORMATS = ("png", "svg")


def save(fig: plt.Figure, out_dir: str | Path, name: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write `fig` as `out_dir/name.<format>` for each format, close it, return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _number(value: float, _pos=None) -> str:
    """Tick labels as plain numbers: 32, 1024, 0.05, 1.2k is avoided for exactness."""
    if value >= 1:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _log_axis(axis, values: Sequence[float] | None = None) -> None:
    """A log axis with plain-number labels; `values` (e.g. the sweep's latent sizes) become the
    ticks. Minor ticks are labelled too: at 2 and 5 when the axis spans more than a decade,
    all of them when it spans less (else a narrow axis would show no number at all)."""
    axis.set_major_formatter(FuncFormatter(_number))
    if values is not None:
        axis.set_major_locator(FixedLocator(sorted(set(values))))
        axis.set_minor_formatter(NullFormatter())
        return

    def minor(value: float, _pos=None) -> str:
        low, high = sorted(axis.get_view_interval())
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        wide = low > 0 and high / low > 10
        return _number(value) if not wide or mantissa in (2, 5) else ""

    axis.set_minor_formatter(FuncFormatter(minor))


def _metric_axis_label(metric: str, prefix: str = "", suffix: str = "") -> str:
    """'test MSE' on the first line, its definition and scale on the second."""
    name, _, unit = stats.metric_label(metric).partition(" (")
    detail = ", ".join(part for part in (unit.rstrip(")"), suffix) if part)
    return f"{prefix}{name}" + (f"\n({detail})" if detail else "")


def _layers(value) -> str:
    return "3 conv (fewer layers)" if bool(value) else "5 conv"


DODGE = 0.03  # log10 units between configurations of one latent size (about 7%)


def error_scatter(
    frame: pd.DataFrame,
    x: str = "latent_size",
    metric: str = stats.DEFAULT_METRIC,
    *,
    power: stats.PowerLaw | None = None,
    reference: pd.DataFrame | None = None,
    correlation: stats.Correlation | None = None,
    pareto: bool = True,
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """Error against `x` (latent size or params) on log-log axes: colour = channel factor,
    marker = layer count, bars = spread over seeds, with the fitted power law, the PCA
    reference (`sweep.analysis.reference.pca_reference`) and the Pareto front, and the correlation in the
    title, when given."""
    configs = stats.configurations(frame)
    configs = configs[configs[x].notna() & configs[metric].notna()].copy()
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, 6.4))
    fig = ax.figure
    hue = "channel factor" if "channel_factor" in configs and configs["channel_factor"].notna().all() else None
    style = "layers" if "fewer_layers" in configs and configs["fewer_layers"].notna().all() else None
    if hue:
        configs[hue] = configs["channel_factor"].astype(int)
    if style:
        configs[style] = configs["fewer_layers"].map(_layers)
    hue_order = sorted(configs[hue].unique()) if hue else None
    # Configurations of one latent size share an x: spread them sideways (a few per cent on
    # the log axis, ordered by channel factor and layers) so none hides another.
    order = [c for c in ("channel_factor", "fewer_layers", "kernel_size") if c in configs]
    configs = configs.sort_values([x, *order], kind="stable")
    rank = configs.groupby(x).cumcount()
    size = configs.groupby(x)[x].transform("size")
    configs["_x"] = configs[x] * 10 ** ((rank - (size - 1) / 2) * DODGE) if x == "latent_size" else configs[x]
    if "n_seeds" in configs and (configs["n_seeds"] > 1).any() and f"{metric}_std" in configs:
        ax.errorbar(configs["_x"], configs[metric], yerr=configs[f"{metric}_std"].fillna(0), fmt="none", ecolor="0.6", elinewidth=1, zorder=1)
    sns.scatterplot(
        data=configs, x="_x", y=metric, hue=hue, hue_order=hue_order, style=style,
        style_order=[s for s in ("5 conv", "3 conv (fewer layers)") if s in set(configs[style])] if style else None,
        palette="viridis" if hue else None, s=70, alpha=0.9, edgecolor="black", linewidth=0.5, ax=ax, zorder=3,
    )  # fmt: skip
    xs = np.geomspace(configs[x].min(), configs[x].max(), 100) if len(configs) else np.array([])
    if power is not None and math.isfinite(power.b) and len(xs):
        ax.plot(xs, power.predict(xs), color="black", linestyle="--", linewidth=1.3,
                label=f"fit: {power.a:.3g} · {x.replace('_', ' ')}^{power.b:.3f}  (R² = {power.r2:.2f})")  # fmt: skip
    if reference is not None and len(reference):
        drawn = reference[(reference["pca_mse"] > 0)].sort_values("latent_size")
        exact, capped = drawn[drawn["kind"] == "exact"], drawn[drawn["kind"] == "capped"]
        if len(exact):
            ax.plot(exact["latent_size"], exact["pca_mse"], color="tab:red", marker="x", linewidth=1.5,
                    label="PCA (best linear autoencoder)")  # fmt: skip
        if len(capped):
            rank = int(capped["components"].max())
            joined = pd.concat([exact.tail(1), capped])
            ax.plot(joined["latent_size"], joined["pca_mse"], color="tab:red", linestyle=":", linewidth=1.5)
            ax.plot(capped["latent_size"], capped["pca_mse"], color="tab:red", marker="x", linestyle="none",
                    markerfacecolor="none", label=f"PCA capped at the training rank ({rank})")  # fmt: skip
        if (reference["kind"] == "identity").any():
            dims = int(reference.loc[reference["kind"] == "identity", "components"].max())
            ax.axvspan(dims, xs.max() * 1.5 if len(xs) else dims * 2, color="tab:red", alpha=0.06,
                       label=f"latent ≥ {dims:,} values per image: identity possible, linear error 0")  # fmt: skip
    if pareto and len(configs) > 1:
        front = stats.pareto_front(configs, cost=x, metric=metric)
        ax.step(front[x], front[metric], where="post", color="0.35", linewidth=1, alpha=0.7, zorder=2,
                label=f"Pareto front ({len(front)} configurations)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    if len(configs):
        ax.set_xlim(configs[x].min() / 1.5, configs[x].max() * 1.5)
    _log_axis(ax.xaxis, configs[x] if x == "latent_size" and configs[x].nunique() <= 12 else None)
    if x == "latent_size":
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    _log_axis(ax.yaxis)
    what = "latent size (values in the code, log scale)" if x == "latent_size" else "trainable parameters (log scale)"
    ax.set_xlabel(what)
    ax.set_ylabel(_metric_axis_label(metric, suffix="log scale"))
    n = len(configs)
    seeds = int(configs["n_seeds"].max()) if "n_seeds" in configs and n else 1
    spread = " (one latent size's points spread sideways)" if x == "latent_size" and configs[x].duplicated().any() else ""
    ax.set_title(f"{stats.metric_label(metric).split(' (')[0]} against {what.split(' (')[0]}: {n} configurations{spread}"
                 + (f", up to {seeds} seeds each (bars: ±1 sd)" if seeds > 1 else "")
                 + (f"\n{correlation.describe()}" if correlation is not None else ""), fontsize=10)  # fmt: skip
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)  # below: the plot keeps the width
    fig.tight_layout()
    return fig


def latent_scatter(frame: pd.DataFrame, metric: str = stats.DEFAULT_METRIC, **kwargs) -> plt.Figure:
    """`error_scatter` against latent size: seed 002's Fig. 2, with the fit and the linear reference."""
    return error_scatter(frame, "latent_size", metric, **kwargs)


def factor_effects(frame: pd.DataFrame, metric: str = stats.DEFAULT_METRIC, factors: Sequence[str] | None = None) -> plt.Figure:
    """One panel per factor: the mean error at each level with its 95% t-interval, on a
    shared axis, titled with the factor's share of the variance."""
    effects = stats.main_effects(frame, metric, factors)
    importance = stats.factor_importance(frame, metric, factors).set_index("factor")
    names = list(dict.fromkeys(effects["factor"]))
    if not names:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.text(0.5, 0.5, "no factor varies in these results", ha="center", va="center")
        ax.set_axis_off()
        return fig
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names) + 1.2, 3.8), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = effects[effects["factor"] == name]
        positions = np.arange(len(rows))
        low = (rows["mean"] - rows["ci_low"]).fillna(0).to_numpy()
        high = (rows["ci_high"] - rows["mean"]).fillna(0).to_numpy()
        ax.errorbar(positions, rows["mean"], yerr=[low, high], fmt="o-", color="tab:blue", capsize=4, linewidth=1.5)
        ax.set_xticks(positions, [_level_text(name, v) for v in rows["level"]])
        ax.set_xlim(-0.5, len(rows) - 0.5)
        share = importance.loc[name, "share"] if name in importance.index else math.nan
        ax.set_title(f"{name.replace('_', ' ')}\n{share:.0%} of variance", fontsize=9)
        ax.set_xlabel(name.replace("_", " "))
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel(_metric_axis_label(metric, "mean "))
    n = len(stats.configurations(frame))
    fig.suptitle(f"Main effects: mean over the other factors, 95% CI ({n} configurations)", fontsize=10)
    fig.tight_layout()
    return fig


def _level_text(factor: str, level) -> str:
    if factor == "fewer_layers":
        return "3 conv" if level in (True, "True") else "5 conv"
    return str(level)


def interaction_plot(frame: pd.DataFrame, metric: str = stats.DEFAULT_METRIC, pair: tuple[str, str] | None = None) -> plt.Figure | None:
    """Cell means of the strongest two-way interaction (or `pair`): one line per level of the
    second factor; non-parallel lines are the interaction. None with fewer than two factors."""
    interaction = stats.strongest_interaction(frame, metric, list(pair) if pair else None)
    if interaction is None:
        return None
    a, b = interaction.factors
    table = interaction.table
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = sns.color_palette("viridis", len(table.columns))
    positions = np.arange(len(table.index))
    for colour, level in zip(colours, table.columns):
        ax.plot(positions, table[level], "o-", color=colour, label=f"{b.replace('_', ' ')} = {_level_text(b, level)}")
    ax.set_xticks(positions, [_level_text(a, v) for v in table.index])
    ax.set_xlabel(a.replace("_", " "))
    ax.set_ylabel(_metric_axis_label(metric, "mean "))
    ax.set_title(f"Strongest interaction: {a.replace('_', ' ')} × {b.replace('_', ' ')}\n({interaction.share:.1%} of the variance beyond the main effects)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


LOG_SPAN = 5  # learning curves get a log axis when the losses span more than this factor


def learning_curves(frame: pd.DataFrame, picks: dict[str, str]) -> plt.Figure:
    """Training (solid) and validation (dashed, hollow markers) loss per epoch of the trials
    `picks` names ({"best": trial_key, ...}); a log axis when the losses span more than
    `LOG_SPAN` times (else log ticks crowd a narrow range), linear otherwise."""
    curves = stats.learning_curves(frame, picks.values())
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = dict(zip(picks, sns.color_palette("tab10", len(picks))))
    for name, key in picks.items():
        rows = curves[curves["trial_key"] == key]
        if rows.empty:
            continue
        ax.plot(rows["epoch"], rows["loss"], "o-", color=colours[name], markersize=6, label=f"{name}: training", zorder=3)
        ax.plot(rows["epoch"], rows["val_loss"], "s--", color=colours[name], markersize=8, markerfacecolor="none",
                markeredgewidth=1.5, label=f"{name}: validation", zorder=2)  # hollow and larger: never hidden by the training point  # fmt: skip
    values = pd.concat([curves["loss"], curves["val_loss"]]).dropna() if len(curves) else pd.Series(dtype=float)
    if len(values) and values.min() > 0 and values.max() / values.min() > LOG_SPAN:
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
    scale = "log scale" if ax.get_yscale() == "log" else "linear scale"
    epochs = int(curves["epoch"].max()) if len(curves) else 1
    ax.set_xticks(range(1, epochs + 1) if epochs <= 20 else np.linspace(1, epochs, 11).round().astype(int))
    ax.set_xlim(0.5, epochs + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss (MSE per value), {scale}")
    ax.set_title("Learning curves" + (" (one epoch: a single point each)" if epochs == 1 else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def gallery(results_dir: str | Path | None, picks: dict[str, pd.Series], metric: str = stats.DEFAULT_METRIC) -> plt.Figure:
    """Originals above reconstructions for each picked configuration ({"first": row, ...} with
    rows from `stats.best/worst/first`), composed from the trials' stored PNGs
    (`results_dir/trials/<key>/reconstructions.png`; None: no pictures at hand), each strip
    labelled on the left (gray / truth / prediction for a colorization)."""
    fig, axes = plt.subplots(len(picks), 1, figsize=(9.6, 2.9 * len(picks)), squeeze=False)
    for ax, (name, row) in zip(axes[:, 0], picks.items()):
        path = None if results_dir is None else Path(results_dir) / "trials" / str(row["trial_key"]) / "reconstructions.png"
        if path is not None and path.exists():
            image = plt.imread(path)
            ax.imshow(image)
            strips = GALLERY_ROWS["colorize" if row.get("task") == "colorize" else "reconstruct"]
            height = image.shape[0] / len(strips)
            ax.set_xticks([])
            ax.set_yticks([height * (i + 0.5) for i in range(len(strips))], strips, fontsize=9)
            ax.tick_params(left=False)
            for spine in ax.spines.values():
                spine.set_visible(False)
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no reconstructions.png for trial {row['trial_key']} at hand", ha="center", va="center")
        value = row[metric]
        extra = f", latent {int(row['latent_size']):,}" if pd.notna(row.get("latent_size")) else ""
        seeds = f" (seed {row['seeds'][0]} of {row['n_seeds']})" if row.get("n_seeds", 1) > 1 else ""
        ax.set_title(f"{name}: {row.get('label', row['trial_key'])}{extra}, {stats.metric_label(metric).split(' (')[0]} {value:.4g}{seeds}",
                     fontsize=10, loc="left")  # fmt: skip
    fig.suptitle("Test images: originals (upper row) and reconstructions (lower row)", fontsize=11)
    fig.tight_layout()
    return fig


GALLERY_ROWS = {"reconstruct": ("original", "reconstruction"), "colorize": ("gray", "truth", "prediction")}  # a trial's reconstructions.png, top down (sweep.train.evaluate.save_gallery)


def _colour_label(row: pd.Series, group: str) -> str:
    """A colorization configuration in a few words beside its group's title (`group`: the
    encoding or loss it is the best of): its preset, or its architecture's words from its label
    (which name every varied field), and the encoding or loss the title does not say."""
    arch = row.get("preset") if isinstance(row.get("preset"), str) else str(row.get("label", row["trial_key"])).split(";")[0].strip()
    loss = row.get("loss") if isinstance(row.get("loss"), str) else "mse"
    parts = [arch, row.get("encoding") if group.startswith("loss") else None, None if loss == "mse" or group.startswith("loss") else loss]
    return ", ".join(str(part) for part in parts if isinstance(part, str) and part)


def colorization_gallery(frame: pd.DataFrame, results_dir: str | Path | None, metric: str = stats.DEFAULT_METRIC) -> plt.Figure | None:
    """For colorization trials (task 'colorize'): the best configuration of each encoding, and
    of each loss other than MSE (ab classification's vivid colours), its stored panel of gray
    input, truth and prediction. None when there are no such trials."""
    configs = stats.configurations(frame)
    if "task" not in configs or not (configs["task"] == "colorize").any():
        return None
    configs = configs[configs["task"] == "colorize"]
    losses = configs["loss"].fillna("mse") if "loss" in configs else pd.Series("mse", index=configs.index)
    groups = [(f"encoding {encoding}", group) for encoding, group in configs.groupby("encoding", sort=True)]
    groups += [(f"loss {loss}", configs[losses == loss]) for loss in sorted(set(losses) - {"mse"})]
    picks = {}
    for title, group in groups:
        top = stats.best(group, metric)
        if len(top):
            row = top.iloc[0].copy()
            row["label"] = _colour_label(row, title)
            picks[f"{title} (best of {len(group)})"] = row
    fig = gallery(results_dir, picks, metric)
    fig.suptitle("Colorization: the best of each encoding (and loss other than MSE) on test images", fontsize=11)
    return fig


def colour_tradeoff(
    configs: pd.DataFrame, front: pd.DataFrame | None = None, targets: tuple[float, float] | None = (1.5, 0.8), gain: float | None = None
) -> plt.Figure:
    """Colorization configurations (`sweep.analysis.colour.colour_configurations`): PSNR gain
    over the grayscale baseline against colourfulness as a fraction of the truth's, each a
    mean with its 95% CI over seeds as error bars; colour by encoding, marker by
    architecture, the Pareto front joined by a line, and the targets as dotted lines. Each
    calibrated configuration's curve from its chroma gain s* (a marker) to 2 s*, means over
    seeds, in its encoding's colour. `gain`: the chroma gain the points are at (the
    calibrated configurations'; None: 1), said in the axis label."""
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    encodings = list(dict.fromkeys(configs["encoding"]))
    archs = list(dict.fromkeys(configs["arch"]))
    palette = dict(zip(encodings, sns.color_palette("colorblind", len(encodings))))
    markers = dict(zip(archs, "osD^vP*X"))
    for _, row in configs.iterrows():
        xerr = [[row["psnr_gain"] - row.get("psnr_gain_ci_low", np.nan)], [row.get("psnr_gain_ci_high", np.nan) - row["psnr_gain"]]]
        yerr = [[row["colorfulness_ratio"] - row.get("colorfulness_ratio_ci_low", np.nan)], [row.get("colorfulness_ratio_ci_high", np.nan) - row["colorfulness_ratio"]]]
        xerr, yerr = (None if not np.isfinite(e).all() else e for e in (xerr, yerr))
        hollow = row.get("loss") == "ab_classification"
        ax.errorbar(row["psnr_gain"], row["colorfulness_ratio"], xerr=xerr, yerr=yerr, fmt=markers[row["arch"]], ms=8, capsize=2, lw=0.8,
                    color=palette[row["encoding"]], mfc="white" if hollow else palette[row["encoding"]])  # fmt: skip
    if front is not None and len(front) > 1:
        line = front.sort_values("psnr_gain")
        ax.plot(line["psnr_gain"], line["colorfulness_ratio"], color="0.3", lw=1, ls="--", zorder=0, label="Pareto front")
    curves = _calibrated_curves(configs)
    for (_, row), (x, y) in zip(configs.iterrows(), curves):
        if len(x):  # one line per configuration, its s* end marked (a many-point line, apart from the configurations' points)
            ax.plot(x, y, color=palette[row["encoding"]], lw=1.2, alpha=0.8, marker="o", ms=4, markevery=[0], zorder=1)
    along = {"rotation": 90, "ha": "right", "va": "top", "fontsize": 8, "transform": ax.get_xaxis_transform()}  # (each label hugs its own line, on its left)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.text(0, 0.99, "grayscale baseline ", color="0.4", **along)
    if targets:
        ax.axvline(targets[0], color="0.6", lw=0.8, ls=":")
        ax.text(targets[0], 0.99, f"target: +{targets[0]:g} dB ", color="0.45", **along)
        ax.axhline(targets[1], color="0.6", lw=0.8, ls=":")
        ax.text(0.01, targets[1], f"target: {targets[1]:g} of the truth's colourfulness", transform=ax.get_yaxis_transform(), ha="left", va="bottom", fontsize=8, color="0.45")
    at = f", at chroma gain {gain:g} where calibrated" if gain is not None else ""
    ax.set_xlabel(f"test PSNR gain over the grayscale baseline (dB, mean and 95% CI over seeds{at})")
    ax.set_ylabel("colourfulness / the truth's (Hasler-Suesstrunk)")
    handles = [plt.Line2D([], [], color=palette[e], marker="o", ls="", label=f"encoding {e}") for e in encodings]
    handles += [plt.Line2D([], [], color="0.3", marker=markers[a], ls="", label=a) for a in archs]
    if "loss" in configs and (configs["loss"] == "ab_classification").any():
        handles.append(plt.Line2D([], [], color="0.3", marker="o", mfc="white", ls="", label="hollow: ab classification"))
    if any(len(x) for x, _ in curves):
        handles.append(plt.Line2D([0, 1], [0, 0], color="0.3", lw=1.2, marker="o", ms=4, markevery=[0], label="calibrated gain s* → 2 s*"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=8, frameon=False)
    ax.set_title("Colorization: what each configuration adds over gray, against how colourful it is", fontsize=11, loc="left")
    fig.tight_layout()
    return fig


def _calibrated_curves(configs: pd.DataFrame) -> list[tuple[list[float], list[float]]]:
    """Each configuration's mean curve from s* to 2 s* as (PSNR gains, colourfulness ratios);
    empty for one not calibrated (`sweep.analysis.colour.along`)."""
    columns = [along(r) for r in MULTIPLES]
    if "calibrated" not in configs or any(c not in configs for pair in columns for c in pair):
        return [([], [])] * len(configs)
    out = []
    for _, row in configs.iterrows():
        points = [(row[a], row[b]) for a, b in columns] if row["calibrated"] else []
        points = [(x, y) for x, y in points if np.isfinite(x) and np.isfinite(y)]
        out.append(([x for x, _ in points], [y for _, y in points]) if len(points) > 1 else ([], []))
    return out


def chroma_evidence(configs: pd.DataFrame) -> plt.Figure:
    """Why an encoding fails: for every configuration (best PSNR gain on top), the slope of
    its predicted a* and b* on the true ones (1: the truth's full range; 0: one colour
    whatever the truth) and its colour cast (mean predicted minus true a*, b*), with the
    95% CIs over seeds."""
    configs = configs.sort_values("psnr_gain", ascending=True, kind="stable")
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(configs) + 1.8), sharey=True)
    y = np.arange(len(configs))
    for ax, (left, right, title) in zip(axes, (("a_slope", "b_slope", "slope of predicted on true chroma"), ("a_bias", "b_bias", "colour cast: mean predicted - true"))):
        for offset, name, colour in ((-0.18, left, "tab:red"), (0.18, right, "tab:olive")):
            low, high = configs.get(f"{name}_ci_low"), configs.get(f"{name}_ci_high")
            err = None if low is None or not np.isfinite(low).all() else [configs[name] - low, high - configs[name]]
            ax.barh(y + offset, configs[name], height=0.36, xerr=err, color=colour, capsize=2, label=name.replace("_", "* ").replace("* slope", "*").replace("* bias", "*"))
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_title(title, fontsize=10, loc="left")
        ax.legend(fontsize=8, loc="lower right")
    axes[0].axvline(1, color="0.6", lw=0.8, ls=":")
    axes[0].set_yticks(y, configs["label"], fontsize=8)
    axes[0].set_xlabel("slope (1: full range, 0: one colour)")
    axes[1].set_xlabel("CIE Lab units (b* > 0 yellow, a* > 0 red: brown is both)")
    fig.suptitle("Predicted against true chroma per channel, on the test images", fontsize=11, x=0.01, ha="left")
    fig.tight_layout()
    return fig


def optuna_figures(storage: str, study_name: str, evaluator: str = "auto") -> dict[str, plt.Figure]:
    """Optuna's own matplotlib plots of a stored study: optimisation history, parameter
    importances and, for a multi-objective study, the Pareto front."""
    import optuna
    from optuna.visualization import matplotlib as ovm

    study = load_study(storage, study_name)
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    name = (study.metric_names or ["objective"])[0] if hasattr(study, "metric_names") else "objective"
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = ovm.plot_optimization_history(study, target=target, target_name=name or "objective")
        figures["optuna_history"] = ax.figure
        importances = optuna_importance(storage, study_name, evaluator)
        evaluators = {"fanova": optuna.importance.FanovaImportanceEvaluator, "ped_anova": optuna.importance.PedAnovaImportanceEvaluator}
        ax = ovm.plot_param_importances(study, evaluator=evaluators[importances["evaluator"].iloc[0]](seed=0), target=target, target_name=name or "objective")
        ax.set_title(f"Parameter importances ({importances['evaluator'].iloc[0]})", loc="left")  # replaces Optuna's own
        figures["optuna_importances"] = ax.figure
        if multi:
            ax = ovm.plot_pareto_front(study)
            figures["optuna_pareto"] = ax.figure
    for fig in figures.values():
        fig.set_size_inches(8, 5)
        fig.tight_layout()
    return figures
