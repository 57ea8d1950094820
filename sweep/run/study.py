"""Optuna studies for both drivers: storages, study names, samplers, pruners, and the job that
runs one Optuna trial in a worker.

Storage. Without `--storage`, a study lives in `<results>/optuna.db` (SQLite). SQLite was
chosen over Optuna's journal file after measuring both under 1-8 local worker processes
(`benchmarks/optuna_storage.py`): the journal file is faster per trial (about 0.03 s against
0.1-0.3 s), but only the RDB storages support Optuna's heartbeat, which is what turns a
trial whose worker died into a failed-and-retried one instead of a trial RUNNING forever;
at sweep's trial lengths (seconds to hours) SQLite's cost is noise, and with a 60 s lock
timeout eight writers produced no errors. `--storage postgresql://...` is the way to run
one study from many machines. A journal file (`--storage journal:PATH`) works but has no
heartbeat.

With `--storage URL`, every row is also written to the shared results table of that database
(`sweep.results.shared`), and a configuration complete there, whichever machine ran it, is
not trained again. Every call to the database is retried with back-off while it does not
answer (a restarted server, a link that went down), for at most `--storage-timeout` seconds.

Every Optuna trial is also a row in the results store, keyed by the same `trial_key` as a
grid trial, and a configuration already complete in the store is not trained again: its
stored values are reported to the study instead.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import random
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sweep.errors import SpecError, StoreError, did_you_mean
from sweep.faults import failpoint
from sweep.results import OBJECTIVES, RowStore
from sweep.results.schema import per_epoch_metric
from sweep.results.shared import DEFAULT_TIMEOUT, engine_options, first_line, mask_url, recently_away, retrying, transient
from sweep.run.jobs import trial_for
from sweep.run.schedule import worker_slot
from sweep.train import Pruning, run_trial

__all__ = [
    "OptunaTrialJob",
    "PRUNERS",
    "SAMPLERS",
    "StudyConfig",
    "default_storage_url",
    "enqueue_grid",
    "fail_stale",
    "mask_url",
    "check_pruning",
    "open_study",
    "parse_objectives",
    "pruned_on",
    "pop_waiting_trial",
    "study_name_for",
    "trial_attrs",
]

SAMPLERS = ("tpe", "random", "cmaes", "grid", "nsga2")
PRUNERS = ("median", "hyperband", "none")
MAX_RETRY = 3  # a trial whose worker died is retried this many times by the survivors


# The row's values every trial carries as user attributes once it has run (optuna-dashboard's
# table), alike for sweep.optuna's trials and a local grid's (sweep.run.record).
TRIAL_ATTRS = ("trial_key", "latent_size", "params", "test_mse", "test_psnr", "test_ssim", "epochs_run", "best_epoch", "train_seconds", "error")


def trial_attrs(row: dict[str, Any]) -> dict[str, Any]:
    """The row's `TRIAL_ATTRS` that have a value, as JSON-safe Python scalars."""
    attrs = {}
    for name in TRIAL_ATTRS:
        value = row.get(name)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        attrs[name] = value.item() if hasattr(value, "item") else value
    return attrs


def default_storage_url(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'optuna.db'}"


