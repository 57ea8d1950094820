"""The job that runs one trial of a study in a worker, for both drivers, under the rules of
`sweep.run.queue`.

A grid study (`sweep.grid --storage`): claim a waiting grid point in the queue, `ask` the
study for it (a PartialFixedSampler gives exactly the point), train unless a complete row of
its key is stored, tell the study, record the end in the queue. `sweep.optuna`: let Optuna
sample a trial (`Study.optimize` with one trial, so samplers such as the grid's can stop the
study), hold it in the queue while it trains, tell.

Either way, while the trial trains its holder beats in the queue; a trial whose worker is
stopped by a signal is handed back (the point waits again; an Optuna trial's params are
enqueued again) with no attempt used up; one whose code raised uses up an attempt and is
retried, up to `sweep.run.queue.MAX_RETRY` times.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

from sweep.errors import StoreError
from sweep.faults import failpoint
from sweep.results import RowStore
from sweep.results.shared import first_line
from sweep.run.jobs import trial_for
from sweep.run.queue import MAX_RETRY, Claim, Queue, here, requeue, tell_failed
from sweep.run.schedule import worker_slot
from sweep.run.study import StudyConfig, open_study, trial_attrs
from sweep import stop
from sweep.stop import Stopped
from sweep.train import Pruning, run_trial

__all__ = ["OptunaTrialJob", "TAKEN_OVER", "TrialFailed", "objective_values"]

TAKEN_OVER = (
    "the trial was failed meanwhile by another machine (no heartbeat from here for --grace-period) and retried "
    "there; its result here is in --results, and in the shared table unless a complete row was there first"
)


class TrialFailed(Exception):
    """The trial ran and failed; its row says why. Optuna records it as FAIL and goes on."""


class _HandedBack(KeyboardInterrupt):
    """Raised through `Study.optimize` for a trial stopped by a signal: Optuna tells it FAIL
    (it does so for a KeyboardInterrupt) and raises it on, and the job raises the `Stopped`
    it carries."""

    def __init__(self, stopped: BaseException):
        super().__init__()
        self.stopped = stopped if isinstance(stopped, Stopped) else Stopped()


def objective_values(row: dict[str, Any], objectives: tuple[str, ...]) -> list[float] | None:
    values = [row.get(name) for name in objectives]
    if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in values):
        return None
    return [float(v) for v in values]


@dataclass(frozen=True)
class OptunaTrialJob:
    """Run one trial of a study in a worker: sample (or, with `enqueued_only`, claim a waiting
    grid point), train unless the store already has it, store the row, report to the study.

    `shared`: the storage URL whose results table also gets every row (`--storage`), and
    whose complete rows count as done; `artifacts`: the shared artefact store, if any; `run`:
    the driver's run id (the driver hands back what its run holds when it is stopped)."""

    config: StudyConfig
    space: Any  # SearchSpace
    data_dir: str | None
    results_dir: str
    row_extra: dict[str, Any] = field(default_factory=dict)
    checkpoint_every_s: float = 10.0
    enqueued_only: bool = False  # grid studies: run only the queue's grid points, never sample
    shared: str | None = None
    artifacts: str | None = None
    run: str = ""
    study_total: int | None = None  # ask no trial once the study holds this many finished or running ones (a Slurm array task's)

    @property
    def rows(self) -> RowStore:
        return RowStore(self.results_dir, self.shared, self.config.storage_timeout)

    def __call__(self) -> dict[str, Any] | None:
        return self._grid_point() if self.enqueued_only else self._sampled()

    # ---- sweep.grid --storage ----------------------------------------------------------------

    def _grid_point(self) -> dict[str, Any] | None:
        import optuna

        queue = self.config.queue()
        queue.sweep(open_study(self.config, create=False, worker=worker_slot()))  # so dead workers' points wait again
        if stop.requested() is not None:
            raise Stopped()  # (stopping: take nothing more)
        claim = queue.claim_next(self.run)
        if claim is None:
            return None
        State = optuna.trial.TrialState
        result: dict[str, Any] = {}
        study, trial = None, None
        with queue.heartbeat(claim):
            try:
                study = open_study(self.config, create=False, fixed=claim.params)
                trial = study.ask()
                if not queue.attach(claim, trial.number):  # taken over already (this host was cut off a grace period)
                    self._tell(study, trial, state=State.FAIL)
                    return None
                _set_attrs(trial, {"grid_point": claim.slot, **({"retry_of": claim.previous} if claim.previous is not None else {})})
                values = self._objective(trial, result)
            except optuna.TrialPruned:
                self._tell(study, trial, state=State.PRUNED)
                self._end(queue, claim, "pruned")
            except TrialFailed as err:
                self._tell(study, trial, state=State.FAIL)
                self._end(queue, claim, "failed", str(err))
            except StoreError:
                raise  # the database stayed away: nothing can be told; the claim goes stale and is retried elsewhere
            except (Stopped, KeyboardInterrupt):
                queue.release(claim)
                if trial is not None:
                    _interrupted(study, trial)
                raise
            except Exception as err:  # the job's own code raised: an attempt used up, retried by the next worker
                error = first_line(err)
                state = queue.charge(claim, error)
                if trial is not None:
                    self._tell(study, trial, state=State.FAIL, error=error)
                print(f"grid point {claim.slot}: {error} ({'retried' if state == 'waiting' else f'failed after {MAX_RETRY + 1} attempts'})", file=sys.stderr)
                return None
            else:
                self._tell(study, trial, values)
                self._end(queue, claim, "complete")
        return result.get("row")

    def _end(self, queue: Queue, claim: Claim, state: str, error: str | None = None) -> None:
        if not queue.finish(claim, state, error):
            print(f"grid point {claim.slot} ({claim.trial_key}): {TAKEN_OVER}", file=sys.stderr)

    def _tell(self, study, trial, values=None, state=None, error: str | None = None) -> None:
        """Tell the study how a trial ended, unless it was failed meanwhile by another machine
        (no heartbeat from here for the grace period: a cut link, a stalled machine) and
        retried there: then say so; the row is in the store either way (one complete row per
        key)."""
        import optuna

        if error:
            _set_attrs(trial, {"error": error})
        try:
            study.tell(trial, values, state=state)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError) as err:
            if study.get_trials(deepcopy=False)[trial.number].state == (state or optuna.trial.TrialState.COMPLETE):
                return  # our own tell reached the database before its answer was lost
            print(f"trial #{trial.number} ({trial.user_attrs.get('trial_key')}): {TAKEN_OVER} ({err})", file=sys.stderr)

    # ---- sweep.optuna ------------------------------------------------------------------------

    def _sampled(self) -> dict[str, Any] | None:
        import optuna

        study = open_study(self.config, create=False, worker=worker_slot())
        queue = self.config.queue()
        queue.sweep(study)  # dead workers' trials failed and enqueued again
        if self.study_total is not None:
            from optuna.trial import TrialState

            held = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
            if len(held) >= self.study_total:
                return None
        result: dict[str, Any] = {}
        try:
            study.optimize(lambda trial: self._held(trial, queue, result), n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
        except _HandedBack as handed:
            raise handed.stopped from None
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError) as err:  # failed by another machine meanwhile
            if not str(err).startswith("Cannot tell a") and not isinstance(err, optuna.exceptions.UpdateFinishedTrialError):
                raise
            print(f"{TAKEN_OVER} ({err})", file=sys.stderr)
        return result.get("row")

    def _held(self, trial, queue: Queue, result: dict[str, Any]):
        """The objective of `Study.optimize`: the trial held in the queue while it runs."""
        import optuna

        attempts = int(trial.user_attrs.get("sweep_attempts", 0))
        claim = queue.claim_trial(trial.number, self.run, attempts)
        with queue.heartbeat(claim):
            try:
                values = self._objective(trial, result)
            except optuna.TrialPruned:
                queue.finish(claim, "pruned")
                raise
            except TrialFailed as err:
                queue.finish(claim, "failed", str(err), params=trial.params)
                raise
            except StoreError:
                raise
            except (Stopped, KeyboardInterrupt) as stopped:
                if queue.finish(claim, "requeued", "interrupted", params=trial.params):  # (else handed back by the driver already)
                    requeue(trial.study, trial.number, attempts)  # the same params wait again, no attempt used up
                _set_attrs(trial, {"interrupted": True})
                raise _HandedBack(stopped) from None
            except Exception as err:
                error = first_line(err)
                retried = attempts + 1 <= MAX_RETRY
                if queue.finish(claim, "requeued" if retried else "failed", error, params=trial.params) and retried:
                    requeue(trial.study, trial.number, attempts + 1)
                _set_attrs(trial, {"error": error})
                raise TrialFailed(error) from None
        if not queue.finish(claim, "complete", params=trial.params):
            print(f"trial #{trial.number} ({trial.user_attrs.get('trial_key')}): {TAKEN_OVER}", file=sys.stderr)
        return values

    # ---- both --------------------------------------------------------------------------------

    def _objective(self, trial, result: dict[str, Any]):
        import optuna

        from sweep.artifacts import Artifacts

        point = self.space.suggest(trial)
        if self.space.excluded(point):  # a combination the space leaves out: nothing to train
            trial.set_user_attr("excluded", True)
            raise optuna.TrialPruned(f"{point} is excluded by the space")
        spec, dataset = trial_for(self.space, point, self.data_dir)
        trial.set_user_attr("trial_key", spec.key)
        trial.set_user_attr("worker", here())
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
            print(f"trial {spec.key}: a complete row of it was stored first (by another machine, or another worker here); that row stays", file=sys.stderr)
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
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        pass


def _interrupted(study, trial) -> None:
    """A grid trial stopped by a signal: recorded as failed in the study (Optuna has no state
    for "handed back"; the queue's point waits again), marked `interrupted`."""
    _set_attrs(trial, {"interrupted": True})
    tell_failed(study, trial.number)
