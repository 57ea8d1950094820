"""A local grid run recorded in the results folder's Optuna study file (`RESULTS/optuna.db`,
where `sweep.optuna` keeps its studies too): every stored row of the grid becomes a trial
of the study a shared run of the same grid would use, with the grid point as its params,
`val_mse` as its value, its state (COMPLETE, FAIL, PRUNED), the validation loss of every
epoch as intermediate values and its start and end times, so `optuna-dashboard
sqlite:///RESULTS/optuna.db` shows grid runs as it shows Optuna's. The rows stay the record;
the study only mirrors them (a row already in the study is never added twice, and a study
file that cannot be written costs a warning, not the run)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

from sweep.results.shared import first_line
from sweep.run.study import StudyConfig, default_storage_url, open_study, study_name_for, trial_attrs

__all__ = ["GridRecord"]

STATES = {"complete": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED"}


def _local_time(text: Any) -> datetime.datetime | None:
    """A row's UTC ISO time as the naive local time Optuna stores."""
    try:
        return datetime.datetime.fromisoformat(str(text)).astimezone().replace(tzinfo=None)
    except (TypeError, ValueError):
        return None


def _history(row: dict[str, Any]) -> list[dict[str, float]]:
    history = row.get("history")
    if isinstance(history, str):
        history = json.loads(history)
    return list(history) if isinstance(history, list) else []


class GridRecord:
    """Mirror a local grid's rows into its study in `results/optuna.db` (`add` one row as it
    finishes, `sync` every stored row at the end)."""

    def __init__(self, results: Path, space, trials: list[tuple[dict[str, Any], Any]]):
        self.points = {spec.key: point for point, spec in trials}
        self._space, self._data_ids = space, [spec.data_id for _, spec in trials]
        self.config = StudyConfig(
            storage_url=default_storage_url(results),
            study_name=study_name_for("grid", space, self._data_ids, ("val_mse",)),
            objectives=("val_mse",),
            sampler="random",  # never asked: every trial is added finished
            pruner="none",
        )
        self.distributions = {name: tuple(dim.grid()) for name, dim in space.factors.items()}
        self.results = Path(results)
        self._study = None
        self._recorded: set[tuple[str, str]] | None = None
        self.broken = False

    @property
    def study_name(self) -> str:
        return self.config.study_name

    def add(self, row: dict[str, Any]) -> bool:
        """Add the row as a finished trial unless the study has it in that state already (or
        the row is not one of this grid's). Returns whether a trial was added."""
        if self.broken or row.get("trial_key") not in self.points:
            return False
        try:
            return self._add(row)
        except Exception as err:  # a locked or damaged study file: the rows are the record
            self.broken = True
            print(
                f"sweep.grid: could not record the grid in {self.results / 'optuna.db'} for optuna-dashboard "
                f"({first_line(err)}); the results are unaffected",
                file=sys.stderr,
            )
            return False

    def sync(self, rows) -> int:
        """Add every row of `rows` (dicts, or a results frame) that the study lacks."""
        if hasattr(rows, "to_dict"):  # a frame: its missing values (NaN, NA) as None
            rows = rows.astype(object).where(rows.notna(), None).to_dict("records")
        return sum(self.add(row) for row in rows)

    def _add(self, row: dict[str, Any]) -> bool:
        import optuna

        study = self._open()
        state_name = STATES.get(row.get("status"), "FAIL")
        value = row.get("val_mse")
        finite = value is not None and isinstance(value, (int, float)) and math.isfinite(value)
        if state_name == "COMPLETE" and not finite:
            state_name = "FAIL"
        if (row["trial_key"], state_name) in self._recorded:
            return False
        point = self.points[row["trial_key"]]
        history = _history(row)
        intermediate = {
            epoch: float(entry["val_loss"])
            for epoch, entry in enumerate(history)
            if isinstance(entry.get("val_loss"), (int, float)) and math.isfinite(entry["val_loss"])
        }
        trial = optuna.trial.create_trial(
            state=optuna.trial.TrialState[state_name],
            values=[float(value)] if state_name == "COMPLETE" else None,
            params={name: point[name] for name in self.distributions},
            distributions={name: optuna.distributions.CategoricalDistribution(values) for name, values in self.distributions.items()},
            user_attrs={**trial_attrs(row), "driver": "grid"},
            intermediate_values=intermediate,
        )
        start, end = _local_time(row.get("started_at")), _local_time(row.get("finished_at"))
        if start is not None and end is not None and start <= end:
            trial.datetime_start, trial.datetime_complete = start, end
        study.add_trial(trial)
        self._recorded.add((row["trial_key"], state_name))
        return True

    def _open(self):
        if self._study is None:
            # (a study file of an earlier version holds the grid under its hash-only name)
            name = study_name_for("grid", self._space, self._data_ids, ("val_mse",), self.config.storage_url)
            self.config = dataclasses.replace(self.config, study_name=name)
            self._study = open_study(self.config)
            self._recorded = {
                (t.user_attrs.get("trial_key"), t.state.name) for t in self._study.get_trials(deepcopy=False)
            }
        return self._study