def parse_objectives(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise SpecError("--objectives needs at least one name")
    for name in names:
        if name not in OBJECTIVES:
            raise SpecError("--objectives: " + did_you_mean("objective", name, OBJECTIVES))
    if len(set(names)) != len(names):
        raise SpecError(f"--objectives repeats a name: {text}")
    return names


def study_name_for(kind: str, space, data_ids: list[str], objectives: tuple[str, ...]) -> str:
    """A name that is the same on every machine running the same command on the same data,
    and different when the protocol or objectives change (so studies never mix them)."""
    identity = json.dumps(
        {"factors": {k: repr(v) for k, v in space.factors.items()}, "protocol": space.protocol.identity(),
         "arch": space.arch, "data": sorted(set(data_ids)), "objectives": objectives, "kind": kind,
         **({"exclude": [sorted(e.items(), key=str) for e in space.exclude]} if space.exclude else {})},
        sort_keys=True,
    )  # fmt: skip
    return f"{space.name}-{kind}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


@functools.lru_cache(maxsize=8)
def _storage(url: str, heartbeat_interval: int, grace_period: int, timeout: float = DEFAULT_TIMEOUT):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:")).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        for attempt in range(5):
            try:
                return _retrying_rdb_storage()(
                    url,
                    engine_kwargs=engine_options(url),
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                    timeout=timeout,
                )
            except Exception as err:
                # Machines that start together on an empty database race to create Optuna's
                # tables and its version row; the losers see "already exists" or a duplicate
                # key (inside Optuna's "exception raised during the commit") and try again.
                if attempt == 4 or not lost_schema_race(err):
                    raise
                time.sleep(0.2 + random.random())
    except Exception as err:  # unreachable server, bad URL, missing driver: one line
        raise StoreError(f"--storage {mask_url(url)}: cannot open the study storage ({first_line(err)})") from None


def lost_schema_race(err: BaseException) -> bool:
    """Whether `err`, or an error it wraps, says another process created the same table, type
    or row first (what opening an empty database from several machines at once can meet)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if re.search(r"already exists|duplicate key|UNIQUE constraint failed|Duplicate entry", str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


@functools.lru_cache(maxsize=1)
def _retrying_rdb_storage():
    """Optuna's RDBStorage whose every call is retried while the database does not answer
    (`sweep.results.shared.retrying`). Opening it is not retried: a database unreachable at
    the start is a wrong URL until proven otherwise, and says so at once."""
    from optuna.storages import BaseStorage, RDBStorage

    class RetryingRDBStorage(RDBStorage):
        def __init__(self, url: str, *, timeout: float, **kwargs):
            self.retry_timeout = timeout
            super().__init__(url, **kwargs)

    def wrap(name: str):
        method = getattr(RDBStorage, name)

        @functools.wraps(method)
        def call(self, *args, **kwargs):
            return retrying(lambda: method(self, *args, **kwargs), url=self.url, timeout=self.retry_timeout, what="the study storage")

        return call

    def record_heartbeat(self, trial_id: int) -> None:
        """One attempt: a beat the database misses is simply the next one's to make."""
        try:
            RDBStorage.record_heartbeat(self, trial_id)
        except Exception as err:
            if not transient(err):
                raise

    # Every call of the storage interface, and the private ones Optuna's cache layer calls
    # instead. When a retried call's first attempt did reach the database but its answer was
    # lost, setting a trial's state again is refused: `_tell` copes, and a waiting trial taken
    # without knowing it is failed and re-enqueued by `fail_stale` after the grace period;
    # creating a trial again creates a second one (a grid point enqueued twice: its second
    # run finds the first's row and reuses it).
    private = ["_get_stale_trial_ids", "_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id"]
    for name in [n for n in dir(BaseStorage) if not n.startswith("_")] + private:
        if callable(getattr(RDBStorage, name, None)):
            setattr(RetryingRDBStorage, name, wrap(name))
    RetryingRDBStorage.record_heartbeat = record_heartbeat
    return RetryingRDBStorage


def pruned_on(objectives: tuple[str, ...], pruner: str) -> str | None:
    """The validation value reported after every epoch for the pruner: the one that tracks
    the single objective (`sweep.results.schema.per_epoch_metric`), so it moves in the
    objective's direction; None when nothing is pruned (no pruner, or several objectives,
    which Optuna never prunes)."""
    if pruner == "none" or len(objectives) > 1:
        return None
    return per_epoch_metric(objectives[0])


def check_pruning(objectives: tuple[str, ...], pruner: str) -> None:
    """Refuse a pruner for an objective that has no value until the trial ends."""
    if pruner != "none" and len(objectives) == 1 and pruned_on(objectives, pruner) is None:
        tracked = ", ".join(name for name in OBJECTIVES if per_epoch_metric(name))
        raise SpecError(
            f"--pruner {pruner}: the objective {objectives[0]!r} has no value before a trial ends, "
            f"so nothing can be pruned on it; pass --pruner none, or optimise one of {tracked}"
        )


@dataclass(frozen=True)
class StudyConfig:
    """How to reach and drive one study; picklable, so workers can open it themselves."""

    storage_url: str
    study_name: str
    objectives: tuple[str, ...] = ("val_mse",)
    sampler: str = "tpe"
    sampler_seed: int | None = None
    pruner: str = "median"
    heartbeat_interval: int = 30
    grace_period: int = 120
    storage_timeout: float = DEFAULT_TIMEOUT  # seconds to retry a database that does not answer
    epochs: int = 10  # Hyperband's maximum resource
    grid: tuple[tuple[str, tuple[Any, ...]], ...] | None = None  # the grid sampler's space

    @classmethod
    def grid_of(cls, space) -> tuple[tuple[str, tuple[Any, ...]], ...] | None:
        return tuple((name, tuple(dim.grid())) for name, dim in space.factors.items()) if space.is_grid else None

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    def storage(self):
        return _storage(self.storage_url, self.heartbeat_interval, self.grace_period, self.storage_timeout)

    def make_sampler(self, worker: int = 0):
        import optuna

        seed = None if self.sampler_seed is None else self.sampler_seed + worker
        if self.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if self.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if self.sampler == "grid":
            if self.grid is None:
                raise SpecError("--sampler grid needs a space whose factors are all lists or stepped ranges (a log range has no grid)")
            return optuna.samplers.GridSampler({name: list(values) for name, values in self.grid}, seed=seed)
        raise SpecError(did_you_mean("sampler", self.sampler, SAMPLERS))

    @property
    def pruned_on(self) -> str | None:
        return pruned_on(self.objectives, self.pruner)

    def make_pruner(self):
        import optuna

        if self.pruned_on is None:
            return optuna.pruners.NopPruner()
        if self.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(self.epochs, 1))
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def open_study(config: StudyConfig, create: bool = True, worker: int = 0):
    """Create the study if needed (any number of processes may race to), or load it."""
    import optuna

    storage = config.storage()
    sampler, pruner = config.make_sampler(worker), config.make_pruner()
    try:
        if create:
            study = optuna.create_study(
                study_name=config.study_name, storage=storage, directions=config.directions,
                sampler=sampler, pruner=pruner, load_if_exists=True,
            )  # fmt: skip
        else:
            study = optuna.load_study(study_name=config.study_name, storage=storage, sampler=sampler, pruner=pruner)
    except Exception as err:
        raise StoreError(f"--storage {mask_url(config.storage_url)}: cannot open study {config.study_name!r} ({type(err).__name__}: {err})") from None
    wanted = [optuna.study.StudyDirection.MINIMIZE if d == "minimize" else optuna.study.StudyDirection.MAXIMIZE for d in config.directions]
    if list(study.directions) != wanted:
        raise SpecError(
            f"study {config.study_name!r} optimises {len(study.directions)} objective(s) in other directions; "
            f"pass --study NAME for a new study with --objectives {','.join(config.objectives)}"
        )
    return study


