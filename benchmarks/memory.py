"""Memory and trial time of one worker running many small trials in a row.

    python benchmarks/memory.py --trials 100 [--dataset synthetic] [--data-dir DIR]

Runs the trials in this process exactly as a sweep worker does (build, fit, evaluate,
save artefacts, clear the session), cycling through the seed-002 grid with a new seed per
round so no trial repeats, and prints the resident memory and wall time after each trial,
then a summary: memory after the warm-up trials, at the end, and the growth per trial from
a least-squares line over the trials after warm-up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data-dir")
    parser.add_argument("--warmup", type=int, default=5, help="trials before the memory baseline is taken")
    args = parser.parse_args()

    import numpy as np

    from sweep import backend

    backend.configure_process(None, threads=None)
    from sweep.data import load_dataset
    from sweep.spec import TrainingProtocol, TrialSpec
    from sweep.space import load_space
    from sweep.train import run_trial

    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "seed002_grid.yaml")
    points = space.grid_points()
    dataset = load_dataset(args.dataset, args.data_dir)
    memory, seconds = [], []
    with tempfile.TemporaryDirectory() as results:
        for i in range(args.trials):
            point = points[i % len(points)]
            protocol = TrainingProtocol(dataset=args.dataset, epochs=1, train_fraction=1.0, train_limit=64, batch_size=32, seed=i // len(points))
            spec = TrialSpec(space.spec(point, dataset.data_id).arch, protocol, dataset.data_id)
            start = time.perf_counter()
            row = run_trial(spec, dataset, results)
            seconds.append(time.perf_counter() - start)
            memory.append(rss_mib())
            assert row["status"] == "complete", row["error"]
            print(f"trial {i + 1:3d}: {memory[-1]:7.1f} MiB  {seconds[-1]:5.2f} s", flush=True)
    after = np.arange(args.warmup, args.trials)
    slope = np.polyfit(after, np.array(memory)[after], 1)[0] if len(after) > 1 else float("nan")
    print(
        f"\n{args.trials} trials: RSS after {args.warmup} warm-up trials {memory[args.warmup - 1]:.1f} MiB, "
        f"at the end {memory[-1]:.1f} MiB (growth {memory[-1] - memory[args.warmup - 1]:+.1f} MiB, "
        f"{slope * 1024:+.1f} KiB per trial by least squares); trial time median "
        f"{np.median(seconds[args.warmup:]):.2f} s, first 10 after warm-up {np.median(seconds[args.warmup:args.warmup + 10]):.2f} s, "
        f"last 10 {np.median(seconds[-10:]):.2f} s"
    )


if __name__ == "__main__":
    main()
