"""Crash anywhere, resume exactly: a trial interrupted at an epoch boundary or mid-epoch, and
resumed any number of times, ends with the row and the weights of the uninterrupted trial.

The trial here exercises every piece of state a checkpoint must carry: dropout (random
masks), a learning-rate plateau that lowers the rate, early stopping, and a best epoch that
is neither the last one nor one a checkpoint fell on. Checkpoints are timed by a fake clock
that ticks once per reading, so "every 2 seconds" deterministically means every other epoch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sweep import faults
from sweep.arch import DenseLatentSpec
from sweep.spec import TrainingProtocol, TrialSpec
from sweep.train import checkpoint, run_trial, trial_dir

pytestmark = pytest.mark.slow

PROTOCOL = TrainingProtocol(
    dataset="synthetic", epochs=8, train_fraction=1.0, train_limit=96, batch_size=16, learning_rate=0.03,
    early_stopping_patience=4, reduce_lr_patience=2, reduce_lr_factor=0.5,
)  # fmt: skip
STEPS_PER_EPOCH = 6  # 86 training images (96 less 10 for validation) in batches of 16
METRICS = ("val_mse", "val_psnr", "test_mse", "test_mae", "test_psnr", "test_ssim")


@pytest.fixture
def spec(synthetic) -> TrialSpec:
    return TrialSpec(DenseLatentSpec(filters=(8, 16), latent_dim=16, dropout=0.3), PROTOCOL, synthetic.data_id)


@pytest.fixture
def ticking_clock(monkeypatch):
    """Each reading of the checkpoint clock is one second later than the last."""
    ticks = iter(range(1, 10**6))
    monkeypatch.setattr(checkpoint, "clock", lambda: float(next(ticks)))


@pytest.fixture
def saved_epochs(monkeypatch) -> list[int]:
    """The epochs checkpoints were taken after, in order."""
    epochs: list[int] = []
    original = checkpoint.Checkpoint.save

    def save(self, epoch, *args, **kwargs):
        epochs.append(epoch)
        return original(self, epoch, *args, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpoint, "save", save)
    return epochs


@pytest.fixture(autouse=True)
def no_failpoints():
    yield
    faults.configure("")


def interrupted(spec, dataset, results, failpoint: str, every_s: float) -> None:
    """Run the trial until the failpoint interrupts it (as Ctrl-C or a killed process would)."""
    faults.configure(failpoint)
    with pytest.raises(KeyboardInterrupt):
        run_trial(spec, dataset, results, checkpoint_every_s=every_s)
    faults.configure("")


def weights(results, spec) -> list[np.ndarray]:
    import keras

    return keras.models.load_model(trial_dir(results, spec.key) / "model.keras").get_weights()


def assert_same_trial(row: dict, reference: dict, row_weights: list, reference_weights: list) -> None:
    for key in ("status", "epochs_run", "best_epoch", "stop_reason", "params", "latent_size"):
        assert row[key] == reference[key], key
    history, expected = json.loads(row["history"]), json.loads(reference["history"])
    assert len(history) == len(expected)
    for epoch, (got, want) in enumerate(zip(history, expected)):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), f"epoch {epoch + 1}"
    for metric in METRICS:
        assert row[metric] == pytest.approx(reference[metric], rel=1e-6), metric
    assert len(row_weights) == len(reference_weights)
    for got, want in zip(row_weights, reference_weights):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


@pytest.fixture
def uninterrupted(spec, synthetic, tmp_path):
    row = run_trial(spec, synthetic, tmp_path / "uninterrupted", checkpoint_every_s=float("inf"))
    assert row["status"] == "complete", row["error"]
    history = json.loads(row["history"])
    # The scenario the test needs: a best epoch before the last, a lowered learning rate.
    # (Under TensorFlow: best epoch 3 of 7; JAX draws other dropout masks, so other epochs.)
    assert row["stop_reason"] == "early_stopping" and row["best_epoch"] < row["epochs_run"] - 1, history
    assert row["epochs_run"] >= 5, history  # room for the interruptions below
    assert len({h["lr"] for h in history}) > 1, history
    return row, weights(tmp_path / "uninterrupted", spec)


def test_interrupted_after_an_epoch_with_a_checkpoint_every_epoch(spec, synthetic, tmp_path, uninterrupted, saved_epochs):
    results = tmp_path / "resumed"
    interrupted(spec, synthetic, results, "trial.epoch_end=interrupt@4", every_s=0)
    assert saved_epochs == [0, 1, 2, 3]
    row = run_trial(spec, synthetic, results, checkpoint_every_s=0)
    assert row["resumed_from_epoch"] == 4
    assert_same_trial(row, uninterrupted[0], weights(results, spec), uninterrupted[1])


def test_interrupted_after_the_best_epoch_was_passed_over_by_the_checkpoints(
    spec, synthetic, tmp_path, uninterrupted, ticking_clock, saved_epochs
):
    results = tmp_path / "resumed"
    # Checkpoints every 2 s of a clock that ticks once a reading: after epochs 2 and 4 (1-based);
    # the best epoch, 3, falls between them, and the run is interrupted after epoch 5.
    interrupted(spec, synthetic, results, "trial.epoch_end=interrupt@5", every_s=2)
    assert [e + 1 for e in saved_epochs] == [2, 4]
    with np.load(trial_dir(results, spec.key) / checkpoint.CHECKPOINT_FILE) as saved:
        meta = json.loads(str(saved["meta"]))
    assert meta["epoch"] + 1 == 4 and meta["state"]["tracker"]["best_epoch"] + 1 == 3  # best weights of an epoch never checkpointed
    row = run_trial(spec, synthetic, results, checkpoint_every_s=2)
    assert row["resumed_from_epoch"] == 4
    assert_same_trial(row, uninterrupted[0], weights(results, spec), uninterrupted[1])
    assert not (trial_dir(results, spec.key) / checkpoint.CHECKPOINT_FILE).exists()


@pytest.mark.backends
def test_interrupted_mid_epoch_twice(spec, synthetic, tmp_path, uninterrupted, ticking_clock, saved_epochs):
    results = tmp_path / "resumed"
    # Mid-way through epoch 3 (its 3rd step), with a checkpoint after epoch 2 only.
    interrupted(spec, synthetic, results, f"trial.batch_end=interrupt@{2 * STEPS_PER_EPOCH + 3}", every_s=2)
    assert [e + 1 for e in saved_epochs] == [2]
    # Resumed from epoch 3, then interrupted again after its second epoch (epoch 4; the
    # resumed run's checkpoint fell after epoch 4 too).
    interrupted(spec, synthetic, results, "trial.epoch_end=interrupt@2", every_s=2)
    assert [e + 1 for e in saved_epochs] == [2, 4]
    row = run_trial(spec, synthetic, results, checkpoint_every_s=2)
    assert row["resumed_from_epoch"] == 4
    assert_same_trial(row, uninterrupted[0], weights(results, spec), uninterrupted[1])


def test_an_unreadable_checkpoint_restarts_the_trial_with_the_same_result(spec, synthetic, tmp_path, uninterrupted, capfd):
    results = tmp_path / "resumed"
    interrupted(spec, synthetic, results, "trial.epoch_end=interrupt@3", every_s=0)
    path = trial_dir(results, spec.key) / checkpoint.CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:100])  # a disk error tore it
    row = run_trial(spec, synthetic, results, checkpoint_every_s=0)
    assert "cannot resume from" in capfd.readouterr().err
    assert row["resumed_from_epoch"] is None
    assert_same_trial(row, uninterrupted[0], weights(results, spec), uninterrupted[1])


def test_a_trial_resumes_on_another_machine_from_the_shared_artefact_store(spec, synthetic, tmp_path, uninterrupted):
    """`--artifacts`: the checkpoint uploaded by a machine that died lets a machine with a
    results folder of its own resume the trial, which ends as the uninterrupted one; the
    store then holds the trial's files and no checkpoint."""
    from sweep.artifacts import Artifacts

    store = Artifacts(str(tmp_path / "shared-artifacts"))
    faults.configure(f"trial.epoch_end:{spec.key}=interrupt@3")
    with pytest.raises(KeyboardInterrupt):
        run_trial(spec, synthetic, tmp_path / "machine-a", checkpoint_every_s=0, artifacts=store)
    faults.configure("")
    assert (tmp_path / "shared-artifacts" / spec.key / "checkpoint.npz").exists()

    row = run_trial(spec, synthetic, tmp_path / "machine-b", checkpoint_every_s=0, artifacts=store)
    assert row["resumed_from_epoch"] == 3  # after epochs 0, 1, 2 of machine A
    assert_same_trial(row, uninterrupted[0], weights(tmp_path / "machine-b", spec), uninterrupted[1])
    shared = sorted(p.name for p in (tmp_path / "shared-artifacts" / spec.key).iterdir())
    assert shared == ["history.json", "model.keras", "reconstructions.png", "spec.json"]
