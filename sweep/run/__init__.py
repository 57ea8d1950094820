"""Running trials: worker processes on the devices there are (`schedule`), the jobs they run
(`jobs`), and Optuna studies that share work between machines (`study`)."""

from sweep.run.jobs import PACK_AUTO, PackJob, TrialJob, grid_trials, make_jobs, resolve_pack, unique_trials
from sweep.run.schedule import WorkerPlan, plan_workers, run_jobs, worker_slot

__all__ = [
    "PACK_AUTO",
    "PackJob",
    "TrialJob",
    "WorkerPlan",
    "grid_trials",
    "make_jobs",
    "plan_workers",
    "resolve_pack",
    "run_jobs",
    "unique_trials",
    "worker_slot",
]
