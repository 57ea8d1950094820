"""What the command-line drivers share: common options, the error rule, run records.

The error rule: a `SweepError` (bad input, missing data, unusable results directory) is
printed as one line on stderr and the process exits with code 2; `--debug` shows the
traceback instead. A stop signal (Ctrl-C, SIGTERM) stops the run and every worker
(`sweep.stop`) and is one line too, saying what is stored and how to resume; the exit
status is 130 for SIGINT, 143 for SIGTERM. Nothing here imports Keras, so `--help` answers
at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from sweep import stop
from sweep.data import DATASETS
from sweep.errors import SpecError, SweepError, must_be
from sweep.files import atomic_write

__all__ = [
    "DEFAULT_SPACE",
    "EXIT_BAD_INPUT",
    "HAND_BACK_S",
    "add_common_arguments",
    "check_launch",
    "check_positive",
    "code_version",
    "duration",
    "eta",
    "interrupted_line",
    "one_line",
    "protocol_overrides",
    "run_main",
    "run_with_progress",
    "workers_folder",
    "write_run_record",
]

EXIT_BAD_INPUT = 2
HAND_BACK_S = 4.0  # at a stop's deadline, how long a shared run may take to hand its trials back before it ends
DEFAULT_SPACE = "search_spaces/seed002_grid.yaml"
QUICK = {"epochs": 1, "train_limit": 256}  # --quick: a smoke run that finishes in about a minute


def add_common_arguments(parser: argparse.ArgumentParser, default_space: str = DEFAULT_SPACE) -> None:
    data = parser.add_argument_group("data and protocol (override the search-space file)")
    data.add_argument("--space", default=default_space, help="search-space YAML file (default: %(default)s)")
    data.add_argument("--dataset", choices=DATASETS, help="dataset (default: the file's)")
    data.add_argument(
        "--data-dir",
        help="folder holding the official python-format data (cifar-10-batches-py/, cifar-100-python/), "
        "or the JPEG/PNG images of --dataset folder; without it CIFAR is downloaded through Keras' cache",
    )
    data.add_argument("--image-size", type=int, help="resize images to this square size (needed by --dataset folder)")
    data.add_argument("--epochs", type=int, help="training epochs per trial")
    data.add_argument("--train-fraction", type=float, help="fraction of the training images to use, in (0, 1]")
    data.add_argument("--seed", type=int, help="training seed")
    data.add_argument("--quick", action="store_true", help="smoke run: 1 epoch on at most 256 training images")

    run = parser.add_argument_group("where and how to run")
    run.add_argument("--results", default="results", help="results directory (default: %(default)s)")
    run.add_argument("--workers", type=int, help="worker processes (default: one per GPU, else one single-threaded worker per core)")
    run.add_argument("--workers-per-gpu", type=int, default=1, help="pack several trials on each GPU (default: 1)")
    run.add_argument(
        "--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
        help="checkpoint a training trial at the end of an epoch at most this often, so a crash costs at most "
        "this much work (default: %(default)s; 0: every epoch)",
    )  # fmt: skip
    run.add_argument(
        "--artifacts", metavar="DIR_OR_URL",
        help="also keep every trial's model, pictures, history and checkpoints in this shared place: a folder every "
        "machine mounts, or s3://bucket/prefix; a trial retried on another machine resumes from its checkpoint there",
    )  # fmt: skip
    run.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")

    study = parser.add_argument_group("Optuna study (several machines share one through --storage)")
    study.add_argument(
        "--storage",
        help="database URL, e.g. postgresql://user@host/db, shared by every machine running the same command: it "
        "holds the Optuna study and a table of every machine's rows (load_results(URL)); the Optuna driver "
        "defaults to sqlite:///RESULTS/optuna.db",
    )
    study.add_argument("--study", help="study name (default: derived from the space, protocol and data)")
    study.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between a running trial's heartbeats (default: %(default)s)")
    study.add_argument(
        "--grace-period", type=int, default=120,
        help="seconds without a heartbeat after which a trial counts as dead and is retried (default: %(default)s)",
    )  # fmt: skip
    study.add_argument(
        "--launch", choices=("slurm",),
        help="submit the workers as a Slurm job array instead of running them here: --workers N array tasks, one "
        "worker each (needs --storage and --artifacts); this command then follows the study and Ctrl-C detaches",
    )  # fmt: skip
    study.add_argument(
        "--slurm", nargs="+", action="extend", metavar="KEY=VALUE",
        help="with --launch slurm: submitit's Slurm parameters, e.g. timeout_min=120 partition=gpu gpus_per_node=1 "
        "cpus_per_task=4 mem_gb=16 (the slurm_ prefix may be left out; default timeout_min=60)",
    )  # fmt: skip
    study.add_argument("--detach", action="store_true", help="with --launch slurm: submit and return; follow later with python -m sweep.status")
    study.add_argument(
        "--storage-timeout", type=float, default=300.0, metavar="SECONDS",
        help="while the --storage database does not answer, retry for this long, then stop (finished rows stay in "
        "--results and are pushed on the next start; default: %(default)s)",
    )  # fmt: skip


def protocol_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {"dataset": args.dataset, "epochs": args.epochs, "train_fraction": args.train_fraction, "seed": args.seed, "image_size": args.image_size}
    if args.quick:
        for key, value in QUICK.items():
            overrides[key] = overrides.get(key) or value
    return overrides


def pack_size(args: argparse.Namespace) -> None:
    """`--pack`: an int >= 1, or 'auto' (kept as the string, for `sweep.run.resolve_pack`)."""
    value = args.pack
    if value == "auto":
        return
    try:
        args.pack = int(value)
    except ValueError:
        raise SweepError(must_be("--pack", None, "an int >= 1 or 'auto'", value)) from None
    if args.pack < 1:
        raise SweepError(must_be("--pack", None, "an int >= 1 or 'auto'", args.pack))


def check_launch(args: argparse.Namespace) -> None:
    """--slurm and --detach mean something only with --launch."""
    for flag, given in (("--slurm", args.slurm), ("--detach", args.detach)):
        if given and not args.launch:
            raise SpecError(f"{flag} goes with --launch slurm (without it this command trains here)")


def workers_folder(results: Path) -> Path:
    """Where a run's workers keep their stop files: RESULTS/.workers, or a folder of its own
    for each task of a Slurm array (the tasks share RESULTS, maybe on several nodes)."""
    task = os.environ.get("SWEEP_SLURM_TASK")
    return results / ".workers" / task.replace("/", "_") if task else results / ".workers"


def check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise SweepError(must_be(f"--{name.replace('_', '-')}", None, ">= 1", value))


def code_version() -> str | None:
    """`git describe` of the sweep checkout, when there is one."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_run_record(results_dir: Path, driver: str, record: dict[str, Any]) -> Path:
    """Keep the command line and configuration of this invocation next to its results, with
    every URL's password masked (`sweep.results.shared.mask_url`): in the command line
    (`--storage URL`, `--storage=URL`, any argument that is a URL) and in every value of
    `record`, so no run record holds a secret."""
    from sweep.results.shared import mask_args, mask_text

    def masked(value: Any) -> Any:
        if isinstance(value, str):
            return mask_text(value)
        if isinstance(value, dict):
            return {key: masked(item) for key, item in value.items()}
        if isinstance(value, list):
            return [masked(item) for item in value]
        return value

    runs = results_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = runs / f"{stamp}-{driver}-{os.getpid()}.json"
    plain = json.loads(json.dumps({"driver": driver, **record}, default=str))  # (objects as the record shows them)
    return atomic_write(path, json.dumps({**masked(plain), "argv": mask_args(sys.argv)}, indent=1, sort_keys=True))


