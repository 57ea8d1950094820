"""`python -m sweep.bench`: a sweep's throughput, the naive loop and the harness side by side.

    python -m sweep.bench --data-dir ../shared/data --epochs 1
    python -m sweep.bench --data-dir ../shared/data --epochs 10 --train-images 50000 --naive-epochs 1   # a GPU
    KERAS_BACKEND=jax python -m sweep.bench ...

The harness runs first, so on a one-GPU machine, where it runs in this process, its time
includes loading the framework and the pack-size probe has the device to itself. Both modes
do the same work: the same configurations, epochs, training images, batch size
and seed, a validation pass every epoch and a test evaluation at the end.

- naive: the loop the seed notebooks run, one configuration after another in this
  process: a fresh model, `model.fit` on in-memory numpy arrays with Keras' shuffling and
  `validation_data`, then `model.evaluate` on the test images. Its time starts after
  Keras has been imported.
- harness: what `python -m sweep.grid` runs with no options on this machine (its worker
  plan and `--pack auto`, unless --workers or --pack say otherwise; the store, every
  metric and artefact of a trial) into a throw-away results directory, timed from the
  start, worker start-up (and the pack-size probe on a GPU) included.

It prints, per mode, the wall time, training images per second, the FLOPs of the work
(counted from the layer shapes: a training step is taken as 3x the forward pass) and the
FLOP/s achieved; the harness line also says where its time went; then the device's
measured peak (a large matrix product, timed in the same run) and the fraction of it each
mode achieved; and last a line `speedup: X.XX` (naive time / harness time).

Ctrl-C or SIGTERM stops it as it stops a grid (`sweep.stop`: the harness's workers at their
epoch ends, or killed at the deadline); its throw-away results are removed, so there is
nothing to resume: it ends with one line saying so, and status 130 or 143.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from sweep import stop
from sweep.cli.common import add_common_arguments, check_positive, pack_size, protocol_overrides
from sweep.errors import SpecError, did_you_mean

MODES = ("naive", "harness")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.bench",
        description="Time the same sweep two ways, the naive one-model-at-a-time loop and the harness, and print the speedup.",
        epilog="Example: python -m sweep.bench --data-dir ../shared/data --epochs 1",
    )
    add_common_arguments(parser)
    bench = parser.add_argument_group("benchmark")
    bench.add_argument(
        "--train-images",
        type=int,
        help="train on this many images, repeating the data set's training images cyclically if it has fewer "
        "(all of them are used: the train fraction becomes 1 and validation images come on top)",
    )
    bench.add_argument("--pack", default="auto", metavar="K", help="harness: as python -m sweep.grid --pack (default: %(default)s, as there)")
    bench.add_argument("--modes", default="naive,harness", help="which modes to run, comma-separated (default: %(default)s)")
    bench.add_argument("--limit", type=int, help="only the first N configurations of the space")
    bench.add_argument("--naive-epochs", type=int, help="time the naive loop on this many epochs and scale its time to --epochs (said in its line)")
    bench.add_argument("--no-peak", action="store_true", help="skip timing the device's peak (a large matrix product)")
    return parser


@dataclass
class Work:
    """What one mode has to do, and its FLOPs."""

    trials: list  # TrialSpec
    n_train: int
    n_val: int
    n_test: int
    epochs: int
    flops: float  # training (3x forward per image) plus validation and test forward passes

    @property
    def images(self) -> int:
        return self.n_train * self.epochs * len(self.trials)


def plan_work(trials, dataset, epochs: int) -> Work:
    from sweep.train import splits_for

    splits = splits_for(dataset, trials[0].protocol)
    n_train, n_val, n_test = len(splits.train), len(splits.val), len(splits.test)
    flops = 0.0
    for spec in trials:
        forward = spec.forward_flops(splits.train.shape[1:])
        flops += forward * (3 * n_train * epochs + n_val * epochs + n_test)
    return Work(list(trials), n_train, n_val, n_test, epochs, flops)


def run_naive(work: Work, dataset) -> tuple[float, float]:
    """The seeds' loop; returns (wall seconds, mean test MSE)."""
    from sweep import backend

    backend.keras_ready()
    import keras
    import numpy as np
    from tqdm import tqdm

    from sweep.arch import build_autoencoder
    from sweep.train import task_arrays

    task, splits, arrays = task_arrays(dataset, work.trials[0].protocol)
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    x_test, y_test = arrays["x_test"], task.targets(splits.test)
    losses = []
    t0 = time.perf_counter()
    for spec in tqdm(work.trials, desc="naive", unit="trial", file=sys.stderr, dynamic_ncols=True):
        keras.utils.set_random_seed(spec.protocol.seed)
        model = build_autoencoder(spec.arch, x_train.shape[1:], task.output_channels)
        model.compile(optimizer=keras.optimizers.Adam(spec.protocol.learning_rate), loss="mean_squared_error")
        model.fit(
            x_train,
            y_train,
            batch_size=spec.protocol.batch_size,
            epochs=spec.protocol.epochs,
            shuffle=True,
            validation_data=(arrays["x_val"], arrays["y_val"]),
            verbose=0,
        )
        losses.append(model.evaluate(x_test, y_test, batch_size=spec.protocol.batch_size, verbose=0))
        keras.backend.clear_session()
    return time.perf_counter() - t0, float(np.mean(losses))


