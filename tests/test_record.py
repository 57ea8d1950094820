"""A local grid run is recorded in RESULTS/optuna.db (sweep.run.record), so optuna-dashboard
shows grid runs as it shows Optuna's: one trial per stored row, with the grid point as its
params, val_mse as its value, its state and the per-epoch validation loss."""

from __future__ import annotations

import json

import optuna
import pytest

from conftest import run_cli, small_space
from sweep.results import load_results
from sweep.run import grid_trials
from sweep.run.record import GridRecord
from sweep.space import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def studies(results):
    storage = f"sqlite:///{results / 'optuna.db'}"
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage) for s in optuna.get_all_study_summaries(storage)}


@pytest.mark.slow
def test_a_local_grid_is_recorded_as_an_optuna_study_once(tmp_path):
    space = small_space(tmp_path, {"kernel_size": [3, 5], "channel_factor": [1, 2]}, epochs=2)
    results = tmp_path / "results"
    out = run_cli("sweep.grid", "--space", space, "--results", str(results))
    assert out.returncode == 0, out.stderr
    (name, study), = studies(results).items()
    assert name.startswith("small-grid-")
    assert f"dashboard: optuna-dashboard sqlite:///{results / 'optuna.db'} (study '{name}'" in out.stdout
    frame = load_results(results).set_index("trial_key")
    trials = study.get_trials()
    assert len(trials) == 4 and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert {t.user_attrs["trial_key"] for t in trials} == set(frame.index)
    for trial in trials:
        row = frame.loc[trial.user_attrs["trial_key"]]
        assert trial.params == {"kernel_size": row["kernel_size"], "channel_factor": row["channel_factor"]}
        assert trial.values == [pytest.approx(row["val_mse"])]
        assert trial.intermediate_values == pytest.approx({i: h["val_loss"] for i, h in enumerate(json.loads(row["history"]))})
        assert len(trial.intermediate_values) == 2
        assert trial.user_attrs["test_mse"] == pytest.approx(row["test_mse"]) and trial.user_attrs["driver"] == "grid"
        assert trial.datetime_start < trial.datetime_complete

    again = run_cli("sweep.grid", "--space", space, "--results", str(results))
    assert again.returncode == 0, again.stderr
    assert len(studies(results)[name].get_trials()) == 4  # nothing trained, nothing added twice


def test_each_state_of_a_key_is_one_trial_and_other_rows_are_ignored(tmp_path):
    space = load_space(small_space(tmp_path))
    trials = grid_trials(space, None)
    record = GridRecord(tmp_path, space, trials)
    key = trials[0][1].key
    history = json.dumps([{"loss": 1.0, "val_loss": 0.5}, {"loss": 0.9, "val_loss": float("nan")}])
    assert record.add({"trial_key": key, "status": "failed", "error": "out of memory", "history": history})
    assert not record.add({"trial_key": key, "status": "failed", "error": "out of memory"})
    assert not record.add({"trial_key": "not-of-this-grid", "status": "complete", "val_mse": 0.1})
    assert record.add({"trial_key": key, "status": "complete", "val_mse": 0.25, "history": history, "latent_size": 512})
    assert not GridRecord(tmp_path, space, trials).sync([{"trial_key": key, "status": "complete", "val_mse": 0.25}])
    (study,) = studies(tmp_path).values()
    failed, complete = study.get_trials()
    assert failed.state == optuna.trial.TrialState.FAIL and failed.user_attrs["error"] == "out of memory"
    assert failed.intermediate_values == {0: 0.5}  # a NaN epoch is left out
    assert complete.state == optuna.trial.TrialState.COMPLETE and complete.value == 0.25
    assert complete.params == {"kernel_size": trials[0][0]["kernel_size"]} and complete.user_attrs["latent_size"] == 512


def test_a_study_file_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path, capsys):
    space = load_space(small_space(tmp_path))
    trials = grid_trials(space, None)
    (tmp_path / "optuna.db").write_text("this is not a database")
    record = GridRecord(tmp_path, space, trials)
    assert not record.add({"trial_key": trials[0][1].key, "status": "complete", "val_mse": 0.25})
    assert not record.add({"trial_key": trials[1][1].key, "status": "complete", "val_mse": 0.25})
    err = capsys.readouterr().err
    assert err.count("could not record the grid in") == 1 and "the results are unaffected" in err
