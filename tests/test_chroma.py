"""The chroma gain (`sweep.chroma`): scaling a colorizer's colour about gray, and fitting it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep.chroma import GAIN_FILE, calibrate, curve_at, fit_gain, gain_curve, read_gain, with_gain, write_gain
from sweep.encodings import luminance
from sweep.metrics import colorfulness, psnr


def _images(seed: int = 0, n: int = 64) -> np.ndarray:
    """Colourful but unclipped-friendly images: mid-range values."""
    rng = np.random.default_rng(seed)
    return (0.3 + 0.4 * rng.random((n, 16, 16, 3))).astype(np.float32)


def _shrunk(truth: np.ndarray, factor: float, noise: float = 0.0, seed: int = 1) -> np.ndarray:
    """The truth's chroma scaled by `factor` about its luma (a model that desaturates), plus noise."""
    luma = luminance(truth)
    pred = luma + factor * (truth - luma)
    if noise:
        chroma_noise = np.random.default_rng(seed).normal(0, noise, truth.shape).astype(np.float32)
        pred = pred + chroma_noise - luminance(chroma_noise)  # noise in the chroma only: the luma is kept
    return pred.astype(np.float32)


def test_the_gain_keeps_the_luma_and_scales_colourfulness_linearly():
    truth = _images()
    for gain in (0.0, 0.5, 1.5):
        scaled = with_gain(truth, gain)
        np.testing.assert_allclose(luminance(scaled), luminance(truth), atol=1e-5)  # nothing clips at these values
        assert colorfulness(scaled) == pytest.approx(gain * colorfulness(truth), rel=1e-4)
    np.testing.assert_allclose(with_gain(truth, 0.0), np.repeat(luminance(truth), 3, axis=-1), atol=1e-6)  # gain 0: gray


def test_the_fitted_gain_undoes_a_models_desaturation():
    truth = _images()
    assert fit_gain(truth, _shrunk(truth, 0.5)) == pytest.approx(2.0, abs=2e-3)
    assert fit_gain(truth, _shrunk(truth, 1.0)) == pytest.approx(1.0, abs=2e-3)
    assert fit_gain(truth, np.repeat(luminance(truth), 3, axis=-1)) == 1.0  # a gray model: nothing to scale


@settings(max_examples=25, deadline=None)
@given(factor=st.floats(0.2, 1.5), noise=st.floats(0.0, 0.1), seed=st.integers(0, 1000))
def test_the_fitted_gain_is_no_worse_than_any_other_gain(factor, noise, seed):
    """Property: the error at s* is at most the error at 1 (the model's own colours), at 0
    (gray) and at gains around s*; and every gain up to about 2 s* beats gray."""
    truth = _images(seed, n=16)
    pred = np.clip(_shrunk(truth, factor, noise, seed), 0, 1)
    best = fit_gain(truth, pred)

    def error(s):
        return float(np.mean((truth.astype(np.float64) - with_gain(pred, s)) ** 2))

    for other in (0.0, 1.0, 0.9 * best, 1.1 * best, best + 0.05):
        assert error(best) <= error(other) + 1e-9
    assert error(1.8 * best) <= error(0.0) + 1e-9


def test_calibration_columns_and_the_curve_agree_with_the_images():
    truth = _images(3)
    pred = _shrunk(truth, 0.6, noise=0.03)
    columns = calibrate(truth, pred, truth, pred)
    gain = columns["chroma_gain"]
    assert gain > 1.2  # the model desaturates: s* > 1
    assert columns["test_psnr_at_gain"] == pytest.approx(psnr(truth, with_gain(pred, gain)))
    assert columns["test_psnr_at_gain"] > psnr(truth, with_gain(pred, 1.0))
    curve = json.loads(columns["gain_curve"])
    assert curve["gain"] == sorted(curve["gain"]) and curve["gain"][0] == 0.0 and 2 * gain in [pytest.approx(g) for g in curve["gain"]]
    for s in (0.5, gain, 1.7 * gain, 3.1):  # between stored points: interpolated; at them: exact
        assert curve_at(columns["gain_curve"], s, "colorfulness") == pytest.approx(colorfulness(with_gain(pred, s)), rel=0.02)
    assert curve_at(curve, gain, "psnr") == pytest.approx(columns["test_psnr_at_gain"], abs=1e-4)
    assert np.isnan(curve_at(curve, 9.0, "psnr")) and np.isnan(curve_at(None, 1.0, "psnr"))
    assert gain_curve(truth, pred, gain)["psnr"] == curve["psnr"]


def test_the_gain_file_round_trips_and_a_missing_or_corrupt_one_reads_none(tmp_path):
    columns = {"chroma_gain": 1.234, "test_psnr_at_gain": 22.0, "test_colorfulness_at_gain": 10.0}
    write_gain(tmp_path, columns, n_val=500)
    assert read_gain(tmp_path) == 1.234
    assert "validation split (500 images)" in (tmp_path / GAIN_FILE).read_text()
    (tmp_path / GAIN_FILE).write_text("{not json")
    assert read_gain(tmp_path) is None
    assert read_gain(tmp_path / "elsewhere") is None


def test_a_gain_about_each_images_mean_chroma_keeps_its_average_colour():
    """Scaling about gray scales a tinted image's mean colour too (a cast grows with the
    gain); scaling about the image's mean chroma keeps it and scales only the variation."""
    truth = _images(5)
    tinted = np.clip(truth + np.array([0.04, 0.0, -0.04], np.float32), 0, 1)  # a warm tint
    luma = luminance(tinted)
    mean_chroma = (tinted - luma).mean(axis=(1, 2))
    about_gray = with_gain(tinted, 1.5, luma)
    about_mean = with_gain(tinted, 1.5, luma, about="mean")
    np.testing.assert_allclose((about_mean - luma).mean(axis=(1, 2)), mean_chroma, atol=1e-5)
    np.testing.assert_allclose((about_gray - luma).mean(axis=(1, 2)), 1.5 * mean_chroma, atol=1e-5)
    variation = lambda images: (images - luma - (images - luma).mean(axis=(1, 2), keepdims=True)).std()  # noqa: E731
    assert variation(about_mean) == pytest.approx(1.5 * variation(tinted), rel=1e-4)
    with pytest.raises(ValueError, match="about"):
        with_gain(tinted, 1.5, luma, about="neutral")