ARCH_FACTORS = ("fewer_layers", "channel_factor", "kernel_size", "compression_factor", "arch", "encoding")  # named by the line's architecture


def one_line(row: dict[str, Any], factors: tuple[str, ...] = ()) -> str:
    """A finished trial as one progress line; `factors` are the space's factors, and those
    the architecture part does not name are shown as `name=value` (a sampled learning rate)."""
    if row.get("family") == "conv_ae":
        layers = "3conv" if row.get("fewer_layers") else "5conv"
        arch = f"{layers} ch{row.get('channel_factor')} k{row.get('kernel_size')} f{row.get('compression_factor')}"
    else:
        arch = str(row.get("preset") or row.get("family", ""))
    if row.get("task") == "colorize":
        arch = f"{arch} {row.get('encoding')}"
    number = f" #{row['optuna_trial']}" if row.get("optuna_trial") is not None else ""
    for name in factors:
        if name not in ARCH_FACTORS and row.get(name) is not None:
            value = row[name]
            arch += f" {name}={value:.3g}" if isinstance(value, float) else f" {name}={value}"
    head = f"  {row.get('trial_key')}{number} {arch}"
    if row.get("status") == "failed":
        return f"{head}: FAILED {row.get('error')}"
    status = " (pruned)" if row.get("status") == "pruned" else ""
    colour = f", ab RMSE {row['test_ab_rmse']:.2f}" if row.get("test_ab_rmse") is not None else ""
    return (
        f"{head}: latent {row.get('latent_size')}, val MSE {row.get('val_mse') or float('nan'):.5f}, "
        f"test MSE {row.get('test_mse') or float('nan'):.5f}, PSNR {row.get('test_psnr') or float('nan'):.2f} dB{colour}, "
        f"{row.get('wall_seconds') or 0:.1f}s{status}"
    )


BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"  # one ETA: ours, in the postfix (tqdm's assumes equal trials)
REFRESH_S = 1.0  # how often the bar's postfix (ETA, running trials' epochs) is redrawn on a terminal
LOG_REFRESH_S = 30.0  # ... and in a log file, which gets a line each time


def eta(timed: list[tuple[float, float]], left: list[float | None], workers: int, elapsed: float, done: int) -> str | None:
    """The time still to go, or None before there is anything to go by. `timed` holds the
    (training FLOPs, seconds) of the finished trials and `left` the FLOPs of those still to
    run (None where unknown). With three finished trials of two sizes or more, a line fitted
    to their seconds against their FLOPs (a fixed cost per trial plus FLOPs at a rate)
    predicts each trial left, shared by the workers; else the run's pace so far (`elapsed`
    seconds for `done` trials) times the trials left."""
    import numpy as np

    if not left:
        return None
    if None not in left and len(timed) >= 3 and len({w for w, _ in timed}) >= 2:
        slope, fixed = np.polyfit([w for w, _ in timed], [s for _, s in timed], 1)
        if slope < 0:
            slope, fixed = 0.0, float(np.mean([s for _, s in timed]))
        return duration(sum(max(fixed + slope * w, 0.0) for w in left) / max(workers, 1))
    if done:
        return duration(elapsed / done * len(left))
    return None


