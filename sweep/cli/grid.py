"""`python -m sweep.grid`: train every point of a search space, resumably.

    python -m sweep.grid                                   # the 36-model grid of seed 002
    python -m sweep.grid --data-dir ../data --epochs 1     # on local CIFAR-10 files
    python -m sweep.grid --quick --dataset synthetic       # a one-minute offline smoke run
    python -m sweep.grid --storage postgresql://host/db    # one grid shared by many machines
    python -m sweep.grid --storage postgresql://host/db --artifacts /shared/artifacts
    python -m sweep.grid --pack 6                          # train 6 small models per step (default: auto)

Trials already complete in the results directory are skipped, so running the same
command again resumes a sweep that crashed or was interrupted. With `--storage`, the grid
points are enqueued once into an Optuna study and every machine running the command takes
waiting points until none is left, so each point runs exactly once; every row goes to the
database's results table as well (`sweep.results.load_results(URL)` reads the whole
cluster's), and `--artifacts` keeps models and checkpoints where every machine finds them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from sweep.cli.common import (
    HAND_BACK_S,
    add_common_arguments,
    check_launch,
    check_positive,
    code_version,
    pack_size,
    protocol_overrides,
    run_with_progress,
    workers_folder,
    write_run_record,
)
from sweep.errors import SpecError
from sweep.results.schema import varied_text

SUMMARY_FORMATS = {"test_mse": "{:.5f}", "test_psnr": "{:.2f}", "test_ssim": "{:.4f}", "test_ab_rmse": "{:.2f}"}  # one precision per column
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
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print the plan (every trial's factors, latent size, parameters, FLOPs, stored or to run) and an "
        "estimated time; train nothing",
    )  # fmt: skip
    parser.add_argument(
        "--pack",
        default="auto",
        metavar="K",
        help="train up to K trials of one protocol together in one compiled step (packs balanced by FLOPs; "
        "each member's results are its own); 'auto': measure the fastest size on the GPU, 1 without one. "
        "A pack is not checkpointed mid-training (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="train each configuration N times, with seeds SEED, SEED+1, ... (analysis merges them into one "
        "configuration with a mean and spread; default: %(default)s)",
    )
    return parser


def summarize(frame, reference_key: str | None) -> str:
    """First (the reference model), best and worst by test MSE, and the latent-size correlation."""
    import pandas as pd

    from sweep.analysis import latent_correlation

    # One run of one space is comparable by construction, also where it reused stored rows
    # whose recorded protocol differs in a field that trains the same (a patience of
    # epochs - 1 against none): the report, not this summary, splits a folder into groups.
    done = frame[frame["status"] == "complete"].assign(group="this run")
    counts = frame["status"].value_counts()
    lines = [f"{len(frame)} trials: {counts.get('complete', 0)} complete, {counts.get('failed', 0)} failed, {counts.get('pruned', 0)} pruned"]
    for _, row in frame[frame["status"] == "failed"].iterrows():
        lines.append(f"  failed {row['trial_key']}: {row['error']}")
    if done.empty:
        return "\n".join(lines)
    picks = []
    if reference_key is not None and reference_key in set(done["trial_key"]):
        picks.append(("first", done[done["trial_key"] == reference_key].iloc[0]))
    picks.append(("best", done.loc[done["test_mse"].idxmin()]))
    picks.append(("worst", done.loc[done["test_mse"].idxmax()]))
    columns = list(SUMMARY_COLUMNS)
    if (done["family"] != "conv_ae").any():  # the seed-002 factors mean nothing to other families
        columns = ["preset", "family", *columns[4:]]
    if (done["task"] == "colorize").any():
        columns = [*columns[: columns.index("latent_size")], "encoding", *columns[columns.index("latent_size") :], "test_ab_rmse"]
    table = pd.DataFrame([row[["trial_key", *columns]] for _, row in picks], index=[name for name, _ in picks])
    lines.append(table.to_string(formatters={c: f.format for c, f in SUMMARY_FORMATS.items() if c in table.columns}))
    if done["latent_size"].nunique() > 1 and len(done) > 2:
        rho = latent_correlation(done, "spearman", "test_mse")  # over configurations: replicates count once
        ci = f"95% CI {rho.ci_low:.3f} to {rho.ci_high:.3f}, " if math.isfinite(rho.ci_low) else ""
        lines.append(f"Spearman correlation of latent size with test MSE: rho = {rho.estimate:.3f} ({ci}p = {rho.p_value:.2g}, n = {rho.n} configurations)")
    colorized = done[(done["task"] == "colorize") & done["test_gray_psnr"].notna()]
    if not colorized.empty:
        lines.append(colorization_table(colorized))
    return "\n".join(lines)


def colorization_table(done) -> str:
    """Test PSNR (dB) / ab RMSE of every architecture x encoding, under the grayscale baseline's."""
    from sweep.encodings import ENCODINGS

    arch = done["preset"].fillna(done["family"] + "*")
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


