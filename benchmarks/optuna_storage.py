"""Measure Optuna's embedded storages under several local worker processes.

    python benchmarks/optuna_storage.py [--trials 40] [--workers 1 2 4 8]

Each worker runs `study.optimize` on one shared study with an objective shaped like a sweep
trial (five suggested parameters, ten reported epochs). Printed per storage and worker
count: wall time, finished trials per second, and how many trials failed or went missing.
sweep uses the result to choose its default study file (see README, "Optuna studies").
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path


def storage_for(kind: str, path: Path, heartbeat: bool):
    import optuna

    if kind == "sqlite":
        kwargs = {"heartbeat_interval": 1, "grace_period": 5} if heartbeat else {}
        return optuna.storages.RDBStorage(
            f"sqlite:///{path}/study.db", engine_kwargs={"connect_args": {"timeout": 60}}, **kwargs
        )
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path / "study.log")))


def objective(trial):
    value = 0.0
    for name in ("a", "b", "c", "d"):
        value += trial.suggest_float(name, 0.0, 1.0)
    value *= trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    for epoch in range(10):
        trial.report(value / (epoch + 1), epoch)
    return value


def worker(args):
    kind, path, trials, heartbeat = args
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    errors = 0
    study = optuna.load_study(study_name="bench", storage=storage_for(kind, Path(path), heartbeat))
    for _ in range(trials):
        try:
            study.optimize(objective, n_trials=1)
        except Exception:  # a locked database surfaces here
            errors += 1
    return errors


def run(kind: str, workers: int, trials: int) -> tuple[float, int, int]:
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        optuna.create_study(study_name="bench", storage=storage_for(kind, Path(tmp), True))
        start = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            errors = sum(pool.map(worker, [(kind, tmp, trials, True)] * workers))
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name="bench", storage=storage_for(kind, Path(tmp), True))
        complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return wall, complete, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="trials per worker")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    print(f"{'storage':8} {'workers':>7} {'wall s':>7} {'trials/s':>8} {'complete':>8} {'errors':>6}")
    for kind in ("sqlite", "journal"):
        for workers in args.workers:
            wall, complete, errors = run(kind, workers, args.trials)
            print(f"{kind:8} {workers:7d} {wall:7.1f} {complete / wall:8.1f} {complete:5d}/{workers * args.trials:<3d} {errors:6d}")


if __name__ == "__main__":
    main()
