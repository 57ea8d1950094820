"""Optuna studies for both drivers: study names, objectives, samplers, pruners, and opening a
study (`open_study`) on its storage (`sweep.run.storage`).

The job that runs one trial in a worker is `sweep.run.study_job`; who holds which trial, its
heartbeats and retries are `sweep.run.queue`'s, in tables of sweep's own: Optuna only records
trials (enqueue, ask, tell), through its public API.

Every Optuna trial is also a row in the results store, keyed by the same `trial_key` as a
grid trial, and a configuration already complete in the store is not trained again: its
stored values are reported to the study instead.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from sweep.errors import SpecError, StoreError, did_you_mean
from sweep.results import OBJECTIVES
from sweep.results.schema import per_epoch_metric
from sweep.results.shared import DEFAULT_TIMEOUT, first_line, mask_url
from sweep.run.storage import default_storage_url, lost_schema_race, open_storage, queue_url

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "StudyConfig",
    "check_pruning",
    "default_storage_url",
    "open_study",
    "parse_objectives",
    "pruned_on",
    "study_name_for",
    "trial_attrs",
]

SAMPLERS = ("tpe", "random", "cmaes", "grid", "nsga2")
PRUNERS = ("median", "hyperband", "none")


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


def study_name_for(kind: str, space, data_ids: list[str], objectives: tuple[str, ...], storage_url: str | None = None) -> str:
    """A name that is the same on every machine running the same command on the same data,
    and different when the protocol or objectives change (so studies never mix them): the
    space, the driver, the dataset(s) and the epochs to read (`cifar10_tiny-grid-cifar10-10ep-
    1a2b3c4d`), then the hash of everything that identifies the study.

    With `storage_url`, a study that storage already holds under the hash-only name of
    earlier versions (`cifar10_tiny-grid-1a2b3c4d`) keeps that name, so it is resumed."""
    identity = json.dumps(
        {"factors": {k: repr(v) for k, v in space.factors.items()}, "protocol": space.protocol.identity(),
         "arch": space.arch, "data": sorted(set(data_ids)), "objectives": objectives, "kind": kind,
         **({"exclude": [sorted(e.items(), key=str) for e in space.exclude]} if space.exclude else {})},
        sort_keys=True,
    )  # fmt: skip
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    datasets = "+".join(sorted({_dataset_name(data_id) for data_id in data_ids})) or "nodata"
    name = f"{space.name}-{kind}-{datasets}-{space.protocol.epochs}ep-{digest}"
    if storage_url is not None and not _holds(storage_url, name) and _holds(storage_url, legacy := f"{space.name}-{kind}-{digest}"):
        return legacy
    return name


def _dataset_name(data_id: str) -> str:
    """The dataset's name in its `data_id` (`NAME-TRAIN-TEST-HASH`, `sweep.data.Dataset`)."""
    parts = data_id.rsplit("-", 3)
    return parts[0] if len(parts) == 4 else data_id


def _holds(storage_url: str, study_name: str) -> bool:
    """Whether the storage at `storage_url` holds a study of that name (a SQLite or journal
    file that does not exist holds none, and is not created)."""
    from pathlib import Path

    if storage_url.startswith("journal:"):
        path = Path(storage_url.removeprefix("journal:")).expanduser()
    elif storage_url.startswith("sqlite:///"):
        path = Path(storage_url.removeprefix("sqlite:///"))
    else:
        path = None
    if path is not None and not path.exists():
        return False
    try:
        open_storage(storage_url).get_study_id_from_name(study_name)
    except KeyError:
        return False
    return True


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
        return open_storage(self.storage_url, self.storage_timeout)

    def queue(self):
        """This study's rows in sweep's own tables (`sweep.run.queue`)."""
        from sweep.run.queue import Queue

        return Queue(queue_url(self.storage_url), self.study_name, grace_period=self.grace_period, heartbeat_interval=self.heartbeat_interval, timeout=self.storage_timeout)

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


def open_study(config: StudyConfig, create: bool = True, worker: int = 0, fixed: dict[str, Any] | None = None):
    """Create the study if needed (any number of processes may race to), or load it. With
    `fixed`, its sampler gives exactly those params (a grid point: Optuna's
    PartialFixedSampler), so `ask` records the point this process holds."""
    import optuna

    storage = config.storage()
    sampler, pruner = config.make_sampler(worker), config.make_pruner()
    if fixed is not None:
        sampler = optuna.samplers.PartialFixedSampler(fixed, optuna.samplers.RandomSampler())
    try:
        if create:
            study = optuna.create_study(
                study_name=config.study_name, storage=storage, directions=config.directions,
                sampler=sampler, pruner=pruner, load_if_exists=True,
            )  # fmt: skip
        else:
            study = optuna.load_study(study_name=config.study_name, storage=storage, sampler=sampler, pruner=pruner)
    except Exception as err:
        raise StoreError(f"--storage {mask_url(config.storage_url)}: cannot open study {config.study_name!r} ({first_line(err)})") from None
    wanted = [optuna.study.StudyDirection.MINIMIZE if d == "minimize" else optuna.study.StudyDirection.MAXIMIZE for d in config.directions]
    if list(study.directions) != wanted:
        raise SpecError(
            f"study {config.study_name!r} optimises {len(study.directions)} objective(s) in other directions; "
            f"pass --study NAME for a new study with --objectives {','.join(config.objectives)}"
        )
    if create and study.metric_names != list(config.objectives):  # (named in optuna-dashboard, not "Objective 0")
        try:
            study.set_metric_names(list(config.objectives))
        except Exception as err:  # another machine's driver named them first
            if not lost_schema_race(err):
                raise
    return study
