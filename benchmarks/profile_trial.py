"""Where a trial's fixed costs go: `cProfile` over consecutive `sweep.train.run_trial` calls in
one process (as a single-threaded worker runs them), after one warm-up trial.

    python benchmarks/profile_trial.py --data-dir ../shared/data --trials 6
    python benchmarks/profile_trial.py --data-dir ../shared/data --trials 6 --epochs 10 --train-fraction 1.0
    python benchmarks/profile_trial.py --data-dir ../shared/data --trials 8 --repeats 4 [--no-reuse]

Prints the seconds per trial spent in each part of a trial (cumulative time of the
functions that make up `run_trial`), then the whole trial. The profiler inflates
Python-heavy parts; compare proportions, and figures from one run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# What a trial does, by the functions that do it: (label, module path suffix, function name).
PARTS = (
    ("build the model and compile", "train/step.py", "build_model"),
    ("build the model and compile", "train/step.py", "compile_model"),
    ("fit: trace and run the training steps", "train/step.py", "fit"),
    ("  of which: validation loss after each epoch", "train/step.py", "validation_loss"),
    ("predictions on validation and test", "train/evaluate.py", "predict_rgb"),
    ("image metrics (SSIM, MSE, PSNR)", "sweep/metrics.py", "image_metrics"),
    ("  of which: SSIM", "sweep/metrics.py", "ssim"),
    ("save the model (.keras)", "keras/src/saving/saving_api.py", "save_model"),
    ("gallery PNG", "train/evaluate.py", "save_gallery"),
    ("clean-up (backend.clear)", "sweep/backend.py", "clear"),
    ("whole trial", "train/trial.py", "run_trial"),
)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/profile_trial.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/ (default: the synthetic set)")
    parser.add_argument("--space", default="search_spaces/seed002_grid.yaml")
    parser.add_argument("--trials", type=int, default=6, help="trials profiled after the warm-up (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-fraction", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads, as a worker has (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="seeds per configuration, run one after another, as --repeats does (default: %(default)s)")
    parser.add_argument("--no-reuse", action="store_true", help="build and trace every trial's model anew (no reuse of a kept compiled model)")
    args = parser.parse_args()

    from sweep import backend

    backend.configure_process(None, args.threads)
    from sweep.data import dataset_for
    from sweep.run import grid_trials, unique_trials
    from sweep.space import load_space
    from sweep.train import run_trial
    from sweep.train.step import forget_models

    overrides = {"epochs": args.epochs, **({"train_fraction": args.train_fraction} if args.train_fraction else {})}
    if args.data_dir is None:
        overrides["dataset"] = "synthetic"
    space = load_space(args.space).with_protocol(**overrides)
    trials = [spec for _, spec in unique_trials(grid_trials(space.with_repeats(args.repeats), args.data_dir))]
    dataset = dataset_for(trials[0].protocol, args.data_dir)
    with tempfile.TemporaryDirectory() as results:
        run_trial(trials[0], dataset, results, checkpoint_every_s=float("inf"))  # warm-up: imports, data, caches
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        for spec in trials[args.repeats : args.repeats + args.trials]:
            if args.no_reuse:
                forget_models()
            row = run_trial(spec, dataset, results, checkpoint_every_s=float("inf"))
            assert row["status"] == "complete", row.get("error")
        profiler.disable()
        wall = (time.perf_counter() - t0) / args.trials
    stats = pstats.Stats(profiler).stats
    totals: dict[str, float] = {}
    for (path, _, name), (_, _, _, cumulative, _) in stats.items():
        for label, suffix, function in PARTS:
            if name == function and path.replace(os.sep, "/").endswith(suffix):
                totals[label] = totals.get(label, 0.0) + cumulative
    print(f"{args.trials} trials of {args.space}, {args.epochs} epoch(s), {args.repeats} seed(s) per configuration, "
          f"{'no reuse, ' if args.no_reuse else ''}{args.threads} thread(s); seconds per trial (profiled):")
    for label in dict.fromkeys(label for label, *_ in PARTS):
        print(f"  {label:45s} {totals.get(label, 0.0) / args.trials:6.3f}")
    print(f"  {'wall time per trial (profiled)':45s} {wall:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
