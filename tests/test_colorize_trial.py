"""Colorization trials end to end on tiny synthetic data, and the training recipes: losses
(ab classification against a numpy reference), optimizers, augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sweep.arch import PRESETS, ArchSpec
from sweep.encodings import ab_bins, gray_baseline, luminance, rebalancing_weights, task_for
from sweep.metrics import colour_metrics, image_metrics
from sweep.spec import TrainingProtocol, TrialSpec
from sweep.train import run_trial, splits_for, trial_dir
from sweep.train.step import epoch_batches, make_loss, make_optimizer

COLORIZE = dict(dataset="synthetic", task="colorize", epochs=2, train_fraction=1.0, train_limit=64, batch_size=16)


@pytest.mark.slow
def test_a_colorize_trial_scores_colour_against_the_gray_baseline(synthetic, tmp_path):
    protocol = TrainingProtocol(
        **COLORIZE, encoding="ycbcr", augment_flip=True, augment_rotation=15.0, reduce_lr_patience=1, optimizer="rmsprop"
    )
    spec = TrialSpec(ArchSpec(), protocol, synthetic.data_id)
    row = run_trial(spec, synthetic, tmp_path)
    assert row["status"] == "complete", row["error"]
    assert row["preset"] == "acml" and row["encoding"] == "ycbcr" and row["epochs_run"] == 2
    for name in ("test_psnr", "test_ab_rmse", "test_ab_auc", "test_colorfulness", "test_colorfulness_truth", "test_gray_psnr", "test_gray_ab_rmse"):
        assert np.isfinite(row[name]), name
    test = splits_for(synthetic, protocol).test
    gray = gray_baseline(test)
    assert row["test_gray_psnr"] == pytest.approx(image_metrics(test, gray)["psnr"])
    assert row["test_gray_ab_rmse"] == pytest.approx(colour_metrics(test, gray)["ab_rmse"])
    assert row["test_gray_colorfulness"] == 0.0 and row["test_colorfulness_truth"] > 0
    assert 0 < row["test_ab_auc"] <= 1
    history = json.loads(row["history"])
    assert all("lr" in h for h in history)
    assert (trial_dir(tmp_path, spec.key) / "reconstructions.png").exists()


@pytest.mark.slow
def test_an_ab_classification_trial_completes_and_its_model_reloads(synthetic, tmp_path):
    protocol = TrainingProtocol(**{**COLORIZE, "epochs": 1}, encoding="lab", loss="ab_classification")
    spec = TrialSpec(ArchSpec(channel_factor=1), protocol, synthetic.data_id)
    row = run_trial(spec, synthetic, tmp_path)
    assert row["status"] == "complete", row["error"]
    assert np.isfinite(row["test_psnr"]) and np.isfinite(row["test_ab_rmse"]) and np.isfinite(row["val_mse"])
    import keras

    import sweep.losses  # noqa: F401

    model = keras.models.load_model(trial_dir(tmp_path, spec.key) / "model.keras")
    assert model.output.shape[-1] == len(ab_bins()) and model.get_layer("output").activation.__name__ == "linear"
    assert model.get_layer("output").kernel_size == (1, 1)  # Zhang et al.'s head over the bins
    assert row["params"] == model.count_params()
    assert model.loss.name == "ab_classification"


def reference_ab_loss(targets: np.ndarray, logits: np.ndarray, weights: np.ndarray) -> float:
    """Zhang et al.'s loss written out per pixel with numpy: soft-encode on the 5 nearest bins
    (Gaussian, sigma 5), cross-entropy against the softmax, weighted by the nearest bin."""
    centres = ab_bins()
    total = []
    for ab_target, z in zip(((targets - 0.5) * 256).reshape(-1, 2), logits.reshape(-1, len(centres))):
        d2 = ((centres - ab_target) ** 2).sum(1)
        nearest = np.argsort(d2)[:5]
        soft = np.exp(-d2[nearest] / 50.0)
        soft /= soft.sum()
        log_p = z - z.max() - np.log(np.exp(z - z.max()).sum())
        total.append(weights[nearest[0]] * -(soft * log_p[nearest]).sum())
    return float(np.mean(total))


def test_ab_classification_loss_matches_the_paper_written_out():
    import keras

    rng = np.random.default_rng(0)
    rgb = rng.random((2, 4, 4, 3)).astype(np.float32)
    targets = task_for("colorize", "lab").targets(rgb)
    weights = rebalancing_weights(targets)
    logits = rng.normal(size=(2, 4, 4, len(ab_bins()))).astype(np.float32)
    loss = make_loss(TrainingProtocol(task="colorize", encoding="lab", loss="ab_classification"), targets)
    ours = float(keras.ops.convert_to_numpy(loss(targets, logits)))
    assert ours == pytest.approx(reference_ab_loss(targets, logits, weights), rel=1e-4)
    # Predicting the soft-encoded target itself leaves only its entropy: far below random logits.
    d2 = ((((targets - 0.5) * 256)[..., None, :] - ab_bins()) ** 2).sum(-1)
    nearest = np.argsort(d2, axis=-1)[..., :5]
    gauss = np.exp(-np.take_along_axis(d2, nearest, axis=-1) / 50.0)
    soft = np.zeros_like(d2)
    np.put_along_axis(soft, nearest, gauss / gauss.sum(-1, keepdims=True), axis=-1)
    ideal = np.log(soft + 1e-12).astype(np.float32)
    assert float(keras.ops.convert_to_numpy(loss(targets, ideal))) < 0.5 * ours
    config = loss.get_config()
    assert type(loss).from_config(config).weights == loss.weights


@pytest.mark.parametrize("loss, optimizer", [("mse", "adam"), ("mae", "rmsprop"), ("huber", "sgd")])
def test_regression_losses_and_optimizers_train(loss, optimizer):
    import keras

    protocol = TrainingProtocol(task="colorize", encoding="rgb_diff", loss=loss, optimizer=optimizer, learning_rate=0.01)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(3, 1, activation="sigmoid")])
    model.compile(optimizer=make_optimizer(protocol), loss=make_loss(protocol, None))
    rgb = np.random.default_rng(0).random((8, 4, 4, 3)).astype(np.float32)
    task = task_for("colorize", "rgb_diff")
    before = model.evaluate(task.inputs(rgb), task.targets(rgb), verbose=0)
    model.fit(task.inputs(rgb), task.targets(rgb), epochs=5, verbose=0)
    assert model.evaluate(task.inputs(rgb), task.targets(rgb), verbose=0) < before
    assert type(model.optimizer).__name__.lower() == {"adam": "adam", "rmsprop": "rmsprop", "sgd": "sgd"}[optimizer]


def test_augmented_epochs_move_inputs_and_targets_together():
    rgb = np.random.default_rng(1).random((40, 8, 8, 3)).astype(np.float32)
    task = task_for("colorize", "rgb")
    protocol = TrainingProtocol(task="colorize", batch_size=16, augment_flip=True, augment_rotation=15.0)
    plain_x, plain_y = task.inputs(rgb), task.targets(rgb)
    x, y, weights = epoch_batches(rgb, plain_x, plain_y, task, protocol, epoch=0)
    # 40 images in batches of 16: the last batch is padded with 8 weight-0 images, and its 8
    # real ones weigh 2, so its loss is still their mean.
    assert x.shape == (48, 8, 8, 1) and y.shape == (48, 8, 8, 3) and weights.shape == (48, 1, 1)
    assert weights.ravel().tolist() == [1.0] * 32 + [2.0] * 8 + [0.0] * 8
    np.testing.assert_allclose(x, luminance(y), atol=1e-6)  # the same geometry on both sides
    assert not any(np.allclose(y[0], image) for image in plain_y)  # really augmented (rotated)
    again = epoch_batches(rgb, plain_x, plain_y, task, protocol, epoch=0)
    assert np.array_equal(again[0], x)  # a rerun or a resumed trial sees the same epoch
    assert not np.array_equal(epoch_batches(rgb, plain_x, plain_y, task, protocol, epoch=1)[1], y)
    unaugmented = TrainingProtocol(task="colorize", batch_size=16)
    x0, y0, _ = epoch_batches(rgb, plain_x, plain_y, task, unaugmented, epoch=0)
    assert sorted(map(bytes, y0[:40])) == sorted(map(bytes, plain_y))  # a permutation of the images
    assert not np.array_equal(y0[:40], plain_y)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_fits_a_colorize_task_of_every_encoding(name):
    """Every preset builds on 32x32 luma for each output width an encoding needs (2 or 3
    channels: the encodings differ in nothing else a model sees); no training."""
    from sweep.arch import build_autoencoder
    from sweep.encodings import ENCODINGS

    tasks = {task.output_channels: task for task in (task_for("colorize", encoding) for encoding in ENCODINGS)}
    assert sorted(tasks) == [2, 3]
    for channels, task in tasks.items():
        model = build_autoencoder(PRESETS[name], (32, 32, task.input_channels), channels)
        assert model.output.shape[1:] == (32, 32, channels)


def test_a_training_set_smaller_than_half_a_batch_is_padded_with_real_weight():
    rgb = np.random.default_rng(2).random((10, 8, 8, 3)).astype(np.float32)
    task = task_for("reconstruct")
    x, y, weights = epoch_batches(rgb, rgb, rgb, task, TrainingProtocol(batch_size=32), epoch=0)
    assert len(x) == 32 and weights.ravel() == pytest.approx([3.2] * 10 + [0.0] * 22)  # the loss stays the mean of the 10
    _, _, none = epoch_batches(rgb, rgb, rgb, task, TrainingProtocol(batch_size=32), epoch=0, pad=False)
    assert none is None
