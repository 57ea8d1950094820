"""`--dry-run`: what a sweep would train, and about how long it would take, without training.

The plan is a table, one row per trial: its key, its factors, the latent size and parameter
count (from the family's formulas, no model is built), the training FLOPs per image, and
whether the results folder already has it. The time is estimated from the FLOPs: with
this machine's stored trials, from a line fitted to their `train_seconds` against their
training FLOPs (a fixed cost per trial, tracing and the first step, plus FLOPs at a rate)
and their median cost outside training; with no stored trial of this host, at a rate
derived from a short matrix product (`EFFICIENCY` of its FLOP/s: what small convolutional
models reached here) plus `OVERHEAD` seconds per trial. Either way it is a rough guide.
Nothing here imports a framework.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from sweep.cli.common import duration

__all__ = ["EFFICIENCY", "OVERHEAD", "estimate_rate", "plan_table", "print_plan", "sample_points", "trial_work"]

EFFICIENCY = 0.08  # training FLOP/s of a single-threaded worker over a matrix product's on all cores (small models: per-step costs dominate; measured, AMD EPYC, 2 cores)
OVERHEAD = 2.0  # seconds per trial besides training steps: building, compiling, evaluating, saving


def _shape(spec, data_dir: str | None) -> tuple[tuple[int, int, int], int, Any]:
    """The model's input shape, output channels and the dataset of a trial (loaded once)."""
    from sweep.data import dataset_for
    from sweep.encodings import task_for

    protocol = spec.protocol
    dataset = dataset_for(protocol, data_dir)
    height, width, _ = dataset.image_shape
    size = protocol.image_size
    task = task_for(protocol.task, protocol.encoding, protocol.loss)
    return (size or height, size or width, task.input_channels), task.output_channels, dataset


def _images(protocol, dataset) -> int:
    """Training images a trial sees per epoch (as `sweep.data.make_splits` selects them)."""
    selected = max(2, int(round(protocol.train_fraction * len(dataset.x_train))))
    if protocol.train_limit is not None:
        selected = min(selected, protocol.train_limit)
    return selected - max(1, int(round(protocol.val_fraction * selected)))


def trial_work(spec, data_dir: str | None) -> float | None:
    """A trial's training FLOPs (per image x images x epochs), or None without a formula."""
    shape, _, dataset = _shape(spec, data_dir)
    if not hasattr(spec.arch, "flops"):
        return None
    return float(spec.training_flops(shape) * _images(spec.protocol, dataset) * spec.protocol.epochs)


def plan_table(trials: list, data_dir: str | None, stored: dict[str, str], skip: tuple[str, ...]):
    """One row per (point, spec): factors, latent size, parameters, training GFLOP per image,
    the training work of the whole trial (FLOPs) and whether it is stored or to run."""
    import pandas as pd

    from sweep.arch import latent_size, pointwise_saving

    rows = []
    for point, spec in trials:
        shape, outputs, dataset = _shape(spec, data_dir)
        arch = spec.arch
        flops = spec.training_flops(shape) if hasattr(arch, "flops") else None
        params = arch.params(shape, outputs) if hasattr(arch, "params") else None
        if spec.protocol.loss == "ab_classification" and params is not None:  # its 1x1 head over the bins
            saving = pointwise_saving(arch, shape, outputs)
            params = None if saving is None else params - saving[1]
        work = flops * _images(spec.protocol, dataset) * spec.protocol.epochs if flops is not None else None
        rows.append({
            "trial_key": spec.key, **{k: v for k, v in point.items()}, "latent_size": latent_size(arch, shape), "params": params,
            "GFLOP/image": None if flops is None else flops / 1e9, "work": work,
            "status": "stored" if stored.get(spec.key) in skip else "to run",
        })  # fmt: skip
    return pd.DataFrame(rows)


def sample_points(space, n: int, data_dir: str | None, seed: int | None = None) -> list:
    """`n` (point, spec) pairs drawn at random from `space` (an in-memory Optuna study), one per
    trial key: what a plan of an Optuna run can show before the sampler has learnt anything."""
    import optuna

    from sweep.run.jobs import trial_for

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0 if seed is None else seed))
    pairs, seen = [], set()
    for _ in range(n):
        trial = study.ask()
        point = space.suggest(trial)
        study.tell(trial, 0.0)
        spec, _ = trial_for(space, point, data_dir)
        if spec.key not in seen:
            seen.add(spec.key)
            pairs.append((point, spec))
    return pairs


def estimate_rate(rows: list[dict[str, Any]]) -> tuple[float, float, str]:
    """(training FLOP/s per worker, fixed seconds per trial, how they were found)."""
    from sweep.spec import TrialSpec

    import numpy as np

    here = socket.gethostname()
    works, seconds, overheads = [], [], []
    for row in rows:
        if row.get("status") != "complete" or row.get("host") != here or not row.get("train_seconds") or not row.get("spec"):
            continue
        try:
            spec = TrialSpec.from_dict(json.loads(row["spec"]))
            if not hasattr(spec.arch, "flops"):
                continue
            size = spec.protocol.image_size or spec.native_size or 32
            channels = 1 if spec.protocol.task == "colorize" else 3
            works.append(spec.training_flops((size, size, channels)) * row["n_train"] * row["epochs_run"])
        except Exception:  # a row of an older version: it cannot say how fast this machine is
            continue
        seconds.append(row["train_seconds"])
        overheads.append(max(0.0, (row.get("wall_seconds") or row["train_seconds"]) - row["train_seconds"]))
    if len(works) >= 3 and len(set(works)) >= 2:
        # train_seconds = fixed (tracing, the first step) + work / rate, fitted over the stored trials
        slope, fixed = np.polyfit(np.asarray(works, float), np.asarray(seconds, float), 1)
        if slope > 0:
            return 1 / slope, max(fixed, 0.0) + statistics.median(overheads), f"fitted to {len(works)} stored trials of this host"
    a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
    a @ a  # warm up
    start, repeats = time.perf_counter(), 8
    for _ in range(repeats):
        a @ a
    matmul = 2 * 512**3 * repeats / (time.perf_counter() - start)
    return matmul * EFFICIENCY, OVERHEAD, f"{EFFICIENCY:.0%} of a {matmul / 1e9:.0f} GFLOP/s matrix product here, +{OVERHEAD:.0f} s a trial; no stored trials of this host to go by"


def print_plan(trials: list, data_dir: str | None, results: Path, workers: int, describe: str, skip: tuple[str, ...]) -> None:
    """Print the plan of `trials` ((point, spec) pairs, one per key) and its estimated time."""
    from sweep.results import read_rows

    rows = read_rows(results) if (results / "rows").is_dir() else []
    table = plan_table(trials, data_dir, {r["trial_key"]: r.get("status") for r in rows}, skip)
    shown = table.drop(columns=["work"])
    formats = {"GFLOP/image": "{:.4f}".format, "params": lambda v: "" if v != v else f"{int(v):,}", "latent_size": "{:,}".format}
    print(shown.to_string(index=False, formatters={c: f for c, f in formats.items() if c in shown}))
    todo = table[table["status"] == "to run"]
    rate, overhead, how = estimate_rate(rows)
    if todo["work"].isna().any():
        print(f"{len(todo)} of {len(table)} trials to run; no estimate: some architectures have no FLOP formula")
        return
    seconds = (todo["work"].sum() / rate + overhead * len(todo)) / max(workers, 1)
    print(f"{len(todo)} of {len(table)} trials to run, about {duration(seconds)} on {describe} ({how}); nothing was trained")
