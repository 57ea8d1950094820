"""One trial end to end on tiny synthetic data: metrics, artefacts, failures, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sweep.arch import ArchSpec
from sweep.encodings import Task
from sweep.metrics import mse
from sweep.spec import TrainingProtocol, TrialSpec
from sweep.train import Pruning, run_trial, splits_for, trial_dir

pytestmark = pytest.mark.slow

PROTOCOL = TrainingProtocol(dataset="synthetic", epochs=2, train_fraction=1.0, train_limit=64, batch_size=16)


def spec_for(dataset, **protocol) -> TrialSpec:
    return TrialSpec(ArchSpec(), TrainingProtocol(**{**PROTOCOL.to_dict(), **protocol}), dataset.data_id)


def test_a_trial_completes_with_metrics_and_artefacts(synthetic, tmp_path):
    spec = spec_for(synthetic)
    row = run_trial(spec, synthetic, tmp_path)
    assert row["status"] == "complete", row["error"]
    assert row["trial_key"] == spec.key and row["latent_size"] == 1024 and row["params"] == 4911
    assert row["epochs_run"] == 2 and row["best_epoch"] in (1, 2) and row["n_train"] + row["n_val"] == 64
    for name in ("val_mse", "test_mse", "test_mae", "test_psnr", "test_ssim", "train_seconds"):
        assert np.isfinite(row[name]), name
    assert row["test_psnr"] == pytest.approx(10 * np.log10(1 / row["test_mse"]))
    history = json.loads(row["history"])
    assert len(history) == 2 and {"loss", "val_loss"} <= set(history[0])
    out = trial_dir(tmp_path, spec.key)
    assert {"model.keras", "reconstructions.png", "history.json", "spec.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoint").exists()

    # The saved model is the evaluated one: reloading it reproduces the test MSE.
    import keras

    model = keras.models.load_model(out / "model.keras")
    test = splits_for(synthetic, spec.protocol).test
    assert mse(test, np.clip(model.predict(test, verbose=0), 0, 1)) == pytest.approx(row["test_mse"], rel=1e-5)


def test_same_seed_same_result(synthetic, tmp_path):
    spec = spec_for(synthetic, epochs=1)
    a = run_trial(spec, synthetic, tmp_path / "a")
    b = run_trial(spec, synthetic, tmp_path / "b")
    assert a["test_mse"] == pytest.approx(b["test_mse"], rel=1e-6)


def test_nan_loss_is_a_failed_trial_with_the_reason(synthetic, tmp_path, monkeypatch):
    monkeypatch.setattr(Task, "targets", lambda self, rgb: rgb * np.nan)
    row = run_trial(spec_for(synthetic), synthetic, tmp_path)
    assert row["status"] == "failed"
    assert row["error"].startswith("FloatingPointError: loss became NaN or infinite in epoch 1")


def test_an_exception_inside_a_trial_is_recorded(synthetic, tmp_path, monkeypatch):
    import sweep.train.step

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(sweep.train.step, "build_autoencoder", broken)
    spec = spec_for(synthetic)
    row = run_trial(spec, synthetic, tmp_path)
    assert row["status"] == "failed" and row["error"] == "RuntimeError: boom"
    assert "Traceback" in (trial_dir(tmp_path, spec.key) / "error.txt").read_text()


def test_out_of_memory_is_named(synthetic, tmp_path, monkeypatch):
    import sweep.train.step

    class ResourceExhaustedError(Exception):
        pass

    def oom(*args, **kwargs):
        raise ResourceExhaustedError("OOM when allocating tensor with shape [32,8,32,32]")

    monkeypatch.setattr(sweep.train.step, "build_autoencoder", oom)
    row = run_trial(spec_for(synthetic), synthetic, tmp_path)
    assert row["status"] == "failed" and row["error"].startswith("out of memory (ResourceExhaustedError: OOM")


def test_pruned_trials_stop_early_and_report_the_asked_value_each_epoch(synthetic, tmp_path):
    reported = []

    def should_prune(epoch: int, value: float) -> bool:
        reported.append((epoch, value))
        return epoch >= 1

    row = run_trial(spec_for(synthetic, epochs=4), synthetic, tmp_path, pruning=Pruning("val_psnr", should_prune))
    assert row["status"] == "pruned" and row["stop_reason"] == "pruned" and row["epochs_run"] == 2
    assert [epoch for epoch, _ in reported] == [0, 1] and np.isfinite(row["test_mse"])
    # the reported value is the validation PSNR in dB, as the row computes it, not a loss
    history = json.loads(row["history"])
    assert 5 < reported[-1][1] < 40
    assert reported[row["best_epoch"] - 1][1] == pytest.approx(row["val_psnr"], rel=1e-5)
    assert reported[-1][1] == pytest.approx(10 * np.log10(1 / history[-1]["val_loss"]), rel=1e-3)  # MSE loss: PSNR of it


def test_early_stopping_evaluates_and_saves_the_best_epochs_weights(synthetic, tmp_path):
    import keras

    spec = spec_for(synthetic, epochs=8, early_stopping_patience=2, learning_rate=0.05)
    row = run_trial(spec, synthetic, tmp_path)
    assert row["status"] == "complete", row["error"]
    history = json.loads(row["history"])
    best = int(np.argmin([h["val_loss"] for h in history])) + 1
    assert row["stop_reason"] == "early_stopping" and row["best_epoch"] == best < row["epochs_run"] == best + 2
    # The saved model is the best epoch's: its validation MSE is that epoch's validation loss
    # (MSE loss), and the row's val_mse is the same number.
    model = keras.models.load_model(trial_dir(tmp_path, spec.key) / "model.keras")
    val = splits_for(synthetic, spec.protocol).val
    assert mse(val, model.predict(val, verbose=0)) == pytest.approx(history[best - 1]["val_loss"], rel=1e-5)
    assert row["val_mse"] == pytest.approx(history[best - 1]["val_loss"], rel=1e-5)


def test_mixed_precision_trains_in_half_precision_with_float32_weights(synthetic, tmp_path, monkeypatch):
    import keras

    from sweep import backend

    monkeypatch.setattr(backend, "visible_gpus", lambda: ["0"])  # the dtype is the protocol's, whatever the device
    spec = spec_for(synthetic, epochs=1, precision="mixed_bfloat16")
    row = run_trial(spec, synthetic, tmp_path)
    assert row["status"] == "complete", row["error"]
    model = keras.models.load_model(trial_dir(tmp_path, spec.key) / "model.keras")
    assert model.get_layer("latent").dtype_policy.name == "mixed_bfloat16"
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert keras.config.dtype_policy().name == "float32"  # the next trial builds in full precision again
