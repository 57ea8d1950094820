"""`--dry-run`: what a sweep would train, and about how long it would take, without training.

The plan is a table, one row per trial: its key, its factors, the latent size and parameter
count (from the family's formulas, no model is built), the training FLOPs per image, and
whether the results folder already has it. The time is estimated per trial from its FLOPs:
with three or more stored trials of this host, from a line fitted to their `train_seconds`
against their training FLOPs (a fixed cost per trial, tracing and the first step, plus
FLOPs at a rate) and their median cost outside training; with fewer, from a short timing
probe on this host (`probe`): the lightest and the heaviest model to run, each trained for
one epoch on synthetic images of the planned shape and timed step by step (in a pack of
the planned size where the run packs), in a temporary folder, nothing stored; the other
models are interpolated by their FLOPs. Without the data (offline) the plan is made on the
dataset's nominal shape and size, and whether a trial is stored is unknown. Either way it
is a rough guide. Nothing here imports a framework until the probe runs.
"""

from __future__ import annotations

import json
import math
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sweep.cli.common import duration

__all__ = ["NOMINAL", "Data", "estimate_rate", "offline_trials", "plan_table", "print_plan", "probe", "sample_points", "trial_work"]

NOMINAL = {"cifar10": ((32, 32, 3), 50_000, 10_000), "cifar100": ((32, 32, 3), 50_000, 10_000)}  # the official sets: (image shape, training images, test images)
PROBE_IMAGES = 128  # synthetic training (and test) images of a probe trial: a few batches, enough to time, few enough to take a second or two
PROBE_STEPS = 10  # training steps timed per probed model


@dataclass(frozen=True)
class Data:
    """What the plan needs of a dataset: its image shape and sizes (loaded, or nominal offline)."""

    image_shape: tuple[int, int, int]
    n_train: int
    n_test: int
    known: bool = True  # False: the nominal shape of a dataset not at hand (offline)


def _data(protocol, data_dir: str | None, known: bool = True) -> Data:
    if not known:
        shape, n_train, n_test = NOMINAL[protocol.dataset]
        return Data(shape, n_train, n_test, known=False)
    from sweep.data import dataset_for

    dataset = dataset_for(protocol, data_dir)
    return Data(dataset.image_shape, len(dataset.x_train), len(dataset.x_test))


def offline_trials(space) -> list:
    """The (point, spec) pairs of `space`'s grid on the nominal shape of its dataset, for a
    plan made without the data: their keys lack the data's hash, so they are the plan's own."""
    from sweep.run import unique_trials

    trials = []
    for point in space.grid_points():
        dataset = space.spec(point, data_id="").protocol.dataset
        if dataset not in NOMINAL:
            return []
        height, width, _ = NOMINAL[dataset][0]
        trials.append((point, space.spec(point, data_id="", native_size=height if height == width else None)))
    return unique_trials(trials)


def _shape(spec, data: Data) -> tuple[tuple[int, int, int], int]:
    """The model's input shape and output channels on `data`."""
    from sweep.encodings import task_for

    protocol = spec.protocol
    height, width, _ = data.image_shape
    size = protocol.image_size
    task = task_for(protocol.task, protocol.encoding, protocol.loss)
    return (size or height, size or width, task.input_channels), task.output_channels


def _split(protocol, n_train: int) -> tuple[int, int]:
    """(training, validation) images a trial uses (as `sweep.data.make_splits` selects them)."""
    selected = max(2, int(round(protocol.train_fraction * n_train)))
    if protocol.train_limit is not None:
        selected = min(selected, protocol.train_limit)
    val = max(1, int(round(protocol.val_fraction * selected)))
    return selected - val, val


def trial_work(spec, data_dir: str | None) -> float | None:
    """A trial's training FLOPs (per image x images x epochs), or None without a formula."""
    data = _data(spec.protocol, data_dir)
    if not hasattr(spec.arch, "flops"):
        return None
    shape, _ = _shape(spec, data)
    return float(spec.training_flops(shape) * _split(spec.protocol, data.n_train)[0] * spec.protocol.epochs)


_COUNTED: dict[tuple, int | None] = {}  # training FLOPs counted on built models, by (arch, task, shape)


def _training_flops(spec, shape: tuple[int, int, int]) -> int | None:
    """Training FLOPs per image: from the family's formula, or for a family without one
    counted on the built model (which imports Keras), once per architecture and task."""
    if hasattr(spec.arch, "flops"):
        return spec.training_flops(shape)
    protocol = spec.protocol
    key = (spec.arch, protocol.task, protocol.encoding, protocol.loss, shape)
    if key not in _COUNTED:
        from sweep.files import held_native_stderr

        try:
            with held_native_stderr():  # (the framework's start-up chatter)
                _COUNTED[key] = spec.training_flops(shape)
        except Exception:  # a model that cannot be built here: no estimate
            _COUNTED[key] = None
    return _COUNTED[key]


