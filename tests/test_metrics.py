"""Metrics: one convention each, checked on images whose answer is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep.encodings import gray_baseline
from sweep.metrics import ab_auc, ab_rmse, colorfulness, colour_metrics, image_metrics, psnr, ssim


def lab_image(a: float, b: float, lightness: float = 60.0) -> np.ndarray:
    from skimage.color import lab2rgb

    lab = np.empty((1, 4, 4, 3))
    lab[..., 0], lab[..., 1], lab[..., 2] = lightness, a, b
    return lab2rgb(lab).astype(np.float64)


def test_psnr_is_from_the_dataset_level_mse():
    truth = np.zeros((2, 4, 4, 3))
    pred = truth.copy()
    pred[0] = 0.1  # one image off by 0.1, one exact: MSE 0.005 over the set
    assert psnr(truth, pred) == pytest.approx(10 * math.log10(1 / 0.005))
    assert psnr(truth, truth) == math.inf


def test_ab_error_of_a_known_chroma_shift():
    gray, red = lab_image(0.0, 0.0), lab_image(30.5, 0.0)
    assert ab_rmse(gray, gray) == pytest.approx(0.0, abs=1e-6)
    assert ab_rmse(gray, red) == pytest.approx(30.5, abs=1e-3)
    assert ab_auc(gray, gray) == pytest.approx(1.0)
    # Within threshold t exactly for t >= 31: area 119 plus the half step from 30 to 31.
    assert ab_auc(gray, red) == pytest.approx(119.5 / 150)


def test_colorfulness_by_hand():
    gray = np.full((1, 4, 4, 3), 0.5)
    assert colorfulness(gray) == 0.0
    red_green = np.zeros((1, 2, 2, 3))
    red_green[0, 0, :, 0] = 1.0  # half red, half green: sigma_rg = 255, mu_yb = 127.5
    red_green[0, 1, :, 1] = 1.0
    assert colorfulness(red_green) == pytest.approx(255 + 0.3 * 127.5)


def test_colour_metrics_clip_the_prediction():
    truth = lab_image(20.0, -30.0)
    wild = truth * 3 - 1  # far outside [0, 1]
    metrics = colour_metrics(truth, wild)
    assert metrics["ab_rmse"] == pytest.approx(ab_rmse(truth, np.clip(wild, 0, 1)))
    assert metrics["colorfulness_truth"] == pytest.approx(colorfulness(truth)) and metrics["colorfulness_truth"] > 0


@pytest.mark.shared_data
def test_grayscale_baseline_on_the_shared_cifar10_test_set(shared_data):
    """Copying the BT.601 luma into R, G, B scores about 21.8 dB on the shared test subset."""
    from sweep.data import load_dataset

    test = load_dataset("cifar10", str(shared_data)).x_test.astype(np.float32) / 255.0
    gray = gray_baseline(test)
    scores = {**image_metrics(test, gray), **colour_metrics(test, gray)}
    assert len(test) == 1017
    assert scores["psnr"] == pytest.approx(21.8, abs=0.05)
    assert scores["colorfulness"] == pytest.approx(0.0, abs=1e-9) and scores["colorfulness_truth"] > 10
    assert 5 < scores["ab_rmse"] < 30 and 0.8 < scores["ab_auc"] < 1.0


@pytest.mark.parametrize("shape", [(40, 32, 32, 3), (9, 17, 23, 1), (5, 7, 7, 2), (3, 12, 9)])
def test_vectorised_ssim_equals_scikit_image_image_by_image(shape):
    """The whole-split SSIM is scikit-image's per-image value averaged, for colour and gray
    images, odd sizes and the smallest image a 7x7 window fits."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    truth = rng.random(shape)
    pred = np.clip(truth + rng.normal(0, 0.1, shape), 0, 1)  # similar, as a trained model's
    noise = rng.random(shape)  # and unrelated
    for other in (pred, noise, truth):
        channel_axis = -1 if len(shape) == 4 else None
        expected = np.mean([structural_similarity(t, p, data_range=1.0, channel_axis=channel_axis) for t, p in zip(truth, other)])
        assert ssim(truth, other) == pytest.approx(expected, abs=1e-10)
    assert ssim(truth, truth) == pytest.approx(1.0)


def test_chroma_agreement_measures_desaturation_and_colour_cast():
    from sweep.metrics import chroma_agreement, colour_metrics

    ab = np.random.default_rng(0).normal(0.0, 20.0, (4, 8, 8, 2))
    brownish = 0.5 * ab + np.array([3.0, 10.0])  # half the range, and a red-yellow cast
    found = chroma_agreement(ab, brownish)
    assert found["a_slope"] == pytest.approx(0.5) and found["b_slope"] == pytest.approx(0.5)
    assert found["a_corr"] == pytest.approx(1.0) and found["b_corr"] == pytest.approx(1.0)
    assert found["a_bias"] == pytest.approx(3.0 - 0.5 * ab[..., 0].mean())
    assert found["b_bias"] == pytest.approx(10.0 - 0.5 * ab[..., 1].mean())
    flat = chroma_agreement(ab, np.zeros_like(ab) + 7.0)  # one colour whatever the truth
    assert flat["a_slope"] == 0.0 and np.isnan(flat["a_corr"]) and flat["b_bias"] == pytest.approx(7.0 - ab[..., 1].mean())
    truth = np.random.default_rng(1).random((3, 8, 8, 3))
    same = colour_metrics(truth, truth)
    assert same["a_slope"] == pytest.approx(1.0) and same["b_corr"] == pytest.approx(1.0) and same["a_bias"] == pytest.approx(0.0)