def rekeyed_trials(results: Path, todo: set[str], statuses: tuple[str, ...]) -> int:
    """How many of the `todo` keys a stored row holds under another key: its spec, parsed
    again, is keyed otherwise by this version (README, Upgrading), so it trains again."""
    import json

    from sweep.results import read_rows
    from sweep.spec import TrialSpec

    again = set()
    for row in read_rows(results):
        if row.get("status") not in statuses or not row.get("spec"):
            continue
        try:
            key = TrialSpec.from_dict(json.loads(row["spec"]) if isinstance(row["spec"], str) else row["spec"]).key
        except (SpecError, KeyError, TypeError, ValueError):
            continue  # (a row no longer valid as a spec is not this grid's)
        if key != row.get("trial_key") and key in todo:
            again.add(key)
    return len(again)


def run_local(args, space, trials, plan, results: Path) -> str:
    """Run the grid's trials not yet stored here; return the name of the study in
    RESULTS/optuna.db that mirrors its rows."""
    from sweep.results import completed_keys, load_results
    from sweep.run import make_jobs, resolve_pack, unique_trials
    from sweep.run.record import GridRecord

    specs = [spec for _, spec in unique_trials(trials)]
    keys = [spec.key for spec in specs]
    skip_statuses = ("complete",) if args.retry_failed else ("complete", "failed")
    done = completed_keys(results, statuses=skip_statuses) & set(keys)
    todo = [spec for spec in specs if spec.key not in done]
    rekeyed = rekeyed_trials(results, {spec.key for spec in todo}, skip_statuses)
    again = f" ({rekeyed} of them stored under a key of an earlier version: trained again, see the README's Upgrading)" if rekeyed else ""
    print(
        f"sweep.grid: {len(keys)} trials from {space.path}; {len(done)} already stored, {len(todo)} to run{again} "
        f"on {plan.describe()}; results in {results}",
        file=sys.stderr,
    )
    record = GridRecord(results, space, trials)  # for optuna-dashboard: rows mirrored as trials of a study
    if not todo:
        record.sync(load_results(results))
        return record.study_name
    pack, how = resolve_pack(args.pack, todo, plan, args.data_dir)
    print(f"sweep.grid: {how}", file=sys.stderr)
    write_run_record(results, "grid", {"space": space.path, "protocol": space.protocol.to_dict(), "trials": [s.key for s in todo], "plan": plan.__dict__, "repeats": args.repeats, "pack": pack})
    extra = {"driver": "grid", "space": space.name, "varied": varied_text(space.factors), "code_version": code_version()}
    from sweep.cli.plan import trial_work

    jobs = make_jobs(todo, pack, args.data_dir, results, extra, args.checkpoint_every, args.artifacts)
    work = {spec.key: trial_work(spec, args.data_dir) for spec in todo}
    work = work if None not in work.values() else None  # (an ETA by FLOPs needs every trial's)
    run_with_progress(jobs, plan, results / ".workers", "grid", factors=tuple(space.factors), work=work, on_row=record.add)
    record.sync(load_results(results))  # rows of earlier runs too
    return record.study_name


