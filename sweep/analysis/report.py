"""The report of a sweep: figures and a Markdown report (`python -m sweep.report`).

    write_report("results")                  # writes results/report/report.md
    write_report("results", group="cifar10 reconstruct")   # one comparable group's report
    write_report("results", chroma_gain=1.5)  # colorization: PSNR gain and colourfulness at chroma gain 1.5

A folder holding several comparable groups (`sweep.results.load_results`' `group`: trials
that differ in more than the factors a space varied, such as two runs with other epochs)
gets one report per group, in REPORT/<group>/, and REPORT/report.md lists them.

Every number in `report.md` comes from `sweep.analysis` on the trials as stored (replicates
merged into configurations), and is also written, unrounded, to `summary.json`. The report
works on a partial sweep: it says how many trials it covers, how many failed and how many
of the planned ones have no row yet. It never trains and never imports Keras.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from sweep.errors import SpecError, StoreError, SweepError

__all__ = ["TOP", "NotWritable", "slug", "writable", "write_report"]

TOP = 10  # rows in the table of top models: enough to see the pattern, short enough to read (as `--top`)


# --------------------------------------------------------------------------- formatting


def fmt(value: Any, digits: int = 4) -> str:
    """A number as the report prints it: `digits` significant digits, 'n/a' for NaN/None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def fmt_r(value: float) -> str:
    """A correlation or exponent: three decimals."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def fmt_ci(low: float, high: float, formatter=fmt_r) -> str:
    return "n/a" if not (math.isfinite(low) and math.isfinite(high)) else f"{formatter(low)} to {formatter(high)}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


# --------------------------------------------------------------------------- coverage


def coverage(frame, results_dir: Path | None) -> dict[str, int]:
    """Trials by status, and the trials the recorded runs planned that have no row yet (runs
    are recorded in a results folder; none for a storage URL)."""
    planned: set[str] = set()
    for path in sorted((results_dir / "runs").glob("*.json")) if results_dir is not None else []:
        try:
            planned |= set(json.loads(path.read_text()).get("trials") or [])
        except (OSError, json.JSONDecodeError):
            continue
    keys = set(frame["trial_key"])
    return {
        "trials": len(frame),
        "complete": int((frame["status"] == "complete").sum()),
        "failed": int((frame["status"] == "failed").sum()),
        "pruned": int((frame["status"] == "pruned").sum()),
        "planned": len(planned | keys),
        "missing": len(planned - keys),
    }


# --------------------------------------------------------------------------- the report


def _figure(fig, out: Path, name: str, written: dict[str, str]) -> None:
    from sweep.analysis.figures import save

    if fig is not None:
        save(fig, out, name)
        written[name] = f"{name}.png"


def _embed(written: dict[str, str], name: str, caption: str) -> str:
    if name not in written:
        return ""
    return f"![{caption}]({written[name]})\n\n[{caption} (SVG)]({name}.svg)\n"


def write_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    metric: str = "test_mse",
    data_dirs: Sequence[str] | None = None,
    reference: bool = True,
    top: int = TOP,
    storage: str | None = None,
    study: str | None = None,
    command: str | None = None,
    pictures: str | Path | None = None,
    group: str | None = None,
    chroma_gain: float | None = None,
) -> Path:
    """Write the figures, `report.md` and `summary.json` for `results_dir` (a results folder,
    or a storage URL: the whole cluster's rows, `load_results(URL)`); return report.md.
    `pictures`: the folder holding `trials/<key>/reconstructions.png` (default: the results
    folder; for a URL, none unless given).

    Each comparable group of the trials (`load_results`' `group`) is analysed apart: with one
    group, OUT holds its report; with several, OUT/report.md lists them and each group's own
    report, header, PCA reference and figures are in OUT/<group>/. `group` picks one.
    `chroma_gain`: the colorization table's PSNR gain and colourfulness at that chroma gain
    (in `sweep.analysis.colour.GAIN_RANGE`) for the calibrated configurations, not at 1."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, no display needed
    from sweep import analysis as A
    from sweep.analysis.colour import GAIN_RANGE
    from sweep.results import is_url, load_results, mask_url

    if chroma_gain is not None and not GAIN_RANGE[0] <= chroma_gain <= GAIN_RANGE[1]:
        raise SpecError(f"--chroma-gain {chroma_gain:g}: a gain in [{GAIN_RANGE[0]:g}, {GAIN_RANGE[1]:g}] (the range of the gain curve each calibrated trial stores)")
    url = str(results_dir) if is_url(results_dir) else None
    local = None if url else Path(results_dir)  # runs/ and trials/ exist only in a folder
    label = mask_url(url) if url else str(local)  # what the report says it covers
    frame = load_results(url or local, group=group)
    pictures = Path(pictures) if pictures is not None else local
    done = frame[frame["status"] == "complete"]
    if len(done) and (metric not in done.columns or done[metric].isna().all()):
        measured = [m for m in A.METRICS if m in done.columns and done[m].notna().any()]
        raise SpecError(f"--metric {metric}: no complete trial in {label} has it; these do: {', '.join(measured)}")
    out = Path(out_dir) if out_dir is not None else (local / "report" if local else Path("report"))
    writable(out, "--out")
    names = list(dict.fromkeys(frame["group"]))
    args = dict(metric=metric, data_dirs=data_dirs, reference=reference, top=top, command=command, pictures=pictures, chroma_gain=chroma_gain)
    if len(names) <= 1:
        where = f"the only comparable group of `{label}`" if group is None else f"comparable group `{group}` of `{label}`"
        return _write_group(frame, out, label, local, storage=storage, study=study, counts=coverage(frame, local),
                            group_line=f"Group: **{names[0] if names else 'none'}**, {where}." if names else "", **args)  # fmt: skip
    counts = coverage(frame, local)
    summary: dict[str, Any] = {"results": label, "metric": metric, "coverage": counts, "groups": {}}
    md = [f"# Sweep report: `{label}`", ""]
    md.append(
        f"`{label}` holds **{len(names)} comparable groups**, analysed apart: their trials differ in more than the factors "
        "a search space or study varied (the data, the task, or a protocol field such as the epochs), so no statistic, "
        "table or figure pools them. `python -m sweep.report --group NAME` writes one group's report alone."
    )
    md.append("")
    if counts["missing"]:
        md.append(f"{counts['missing']} more of the {counts['planned']} trials planned in `runs/` have no row yet (a partial sweep).\n")
    rows = []
    for name in names:
        part = frame[frame["group"] == name]
        folder = slug(name)
        _write_group(part, out / folder, f"{label}, group {name}", local, storage=None, study=None, counts=coverage(part, None),
                     group_line=f"Group: **{name}**, one of the {len(names)} comparable groups of `{label}` ([all groups](../report.md)).", **args)  # fmt: skip
        configs = A.configurations(part)
        rho = A.latent_correlation(configs, "spearman", metric) if len(configs) and metric in configs else None
        summary["groups"][name] = {
            "folder": folder, "trials": len(part), "complete": int((part["status"] == "complete").sum()),
            "configurations": len(configs), "spearman": rho.__dict__ if rho is not None else None,
        }  # fmt: skip
        rows.append([f"[{name}]({folder}/report.md)", len(part), int((part["status"] == "complete").sum()), len(configs),
                     fmt_r(rho.estimate) if rho is not None else "n/a"])  # fmt: skip
    md.append(table(["group", "trials", "complete", "configurations", f"Spearman rho (latent size, {A.metric_label(metric).split(' (')[0]})"], rows))
    md.append("")
    md.append(f"Made by `{command or 'python -m sweep.report'}` at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    md.append("")
    from sweep.analysis import figures as F

    written: dict[str, str] = {}
    md += _optuna_section(A, F, frame, storage, study, out, written, summary)
    (out / "report.md").write_text("\n".join(md).rstrip() + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default, allow_nan=True))
    return out / "report.md"


def slug(name: str) -> str:
    """A group's folder name: 'cifar10 reconstruct epochs=1' -> 'cifar10-reconstruct-epochs-1'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-") or "group"


def writable(out: Path, flag: str) -> None:
    """Create `out` and check a file can be written there; a StoreError (one line) otherwise."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        refused = NotWritable(f"{flag} {out}: the report cannot be written there ({err.strerror or err}); give --out DIR, a folder you can write")
        refused.strerror = err.strerror or str(err)
        raise refused from None


class NotWritable(StoreError):
    """The report's folder cannot be written (`strerror` says why)."""

    strerror = "not writable"


def _write_group(frame, out: Path, label: str, local: Path | None, *, metric, data_dirs, reference, top, storage, study, command, pictures, counts, group_line, chroma_gain=None) -> Path:
    """The report of one comparable group's trials (`frame`) in `out`."""
    from sweep import analysis as A
    from sweep.analysis import figures as F

    configs = A.configurations(frame)
    writable(out, "--out")
    name = A.metric_label(metric).split(" (")[0]
    summary: dict[str, Any] = {"results": label, "group": frame["group"].iloc[0] if len(frame) else None, "metric": metric, "coverage": counts}
    written: dict[str, str] = {}
    notes: list[str] = []
    md: list[str] = [f"# Sweep report: `{label}`", ""]
    if group_line:
        md += [group_line, ""]

    md.append(
        f"Covers **{counts['trials']} trials**: {counts['complete']} complete, {counts['failed']} failed, "
        f"{counts['pruned']} pruned"
        + (f"; {counts['missing']} more of the {counts['planned']} planned in `runs/` have no row yet (a partial sweep)" if counts["missing"] else "")
        + "."
    )
    replicated = int((configs["n_seeds"] > 1).sum()) if len(configs) else 0
    md.append(
        f"The complete trials are **{len(configs)} configurations**"
        + (f" ({replicated} trained with several seeds; each counts once, as its mean over seeds)" if replicated else "")
        + f". Error metric: {A.metric_label(metric)}."
    )
    measured = len(configs) and metric in configs.columns and configs[metric].notna().any()
    if len(configs):
        varied = A.varied_factors(configs)
        md.append(f"Factors varied: {', '.join(f'`{v}`' for v in varied) or 'none'}.")
        protocol = configs.iloc[0]
        epochs = "epochs varied" if "epochs" in varied else f"{fmt(protocol.get('epochs'))} epoch(s)"
        fraction = "varied" if "train_fraction" in varied else fmt(protocol.get("train_fraction"))
        sizes = "" if {"train_fraction", "train_limit", "val_fraction"} & set(varied) else (
            f" ({fmt(protocol.get('n_train'))} training, {fmt(protocol.get('n_val'))} validation, {fmt(protocol.get('n_test'))} test images)"
        )
        md.append(f"Protocol: {protocol.get('dataset')}, task {protocol.get('task')}, {epochs}, train fraction {fraction}{sizes}.")
    md.append("")
    md.append(f"Made by `{command or 'python -m sweep.report'}` at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    md.append("")

    if configs.empty:
        md.append("No complete trials yet: nothing to analyse.\n")
    elif not measured:
        md.append(f"No complete trial of this group has {metric}: nothing to analyse by it (`--metric` picks another).\n")
    else:
        md += _colour_section(F, frame, out, written, summary, chroma_gain)
        spearman = A.latent_correlation(configs, "spearman", metric)
        law = A.power_law(configs, metric)
        md += _answer(A, configs, metric, name, spearman, law)
        md += _correlation_section(A, configs, metric, name, spearman, law, summary)
        md += _reference_section(A, F, frame, configs, metric, name, spearman, law, out, written, summary, local, data_dirs, reference, notes)
        md += _top_section(A, F, configs, metric, name, top, summary)
        md += _effects_section(A, F, configs, metric, name, out, written, summary)
        md += _pareto_section(A, F, configs, metric, name, out, written, summary)
        md += _pictures_section(A, F, frame, configs, metric, out, written, pictures)
    md += _optuna_section(A, F, frame, storage, study, out, written, summary)
    md += _failed_section(A, frame)
    if notes:
        md += ["## Notes", "", *[f"- {n}" for n in notes], ""]

    (out / "report.md").write_text("\n".join(md).rstrip() + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default, allow_nan=True))
    return out / "report.md"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _answer(A, configs, metric, name, spearman, law) -> list[str]:
    """The three sentences a reader wants first; every number is repeated in a section below."""
    md = ["## Answer", ""]
    if math.isfinite(spearman.estimate):
        trend = "falls" if spearman.estimate < 0 else "rises"
        clear = math.isfinite(spearman.ci_low) and (spearman.ci_high < 0 or spearman.ci_low > 0)
        md.append(
            f"- {name} {trend} as the latent size grows: Spearman rho = {fmt_r(spearman.estimate)} "
            f"(95% CI {fmt_ci(spearman.ci_low, spearman.ci_high)}, n = {spearman.n} configurations)"
            + ("" if clear else "; the interval does not exclude 0 (or there are too few configurations for one)")
            + (f"; power-law exponent {fmt_r(law.b)} (R² = {fmt_r(law.r2)})." if math.isfinite(law.b) else ".")
        )
    importance = A.factor_importance(configs, metric)
    if len(importance):
        top = importance.iloc[0]
        md.append(f"- The factor that mattered most: `{top['factor']}`, {top['share']:.1%} of the variance (best level: {top['best_level']}).")
    winner = A.best(configs, metric).iloc[0]
    md.append(f"- Best configuration: {winner['label']} ({name} {fmt(winner[metric])}, latent size {fmt(winner['latent_size'])}, {fmt(winner['params'])} parameters).")
    md.append("")
    return md


def _correlation_section(A, configs, metric, name, spearman, law, summary) -> list[str]:
    pearson = A.latent_correlation(configs, "pearson", metric)
    summary["spearman"] = spearman.__dict__
    summary["pearson_loglog"] = pearson.__dict__
    summary["power_law"] = {**law.__dict__, "b_ci": list(law.b_ci)}
    md = ["## Latent size and error", ""]
    md.append(
        table(
            ["statistic", "estimate", f"{spearman.confidence:.0%} CI (bootstrap, BCa)", "p", "n (configurations)"],
            [
                [f"Spearman rho (latent size, {name})", fmt_r(spearman.estimate), fmt_ci(spearman.ci_low, spearman.ci_high), fmt(spearman.p_value, 2), spearman.n],
                [f"Pearson r (log latent size, log {name})", fmt_r(pearson.estimate), fmt_ci(pearson.ci_low, pearson.ci_high), fmt(pearson.p_value, 2), pearson.n],
            ],
        )
    )
    md.append("")
    if math.isfinite(law.b):
        md.append(
            f"Power law: **{name} ≈ {fmt(law.a)} · latent^{fmt_r(law.b)}** "
            f"(exponent {law.confidence:.0%} CI {fmt_ci(*law.b_ci)}, R² = {fmt_r(law.r2)} on log–log axes, n = {law.n}): "
            f"doubling the latent size multiplies the error by {fmt(2 ** law.b, 3)}."
        )
    else:
        md.append(f"Power law: n/a (needs at least 3 configurations with different latent sizes; there are {law.n}).")
    md.append("")
    return md


def _reference_section(A, F, frame, configs, metric, name, spearman, law, out, written, summary, results_dir, data_dirs, reference, notes) -> list[str]:
    ref = None
    md: list[str] = []
    if reference and metric.endswith("mse") and "latent_size" in configs:
        dirs = list(data_dirs or []) + (A.recorded_data_dirs(results_dir) if results_dir is not None else [])
        try:
            ref = A.pca_reference(frame, dirs)
        except SweepError as err:
            notes.append(f"PCA reference skipped: {err}")
    _figure(F.latent_scatter(configs, metric, power=law, reference=ref, correlation=spearman), out, "latent_vs_error", written)
    md.append(_embed(written, "latent_vs_error", f"{name} against latent size"))
    if ref is not None and len(ref):
        summary["pca_reference"] = ref.to_dict(orient="records")
        best_at = configs.groupby("latent_size")[metric].min()
        rows = []
        for _, r in ref.iterrows():
            model = best_at.get(r["latent_size"], math.nan)
            ratio = model / r["pca_mse"] if r["pca_mse"] > 0 else math.nan
            rows.append([fmt(r["latent_size"]), fmt(r["components"]), r["kind"], fmt(r["pca_mse"]), fmt(model), fmt(ratio, 3)])
        md += [
            "### Linear reference (PCA)",
            "",
            "The best linear autoencoder of each latent size: PCA fitted on the same "
            f"{fmt(int(ref['n_train'].iloc[0]))} training images the trials used, evaluated on their test images "
            "(reconstructions clipped to [0, 1], as the trials are). A convolutional autoencoder above this line "
            "at the same latent size is under-trained or mis-designed.",
            "",
            table(["latent size", "PCA components", "kind", f"PCA {name}", f"best model {name}", "model / PCA"], rows),
            "",
            "*capped*: the latent size exceeds the rank of the training set, so PCA keeps every direction the "
            "training images span; *identity*: the latent holds at least as many values as an image, so a linear "
            "autoencoder can copy its input (error 0, not drawn on the log axes).",
            "",
        ]
        above = sum(1 for _, r in ref.iterrows() if r["pca_mse"] > 0 and best_at.get(r["latent_size"], 0) > r["pca_mse"])
        drawn = int((ref["pca_mse"] > 0).sum())
        md.append(f"At {above} of {drawn} latent sizes with a non-zero linear reference, even the best model is above it.\n")
    return md


def _top_section(A, F, configs, metric, name, top, summary) -> list[str]:
    ranked = A.best(configs, metric, n=top)
    seeds = (configs["n_seeds"] > 1).any()
    headers = ["rank", "configuration", "latent size", "params", name + (" (mean ± sd over seeds)" if seeds else ""), "test PSNR (dB)", "test SSIM", "epochs", "trial"]
    rows = []
    for rank, (_, r) in enumerate(ranked.iterrows(), start=1):
        value = fmt(r[metric]) + (f" ± {fmt(r[f'{metric}_std'], 2)} (n={r['n_seeds']})" if seeds and r["n_seeds"] > 1 else "")
        rows.append([rank, r["label"], fmt(r["latent_size"]), fmt(r["params"]), value, fmt(r.get("test_psnr")), fmt(r.get("test_ssim"), 3), fmt(r.get("epochs_run")), f"`{r['trial_key']}`"])
    md = [f"## Top models by {name}", "", table(headers, rows), ""]
    picks = _picks(A, configs, metric)
    summary["picks"] = {k: {"trial_key": v["trial_key"], "label": v["label"], metric: v[metric]} for k, v in picks.items()}
    md.append(", ".join(f"**{k}**: {v['label']} ({name} {fmt(v[metric])})" for k, v in picks.items()) + ".")
    md.append("")
    summary["top"] = ranked[["label", "trial_key", "latent_size", "params", metric]].to_dict(orient="records")
    return md


def _picks(A, configs, metric) -> dict:
    picks = {}
    first = A.first(configs)
    if len(first):
        picks["first"] = first.iloc[0]
    picks["worst"] = A.worst(configs, metric).iloc[0]
    picks["best"] = A.best(configs, metric).iloc[0]
    return picks


def _effects_section(A, F, configs, metric, name, out, written, summary) -> list[str]:
    varied = A.varied_factors(configs)
    md = ["## Factor effects", ""]
    if not varied:
        return md + ["No factor varies in these results.", ""]
    importance = A.factor_importance(configs, metric)
    effects = A.main_effects(configs, metric)
    if importance.empty:
        return md + ["No factor takes two levels among the configurations measured.", ""]
    summary["importance"] = importance.to_dict(orient="records")
    summary["main_effects"] = effects.to_dict(orient="records")
    top = importance.iloc[0]
    md.append(
        f"The factor that matters most is **`{top['factor']}`**: its main effect explains {top['share']:.1%} of the variance "
        f"of {name} across configurations (best level: {top['best_level']})."
    )
    md.append("")
    rows = [[f"`{r['factor']}`", f"{r['share']:.1%}", fmt(r["p_value"], 2), fmt(r["effect_range"]), r["best_level"], r["levels"]] for _, r in importance.iterrows()]
    residual = 1 - importance["share"].sum()
    md.append(table(["factor", "share of variance (main effect)", "p (one-way ANOVA)", "range of level means", "best level", "levels"], rows))
    md.append("")
    md.append(f"Interactions and noise: the remaining {residual:.1%}.\n")
    drivers = _latent_drivers(configs, varied)
    if drivers:
        md.append(
            f"Latent size is not a factor of its own: it follows from {', '.join(f'`{d}`' for d in drivers)}, "
            "so their effects include the latent-size effect above.\n"
        )
    rows = [[f"`{r['factor']}`", r["level"], r["n"], fmt(r["mean"]), fmt_ci(r["ci_low"], r["ci_high"], fmt)] for _, r in effects.iterrows()]
    md.append(table(["factor", "level", "configurations", f"mean {name}", "95% CI (t)"], rows))
    md.append("")
    _figure(F.factor_effects(configs, metric), out, "factor_effects", written)
    md.append(_embed(written, "factor_effects", "main effects"))
    interaction = A.strongest_interaction(configs, metric)
    if interaction is not None:
        summary["strongest_interaction"] = {"factors": list(interaction.factors), "share": interaction.share}
        a, b = interaction.factors
        md.append(f"Strongest two-way interaction: **`{a}` × `{b}`**, {interaction.share:.1%} of the variance beyond their main effects. Mean {name} per cell:\n")
        tab = interaction.table
        md.append(table([f"{a} \\ {b}", *map(str, tab.columns)], [[str(i), *(fmt(v) for v in tab.loc[i])] for i in tab.index]))
        md.append("")
        _figure(F.interaction_plot(configs, metric), out, "interaction", written)
        md.append(_embed(written, "interaction", "strongest interaction"))
    return md


def _latent_drivers(configs, varied: list[str]) -> list[str]:
    """The factors that change the latent size when every other factor is held fixed."""
    if "latent_size" not in configs:
        return []
    drivers = []
    for factor in varied:
        others = [f for f in varied if f != factor]
        keys = configs[others].map(str).agg("|".join, axis=1) if others else configs[factor].map(lambda _: "")
        if (configs.groupby(keys)["latent_size"].nunique() > 1).any():
            drivers.append(factor)
    return drivers


def _pareto_section(A, F, configs, metric, name, out, written, summary) -> list[str]:
    md = ["## Pareto fronts", ""]
    for cost, what in (("latent_size", "latent size"), ("params", "parameter count")):
        if cost not in configs or configs[cost].isna().all():
            continue
        front = A.pareto_front(configs, cost, metric)
        summary[f"pareto_{cost}"] = front["trial_key"].tolist()
        md.append(f"Configurations no other beats on both {what} and {name} ({len(front)} of {len(configs)}):\n")
        md.append(table(["configuration", what, name, "trial"], [[r["label"], fmt(r[cost]), fmt(r[metric]), f"`{r['trial_key']}`"] for _, r in front.iterrows()]))
        md.append("")
    law = A.power_law(configs, metric, x="params")
    _figure(F.error_scatter(configs, "params", metric, power=law), out, "params_vs_error", written)
    md.append(_embed(written, "params_vs_error", f"{name} against parameter count"))
    return md


def _pictures_section(A, F, frame, configs, metric, out, written, results_dir) -> list[str]:
    picks = _picks(A, configs, metric)
    md = ["## Learning curves and reconstructions", ""]
    _figure(F.learning_curves(frame, {k: v["trial_key"] for k, v in picks.items()}), out, "learning_curves", written)
    md.append(_embed(written, "learning_curves", "learning curves of first, worst and best"))
    reconstruct = configs[configs["task"] != "colorize"] if "task" in configs else configs
    if len(reconstruct):
        _figure(F.gallery(results_dir, _picks(A, reconstruct, metric), metric), out, "gallery", written)
        md.append(_embed(written, "gallery", "originals and reconstructions of first, worst and best"))
    colour = F.colorization_gallery(frame, results_dir, metric)
    if colour is not None:
        _figure(colour, out, "colorization", written)
        md.append("### Colorization\n")
        md.append(_embed(written, "colorization", "gray input, truth and prediction per encoding"))
    return md


def _with_ci(row, name: str, digits: int = 3) -> str:
    mean, low, high = row[name], row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if mean is None or not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    return text + (f" ({low:.{digits}f} to {high:.{digits}f})" if low is not None and math.isfinite(low) else "")


def _gain_said(configs, gain: float | None) -> list[str]:
    """Which chroma gain the section's PSNR gain and colourfulness are at."""
    calibrated = configs["calibrated"]
    if gain is None:
        if not calibrated.any():
            return []
        return ["PSNR gain and colourfulness are at chroma gain 1 (the models' own colours, the rows' headline metrics); "
                "\"At the calibrated chroma gain\" below gives them at each configuration's calibrated gain s*.\n"]  # fmt: skip
    if not calibrated.any():
        return [f"`--chroma-gain {gain:g}`: no configuration here was trained with calibration (no stored gain curve), "
                "so every figure is at chroma gain 1.\n"]  # fmt: skip
    stay = configs.loc[~calibrated, "label"].tolist()
    return [
        f"**PSNR gain and colourfulness are at chroma gain {gain:g}** (`--chroma-gain`) for the {int(calibrated.sum())} calibrated "
        "configurations, read off each trial's stored gain curve (test split) and averaged over seeds; SSIM, ab RMSE, AuC and "
        "the chroma evidence stay at gain 1"
        + (f"; {len(stay)} configuration(s) trained before calibration stay at gain 1 (marked in the table's last column)." if stay else ".")
        + "\n"
    ]


def _calibrated_section(C, configs, summary: dict) -> list[str]:
    """The scores at each configuration's calibrated chroma gain s* and along s* to 2 s*."""
    calibrated = configs[configs["calibrated"]]
    if calibrated.empty:
        return []
    md = ["### At the calibrated chroma gain\n"]
    md.append(
        "Each trial fits a chroma gain s* on its validation split at the end of training: the factor that, scaling the "
        "decoded chroma about gray (its luma kept), minimises the RGB squared error; the rows' headline metrics stay at "
        "gain 1, and `python -m sweep.apply --chroma-gain S` decodes at any gain. Test-split means over seeds with their "
        "95% t-intervals; \"PSNR ≥ gray up to\" is the largest gain (as a multiple of s*) at which the PSNR is still at "
        "least the grayscale baseline's, with the colourfulness there.\n"
    )
    digits = {"chroma_gain": 3, "colorfulness_ratio_at_gain": 3}  # (2 for the dB and the a*, b* units)
    psnr2, ratio2 = C.along(2.0)
    rows = [[r["label"], int(r["n_seeds"]), *(_with_ci(r, c, digits.get(c, 2)) for c in C.CALIBRATED), _with_ci(r, psnr2, 2), _with_ci(r, ratio2, 3), _break_even(r)]
            for _, r in calibrated.iterrows()]  # fmt: skip
    md.append(table(["configuration", "seeds", *C.CALIBRATED.values(), "PSNR gain at 2 s* (dB)", "colourfulness / truth's at 2 s*", "PSNR ≥ gray up to"], rows))
    md.append("")
    md.append("Along the curve from s* to 2 s* (PSNR gain in dB / colourfulness as a fraction of the truth's; each a mean over seeds):\n")
    rows = [[r["label"], *(f"{r[a]:+.2f} / {r[b]:.2f}" for a, b in map(C.along, C.MULTIPLES))] for _, r in calibrated.iterrows()]
    md.append(table(["configuration", *(f"{m:g} s*" for m in C.MULTIPLES)], rows))
    md.append("")
    stale = configs[~configs["calibrated"]]
    if len(stale):
        md.append("Not calibrated (trained before calibration): " + ", ".join(
            r["label"] + (f" ({int(r['n_calibrated'])} of {int(r['n_seeds'])} seeds calibrated)" if r["n_calibrated"] else "") for _, r in stale.iterrows()) + ".\n")  # fmt: skip
    names = [*C.CALIBRATED, *(c for m in C.MULTIPLES for c in C.along(m)), *C.BREAK_EVEN]
    summary["calibrated"] = {
        "multiples": list(C.MULTIPLES),
        "configurations": calibrated[["label", "n_seeds", "trial_keys", *[f"{n}{s}" for n in names for s in ("", "_ci_low", "_ci_high")],
                                      "break_even_beyond"]].to_dict(orient="records"),
        "not_calibrated": stale["label"].tolist(),
    }  # fmt: skip
    return md


def _break_even(row) -> str:
    """'2.03 s* (colourfulness 0.83)': the largest multiple of s* with the PSNR at least gray's."""
    multiple = row["break_even_multiple"]
    if not math.isfinite(multiple):
        return "n/a"
    return f"{'≥ ' if row['break_even_beyond'] else ''}{multiple:.2f} s* (colourfulness {row['break_even_colorfulness_ratio']:.2f})"


def _colour_section(F, frame, out, written, summary, gain: float | None = None) -> list[str]:
    """Colorization sweeps: per configuration the PSNR gain over the grayscale baseline, SSIM,
    ab RMSE, AuC and colourfulness (means with 95% CIs over seeds; the first and last at
    chroma gain `gain` for the calibrated configurations when given); the scores at the
    calibrated chroma gain s* and along s* to 2 s*; the trade-off of gain against
    colourfulness and its Pareto front; the factors' effects; the evidence of why the
    failing configurations fail."""
    from sweep.analysis import colour as C

    configs = C.colour_configurations(frame, gain=gain)
    if configs.empty:
        return []
    gray = float(frame.loc[frame["task"] == "colorize", "test_gray_psnr"].dropna().mean())
    seeds = f"{int(configs['n_seeds'].min())}–{int(configs['n_seeds'].max())}" if configs["n_seeds"].nunique() > 1 else f"{int(configs['n_seeds'].iloc[0])}"
    md = ["## Colorization", ""]
    md.append(
        f"{len(configs)} colorization configurations, {seeds} seed(s) each; every figure is a mean over seeds with its "
        f"95% t-interval in brackets (none for one seed). The grayscale baseline (the luma copied to RGB) scores "
        f"**{gray:.2f} dB** test PSNR on these images (dataset-level MSE); the gain is a configuration's PSNR minus that.\n"
    )
    md += _gain_said(configs, gain)
    columns = ["psnr_gain", "test_ssim", "test_ab_rmse", "test_ab_auc", "colorfulness_ratio"]
    rows = [[r["label"], int(r["n_seeds"]), *(_with_ci(r, c, 2 if c in ("psnr_gain", "test_ab_rmse") else 3) for c in columns)] for _, r in configs.iterrows()]
    headers = ["configuration", "seeds", "PSNR gain (dB)", "SSIM", "ab RMSE", "ab AuC", "colourfulness / truth's"]
    if gain is not None:
        headers.append("chroma gain")
        rows = [[*row, f"{gain:g}" if r["calibrated"] else "1 (not calibrated)"] for row, (_, r) in zip(rows, configs.iterrows())]
    md.append(table(headers, rows))
    md.append("")
    summary["colorization"] = {
        "gray_psnr": gray,
        "chroma_gain": gain,  # the gain of the configurations' psnr_gain and colorfulness_ratio (None: 1), where `calibrated`
        "configurations": configs[["label", "arch", "encoding", "loss", "n_seeds", "trial_keys", *columns,
                                   *[f"{c}_{s}" for c in columns for s in ("ci_low", "ci_high")], "calibrated", "at_gain"]].to_dict(orient="records"),
    }  # fmt: skip
    clear = configs[configs["psnr_gain_ci_low"].fillna(configs["psnr_gain"]) >= 1.5]
    vivid = configs[(configs["colorfulness_ratio"] >= 0.8) & (configs["psnr_gain"] >= 0)]
    md.append(
        "- PSNR gain ≥ 1.5 dB (its whole CI): "
        + (", ".join(f"**{r['label']}** ({_with_ci(r, 'psnr_gain', 2)} dB)" for _, r in clear.iterrows()) or
           f"none; the best is **{configs.iloc[0]['label']}** at {_with_ci(configs.iloc[0], 'psnr_gain', 2)} dB")
    )  # fmt: skip
    most = configs.sort_values("colorfulness_ratio", ascending=False).iloc[0]
    md.append(
        "- colourfulness ≥ 80% of the truth's with PSNR at or above the baseline: "
        + (", ".join(f"**{r['label']}** ({_with_ci(r, 'colorfulness_ratio', 2)}, gain {r['psnr_gain']:.2f} dB)" for _, r in vivid.iterrows()) or
           f"none; the most colourful is **{most['label']}** at {_with_ci(most, 'colorfulness_ratio', 2)} (gain {most['psnr_gain']:.2f} dB)")
    )  # fmt: skip
    md.append("")
    summary["colorization"]["targets"] = {"gain_1_5_db": clear["label"].tolist(), "vivid_0_8": vivid["label"].tolist()}
    md += _calibrated_section(C, configs, summary["colorization"])

    front = C.colour_pareto(configs)
    summary["colorization"]["pareto"] = front["label"].tolist()
    md.append(f"### PSNR gain against colourfulness\n\nThe configurations no other beats on both ({len(front)} of {len(configs)}): "
              "regression's safe desaturated colours at one end, vivid colours at the other.\n")  # fmt: skip
    md.append(table(["configuration", "PSNR gain (dB)", "colourfulness / truth's"], [[r["label"], _with_ci(r, "psnr_gain", 2), _with_ci(r, "colorfulness_ratio", 3)] for _, r in front.iterrows()]))
    md.append("")
    _figure(F.colour_tradeoff(configs, front, gain=gain), out, "colour_tradeoff", written)
    md.append(_embed(written, "colour_tradeoff", "PSNR gain against colourfulness, with the Pareto front"))

    effects = C.colour_effects(configs)
    if len(effects):
        summary["colorization"]["effects"] = effects.to_dict(orient="records")
        md.append("### What each factor does\n\nMean over the configurations at each level (averaging over the other factors), with its 95% t-interval:\n")
        rows = [[r["metric"].replace("_", " "), f"`{r['factor']}`", r["level"], r["n"], fmt(r["mean"], 3), fmt_ci(r["ci_low"], r["ci_high"], lambda v: fmt(v, 3))] for _, r in effects.iterrows()]
        md.append(table(["metric", "factor", "level", "configurations", "mean", "95% CI"], rows))
        md.append("")
    for arch in sorted(a for a in configs["arch"].unique() if f"{a}_noskip" in set(configs["arch"])):
        paired = C.paired_effect(configs, "arch", arch, f"{arch}_noskip")
        if paired:
            summary["colorization"][f"skips_{arch}"] = paired
            md.append(f"The U-Net's skip connections (`{arch}` against `{arch}_noskip`, {paired['n']} paired configurations): "
                      f"**{paired['mean']:+.2f} dB** PSNR gain (95% CI {fmt_ci(paired['ci_low'], paired['ci_high'], lambda v: f'{v:+.2f}')}).\n")  # fmt: skip

    md.append("### Why the failing ones fail\n")
    md.append("How the predicted chroma follows the true one over every test pixel (a slope of 1 reproduces the truth's range, "
              "0 paints one colour whatever the truth; the bias is a colour cast, a* > 0 red, b* > 0 yellow, a brown tone both):\n")  # fmt: skip
    rows = [[r["label"], *(_with_ci(r, c, 2) for c in ("a_slope", "b_slope", "a_bias", "b_bias")), f"{r['colorfulness_ratio']:.2f}", f"{r['psnr_gain']:+.2f}"] for _, r in configs.iterrows()]
    md.append(table(["configuration", "a* slope", "b* slope", "a* bias", "b* bias", "colourfulness / truth's", "PSNR gain (dB)"], rows))
    md.append("")
    failing = configs[configs["psnr_gain"] < 0]
    for _, r in failing.iterrows():
        why = []
        if max(abs(r["a_slope"]), abs(r["b_slope"])) < 0.2:
            why.append(f"its chroma barely follows the truth (slopes a* {r['a_slope']:.2f}, b* {r['b_slope']:.2f})")
        if max(abs(r["a_bias"]), abs(r["b_bias"])) > 3:
            why.append(f"a colour cast (a* {r['a_bias']:+.1f}, b* {r['b_bias']:+.1f})")
        gray_ssim = r.get("test_gray_ssim")
        if gray_ssim is not None and math.isfinite(gray_ssim) and r["test_ssim"] < gray_ssim - 0.02:
            keeps = "; the chroma encodings keep the input's luma, `rgb` must predict it too" if r.get("encoding") == "rgb" else ""
            why.append(f"it loses structure the gray input has (SSIM {r['test_ssim']:.3f} against gray's {gray_ssim:.3f}{keeps})")
        if r["colorfulness_ratio"] > 1.2:
            why.append(f"colours {r['colorfulness_ratio']:.1f}x as strong as the truth's, often wrong")
        md.append(f"- **{r['label']}** scores below gray ({r['psnr_gain']:+.2f} dB): " + ("; ".join(why) or "errors spread over the image rather than a cast or a flat colour") + ".")
    if len(failing):
        md.append("")
    _figure(F.chroma_evidence(configs), out, "chroma_evidence", written)
    md.append(_embed(written, "chroma_evidence", "predicted against true chroma per channel"))
    return md


def _optuna_section(A, F, frame, storage, study, out, written, summary) -> list[str]:
    if storage is None:
        return []
    names = sorted({s for s in frame.get("study_name", []) if isinstance(s, str)})
    study = study or (names[0] if len(names) == 1 else None)
    if study is None:
        from sweep.results import mask_url

        raise StoreError(f"--storage {mask_url(storage)}: name the study with --study (the rows name {', '.join(names) or 'none'})")
    importance = A.optuna_importance(storage, study)
    summary["optuna_importance"] = importance.to_dict(orient="records")
    md = [f"## Optuna study `{study}`", "", f"Parameter importances ({importance['evaluator'].iloc[0]}):", ""]
    md.append(table(["parameter", "importance"], [[f"`{r['param']}`", f"{r['importance']:.3f}"] for _, r in importance.iterrows()]))
    md.append("")
    for key, fig in F.optuna_figures(storage, study).items():
        _figure(fig, out, key, written)
        md.append(_embed(written, key, key.replace("_", " ")))
    return md


def _failed_section(A, frame) -> list[str]:
    failed = frame[frame["status"] == "failed"]
    if failed.empty:
        return []
    varied = A.varied_factors(frame[frame["status"].isin(["complete", "failed"])].assign(status="complete"))
    rows = [[f"`{r['trial_key']}`", A.config_label(r, varied), str(r.get("error") or "")[:200]] for _, r in failed.iterrows()]
    return [f"## Failed trials ({len(failed)})", "", table(["trial", "configuration", "error"], rows), ""]