def run_with_progress(
    jobs: list,
    plan,
    lock_dir: Path,
    desc: str,
    total: int | None = None,
    initial: int = 0,
    factors: tuple[str, ...] = (),
    work: dict[str, float] | None = None,
    on_row: Callable[[dict], Any] | None = None,
) -> list:
    """Run jobs on the plan's workers with a progress bar; return the rows (each printed as
    `one_line(row, factors)`). While trials train, the bar shows one ETA (`eta`: from each
    trial's training FLOPs, `work` by trial key, where given; else from the pace so far) and
    each running trial's epoch; at the end, neither. `on_row` is called with each row as it
    arrives.

    A stop signal (`sweep.stop`) stops the workers at their epoch ends (or kills them at the
    deadline); once none is left this raises `stop.Interrupted`, whose message says what is
    stored and how to resume (`interrupted_line`)."""
    import threading
    import time

    from tqdm import tqdm

    from sweep import progress
    from sweep.run import run_jobs

    rows = []
    total = total or sum(getattr(job, "size", 1) for job in jobs)
    folder = Path(lock_dir) / "progress"
    for stale in folder.glob("*.json"):
        stale.unlink(missing_ok=True)
    os.environ[progress.ENV] = str(folder)  # workers inherit it
    timed: list[tuple[float, float]] = []  # (training FLOPs, seconds) of each finished trial
    left = dict(work or {})
    finished_watching = threading.Event()
    started = time.monotonic()
    done = 0  # trials finished in this run
    lock = threading.Lock()

    def last_words(signum: int) -> str:  # if this process must end before run_jobs returns (sweep.stop.exit_now)
        return interrupted_line(signum, len(rows), killed=1 if plan.workers == 1 else 0, forced=stop.forced())

    with stop.deferred(last_words), tqdm(
        total=total, initial=initial, unit="trial", desc=desc, dynamic_ncols=True, file=sys.stderr, bar_format=BAR_FORMAT
    ) as bar:  # fmt: skip
        interval = REFRESH_S if sys.stderr.isatty() else LOG_REFRESH_S  # a log file gets a line every 30 s, not every second

        def redraw(refresh: bool = True) -> None:
            with lock:
                to_go = list(left.values()) if work else [None] * max(total - initial - done, 0)
                estimate = eta(timed, to_go, plan.workers, time.monotonic() - started, done)
                parts = [f"{f['key'][:6]} epoch {f['epoch']}/{f['epochs']}" for f in progress.running(folder)]
                if estimate:
                    parts.insert(0, f"ETA {estimate}")
                bar.set_postfix_str("; ".join(parts), refresh=refresh)

        def watch() -> None:
            while not finished_watching.wait(interval):
                redraw()

        watcher = threading.Thread(target=watch, name="progress", daemon=True)
        watcher.start()
        restart = lambda n: bar.write(f"a worker died; {n} job(s) handed out again", file=sys.stderr)  # noqa: E731
        try:
            for result in run_jobs(jobs, plan, lock_dir, on_restart=restart):
                finished = result if isinstance(result, list) else [result]  # a pack returns its members' rows
                with lock:
                    done += len(finished)
                    for row in finished:
                        if row is not None and row.get("trial_key") in left:
                            flops = left.pop(row["trial_key"])
                            if row.get("wall_seconds"):
                                timed.append((flops, float(row["wall_seconds"])))
                redraw(refresh=False)  # (the finished trials' epochs gone from it)
                bar.update(len(finished))
                for row in finished:
                    if row is not None:
                        rows.append(row)
                        bar.write(one_line(row, factors), file=sys.stderr)
                        if on_row is not None:
                            on_row(row)
            signum = stop.requested()
            if signum is not None:  # (it came as the last jobs finished)
                raise stop.Interrupted(signum)
        except stop.Interrupted as err:
            if err.message is None:
                err.message = interrupted_line(err.signum, len(rows), err.stopped, err.restart, err.killed, err.forced)
            raise
        finally:
            finished_watching.set()
            watcher.join()
            os.environ.pop(progress.ENV, None)
            bar.set_postfix_str("", refresh=False)  # the bar's last state: no ETA, no epochs of trials long finished
    return rows


def interrupted_line(signum: int, stored: int, stopped: int = 0, restart: int = 0, killed: int = 0, forced: bool = False) -> str:
    """The one line a run stopped by signal `signum` ends with: `stored` trials finished in it
    (their rows are stored), `stopped` stopped at an epoch end, `restart` packed trials stopped
    (no checkpoint), `killed` killed at the deadline (or at once: `forced`)."""
    parts = [f"{stored} trial(s) finished in this run and are stored"]
    if stopped:
        parts.append(f"{stopped} stopped at the end of an epoch and resume from their checkpoints")
    if restart:
        parts.append(f"{restart} stopped in packs, which keep no checkpoint, and start again")
    if killed:
        when = "at once (second signal)" if forced else f"at the {stop.DEADLINE_S:g} s deadline"
        parts.append(f"{killed} killed {when}, which resume from their last checkpoints")
    return f"interrupted by {stop.signal_name(signum)}: {', '.join(parts)}; run the same command again to resume"


def duration(seconds: float) -> str:
    """9s, 4m12s, 3h05m, 1d03h."""
    s = max(int(round(seconds)), 0)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d{h:02d}h" if d else f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Call `main` under the error rule and exit with its status. A command's entry point:
    it installs the driver's signal handlers for the rest of the process (`sweep.stop`); a
    stop ends it with one line and 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    stop.install_handlers()
    try:
        status = main(argv)
    except SweepError as err:
        if debug:
            raise
        from sweep.results.shared import mask_text

        print(f"error: {mask_text(str(err))}", file=sys.stderr)  # (a URL's password never reaches the terminal)
        sys.exit(EXIT_BAD_INPUT)
    except stop.Interrupted as err:
        print(str(err), file=sys.stderr, flush=True)
        stop.said()
        sys.exit(err.exit_status)
    except KeyboardInterrupt:
        print("interrupted: completed trials are stored; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(status)