def plan_table(trials: list, data_dir: str | None, stored: dict[str, str], skip: tuple[str, ...], known: bool = True):
    """One row per (point, spec): factors, latent size, parameters, training GFLOP per image,
    the training work of the whole trial (FLOPs) and whether it is stored or to run ('?'
    without the data: `known` False)."""
    import pandas as pd

    from sweep.arch import latent_size, pointwise_saving

    rows = []
    for point, spec in trials:
        data = _data(spec.protocol, data_dir, known)
        shape, outputs = _shape(spec, data)
        arch = spec.arch
        flops = _training_flops(spec, shape)
        params = arch.params(shape, outputs) if hasattr(arch, "params") else None
        if spec.protocol.loss == "ab_classification" and params is not None:  # its 1x1 head over the bins
            saving = pointwise_saving(arch, shape, outputs)
            params = None if saving is None else params - saving[1]
        n_train, n_val = _split(spec.protocol, data.n_train)
        work = flops * n_train * spec.protocol.epochs if flops is not None else None
        status = "?" if not known else "stored" if stored.get(spec.key) in skip else "to run"
        rows.append({
            "trial_key": spec.key if known else "?", **{k: v for k, v in point.items()}, "latent_size": latent_size(arch, shape), "params": params,
            "GFLOP/image": None if flops is None else flops / 1e9, "work": work, "flops": flops,
            "n_train": n_train, "n_val": n_val, "n_test": data.n_test, "spec": spec, "image_shape": data.image_shape, "status": status,
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


def estimate_rate(rows: list[dict[str, Any]]) -> tuple[float, float, str] | None:
    """(training FLOP/s per worker, fixed seconds per trial, how they were found) from the
    stored trials of this host; None with fewer than three (of two sizes or more)."""
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
        seconds.append(row["train_seconds"])  # (a packed member's: its share of the pack's)
        overheads.append(max(0.0, (row.get("wall_seconds") or row["train_seconds"]) - row["train_seconds"]))
    if len(works) >= 3 and len(set(works)) >= 2:
        # train_seconds = fixed (tracing, the first step) + work / rate, fitted over the stored trials
        slope, fixed = np.polyfit(np.asarray(works, float), np.asarray(seconds, float), 1)
        if slope > 0:
            return 1 / slope, max(fixed, 0.0) + statistics.median(overheads), f"fitted to {len(works)} stored trials of this host"
    return None


def probe(todo, threads: int | None, gpu: str | None = None, pack: int = 1) -> tuple[Any, float, str]:
    """Time this host on the plan's own models: a function giving each row of `todo` (rows
    of `plan_table`) its estimated seconds, the seconds a worker takes to start (the
    framework's import), and how they were found.

    For each task and loss (`_kind`), the lightest and the heaviest model to run each train one epoch of PROBE_IMAGES synthetic
    images of the planned shape (`run_trial`, in a temporary folder, nothing kept): its time
    outside the training steps is the trial's fixed cost (building, tracing, saving; the
    evaluation scaled to the planned test images); then PROBE_STEPS training steps are timed
    in a pack of `pack` copies (per member: a pack's steps, tracing and building are shared).
    A trial is then its fixed cost + epochs x (its steps + its validation images at a third
    of a training image's cost each), every part interpolated by FLOPs between the two of its kind.
    The process is set up as a worker is (`threads`, `gpu`)."""
    import numpy as np

    from sweep import backend

    t0 = time.perf_counter()
    backend.configure_process(gpu, threads)
    backend.keras_ready()
    startup = time.perf_counter() - t0
    from sweep.data import Dataset
    from sweep.train import run_trial
    from sweep.train.pack import step_seconds

    todo = todo.assign(kind=[_kind(spec) for spec in todo["spec"]])
    picks = []
    for _, group in todo.sort_values("flops", kind="stable").groupby("kind", sort=False):
        picks += [group.iloc[0]] if len(group) == 1 else [group.iloc[0], group.iloc[-1]]
    measured: dict[tuple, list] = {}  # per kind: (FLOPs per image, fixed seconds, step seconds, seconds per forward image)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="sweep-probe-") as folder:
        for pick in picks:
            spec = pick["spec"]
            height, width, _ = pick["image_shape"]
            n_test = min(int(pick["n_test"]), PROBE_IMAGES)
            images = rng.integers(0, 256, (PROBE_IMAGES + n_test, height, width, 3), dtype=np.uint8)
            dataset = Dataset("probe", images[:PROBE_IMAGES], images[PROBE_IMAGES:], "synthetic (timing probe)")
            protocol = replace(spec.protocol, dataset="synthetic", epochs=1, train_fraction=1.0, train_limit=None, early_stopping_patience=None, reduce_lr_patience=None)
            trial = replace(spec, protocol=protocol, data_id=dataset.data_id)
            row = run_trial(trial, dataset, folder, checkpoint_every_s=math.inf)
            if row["status"] != "complete":
                raise RuntimeError(f"the timing probe's trial failed: {row.get('error')}")
            step = step_seconds(trial, dataset, 1, PROBE_STEPS)
            packed = step if pack == 1 else step_seconds(trial, dataset, pack, PROBE_STEPS)
            n_train, n_val = _split(protocol, PROBE_IMAGES)
            forward = step / protocol.batch_size / 3  # an image's forward pass: a third of its training step's
            steps = math.ceil(n_train / protocol.batch_size)
            evaluation = row.get("eval_seconds") or 0.0
            fixed = max(row["wall_seconds"] - evaluation - steps * step - n_val * forward, 0.0)
            evaluation *= max(int(pick["n_test"]) / n_test, 1.0)  # (rows of the planned test set)
            measured.setdefault(pick["kind"], []).append((float(pick["flops"]), fixed / pack + evaluation, packed, forward))

    def part(kind: tuple, i: int, x: float) -> float:
        points = measured[kind]
        flops = [m[0] for m in points]
        return float(np.interp(x, flops, [m[i] for m in points])) if len(set(flops)) > 1 else points[0][i]

    def seconds(row) -> float:
        kind, x, protocol = _kind(row["spec"]), float(row["flops"]), row["spec"].protocol
        steps = math.ceil(row["n_train"] / protocol.batch_size)
        return part(kind, 1, x) + protocol.epochs * (steps * part(kind, 2, x) + row["n_val"] * part(kind, 3, x))

    packing = f" in packs of {pack}" if pack > 1 else ""
    how = f"a {time.perf_counter() - t0:.0f} s timing probe of {len(picks)} of its models{packing} on this host, nothing stored"
    return seconds, startup, how


def _kind(spec) -> tuple:
    """What a trial's cost depends on besides its FLOPs: the task and the loss (Zhang et al.'s
    ab classification costs far more per pixel than its convolutions count), probed apart."""
    return (spec.protocol.task, spec.protocol.loss)


def print_plan(
    trials: list,
    data_dir: str | None,
    results: Path,
    workers: int,
    describe: str,
    skip: tuple[str, ...],
    *,
    plan=None,
    pack: int | str = 1,
    known: bool = True,
) -> None:
    """Print the plan of `trials` ((point, spec) pairs, one per key) and its estimated time:
    from this host's stored trials, or else a timing probe (`probe`) on `plan`'s worker
    layout and the pack size (`pack`: 'auto' packs only on a GPU, where its size is measured
    when the run starts, so the estimate is then for trials alone). `known` False: made
    without the data (offline), so which trials are stored is unknown."""
    from sweep.results import read_rows

    rows = read_rows(results) if known and (results / "rows").is_dir() else []
    stored = estimate_rate(rows)
    if plan is None:
        from sweep.run import plan_workers

        plan = plan_workers(workers)
    threads, gpu = plan.threads, plan.gpus[0] if plan.gpus else None
    if stored is None:  # the probe will run: this process set up as a worker, before any framework loads
        from sweep import backend

        backend.configure_process(gpu, threads)
    table = plan_table(trials, data_dir, {r["trial_key"]: r.get("status") for r in rows}, skip, known)
    shown = table.drop(columns=["work", "flops", "n_train", "n_val", "n_test", "spec", "image_shape"])
    formats = {"GFLOP/image": "{:.4f}".format, "params": lambda v: "" if v != v else f"{int(v):,}", "latent_size": "{:,}".format}
    print(shown.to_string(index=False, formatters={c: f for c, f in formats.items() if c in shown}))
    todo = table[table["status"] != "stored"]
    counted = f"{len(todo)} of {len(table)} trials to run" if known else f"{len(table)} trials (stored or to run: unknown without the data)"
    if todo["work"].isna().any():
        print(f"{counted}; no estimate: the FLOPs of some models could not be counted")
        return
    if todo.empty:
        print(f"{counted}; nothing was trained")
        return
    if stored is not None:
        rate, overhead, how = stored
        seconds = (todo["work"].sum() / rate + overhead * len(todo)) / max(workers, 1)
    else:
        size = 1 if pack == "auto" else int(pack)
        per_trial, startup, how = probe(todo, threads, gpu, size)
        seconds = startup + sum(per_trial(row) for _, row in todo.iterrows()) / max(workers, 1)
    print(f"{counted}, about {duration(seconds)} on {describe} ({how}); nothing was trained")