def open_shared(args, space, trials, results: Path):
    """The shared grid's study and queue, filled with its points (each added once, whoever
    fills first): (config, study, queue, unique trials, the sentence saying so)."""
    from sweep.results import RowStore, is_url
    from sweep.results.shared import mask_url
    from sweep.run import unique_trials
    from sweep.run.study import StudyConfig, open_study, study_name_for

    data_ids = [spec.data_id for _, spec in trials]
    config = StudyConfig(
        storage_url=args.storage,
        study_name=args.study or study_name_for("grid", space, data_ids, ("val_mse",), args.storage),  # (an earlier version's name found too)
        objectives=("val_mse",),
        sampler="random",  # never consulted: every trial is a grid point (PartialFixedSampler)
        pruner="none",  # a grid runs every point to the end
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
        storage_timeout=args.storage_timeout,
    )
    study = open_study(config)
    queue = config.queue()
    shared = args.storage if is_url(args.storage) else None  # a journal file has no results table
    keys = {spec.key for _, spec in trials}
    pushed = RowStore(str(results), shared, args.storage_timeout).push_missing(lambda row: row.get("trial_key") in keys)
    if pushed:
        print(f"sweep.grid: pushed {pushed} row(s) finished here while the database was away", file=sys.stderr)
    unique = unique_trials(trials)
    added = queue.fill([(point, spec.key) for point, spec in unique])
    retried = queue.retry_failed() if args.retry_failed else 0
    said = (
        f"{len(unique)} grid points of {space.path} in study {config.study_name!r} at {mask_url(config.storage_url)} "
        f"({added} queued now{f', {retried} failed queued again' if retried else ''})"
    )
    return config, study, queue, unique, said


def run_shared(args, space, trials, plan, results: Path) -> list[str]:
    """Share the grid with other machines: fill the study's queue (`sweep.run.queue`), take
    waiting points until none is left, and wait for points other machines are still running.
    Returns the end summary's lines about the grid's points (every point not complete named).

    Stopped by a signal, the driver hands back every point its run still holds (they wait
    again, no attempt used up) before it exits."""
    import uuid

    from sweep.results import is_url
    from sweep.results.shared import mask_url
    from sweep.run.study_job import OptunaTrialJob
    from sweep import stop
    from sweep.stop import Interrupted

    config, study, queue, unique, said = open_shared(args, space, trials, results)
    shared = args.storage if is_url(args.storage) else None  # a journal file has no results table
    size = len(unique)
    print(f"sweep.grid: {said}; {plan.describe()} here; results in {results}", file=sys.stderr)
    run = uuid.uuid4().hex
    write_run_record(results, "grid", {"space": space.path, "protocol": space.protocol.to_dict(), "storage": mask_url(args.storage), "study": config.study_name, "run": run})
    extra = {"driver": "grid", "space": space.name, "varied": varied_text(space.factors), "code_version": code_version()}
    job = OptunaTrialJob(
        config, space, args.data_dir, str(results), extra, args.checkpoint_every, enqueued_only=True, shared=shared, artifacts=args.artifacts, run=run
    )  # fmt: skip

    def hand_back() -> list | None:
        """What this run holds goes back to the queue (its workers are stopped)."""
        return queue.hand_back(study, run)

    announced = False
    try:
        with stop.hard_stop(lambda: stop.in_background(hand_back, timeout=HAND_BACK_S)):  # (at the deadline, bounded: before a trial in this process is abandoned)
            while True:
                queue.sweep(study)
                counts = queue.counts()
                if counts.get("waiting"):
                    done = counts.get("complete", 0) + counts.get("failed", 0) + counts.get("pruned", 0)
                    run_with_progress([job] * counts["waiting"], plan, workers_folder(results), "grid", total=size, initial=done, factors=tuple(space.factors))
                    continue
                if not counts.get("running"):
                    queue.sweep_unowned(study, at_once=True)  # (trials asked by workers killed before they held them)
                    break
                if not announced:
                    print(f"waiting for {counts['running']} grid point(s) running on other machines", file=sys.stderr)
                    announced = True
                time.sleep(max(1, min(args.heartbeat_interval, 10)))
    except Interrupted as stopped:
        import signal

        handed = hand_back()  # (its workers are stopped: what they still held)
        name = signal.Signals(stopped.signum).name
        if handed is None:
            stopped.message = (
                f"interrupted by {name}: the database did not answer, so the points this run held wait until the grace period "
                f"has passed; completed trials are stored; run the same command again to resume"
            )
        else:
            try:
                complete = str(sum(row.state == "complete" for row in queue.brief().rows()))
            except Exception:
                complete = "?"
            stopped.message = (
                f"interrupted by {name}: {complete} of {size} grid points are complete in the study; the points this run held "
                f"wait again ({len(handed)} handed back now, the others as their workers stopped; no retry used up); "
                f"run the same command again to resume"
            )
        raise
    return point_summary(queue, size)


