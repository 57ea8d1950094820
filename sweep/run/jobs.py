"""The jobs workers run: one trial, or a pack of trials, each storing its own rows; and the
grid's trials as jobs.

A job counts its attempts in its trial's directory: a trial whose worker died
`MAX_ATTEMPTS` times in one run (killed, out of memory) is recorded as failed instead of
being tried forever, and a pack that killed its worker is split into lone trials.

A job stopped because the run is interrupted (`sweep.stop.Stopped`, from the trial, or at
once if the stop came before it began) stores no row and lets `Stopped` propagate to its
caller.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.artifacts import Artifacts
from sweep.data import Dataset, dataset_for
from sweep.encodings import task_for
from sweep.errors import SpecError
from sweep.files import atomic_write
from sweep.results import spec_columns, write_row
from sweep.space import SearchSpace
from sweep.spec import TrialSpec
from sweep.stop import Stopped, requested
from sweep.run.schedule import WorkerPlan
from sweep.train import make_packs, probe_pack_size, run_pack, run_trial, trial_dir

__all__ = [
    "MAX_ATTEMPTS",
    "PACK_AUTO",
    "PackJob",
    "RUN_ID",
    "TrialJob",
    "grid_trials",
    "make_jobs",
    "resolve_pack",
    "trial_for",
    "unique_trials",
]

MAX_ATTEMPTS = 2  # a trial whose worker died this many times in one run is recorded as failed
RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this driver invocation; workers inherit it in their jobs
SPLIT_FILE = "pack-split"  # in a trial's directory: its pack killed a worker in this run


def count_attempt(directory: Path, run_id: str) -> int:
    """Record that a trial is starting; return how many times it has started in this run
    without finishing. Earlier runs don't count: a driver killed by its user says nothing
    about the trial it was running."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "attempts.json"
    try:
        saved = json.loads(path.read_text())
        attempts = saved["attempts"] + 1 if saved["run"] == run_id else 1
    except (OSError, ValueError, KeyError, TypeError):
        attempts = 1
    atomic_write(path, json.dumps({"attempts": attempts, "run": run_id, "pid": os.getpid()}))
    return attempts


def clear_attempts(directory: Path) -> None:
    (directory / "attempts.json").unlink(missing_ok=True)


@dataclass(frozen=True)
class TrialJob:
    """Run one grid trial and store its row."""

    spec: TrialSpec
    data_dir: str | None
    results_dir: str
    row_extra: dict[str, Any] = field(default_factory=dict)
    checkpoint_every_s: float = 10.0
    run_id: str = RUN_ID  # set in the driver, so every worker counts attempts of the same run
    artifacts: str | None = None  # --artifacts: the shared artefact store

    def __call__(self) -> dict[str, Any] | None:
        if requested() is not None:
            raise Stopped((self.spec.key,))
        directory = trial_dir(self.results_dir, self.spec.key)
        attempts = count_attempt(directory, self.run_id)
        if attempts > MAX_ATTEMPTS:
            row = {
                **spec_columns(self.spec),
                **self.row_extra,
                "status": "failed",
                "error": f"the worker running this trial died {attempts - 1} times (killed, or out of memory)",
            }
        else:
            dataset = dataset_for(self.spec.protocol, self.data_dir)
            artifacts = Artifacts(self.artifacts) if self.artifacts else None
            trained = run_trial(self.spec, dataset, self.results_dir, checkpoint_every_s=self.checkpoint_every_s, artifacts=artifacts)
            row = {**trained, **self.row_extra}
        write_row(self.results_dir, row)
        clear_attempts(directory)
        return row


def _split_in_run(directory: Path, run_id: str) -> bool:
    try:
        return (directory / SPLIT_FILE).read_text() == run_id
    except OSError:
        return False


@dataclass(frozen=True)
class PackJob:
    """Train a pack of trials together and store every member's row.

    A pack that ran out of memory, or whose worker died, is not packed again: its members
    then run one by one as ordinary trials, each with its own attempt count, so only one
    that kills its worker alone is recorded as failed."""

    specs: tuple[TrialSpec, ...]
    data_dir: str | None
    results_dir: str
    row_extra: dict[str, Any] = field(default_factory=dict)
    checkpoint_every_s: float = 10.0
    run_id: str = RUN_ID
    artifacts: str | None = None

    @property
    def size(self) -> int:
        return len(self.specs)

    def __call__(self) -> list[dict[str, Any] | None]:
        if requested() is not None:
            raise Stopped([spec.key for spec in self.specs], checkpointed=False)
        if len(self.specs) == 1:
            return [self._alone(self.specs[0])]
        dirs = [trial_dir(self.results_dir, spec.key) for spec in self.specs]
        split = any(_split_in_run(d, self.run_id) for d in dirs)
        if not split and max(count_attempt(d, self.run_id) for d in dirs) > 1:
            self._split(dirs)  # this pack killed a worker before: isolate its members from now on
            split = True
        if split:
            return self._each_alone()
        dataset = dataset_for(self.specs[0].protocol, self.data_dir)
        packed = run_pack(list(self.specs), dataset, self.results_dir)
        if all(str(row.get("error") or "").startswith("out of memory") for row in packed):
            self._split(dirs)  # together they do not fit: each may alone
            return self._each_alone()
        rows = []
        for row, d in zip(packed, dirs):
            row = {**row, **self.row_extra}
            write_row(self.results_dir, row)
            clear_attempts(d)
            if self.artifacts:
                try:
                    Artifacts(self.artifacts).put_trial(row["trial_key"], d)
                except Exception as err:  # the files stay in the trial's folder
                    print(f"trial {row['trial_key']}: files not uploaded to --artifacts ({type(err).__name__}: {err})", file=sys.stderr)
            rows.append(row)
        return rows

    def _split(self, dirs: list[Path]) -> None:
        for d in dirs:
            clear_attempts(d)
            (d / SPLIT_FILE).write_text(self.run_id)

    def _each_alone(self) -> list[dict[str, Any] | None]:
        """Every member as a lone trial; a stop keeps the rows stored before it (`Stopped.rows`)."""
        rows: list[dict[str, Any] | None] = []
        for spec in self.specs:
            try:
                rows.append(self._alone(spec))
            except Stopped as stopped:
                raise Stopped(stopped.keys, stopped.epoch, stopped.checkpointed, [*rows, *stopped.rows]) from None
        return rows

    def _alone(self, spec: TrialSpec) -> dict[str, Any] | None:
        return TrialJob(spec, self.data_dir, self.results_dir, self.row_extra, self.checkpoint_every_s, self.run_id, self.artifacts)()