def run_harness(work: Work, args, results: Path) -> tuple[float, list[dict], int]:
    """`python -m sweep.grid`'s own execution with its defaults (worker plan, packing) unless
    the command line sets them; returns (wall seconds, rows, workers)."""
    from sweep.cli.common import run_with_progress
    from sweep.run import make_jobs, plan_workers, resolve_pack

    t0 = time.perf_counter()
    plan = plan_workers(args.workers, args.workers_per_gpu)
    pack, how = resolve_pack(args.pack, work.trials, plan, args.data_dir)
    print(f"harness: {plan.describe()}, {how}", file=sys.stderr)
    jobs = make_jobs(work.trials, pack, args.data_dir, results, {"driver": "bench"}, args.checkpoint_every)
    rows = run_with_progress(jobs, plan, results / ".workers", "harness")
    return time.perf_counter() - t0, rows, plan.workers


PEAK_SIZE = {"cpu": 2048, "gpu": 8192}  # the matrix product that measures the device's peak


def measure_peak(repeats: int = 5) -> tuple[float, str]:
    """The device's matrix-product rate on float32 arrays (FLOP/s, best of `repeats`) with
    all its cores, at the backend's default precision (on recent NVIDIA GPUs JAX multiplies
    float32 in TF32, as the models' convolutions do), timed in this process: the ceiling the
    other figures are a fraction of."""
    from sweep import backend

    backend.keras_ready()
    import keras
    import numpy as np

    n = PEAK_SIZE["cpu" if backend.device_description() == "cpu" else "gpu"]
    a = keras.ops.convert_to_tensor(np.random.default_rng(0).random((n, n), dtype=np.float32))
    keras.ops.convert_to_numpy(keras.ops.sum(keras.ops.matmul(a, a)))  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.sum(keras.ops.matmul(a, a)))
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best, f"{n}x{n} float32 matrix product, best of {repeats}"


