"""`python -m sweep.grid`: train every point of a search space, resumably.

    python -m sweep.grid                                   # the 36-model grid of seed 002
    python -m sweep.grid --data-dir ../data --epochs 1     # on local CIFAR-10 files
    python -m sweep.grid --quick --dataset synthetic       # a one-minute offline smoke run

Trials already complete in the results directory are skipped, so running the same
command again resumes a sweep that crashed or was interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sweep.cli import (
    add_common_arguments,
    check_positive,
    code_version,
    protocol_overrides,
    run_main,
    write_run_record,
)
from sweep.errors import SpecError

SUMMARY_COLUMNS = ["fewer_layers", "channel_factor", "kernel_size", "compression_factor", "latent_size", "params", "test_mse", "test_psnr", "test_ssim"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.grid",
        description="Train every point of a search space (exhaustive grid), skipping trials already complete.",
        epilog="Example: python -m sweep.grid --data-dir ../shared/data --epochs 1 --train-fraction 0.2 --results /tmp/r1",
    )
    add_common_arguments(parser)
    parser.add_argument("--arch", metavar="PRESET", help="run the space on this architecture preset instead of the file's (and of its arch factor)")
    parser.add_argument("--retry-failed", action="store_true", help="run again the trials stored as failed")
    return parser


def resolve_trials(space, data_dir: str | None):
    """Load the data each point needs and return (point, TrialSpec) pairs, checked against the
    image shape, in grid order without duplicates."""
    from sweep.data import dataset_for
    from sweep.encodings import task_for

    trials, seen = [], set()
    for point in space.grid_points():
        draft = space.spec(point, data_id="")
        dataset = dataset_for(draft.protocol, data_dir)
        spec = space.spec(point, dataset.data_id)
        height, width, _ = dataset.image_shape
        size = spec.protocol.image_size
        task = task_for(spec.protocol.task, spec.protocol.encoding)
        shape = (size or height, size or width, task.input_channels)
        try:
            spec.arch.check_input(shape)
        except SpecError as err:
            raise SpecError(f"{space.path}: space: {point} does not fit {shape[0]}x{shape[1]} images: {err}") from None
        if spec.key not in seen:
            seen.add(spec.key)
            trials.append((point, spec))
    return trials


def summarize(frame, reference_key: str | None) -> str:
    """First (the reference model), best and worst by test MSE, and the latent-size correlation."""
    from scipy.stats import spearmanr

    done = frame[frame["status"] == "complete"]
    lines = [f"{len(frame)} trials: {len(done)} complete, {(frame['status'] == 'failed').sum()} failed, {(frame['status'] == 'pruned').sum()} pruned"]
    if done.empty:
        return "\n".join(lines)
    picks = []
    if reference_key is not None and reference_key in set(done["trial_key"]):
        picks.append(("first", done[done["trial_key"] == reference_key].iloc[0]))
    picks.append(("best", done.loc[done["test_mse"].idxmin()]))
    picks.append(("worst", done.loc[done["test_mse"].idxmax()]))
    import pandas as pd

    columns = list(SUMMARY_COLUMNS)
    if (done["family"] != "conv_ae").any():  # the seed-002 factors mean nothing to other families
        columns = ["preset", "family", *columns[4:]]
    if (done["task"] == "colorize").any():
        columns = [*columns[: columns.index("latent_size")], "encoding", *columns[columns.index("latent_size") :], "test_ab_rmse"]
    table = pd.DataFrame([row[["trial_key", *columns]] for _, row in picks], index=[name for name, _ in picks])
    lines.append(table.to_string(float_format=lambda v: f"{v:.4g}"))
    if done["latent_size"].nunique() > 1 and len(done) > 2:
        rho, p = spearmanr(done["latent_size"], done["test_mse"])
        lines.append(f"Spearman correlation of latent size with test MSE: rho = {rho:.3f} (p = {p:.2g}, n = {len(done)})")
    colorized = done[(done["task"] == "colorize") & done["test_gray_psnr"].notna()] if "test_gray_psnr" in done else done[:0]
    if not colorized.empty:
        lines.append(colorization_table(colorized))
    return "\n".join(lines)


def colorization_table(done) -> str:
    """Test PSNR (dB) / ab RMSE of every architecture x encoding, under the grayscale baseline's."""
    from sweep.protocol import ENCODINGS

    arch = done["preset"].fillna(done["family"] + "*") if "preset" in done else done["family"]
    label = arch.where(done["loss"] != "ab_classification", arch + " (ab classes)")
    cells = done.assign(
        arch=label, cell=[f"{p:.2f} / {e:.1f}" for p, e in zip(done["test_psnr"], done["test_ab_rmse"])]
    )
    table = cells.pivot_table(index="arch", columns="encoding", values="cell", aggfunc="first", sort=False)
    table = table[[e for e in ENCODINGS if e in table.columns]].fillna("")
    gray = done.iloc[0]
    return (
        f"colorization, test PSNR dB / ab RMSE (grayscale baseline, luma copied to RGB: "
        f"{gray['test_gray_psnr']:.2f} / {gray['test_gray_ab_rmse']:.1f})\n{table.to_string()}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_positive(args, "workers", "workers_per_gpu", "epochs")

    from sweep.schedule import TrialJob, plan_workers, run_jobs
    from sweep.space import load_space
    from sweep.store import check_writable, completed_keys, export, load_results

    space = load_space(args.space).with_protocol(**protocol_overrides(args))
    if args.arch is not None:
        space = space.with_arch(args.arch)
    if not space.is_grid:
        raise SpecError(f"{space.path}: space: has continuous ranges, which have no grid; run python -m sweep.optuna on it")
    results = check_writable(args.results)
    trials = resolve_trials(space, args.data_dir)
    keys = [spec.key for _, spec in trials]
    skip_statuses = ("complete",) if args.retry_failed else ("complete", "failed")
    done = completed_keys(results, statuses=skip_statuses) & set(keys)
    todo = [spec for _, spec in trials if spec.key not in done]
    plan = plan_workers(args.workers, args.workers_per_gpu)
    reference = space.reference_point()
    reference_key = space.spec(reference, trials[0][1].data_id).key if reference is not None else None

    print(
        f"sweep.grid: {len(keys)} trials from {space.path}; {len(done)} already stored, {len(todo)} to run "
        f"on {plan.describe()}; results in {results}",
        file=sys.stderr,
    )
    if todo:
        write_run_record(
            results,
            "grid",
            {"space": space.path, "protocol": space.protocol.to_dict(), "trials": [s.key for s in todo], "plan": plan.__dict__},
        )
        extra = {"driver": "grid", "space": space.name, "code_version": code_version()}
        jobs = [TrialJob(spec, spec.protocol.dataset, args.data_dir, str(results), extra) for spec in todo]
        _run_with_progress(jobs, plan, results)
    frame = load_results(results)
    frame = frame[frame["trial_key"].isin(keys)]
    print(summarize(frame, reference_key))
    print(f"results: {results}/ ({len(frame)} rows of this space; pandas: sweep.store.load_results({str(results)!r}))")
    export(results)
    return 0


def _run_with_progress(jobs: list, plan, results: Path) -> None:
    from tqdm import tqdm

    from sweep.schedule import run_jobs

    with tqdm(total=len(jobs), unit="trial", desc="grid", dynamic_ncols=True, file=sys.stderr) as bar:
        for row in run_jobs(jobs, plan, results / ".workers", on_restart=lambda n: bar.write(f"a worker died; {n} trial(s) handed out again")):
            bar.update(1)
            if row is not None:
                bar.write(_one_line(row))


def _one_line(row: dict[str, Any]) -> str:
    arch = f"{'3' if row.get('fewer_layers') else '5'}conv ch{row.get('channel_factor')} k{row.get('kernel_size')} f{row.get('compression_factor')}" if row.get("family") == "conv_ae" else row.get("preset") or row.get("family", "")
    if row.get("task") == "colorize":
        arch = f"{arch} {row.get('encoding')}"
    if row.get("status") == "failed":
        return f"  {row['trial_key']} {arch}: FAILED {row.get('error')}"
    colour = f", ab RMSE {row['test_ab_rmse']:.2f}" if row.get("test_ab_rmse") is not None else ""
    return (
        f"  {row['trial_key']} {arch}: latent {row.get('latent_size')}, test MSE {row.get('test_mse', float('nan')):.5f}, "
        f"PSNR {row.get('test_psnr', float('nan')):.2f} dB{colour}, {row.get('wall_seconds', 0):.1f}s"
    )


if __name__ == "__main__":
    run_main(main)
