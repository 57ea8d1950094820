"""Colour encodings: one contract for every encoding (round trip, shapes, ranges), checked
against trusted references, and the ab-classification pieces of Zhang et al. (2016)."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.encodings import (
    ENCODINGS,
    ABClassificationTask,
    ab_bin_index,
    ab_bins,
    annealed_mean,
    gray_baseline,
    luminance,
    rebalancing_weights,
    task_for,
)
from sweep.errors import SpecError
from sweep.spec import TrainingProtocol

CORNERS = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]], np.float32)


def random_rgb(n: int = 6, size: int = 16, seed: int = 0) -> np.ndarray:
    """Uniform random colours, with the corners of the RGB cube in the first image."""
    rgb = np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)
    rgb[0, 0, : len(CORNERS)] = CORNERS
    return rgb


def test_the_protocol_accepts_exactly_the_implemented_encodings():
    assert set(ENCODINGS) == {"rgb", "ycbcr", "lab", "rgb_diff", "ratio"}
    for name in ENCODINGS:
        assert TrainingProtocol(task="colorize", encoding=name).encoding == name
    with pytest.raises(SpecError, match="unknown encoding 'hsv'"):
        TrainingProtocol(task="colorize", encoding="hsv")


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_encoding_contract(name):
    rgb = random_rgb()
    task = task_for("colorize", name)
    x, y = task.inputs(rgb), task.targets(rgb)
    assert x.shape == (6, 16, 16, 1) and task.input_channels == 1
    assert y.shape == (6, 16, 16, task.output_channels) and task.output_channels == ENCODINGS[name].channels
    assert x.dtype == y.dtype == np.float32
    assert 0.0 <= y.min() and y.max() <= 1.0, "targets must be reachable by a sigmoid"
    back = task.to_rgb(y, x)
    assert back.shape == rgb.shape and back.dtype == np.float32
    np.testing.assert_allclose(back, rgb, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(set(ENCODINGS) - {"rgb"}))
def test_chroma_encodings_keep_the_input_luma_for_any_prediction(name):
    """Whatever the model predicts, the colour it decodes to has the input's luma (before
    clipping to [0, 1]; for lab wherever some lightness reaches it)."""
    rng = np.random.default_rng(1)
    rgb = random_rgb(seed=2)
    y = luminance(rgb)
    prediction = rng.uniform(0.4, 0.6, size=rgb.shape[:-1] + (ENCODINGS[name].channels,)).astype(np.float32)
    decoded = ENCODINGS[name].decode(prediction, y)
    reached = np.all((decoded > 1e-6) & (decoded < 1 - 1e-6), axis=-1) if name == "lab" else np.ones(y.shape[:-1], bool)
    assert reached.mean() > 0.5
    np.testing.assert_allclose(luminance(decoded)[reached], y[reached], atol=1e-5)


def test_luminance_is_bt601_and_the_baseline_is_gray():
    rgb = random_rgb()
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(luminance(rgb)[..., 0], expected, atol=1e-6)
    gray = gray_baseline(rgb)
    assert gray.shape == rgb.shape and np.array_equal(gray[..., 0], gray[..., 2])


def test_ycbcr_is_jpeg_full_range_like_pillow():
    """Pillow's YCbCr is JPEG's (ITU-T T.871), in 8 bits: agree to rounding."""
    from PIL import Image

    rgb8 = (random_rgb(n=1, size=32)[0] * 255).round().astype(np.uint8)
    pillow = np.asarray(Image.fromarray(rgb8).convert("YCbCr")).astype(np.float64)
    ours = ENCODINGS["ycbcr"].encode(rgb8 / 255.0) * 255
    assert np.abs(ours - pillow[..., 1:]).max() < 1.01  # one 8-bit step: Pillow works in fixed point
    assert np.abs(luminance(rgb8[None] / 255.0)[0, ..., 0] * 255 - pillow[..., 0]).max() < 1.01


def test_lab_targets_are_scikit_image_ab():
    from skimage.color import rgb2lab

    rgb = random_rgb()
    ab = (ENCODINGS["lab"].encode(rgb) - 0.5) * 256
    np.testing.assert_allclose(ab, rgb2lab(rgb.astype(np.float64))[..., 1:], atol=1e-3)


def test_ratio_of_black_is_neutral_and_diff_of_gray_is_zero():
    black, gray = np.zeros((1, 1, 1, 3), np.float32), np.full((1, 1, 1, 3), 0.4, np.float32)
    np.testing.assert_allclose(ENCODINGS["ratio"].encode(black) * 3, 1.0, atol=1e-6)
    np.testing.assert_allclose(ENCODINGS["rgb_diff"].encode(gray), 0.5, atol=1e-6)
    np.testing.assert_allclose(ENCODINGS["ycbcr"].encode(gray), 0.5, atol=1e-6)


def test_unknown_or_mismatched_encodings_are_refused():
    with pytest.raises(SpecError, match=r"unknown encoding 'hsv' \(allowed: lab, ratio, rgb, rgb_diff, ycbcr\)"):
        task_for("colorize", "hsv")
    with pytest.raises(SpecError, match="needs task 'colorize'"):
        task_for("reconstruct", "lab")
    with pytest.raises(SpecError, match="ab_classification' needs task 'colorize' with encoding 'lab'"):
        task_for("colorize", "ycbcr", "ab_classification")


def test_ab_bins_cover_the_srgb_gamut_on_a_grid_of_10():
    centres = ab_bins()
    assert centres.shape == (261, 2) and np.all(centres % 10 == 0)
    from skimage.color import rgb2lab

    ab = rgb2lab(random_rgb(seed=3).astype(np.float64))[..., 1:]
    nearest = centres[ab_bin_index(ab)]
    assert np.abs(nearest - ab).max() <= 5.0 + 1e-9  # every sRGB colour has its own cell's bin


def test_rebalancing_weights_favour_rare_colours_and_average_to_one():
    rgb = random_rgb(seed=4)
    rgb[1:] = rgb[1:].mean(axis=-1, keepdims=True)  # mostly gray images: a* = b* = 0 dominates
    targets = ENCODINGS["lab"].encode(rgb)
    weights = rebalancing_weights(targets)
    assert weights.shape == (len(ab_bins()),) and np.all(weights > 0)
    gray_bin = ab_bin_index(np.zeros(2))
    assert weights[gray_bin] == weights.min() and weights.max() / weights.min() > 1.5
    uniform = rebalancing_weights(targets, lam=1.0)
    np.testing.assert_allclose(uniform, 1.0, rtol=1e-5)  # lambda = 1: no rebalancing


def test_annealed_mean_between_mode_and_mean():
    centres = ab_bins()
    logits = np.full(len(centres), -5.0)
    a, b = ab_bin_index(np.array([30.0, 40.0])), ab_bin_index(np.array([-20.0, 10.0]))
    logits[a], logits[b] = 2.0, 1.0
    mean = annealed_mean(logits, temperature=1.0)
    np.testing.assert_allclose(mean, (np.exp(logits - logits.max())[:, None] * centres).sum(0) / np.exp(logits - logits.max()).sum(), rtol=1e-5)
    np.testing.assert_allclose(annealed_mean(logits, temperature=0.01), centres[a], atol=1e-6)
    sharpened = annealed_mean(logits)
    assert np.linalg.norm(sharpened - centres[a]) < np.linalg.norm(mean - centres[a])


def test_ab_classification_task_decodes_logits_to_rgb():
    task = task_for("colorize", "lab", "ab_classification")
    assert isinstance(task, ABClassificationTask) and task.output_channels == len(ab_bins())
    rgb = random_rgb(n=2, size=8)
    ab = (task.targets(rgb) - 0.5) * 256
    logits = np.full(rgb.shape[:-1] + (task.output_channels,), -20.0)
    np.put_along_axis(logits, ab_bin_index(ab)[..., None], 20.0, axis=-1)  # certain of the right bin
    decoded = task.to_rgb(logits, task.inputs(rgb))
    assert decoded.shape == rgb.shape
    np.testing.assert_allclose(luminance(decoded), luminance(rgb), atol=2e-3)
    assert np.abs(decoded - rgb).mean() < 0.03  # within the bin's quantisation error


def test_the_protocol_temperature_reaches_the_decoding():
    """`annealed_temperature` decodes the same logits nearer the mean (high T) or the mode (low T)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 4, 4, len(ab_bins()))).astype(np.float32) * 3
    luma = np.full((1, 4, 4, 1), 0.5, np.float32)
    warm, cold = (task_for("colorize", "lab", "ab_classification", temperature=t) for t in (1.0, 0.05))
    assert warm.temperature == 1.0 and task_for("colorize", "lab", "ab_classification").temperature == 0.38
    chroma = [np.abs(task.to_rgb(logits, luma) - 0.5).mean() for task in (warm, cold)]
    assert chroma[1] > chroma[0]  # the mode: one bin's colour, not an average of many