def launch_shared(args, space, trials, results: Path, argv: list[str]) -> list[str] | None:
    """--launch slurm: fill the shared queue here, submit --workers array tasks that each run
    this command (one worker each, `sweep.cli.launch`), then follow the study until every point
    is complete or failed. Returns the end summary's lines; None when detached (--detach, or
    Ctrl-C on the follower: the tasks are Slurm's and run on)."""
    from sweep.results import is_url
    from sweep.results.shared import mask_url
    from sweep.cli import launch as slurm
    from sweep.stop import Interrupted

    if os.environ.get(slurm.TASK_ENV):
        raise SpecError(f"--launch: this is already task {os.environ[slurm.TASK_ENV]} of a Slurm array; a task does not launch another")
    if not args.storage or not is_url(args.storage):
        raise SpecError("--launch slurm: the array's tasks share the grid through a database: give --storage postgresql://user@host/db")
    if not args.artifacts:
        raise SpecError("--launch slurm: give --artifacts DIR (a folder every node mounts, or s3://...): trials resume on any node from their checkpoints there")
    tasks = args.workers or 1
    options = slurm.parse_options(args.slurm)
    folder = results / "slurm"
    executor = slurm.executor(folder, options)  # (its parameters checked before the queue is touched)
    config, study, queue, unique, said = open_shared(args, space, trials, results)
    size = len(unique)
    command = slurm.task_argv(argv, options)
    job_id, _ = slurm.submit(executor, "grid", command, tasks)
    write_run_record(results, "grid", {"space": space.path, "protocol": space.protocol.to_dict(), "storage": mask_url(args.storage),
                                       "study": config.study_name, "slurm_job": job_id, "slurm_tasks": tasks})  # fmt: skip
    print(f"sweep.grid: {said}; submitted Slurm job array {job_id}: {tasks} task(s), each running this command with "
          f"{' '.join(command[command.index('--workers'):][:2]) if '--workers' in command else 'a worker per GPU'}", file=sys.stderr)  # fmt: skip
    watch = slurm.watch_lines(job_id, args.storage, folder)
    if args.detach:
        print("\n".join(watch), file=sys.stderr)
        return None
    try:
        def counts() -> tuple[int, int, int]:
            queue.sweep(study)
            now = queue.counts()
            return sum(now.get(state, 0) for state in ("complete", "failed", "pruned")), now.get("running", 0), now.get("waiting", 0)

        finished = slurm.follow(counts, size, job_id, tasks)
    except Interrupted as stopped:
        stopped.message = "\n".join([f"detached: job array {job_id} runs on in Slurm", *watch])
        raise
    lines = point_summary(queue, size)
    if not finished:
        lines.append(f"job array {job_id} has no task left in Slurm, but points still wait: their logs are in {folder}/{job_id}_*/; "
                     "run the same command again to submit more tasks")  # fmt: skip
    return lines


