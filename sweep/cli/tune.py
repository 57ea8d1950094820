"""`python -m sweep.optuna --trials N`: sample a search space with Optuna, resumably.

(This module is `sweep.cli.tune`; `sweep/optuna.py` is only its entry point, so inside the
project the name `optuna` always means the Optuna package.)

    python -m sweep.optuna --trials 50                                    # TPE on seed002_optuna.yaml
    python -m sweep.optuna --trials 20 --objectives test_mse,latent_size  # a Pareto front (NSGA-II)
    python -m sweep.optuna --trials 50 --storage postgresql://host/db     # on every machine of a cluster

Each invocation runs N more trials of the same study (Optuna's `n_trials`); re-running the
command continues it. The study lives in RESULTS/optuna.db unless --storage says otherwise,
and `optuna-dashboard <storage URL>` shows it as it runs. Every trial is also a row of the
results store, shared with `sweep.grid`.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import uuid

from sweep.cli.common import (
    HAND_BACK_S,
    add_common_arguments,
    check_launch,
    check_positive,
    code_version,
    protocol_overrides,
    run_with_progress,
    workers_folder,
    write_run_record,
)
from sweep.errors import SpecError
from sweep.results.schema import varied_text

DEFAULT_SPACE = "search_spaces/seed002_optuna.yaml"
IMPORTANCE_TRIALS = 20  # fewer complete trials than this: importances come with a caveat


def build_parser() -> argparse.ArgumentParser:
    from sweep.results import OBJECTIVES
    from sweep.run.study import PRUNERS, SAMPLERS  # light: no Optuna import at module level

    parser = argparse.ArgumentParser(
        prog="python -m sweep.optuna",
        description="Sample a search space with Optuna: N more trials of a study per invocation.",
        epilog="Example: python -m sweep.optuna --trials 3 --data-dir ../shared/data --epochs 1 --train-fraction 0.05 --results /tmp/o1",
    )
    parser.add_argument("--trials", type=int, required=True, help="trials to run in this invocation (with --launch slurm: the study's total)")
    parser.add_argument("--study-total", type=int, help=argparse.SUPPRESS)  # a Slurm array task's: ask no trial once the study holds this many
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print a plan of --trials points drawn at random from the space (factors, latent size, parameters, "
        "FLOPs) and an estimated time; train nothing (the sampler picks the real points as the study learns)",
    )  # fmt: skip
    add_common_arguments(parser, default_space=DEFAULT_SPACE)
    opt = parser.add_argument_group("optimisation")
    opt.add_argument(
        "--objectives", default="val_mse",
        help=f"comma-separated row columns to optimise (default: %(default)s); allowed: {', '.join(OBJECTIVES)}",
    )  # fmt: skip
    opt.add_argument("--sampler", choices=SAMPLERS, help="default: tpe, or nsga2 with several objectives")
    opt.add_argument("--sampler-seed", type=int, help="seed the sampler (each worker gets seed + its number)")
    opt.add_argument(
        "--pruner", choices=PRUNERS, default="median",
        help="stop unpromising trials early on the validation value that tracks the objective, measured after every "
        "epoch (val_psnr for test_psnr, ...); objectives with none (latent_size, params, train_seconds) need "
        "--pruner none (default: %(default)s)",
    )  # fmt: skip
    return parser


def summarize(study, config, results, frame) -> str:
    """State counts, best trial(s) or Pareto front, parameter importances, where things live."""
    import warnings

    import optuna

    from sweep.analysis import importance_evaluator
    from sweep.results.shared import mask_url, paste_url

    State = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials) for state in (State.COMPLETE, State.PRUNED, State.FAIL, State.RUNNING, State.WAITING)}
    lines = [
        f"study {study.study_name!r}: {len(trials)} trials ("
        + ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n or s in (State.COMPLETE, State.FAIL))
        + ")"
    ]
    complete = [t for t in trials if t.state == State.COMPLETE]
    names = config.objectives

    def describe(trial) -> str:
        values = ", ".join(f"{n} {v:.5g}" for n, v in zip(names, trial.values))
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        return f"  #{trial.number}: {values} | {params} | trial_key {trial.user_attrs.get('trial_key')}"

    if complete:
        if len(names) == 1:
            lines.append(f"best trial ({names[0]}, {config.directions[0]}):")
            lines.append(describe(study.best_trial))
        else:
            front = sorted(study.best_trials, key=lambda t: t.values[0])
            lines.append(f"Pareto front of {' vs '.join(names)} ({len(front)} of {len(complete)} complete trials):")
            lines += [describe(t) for t in front]
    if len(complete) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for index, name in enumerate(names):
                try:
                    method, evaluator = importance_evaluator()
                    importances = optuna.importance.get_param_importances(study, evaluator=evaluator, target=lambda t, i=index: t.values[i])
                except Exception as err:  # too few or too uniform trials: say so, don't fail the run
                    lines.append(f"parameter importances for {name}: not available ({err})")
                    continue
                text = ", ".join(f"{k} {v:.2f}" for k, v in importances.items())
                caveat = f"; from only {len(complete)} complete trials: a rough guide until there are {IMPORTANCE_TRIALS} or more" if len(complete) < IMPORTANCE_TRIALS else ""
                lines.append(f"parameter importances for {name} ({'fANOVA' if method == 'fanova' else 'PED-ANOVA'}): {text}{caveat}")
    lines.append(f"study: {study.study_name!r} in {mask_url(config.storage_url)} (view it: optuna-dashboard {paste_url(config.storage_url)})")
    lines.append(f"results: {results}/ ({len(frame)} rows of this study; pandas: sweep.results.load_results({str(results)!r}))")
    return "\n".join(lines)


def handed_back_line(study, config, handed: list | None, signum: int) -> str:
    """The line a stopped run ends with."""
    name = signal.Signals(signum).name
    if handed is None:
        return (
            f"interrupted by {name}: the database did not answer, so the trials this run held wait until the grace period has "
            f"passed; completed trials are stored; run the same command again to resume"
        )
    try:
        complete = str(sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)))
    except Exception:
        complete = "?"
    return (
        f"interrupted by {name}: {complete} complete trial(s) in study {config.study_name!r}; the trials this run "
        f"held wait again with the same params ({len(handed)} handed back now, the others as their workers stopped); "
        f"run the same command again to resume"
    )


FINISHED = ("COMPLETE", "PRUNED")  # what a study's total counts (a failed trial is retried as a new one)


def launch_study(args, config, results, argv: list[str] | None) -> int:
    """--launch slurm: --workers array tasks, each this command with one worker, asking trials
    until the study holds --trials finished or running ones (`sweep.cli.launch`); then follow
    the study. Detached (--detach, Ctrl-C): the tasks run on."""
    from sweep.cli import launch as slurm
    from sweep.results import load_results
    from sweep.results.shared import mask_url
    from sweep.run.study import open_study
    from sweep.stop import Interrupted

    options = slurm.parse_options(args.slurm)
    folder = results / "slurm"
    executor = slurm.executor(folder, options)
    study = open_study(config)
    tasks = args.workers or 1
    command = slurm.task_argv(list(sys.argv[1:] if argv is None else argv), options) + ["--study-total", str(args.trials)]
    job_id, _ = slurm.submit(executor, "tune", command, tasks)
    write_run_record(results, "optuna", {"study": config.study_name, "storage": mask_url(config.storage_url), "trials": args.trials,
                                         "slurm_job": job_id, "slurm_tasks": tasks})  # fmt: skip
    print(f"sweep.optuna: study {config.study_name!r} at {mask_url(config.storage_url)} to {args.trials} trial(s); submitted Slurm job array "
          f"{job_id}: {tasks} task(s), each running this command", file=sys.stderr)  # fmt: skip
    watch = slurm.watch_lines(job_id, config.storage_url, folder)
    if args.detach:
        print("\n".join(watch), file=sys.stderr)
        return 0
    queue = config.queue()

    def counts() -> tuple[int, int, int]:
        queue.sweep(study)
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        return sum(s in FINISHED for s in states), states.count("RUNNING"), states.count("WAITING")

    try:
        finished = slurm.follow(counts, args.trials, job_id, tasks, unit="trial")
    except Interrupted as stopped:
        stopped.message = "\n".join([f"detached: job array {job_id} runs on in Slurm", *watch])
        raise
    study = open_study(config, create=False)
    frame = load_results(config.storage_url)
    frame = frame[frame["study_name"] == config.study_name] if "study_name" in frame else frame
    print(summarize(study, config, results, frame))
    if not finished:
        print(f"job array {job_id} has no task left in Slurm before the study reached {args.trials} trials: logs in {folder}/{job_id}_*/; "
              "run the same command again to submit more tasks")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_positive(args, "trials", "workers", "workers_per_gpu", "epochs", "heartbeat_interval", "grace_period", "storage_timeout")
    check_launch(args)
    if args.launch:
        import os

        from sweep.cli.launch import TASK_ENV
        from sweep.results import is_url

        if os.environ.get(TASK_ENV):
            raise SpecError(f"--launch: this is already task {os.environ[TASK_ENV]} of a Slurm array; a task does not launch another")
        if not args.storage or not is_url(args.storage):
            raise SpecError("--launch slurm: the array's tasks share the study through a database: give --storage postgresql://user@host/db")
        if not args.artifacts:
            raise SpecError("--launch slurm: give --artifacts DIR (a folder every node mounts, or s3://...): trials resume on any node from their checkpoints there")

    from sweep.artifacts import Artifacts
    from sweep.data import dataset_for
    from sweep.results import RowStore, check_writable, export, is_url, load_results
    from sweep.run import plan_workers
    from sweep.results.shared import mask_url
    from sweep.run.study import StudyConfig, check_pruning, default_storage_url, open_study, parse_objectives, study_name_for
    from sweep.run.study_job import OptunaTrialJob
    from sweep import stop
    from sweep.stop import Interrupted
    from sweep.space import load_space

    space = load_space(args.space).with_protocol(from_flags=True, **protocol_overrides(args))
    if args.dry_run:
        from pathlib import Path

        from sweep.cli.plan import print_plan, sample_points

        plan = plan_workers(args.workers, args.workers_per_gpu)
        print_plan(sample_points(space, args.trials, args.data_dir, args.sampler_seed), args.data_dir, Path(args.results), plan.workers, plan.describe(), ("complete",))
        return 0
    objectives = parse_objectives(args.objectives)
    check_pruning(objectives, args.pruner)
    results = check_writable(args.results)
    if args.artifacts:
        Artifacts(args.artifacts).check()
    datasets = space.factors["dataset"].grid() if "dataset" in space.factors else [space.protocol.dataset]
    data_ids = [dataset_for(dataclasses.replace(space.protocol, dataset=name), args.data_dir).data_id for name in datasets]
    config = StudyConfig(
        storage_url=args.storage or default_storage_url(results),
        study_name=args.study or study_name_for("optuna", space, data_ids, objectives, args.storage or default_storage_url(results)),  # (an earlier version's name found too)
        objectives=objectives,
        sampler=args.sampler or ("nsga2" if len(objectives) > 1 else "tpe"),
        sampler_seed=args.sampler_seed,
        pruner=args.pruner,
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
        storage_timeout=args.storage_timeout,
        epochs=space.protocol.epochs,
        grid=StudyConfig.grid_of(space),
    )
    config.make_sampler()  # fail now, not in a worker, if the sampler cannot serve this space
    if args.launch:
        return launch_study(args, config, results, argv)
    study = open_study(config)
    plan = plan_workers(args.workers, args.workers_per_gpu)
    before = len(study.trials)
    print(
        f"sweep.optuna: {args.trials} more trial(s) of study {config.study_name!r} ({before} so far) at {mask_url(config.storage_url)}; "
        f"{config.sampler} sampler, {config.pruner if len(objectives) == 1 else 'no'} pruning, objectives {', '.join(objectives)}; "
        f"{plan.describe()}; results in {results}",
        file=sys.stderr,
    )
    write_run_record(results, "optuna", {"space": space.path, "protocol": space.protocol.to_dict(), "study": config.study_name, "storage": mask_url(config.storage_url), "trials": args.trials})
    extra = {"driver": "optuna", "space": space.name, "varied": varied_text(space.factors), "code_version": code_version()}
    shared = args.storage if args.storage and is_url(args.storage) else None  # rows for every machine
    pushed = RowStore(str(results), shared, args.storage_timeout).push_missing(lambda row: row.get("study_name") == config.study_name)
    if pushed:
        print(f"sweep.optuna: pushed {pushed} row(s) finished here while the database was away", file=sys.stderr)
    run = uuid.uuid4().hex
    job = OptunaTrialJob(config, space, args.data_dir, str(results), extra, args.checkpoint_every, shared=shared, artifacts=args.artifacts, run=run,
                         study_total=args.study_total)  # fmt: skip
    queue = config.queue()
    try:
        with stop.hard_stop(lambda: stop.in_background(lambda: queue.hand_back(study, run), timeout=HAND_BACK_S)):  # (at the deadline, bounded: before a trial in this process is abandoned)
            run_with_progress([job] * args.trials, plan, workers_folder(results), "optuna", factors=tuple(space.factors))
    except Interrupted as stopped:
        stopped.message = handed_back_line(study, config, queue.hand_back(study, run), stopped.signum)
        raise
    queue.sweep(study)  # (trials asked by workers that died before they held them: failed after the grace period)

    study = open_study(config, create=False)
    frame = load_results(shared or results)
    frame = frame[frame["study_name"] == config.study_name]
    print(summarize(study, config, results, frame))
    export(results)
    return 0
