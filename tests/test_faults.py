"""Crash anywhere, resume exactly: kill a driver or a worker at chosen moments (failpoints)
and at random moments, rerun the same command, and check the exact final store."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli, small_space
from sweep.space import load_space
from sweep.results import load_results, read_rows

pytestmark = pytest.mark.slow

FACTORS = {"kernel_size": [3, 5], "fewer_layers": [False, True]}  # 4 trials


def expected_keys(space_path: str) -> set[str]:
    from sweep.data import load_dataset

    space = load_space(space_path)
    data_id = load_dataset("synthetic").data_id
    keys = {space.spec(point, data_id).key for point in space.grid_points()}
    assert len(keys) == len(space.grid_points()) > 1  # no two points share a key
    return keys


def assert_exactly_complete(results, keys: set[str]) -> None:
    """The store holds exactly these trials, each once, each complete, every file whole."""
    rows_dir = results / "rows"
    for path in rows_dir.glob("*.json"):
        json.loads(path.read_text())  # no torn file
    rows = read_rows(results)
    assert sorted(r["trial_key"] for r in rows) == sorted(keys)
    assert {r["status"] for r in rows} == {"complete"}, [(r["trial_key"], r["status"], r.get("error")) for r in rows]


def grid(space: str, results, *extra: str, failpoints: str = "", state=None, timeout: float = 600):
    """The grid driver, running its trials in its own process (one worker) unless `extra` says otherwise."""
    env = {"SWEEP_FAILPOINTS": failpoints, "SWEEP_FAILPOINT_DIR": str(state)} if failpoints else {}
    extra = extra if "--workers" in extra else ("--workers", "1", *extra)
    return run_cli("sweep.grid", "--space", space, "--results", str(results), "--checkpoint-every", "0", *extra, env=env, timeout=timeout)


@pytest.mark.parametrize(
    "failpoint, rows_after_crash",
    [
        ("data.load=kill", 0),  # the driver dies while loading data: nothing stored yet
        pytest.param("trial.epoch_end=kill@2", 0, marks=pytest.mark.backends),  # mid-training, after the second epoch's checkpoint
        ("trial.artifacts_saved=kill@2", 1),  # the second trial's model is saved, its row is not
        ("store.write_row.before_rename=kill@2", 1),  # the second row is written but not yet renamed
    ],
)
def test_killed_driver_then_rerun_completes_every_trial_once(tmp_path, failpoint, rows_after_crash):
    space = small_space(tmp_path, FACTORS, epochs=3)
    results = tmp_path / "results"
    crashed = grid(space, results, failpoints=failpoint, state=tmp_path / "fired")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert len(read_rows(results)) == rows_after_crash
    if failpoint.startswith("store.write_row"):
        assert list((results / "rows").glob(".*.tmp")), "the crash should leave the half-written row behind"

    rerun = grid(space, results)
    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_complete(results, expected_keys(space))
    frame = load_results(results)
    if failpoint.startswith("trial.epoch_end"):
        # the interrupted trial resumed after its last finished epoch, not from scratch
        resumed = frame[frame["resumed_from_epoch"].notna()]
        assert len(resumed) == 1 and resumed.iloc[0]["resumed_from_epoch"] == 2
        assert resumed.iloc[0]["epochs_run"] == 3 and len(json.loads(resumed.iloc[0]["history"])) == 3


def test_a_killed_worker_is_replaced_within_the_same_run(tmp_path):
    space = small_space(tmp_path, FACTORS, epochs=3)
    results = tmp_path / "results"
    out = grid(space, results, "--workers", "2", failpoints="trial.epoch_end=kill@2", state=tmp_path / "fired")
    assert out.returncode == 0, out.stderr
    assert "a worker died" in out.stderr, out.stderr
    assert_exactly_complete(results, expected_keys(space))
    assert load_results(results)["resumed_from_epoch"].notna().sum() >= 1


def test_random_kills_then_a_clean_run(tmp_path):
    """SIGKILL the driver at random moments three times, then let it finish."""
    space = small_space(tmp_path, {"kernel_size": [3, 5], "fewer_layers": [False, True], "channel_factor": [1, 2]}, epochs=2)
    results = tmp_path / "results"
    rng = random.Random(2026)
    for _ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-m", "sweep.grid", "--space", space, "--results", str(results), "--checkpoint-every", "0"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rng.uniform(3.0, 15.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = grid(space, results)
    assert final.returncode == 0, final.stderr
    assert_exactly_complete(results, expected_keys(space))


def test_optuna_driver_killed_between_storing_a_row_and_telling_the_study(tmp_path):
    space = small_space(tmp_path, {"kernel_size": [3, 5]}, epochs=2)
    results = tmp_path / "results"
    env = {"SWEEP_FAILPOINTS": "study.before_tell=kill", "SWEEP_FAILPOINT_DIR": str(tmp_path / "fired")}
    common = ("sweep.optuna", "--space", space, "--results", str(results), "--sampler", "grid", "--heartbeat-interval", "1", "--grace-period", "2", "--workers", "1")
    crashed = run_cli(*common, "--trials", "2", env=env)
    assert crashed.returncode == -signal.SIGKILL
    (stored,) = read_rows(results)  # the row made it; the study still thinks the trial runs
    time.sleep(3)  # past the grace period
    rerun = run_cli(*common, "--trials", "2")
    assert rerun.returncode == 0, rerun.stderr
    import optuna

    (summary,) = optuna.get_all_study_summaries(storage=f"sqlite:///{results}/optuna.db")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{results}/optuna.db")
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") is not None)
    assert retry.user_attrs["trial_key"] == stored["trial_key"] and retry.user_attrs.get("reused_row") is True
    assert_exactly_complete(results, expected_keys(space))
    assert load_results(results).set_index("trial_key").loc[stored["trial_key"], "finished_at"] == stored["finished_at"]


def test_a_trial_that_keeps_killing_its_worker_is_recorded_failed(tmp_path):
    space = small_space(tmp_path, FACTORS, epochs=2)
    keys = sorted(expected_keys(space))
    results = tmp_path / "results"
    # no failpoint directory: the failpoint fires again in every new worker that runs this trial
    env = {"SWEEP_FAILPOINTS": f"trial.epoch_end:{keys[0]}=kill"}
    out = run_cli("sweep.grid", "--space", space, "--results", str(results), "--workers", "2", env=env)
    assert out.returncode == 0, out.stderr
    rows = {r["trial_key"]: r for r in read_rows(results)}
    assert sorted(rows) == keys
    assert rows[keys[0]]["status"] == "failed"
    assert rows[keys[0]]["error"] == "the worker running this trial died 2 times (killed, or out of memory)"
    assert all(rows[k]["status"] == "complete" for k in keys[1:])
    assert "4 trials: 3 complete, 1 failed" in out.stdout

    retry = run_cli("sweep.grid", "--space", space, "--results", str(results), "--retry-failed")
    assert retry.returncode == 0, retry.stderr
    assert "3 already stored, 1 to run" in retry.stderr
    assert_exactly_complete(results, set(keys))
    after = {r["trial_key"]: r for r in read_rows(results)}
    assert all(after[k]["finished_at"] == rows[k]["finished_at"] for k in keys[1:])


@pytest.mark.backends
def test_a_trial_killed_mid_epoch_resumes_to_the_uninterrupted_row(tmp_path):
    """SIGKILL in the middle of an epoch, rerun the command: the row and the saved weights are
    those of the same trial run without interruption (dropout, a plateau and early stopping
    included; tests/test_resume.py covers checkpoints that skip epochs)."""
    import keras
    import numpy as np

    path = tmp_path / "space.yaml"
    path.write_text(
        "arch: dense_latent\n"
        "space: {filters: [[8, 16]], latent_dim: [16], dropout: [0.3]}\n"
        "protocol: {dataset: synthetic, epochs: 8, train_fraction: 1.0, train_limit: 96, batch_size: 16,\n"
        "           learning_rate: 0.03, early_stopping_patience: 4, reduce_lr_patience: 2, reduce_lr_factor: 0.5}\n"
    )
    clean = grid(str(path), tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    # 6 steps an epoch: the 20th step is the 2nd of epoch 4, after the checkpoint of epoch 3.
    crashed = grid(str(path), tmp_path / "resumed", failpoints="trial.batch_end=kill@20", state=tmp_path / "fired")
    assert crashed.returncode == -signal.SIGKILL and not read_rows(tmp_path / "resumed")
    rerun = grid(str(path), tmp_path / "resumed")
    assert rerun.returncode == 0, rerun.stderr
    (expected,), (row,) = read_rows(tmp_path / "clean"), read_rows(tmp_path / "resumed")
    assert row["resumed_from_epoch"] == 3 and expected["resumed_from_epoch"] is None
    for key in ("trial_key", "status", "epochs_run", "best_epoch", "stop_reason"):
        assert row[key] == expected[key], key
    for got, want in zip(json.loads(row["history"]), json.loads(expected["history"]), strict=True):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9)
    for metric in ("val_mse", "test_mse", "test_psnr", "test_ssim"):
        assert row[metric] == pytest.approx(expected[metric], rel=1e-6), metric
    models = [keras.models.load_model(root / "trials" / row["trial_key"] / "model.keras") for root in (tmp_path / "clean", tmp_path / "resumed")]
    for got, want in zip(models[1].get_weights(), models[0].get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