TAKEN_OVER = (
    "the trial was failed meanwhile by another machine (no heartbeat from here for --grace-period) and retried "
    "there; its result here is in --results, and in the shared table unless a complete row was there first"
)


class TrialFailed(Exception):
    """The trial ran and failed; its row says why. Optuna records it as FAIL and goes on."""


@functools.lru_cache(maxsize=4)
def _worker_study(config: StudyConfig, worker: int):
    return open_study(config, create=False, worker=worker)


def objective_values(row: dict[str, Any], objectives: tuple[str, ...]) -> list[float] | None:
    values = [row.get(name) for name in objectives]
    if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in values):
        return None
    return [float(v) for v in values]


def pop_waiting_trial(study, storage):
    """Take a waiting (enqueued) trial of `study` for this worker and return it as a running
    `optuna.Trial` with its storage id, or None when none is waiting. Never creates a trial: of
    the workers that race for the last waiting one, the database lets exactly one have it, and
    the others get None (`Study.ask` would create and sample a new trial for them instead)."""
    import optuna

    State = optuna.trial.TrialState
    study_id = storage.get_study_id_from_name(study.study_name)
    for waiting in study.get_trials(deepcopy=False, states=(State.WAITING,)):  # (also makes the study see them)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, waiting.number)
        try:
            if storage.set_trial_state_values(trial_id, state=State.RUNNING):
                return optuna.trial.Trial(study, trial_id), trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished by another worker meanwhile
    return None


@contextlib.contextmanager
def heartbeat(storage, trial_id: int):
    """Record the running trial's heartbeat every interval (as `Study.optimize` does), so a
    worker that dies has its trial failed and retried by the survivors."""
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)  # (one attempt: a beat the database misses is the next one's)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1.0)  # a beat waiting on an unanswering database is left to finish alone