assert MAX_ATTEMPTS >= 2, "an isolated pack member must get at least one attempt of its own"


def trial_for(space: SearchSpace, point: dict[str, Any], data_dir: str | None) -> tuple[TrialSpec, Dataset]:
    """The trial of one point of `space`, on the data its protocol names (loaded once per
    process), and that dataset."""
    dataset = dataset_for(space.spec(point, data_id="").protocol, data_dir)
    height, width, _ = dataset.image_shape
    return space.spec(point, dataset.data_id, native_size=height if height == width else None), dataset


def grid_trials(space: SearchSpace, data_dir: str | None) -> list[tuple[dict[str, Any], TrialSpec]]:
    """Load the data each grid point needs and return a (point, TrialSpec) pair for every
    point, checked against the image shape, in grid order. Points whose fields differ but
    whose effective configuration is the same share a trial key."""
    trials = []
    for point in space.grid_points():
        spec, dataset = trial_for(space, point, data_dir)
        height, width, _ = dataset.image_shape
        size = spec.protocol.image_size
        task = task_for(spec.protocol.task, spec.protocol.encoding)
        shape = (size or height, size or width, task.input_channels)
        try:
            spec.arch.check_input(shape)
        except SpecError as err:
            raise SpecError(f"{space.path}: space: {point} does not fit {shape[0]}x{shape[1]} images: {err}") from None
        trials.append((point, spec))
    return trials


def unique_trials(trials: list[tuple[dict[str, Any], TrialSpec]]) -> list[tuple[dict[str, Any], TrialSpec]]:
    """The (point, spec) pairs with one per trial key, the first spelling of each, in order:
    grid points that spell one model twice run it once."""
    unique, seen = [], set()
    for point, spec in trials:
        if spec.key not in seen:
            seen.add(spec.key)
            unique.append((point, spec))
    return unique


def make_jobs(
    specs: list[TrialSpec], pack: int, data_dir: str | None, results: Path, extra: dict, checkpoint_every: float, artifacts: str | None = None
) -> list:
    """One job per trial, or with `pack` > 1 one job per pack of trials balanced by FLOPs."""
    if pack <= 1:
        return [TrialJob(spec, data_dir, str(results), extra, checkpoint_every, artifacts=artifacts) for spec in specs]
    costs: dict[str, int] = {}

    def cost(spec: TrialSpec) -> int:  # once per trial: for a preset it builds the model
        if spec.key not in costs:
            size = spec.protocol.image_size
            shape = (size, size, 3) if size else dataset_for(spec.protocol, data_dir).image_shape
            costs[spec.key] = spec.training_flops(shape)
        return costs[spec.key]

    return [
        PackJob(tuple(members), data_dir, str(results), extra, checkpoint_every, artifacts=artifacts)
        for members in make_packs(list(specs), pack, cost)
    ]


PACK_AUTO = "auto"
PROBE_MAX_PACK = 16


def resolve_pack(pack: int | str, specs: list[TrialSpec], plan: WorkerPlan, data_dir: str | None) -> tuple[int, str]:
    """The pack size to run with, and a line saying how it was chosen. `auto`: 1 without a
    GPU (measured on CPU, packs do not pay: BENCHMARKS.md); on a GPU, the size that trained
    fastest in a short probe of pack sizes 1, 2, 4, ... (`sweep.train.probe_pack_size`), run
    in a process of its own on the first GPU so its memory is freed before the workers start."""
    if pack != PACK_AUTO:
        return int(pack), f"packs of up to {pack}"
    if not plan.gpus or not specs:
        return 1, "packs of 1 (--pack auto: no GPU)"
    import multiprocessing

    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            size, rates = pool.apply(_probe, (list(specs), data_dir, plan.gpus[0]))
    except Exception as err:  # the probe itself failed: run unpacked, and say why
        return 1, f"packs of 1 (--pack auto: the probe failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    measured = ", ".join(f"{k}: {v:,.0f}" for k, v in rates.items())
    return size, f"packs of up to {size} (--pack auto; training images/s by pack size: {measured})"


def _probe(specs: list[TrialSpec], data_dir: str | None, gpu: str) -> tuple[int, dict[int, float]]:
    from sweep import backend

    backend.configure_process(gpu, None)
    return probe_pack_size(specs, dataset_for(specs[0].protocol, data_dir), PROBE_MAX_PACK)
