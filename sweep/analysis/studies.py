"""Optuna studies as the analysis reads them: a stored study, and its parameter importances."""

from __future__ import annotations

import warnings

import pandas as pd

from sweep.errors import SpecError, StoreError, must_be

__all__ = ["first_objective", "importance_evaluator", "load_study", "optuna_importance"]


def importance_evaluator(evaluator: str = "auto"):
    """(name, Optuna importance evaluator): fANOVA (`"fanova"`, needs scikit-learn) or
    PED-ANOVA (`"ped_anova"`, Optuna's default, no extra dependency); `"auto"` takes fANOVA
    when scikit-learn is installed. Seeded, so importances repeat."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if evaluator == "auto":
        try:
            import sklearn  # noqa: F401

            evaluator = "fanova"
        except ImportError:
            evaluator = "ped_anova"
    choices = {"fanova": FanovaImportanceEvaluator, "ped_anova": PedAnovaImportanceEvaluator}
    if evaluator not in choices:
        raise SpecError(must_be("evaluator", "optuna_importance", "one of auto, fanova, ped_anova", evaluator))
    return evaluator, choices[evaluator](seed=0)


def optuna_importance(storage: str, study_name: str, evaluator: str = "auto") -> pd.DataFrame:
    """Optuna's parameter importances for a stored study (see `importance_evaluator`).
    Columns: param, importance, evaluator."""
    import optuna

    evaluator, instance = importance_evaluator(evaluator)
    study = load_study(storage, study_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        values = optuna.importance.get_param_importances(study, evaluator=instance, target=first_objective(study))
    return pd.DataFrame({"param": list(values), "importance": list(values.values()), "evaluator": evaluator})


def load_study(storage: str, study_name: str):
    """A stored study, by name; SpecError naming the studies there if it has no such one, and
    StoreError if the storage cannot be read (a wrong URL, a database that is not there).
    Messages show the URL with its password masked."""
    import optuna

    from sweep.results.shared import first_line, mask_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        try:
            return optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception as err:  # unreachable server, bad URL, missing driver: one line, no password
        raise StoreError(f"--storage {mask_url(storage)}: cannot read study {study_name!r} ({first_line(err)})") from None
    raise SpecError(f"no study {study_name!r} in {mask_url(storage)} (studies there: {', '.join(names) or 'none'})")


def first_objective(study):
    """The target function for Optuna's plots and importances: a multi-objective study's first."""
    return (lambda t: t.values[0]) if len(study.directions) > 1 else None