@dataclass(frozen=True)
class OptunaTrialJob:
    """Run one trial of a study in a worker: sample (or take an enqueued grid point), train
    unless the store already has it, store the row, report to the study.

    `shared`: the storage URL whose results table also gets every row (`--storage`), and
    whose complete rows count as done; `artifacts`: the shared artefact store, if any."""

    config: StudyConfig
    space: Any  # SearchSpace
    data_dir: str | None
    results_dir: str
    row_extra: dict[str, Any] = field(default_factory=dict)
    checkpoint_every_s: float = 10.0
    enqueued_only: bool = False  # grid studies: run only enqueued grid points, never sample
    shared: str | None = None
    artifacts: str | None = None

    @property
    def rows(self) -> RowStore:
        return RowStore(self.results_dir, self.shared, self.config.storage_timeout)

    def __call__(self) -> dict[str, Any] | None:
        """Sample a trial (`Study.optimize`, so samplers such as the grid's can stop the
        study) or, with `enqueued_only`, take an enqueued one; run it; tell the study."""
        import optuna

        study = _worker_study(self.config, worker_slot())
        result: dict[str, Any] = {}
        if not self.enqueued_only:
            try:
                study.optimize(lambda trial: self._objective(trial, result), n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
            except ValueError as err:  # "Cannot tell a FAIL trial": failed by another machine meanwhile
                if not str(err).startswith("Cannot tell a"):
                    raise
                print(f"{TAKEN_OVER} ({err})", file=sys.stderr)
            return result.get("row")
        storage = self.config.storage()
        fail_stale(study, self.config)  # so dead workers' grid points are waiting again
        popped = pop_waiting_trial(study, storage)
        if popped is None:
            return None
        trial, trial_id = popped
        State = optuna.trial.TrialState
        with heartbeat(storage, trial_id):
            try:
                values = self._objective(trial, result)
            except optuna.TrialPruned:
                _tell(study, storage, trial_id, trial, state=State.PRUNED)
            except TrialFailed:
                _tell(study, storage, trial_id, trial, state=State.FAIL)
            except StoreError:
                raise  # the database stayed away: nothing can be told; the trial is retried by others
            except BaseException:
                _tell(study, storage, trial_id, trial, state=State.FAIL)
                raise
            else:
                _tell(study, storage, trial_id, trial, values)
        return result.get("row")

    def _objective(self, trial, result: dict[str, Any]):
        import optuna

        from sweep.artifacts import Artifacts

        point = self.space.suggest(trial)
        if self.space.excluded(point):  # a combination the space leaves out: nothing to train
            trial.set_user_attr("excluded", True)
            raise optuna.TrialPruned(f"{point} is excluded by the space")
        spec, dataset = trial_for(self.space, point, self.data_dir)
        trial.set_user_attr("trial_key", spec.key)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        stored = self.rows.complete_row(spec.key)
        if stored is not None:
            values = objective_values(stored, self.config.objectives)
            if values is not None:
                trial.set_user_attr("reused_row", True)
                _set_attrs(trial, trial_attrs(stored))
                result["row"] = stored
                return values if len(values) > 1 else values[0]

        pruning = None
        if self.config.pruned_on is not None:

            def should_prune(epoch: int, value: float) -> bool:
                trial.report(value, epoch)
                return trial.should_prune()

            pruning = Pruning(self.config.pruned_on, should_prune)
        artifacts = Artifacts(self.artifacts) if self.artifacts else None
        row = run_trial(spec, dataset, self.results_dir, pruning=pruning, checkpoint_every_s=self.checkpoint_every_s, artifacts=artifacts)
        values = objective_values(row, self.config.objectives) if row["status"] == "complete" else None
        if row["status"] == "complete" and values is None:
            row.update(status="failed", error=f"an objective ({', '.join(self.config.objectives)}) is missing or not finite")
        state = {"complete": "COMPLETE", "pruned": "PRUNED"}.get(row["status"], "FAIL")
        row.update(self.row_extra, study_name=self.config.study_name, optuna_trial=trial.number, optuna_state=state)
        _set_attrs(trial, trial_attrs(row))
        if not self.rows.write(row):
            print(f"trial {spec.key}: another machine stored a complete row of it first; that row stays (this one is in {self.results_dir})", file=sys.stderr)
        failpoint("study.before_tell")
        result["row"] = row
        if row["status"] == "pruned":
            raise optuna.TrialPruned()
        if row["status"] == "failed":
            trial.set_user_attr("error", row["error"])
            raise TrialFailed(row["error"])
        return values if len(values) > 1 else values[0]


def _set_attrs(trial, attrs: dict[str, Any]) -> None:
    """Record the row's attributes on the trial, unless another machine failed it meanwhile
    (a cut link: then the tell that follows says so)."""
    import optuna

    try:
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _tell(study, storage, trial_id: int, trial, values=None, state=None) -> None:
    """Tell the study how a trial ended, unless it was failed meanwhile by another machine (no
    heartbeat from here for the grace period: a cut link, a stalled machine) and retried
    there: then say so; the row is in the store either way (one complete row per key)."""
    import optuna

    try:
        if not storage.get_trial(trial_id).state.is_finished():
            study.tell(trial, values, state=state)
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        if storage.get_trial(trial_id).state == (state or optuna.trial.TrialState.COMPLETE):
            return  # our own tell reached the database before its answer was lost
    except ValueError as err:  # "Cannot tell a FAIL trial": failed by another machine a moment ago
        if not str(err).startswith("Cannot tell a"):
            raise
    print(f"trial #{trial.number} ({trial.user_attrs.get('trial_key')}): {TAKEN_OVER}", file=sys.stderr)


def fail_stale(study, config: StudyConfig) -> None:
    """Fail the trials whose workers went silent, and re-enqueue them (Optuna's
    `fail_stale_trials`), including trials RUNNING for longer than the grace period that never
    sent a heartbeat at all (a worker killed, or its answer lost, between taking a trial and
    its first beat). Not while this process itself was cut off from the database within the
    grace period: the others' heartbeats may not have reached it either."""
    import optuna

    if recently_away(config.grace_period):
        return
    optuna.storages.fail_stale_trials(study)
    storage = config.storage()
    running = {t._trial_id: t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    if not running or not hasattr(storage, "engine"):
        return
    import sqlalchemy as sa

    def heartbeats() -> set[int]:
        with storage.engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT trial_id FROM trial_heartbeats")).scalars())

    # Retried as every call of the storage is: a database restarting now is not an error.
    timeout = getattr(storage, "retry_timeout", config.storage_timeout)
    beating = retrying(heartbeats, url=storage.url, timeout=timeout, what="the study storage")
    now = datetime.now()  # Optuna stamps datetime_start with the worker's clock
    for trial_id, trial in running.items():
        if trial_id in beating or trial.datetime_start is None or (now - trial.datetime_start).total_seconds() < config.grace_period:
            continue
        try:
            storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished, or failed by another machine first
        callback = storage.get_heartbeat_stale_trial_callback()
        if callback is not None:
            callback(study, storage.get_trial(trial_id))


def enqueue_grid(study, points: list[dict[str, Any]], config: StudyConfig) -> int:
    """Put every grid point into the study once, as waiting trials; return how many were added.
    (Give one point per trial key: points that spell one model twice would train it twice.)

    Machines that start together race to create a companion lock study; the database lets
    exactly one win, and only the winner enqueues. The others wait for its `grid_size`
    marker; if the winner died half-way, they complete the queue (points already present
    are skipped)."""
    import time

    import optuna

    if study.user_attrs.get("grid_size") == len(points):
        return 0
    try:
        optuna.create_study(study_name=f"{config.study_name}.enqueue-lock", storage=config.storage())
    except optuna.exceptions.DuplicatedStudyError:
        deadline = time.monotonic() + config.grace_period
        while time.monotonic() < deadline:
            if optuna.load_study(study_name=config.study_name, storage=config.storage()).user_attrs.get("grid_size") == len(points):
                return 0
            time.sleep(1)
    existing = {t.user_attrs.get("grid_point") for t in study.get_trials(deepcopy=False)}
    added = 0
    for index, point in enumerate(points):
        if index not in existing:
            study.enqueue_trial(point, user_attrs={"grid_point": index})
            added += 1
    study.set_user_attr("grid_size", len(points))
    return added