def point_summary(queue, size: int) -> list[str]:
    """The grid's points by state, and every point not complete by name."""
    rows = queue.rows()
    counts = {state: sum(row.state == state for row in rows) for state in ("complete", "failed", "pruned", "waiting", "running")}
    lines = [f"{size} grid points: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n or state in ("complete", "failed"))]
    for row in rows:
        if row.state != "complete":
            why = f": {row.error}" if row.error else ""
            held = f" on {row.worker}" if row.state == "running" and row.worker else ""
            lines.append(f"  point {row.slot} ({row.params}, trial {row.trial_key}) {row.state}{held}{why}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_positive(args, "workers", "workers_per_gpu", "epochs", "repeats", "heartbeat_interval", "grace_period", "storage_timeout")
    check_launch(args)
    pack_size(args)

    from sweep.artifacts import Artifacts
    from sweep.results import check_writable, export, is_url, load_results
    from sweep.results.shared import paste_url
    from sweep.run import grid_trials, plan_workers
    from sweep.space import load_space

    space = load_space(args.space).with_protocol(from_flags=True, **protocol_overrides(args)).with_repeats(args.repeats)
    if args.arch is not None:
        space = space.with_arch(args.arch)
    space.require_grid()
    if args.storage and args.pack not in (1, "auto"):
        raise SpecError("--pack: packs are formed by the local grid; with --storage every grid point is its own Optuna trial (leave --pack out)")
    if args.dry_run:
        from sweep.cli.plan import offline_trials, print_plan
        from sweep.errors import DataError
        from sweep.run import unique_trials

        plan = plan_workers(args.workers, args.workers_per_gpu)
        skip = ("complete",) if args.retry_failed else ("complete", "failed")
        try:
            trials, known = unique_trials(grid_trials(space, args.data_dir)), True
        except DataError as err:  # offline without the data: the plan on the dataset's nominal shape
            trials, known = offline_trials(space), False
            if args.data_dir is not None or not trials:
                raise err from None
            print(f"sweep.grid: no data ({str(err).split(';')[0]}): the plan of the official {space.protocol.dataset}; keys and stored trials need the data (--data-dir DIR)", file=sys.stderr)
        print_plan(trials, args.data_dir, Path(args.results), plan.workers, plan.describe(), skip, plan=plan, pack=args.pack, known=known)
        return 0
    results = check_writable(args.results)
    if args.artifacts:
        Artifacts(args.artifacts).check()
    trials = grid_trials(space, args.data_dir)
    plan = plan_workers(args.workers, args.workers_per_gpu)
    study, points = None, []
    if args.launch:
        points = launch_shared(args, space, trials, results, list(sys.argv[1:] if argv is None else argv))
        if points is None:  # detached
            return 0
    elif args.storage:
        points = run_shared(args, space, trials, plan, results)
    else:
        study = run_local(args, space, trials, plan, results)

    keys = {spec.key for _, spec in trials}
    reference = space.reference_point()
    reference_key = next((spec.key for point, spec in trials if point == reference), None)
    shared = args.storage if args.storage and is_url(args.storage) else None
    everything = load_results(shared or results)  # with --storage: every machine's rows
    frame = everything[everything["trial_key"].isin(keys)]
    selects = ""  # the argument that selects this run's rows where the folder holds other groups too
    if "group" in frame.columns and everything["group"].nunique() > 1 and frame["group"].nunique() == 1:
        selects = f", group={frame['group'].iloc[0]!r}"
    print(summarize(frame, reference_key))
    if points:
        print("\n".join(points))
    if shared:
        here = load_results(results)
        print(f"results: {results}/ ({here['trial_key'].isin(keys).sum()} rows of this space trained here; pandas: sweep.results.load_results({str(results)!r}))")
        print(f"every machine's rows: sweep.results.load_results({paste_url(shared)!r}{selects}); python -m sweep.report --results {paste_url(shared)}")
    else:
        print(f"results: {results}/ ({len(frame)} rows of this space; pandas: sweep.results.load_results({str(results)!r}{selects}))")
        print(f"dashboard: optuna-dashboard sqlite:///{(results / 'optuna.db').resolve()} (study {study!r}; pip install optuna-dashboard, or the dashboard extra)")
    export(results)
    return 0