def _si(value: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} "


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_positive(args, "workers", "workers_per_gpu", "epochs", "train_images", "limit", "naive_epochs")
    pack_size(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise SpecError("--modes: " + did_you_mean("mode", unknown[0] if unknown else args.modes, MODES))

    from sweep.data import TRAIN_IMAGES_ENV, dataset_for
    from sweep.run import grid_trials, unique_trials
    from sweep.space import load_space

    space = load_space(args.space).with_protocol(from_flags=True, **protocol_overrides(args))
    if args.train_images:
        val = space.protocol.val_fraction
        os.environ[TRAIN_IMAGES_ENV] = str(math.ceil(args.train_images / (1 - val)))  # workers inherit it
        space = space.with_protocol(train_fraction=1.0)
    space.require_grid()
    trials = [spec for _, spec in unique_trials(grid_trials(space, args.data_dir))][: args.limit]
    naive_recipe = {"loss": "mse", "optimizer": "adam", "early_stopping_patience": None, "reduce_lr_patience": None,
                    "augment_flip": False, "augment_rotation": 0.0, "precision": "float32"}  # fmt: skip
    differing = sorted({k for s in trials for k, v in naive_recipe.items() if getattr(s.protocol, k) != v})
    if "naive" in modes and (differing or len({s.protocol.task for s in trials}) != 1):
        raise SpecError(
            f"{space.path}: protocol: the naive loop trains with Adam on MSE, without early stopping, learning-rate "
            f"plateaus, augmentation or mixed precision, on one task; this space sets {', '.join(differing) or 'several tasks'}"
        )
    dataset = dataset_for(trials[0].protocol, args.data_dir)
    work = plan_work(trials, dataset, trials[0].protocol.epochs)
    print(
        f"sweep.bench: {len(trials)} configurations of {space.path}, {work.epochs} epoch(s) x {work.n_train} training images "
        f"(+ {work.n_val} validation, {work.n_test} test), batch {trials[0].protocol.batch_size}, seed {trials[0].protocol.seed}; "
        f"{_si(work.flops)}FLOPs of work; {machine()}; Keras backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}",
    )
    times = {}
    try:
        measure(args, modes, work, dataset, trials, times)
        if not args.no_peak:
            peak, how = measure_peak()
            shares = ", ".join(f"{mode} {work.flops / seconds / peak:.1%}" for mode, seconds in times.items())
            print(f"peak     {_si(peak)}FLOP/s ({how}, all cores of this device); achieved: {shares}")
    except stop.Interrupted as err:  # (the harness's workers are gone by then; the naive loop and the peak run here)
        err.message = f"interrupted by {stop.signal_name(err.signum)}: the benchmark stopped, its throw-away results are removed; nothing to resume"
        raise
    if len(times) == 2:
        print(f"speedup: {times['naive'] / times['harness']:.2f}")
    return 0


def measure(args, modes: list[str], work: Work, dataset, trials: list, times: dict[str, float]) -> None:
    """Run and report each mode of `modes`, in a throw-away results folder; `times` gets
    each mode's seconds."""
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        if "harness" in modes:
            seconds, rows, workers = run_harness(work, args, Path(tmp))
            times["harness"] = seconds
            done = [r for r in rows if r.get("status") == "complete"]
            if len(done) != len(trials):
                raise SpecError(f"harness: only {len(done)} of {len(trials)} trials completed; see {tmp}")
            mse = sum(r["test_mse"] for r in done) / len(done)
            note = f"mean test MSE {mse:.5f}; {time_shares(done, workers, seconds)}"
            _report("harness", seconds, work, note)
        if "naive" in modes:
            naive_epochs = min(args.naive_epochs or work.epochs, work.epochs)
            scaled = [replace(s, protocol=replace(s.protocol, epochs=naive_epochs)) for s in trials]
            seconds, mse = run_naive(plan_work(scaled, dataset, naive_epochs), dataset)
            seconds *= work.epochs / naive_epochs
            times["naive"] = seconds
            scaling = f"; timed on {naive_epochs} epoch(s), time x{work.epochs / naive_epochs:g}" if naive_epochs != work.epochs else ""
            _report("naive", seconds, work, f"mean test MSE {mse:.5f}{scaling}")


def time_shares(rows: list[dict], workers: int, seconds: float) -> str:
    """Where the workers' time went, from the rows: training steps, evaluation and
    artefacts, the rest of each trial (framework start-up, building, compiling, cleaning
    up), and what no trial accounts for (process start-up, scheduling, idle workers)."""
    capacity = workers * seconds
    train = sum(r["train_seconds"] for r in rows)  # (a packed member's times are its share of the pack's)
    evaluate = sum(r.get("eval_seconds", 0.0) for r in rows)
    trial = sum(r["wall_seconds"] for r in rows)
    shares = {
        "training": train,
        "evaluation and artefacts": evaluate,
        "start-up, building and clean-up in trials": trial - train - evaluate,
        "outside trials": capacity - trial,
    }
    return f"of {workers} worker(s) x {seconds:.1f} s: " + ", ".join(f"{k} {v / capacity:.0%}" for k, v in shares.items())


def _report(mode: str, seconds: float, work: Work, note: str) -> None:
    print(
        f"{mode:8s} {seconds:8.1f} s  {work.images / seconds:9.0f} images/s  {_si(work.flops)}FLOPs  "
        f"{_si(work.flops / seconds)}FLOP/s  ({note})",
        flush=True,
    )
