"""One value, one key: sampled values spelt as the grid spells them, `exclude` on those
spellings, the "one model, two keys" cases merged, the Keras backend in the key, and the keys
of earlier TensorFlow trials unchanged."""

from __future__ import annotations

import textwrap

import pytest

from sweep.arch import PRESETS, ArchSpec, UNetSpec
from sweep.space import load_space
from sweep.spec import TrainingProtocol, TrialSpec

DATA = "cifar10-5085-1000-0123456789abcdef"  # the shared CIFAR subset's form: NAME-TRAIN-TEST-HASH
AB = {"task": "colorize", "encoding": "lab", "loss": "ab_classification"}


def key(arch=None, data=DATA, **protocol) -> str:
    return TrialSpec(arch or ArchSpec(), TrainingProtocol(**protocol), data, native_size=32).key


# Keys computed by the code before this change (commit 22fd615), under TensorFlow.
EARLIER_KEYS = [
    (lambda: TrialSpec(ArchSpec(), TrainingProtocol(), DATA), "10fd657eaab6c421"),
    (lambda: TrialSpec(ArchSpec(), TrainingProtocol(), "data"), "b6c06c4838a9ab2d"),
    (lambda: TrialSpec(ArchSpec(channel_factor=4, kernel_size=5), TrainingProtocol(train_fraction=1.0, epochs=3), DATA, 32), "9ac1ec4196fe2c8a"),
    (lambda: TrialSpec(PRESETS["unet32"], TrainingProtocol(**AB), DATA, 32), "35ae2c67791a5975"),
    (lambda: TrialSpec(PRESETS["unet32"], TrainingProtocol(task="colorize", encoding="lab", early_stopping_patience=3), DATA, 32), "cd6453ae93ee03b2"),
    (lambda: TrialSpec(PRESETS["dense_latent"], TrainingProtocol(task="colorize", train_fraction=0.05, val_fraction=0.2), DATA, 32), "dc75052da6304d86"),
]


@pytest.mark.parametrize("make, expected", EARLIER_KEYS)
def test_tensorflow_keys_of_earlier_trials_stand(make, expected, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    spec = make()
    assert spec.backend == "tensorflow" and spec.key == expected
    assert "backend" not in spec.to_dict()  # a row's spec column is unchanged too


def test_the_backend_is_in_the_key(monkeypatch):
    """TensorFlow and JAX initialise one seed to different weights: other trials."""
    tf = TrialSpec(ArchSpec(), TrainingProtocol(), DATA, backend="tensorflow")
    jax = TrialSpec(ArchSpec(), TrainingProtocol(), DATA, backend="jax")
    assert jax.key != tf.key and jax.config_key != tf.config_key
    assert TrialSpec.from_dict(jax.to_dict()).key == jax.key and TrialSpec.from_dict(tf.to_dict()).key == tf.key
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    if "keras" not in __import__("sys").modules:  # (once Keras is loaded, its backend is the one that trains)
        assert TrialSpec(ArchSpec(), TrainingProtocol(), DATA).key == jax.key


def test_one_model_trained_one_way_has_one_key():
    # An early-stopping patience of epochs - 1: the earliest stop is after the last epoch
    assert key(epochs=10, early_stopping_patience=9) == key(epochs=10) != key(epochs=10, early_stopping_patience=8)
    # A U-Net under ab_classification: a 1x1 head whatever its output kernel
    assert key(UNetSpec(), **AB) == key(UNetSpec(output_kernel=1), **AB) != key(UNetSpec(output_kernel=1), task="colorize", encoding="lab")
    assert key(UNetSpec(), task="colorize", encoding="lab") != key(UNetSpec(output_kernel=1), task="colorize", encoding="lab")
    # A last width equal to the output's channels is the default (lab predicts 2, rgb 3)
    unet = UNetSpec(depth=2, base_width=8)
    lab = {"task": "colorize", "encoding": "lab"}
    assert key(UNetSpec(depth=2, base_width=8, last_width=2), **lab) == key(unet, **lab) != key(UNetSpec(depth=2, base_width=8, last_width=3), **lab)
    assert key(UNetSpec(depth=2, base_width=8, last_width=3), task="colorize") == key(unet, task="colorize")
    # Train fractions that select the same number of images (5,085 here: 0.1 and 0.0999 both 508)
    assert key(train_fraction=0.0999) == key(train_fraction=0.1) != key(train_fraction=0.11)
    assert key(val_fraction=0.1005) == key() != key(val_fraction=0.2)
    assert key(train_limit=1000) == key() != key(train_limit=500)  # a limit above the 508 cuts nothing
    assert key(train_limit=256, train_fraction=0.3) == key(train_limit=256) == key(train_limit=256, train_fraction=1.0)
    assert key(train_limit=256) == key(train_fraction=256 / 5085) == key(train_fraction=0.0504)  # the first 256 either way
    # ... only where the data's size is known (its id names it)
    assert key(train_fraction=0.0999, data="data") != key(train_fraction=0.1, data="data")


def _space(tmp_path, body: str):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(body))
    return load_space(path)


def test_sampled_stepped_floats_are_the_grids_values(tmp_path):
    """Optuna's 0.1 + 2 x 0.1 is 0.30000000000000004; the grid's is 0.3: one trial key."""
    import optuna

    space = _space(tmp_path, """
        space:
          learning_rate: {low: 0.1, high: 0.9, step: 0.1}
          channel_factor: {low: 1, high: 4}
    """)
    grid = set(space.factors["learning_rate"].grid())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(40):
        trial = study.ask()
        point = space.suggest(trial)
        study.tell(trial, 0.0)
        drawn.append(point["learning_rate"])
        assert point["learning_rate"] in grid and type(point["channel_factor"]) is int
    assert {repr(v) for v in drawn} <= {repr(v) for v in grid}  # 0.3, never 0.30000000000000004
    grid_keys = {space.spec(p, DATA).key for p in space.grid_points()}
    assert {space.spec(space.normalise({"learning_rate": v, "channel_factor": 2}), DATA).key for v in drawn} <= grid_keys


def test_exclude_compares_the_grids_spelling(tmp_path):
    space = _space(tmp_path, """
        space:
          learning_rate: {low: 0.1, high: 0.9, step: 0.1}
          kernel_size: [3, 5]
        exclude:
          - {learning_rate: 0.3, kernel_size: 5}
    """)
    assert space.excluded({"learning_rate": 0.1 + 2 * 0.1, "kernel_size": 5})  # as Optuna samples it
    assert not space.excluded({"learning_rate": 0.1 + 2 * 0.1, "kernel_size": 3})
    assert {"learning_rate": 0.3, "kernel_size": 5} not in space.grid_points() and len(space.grid_points()) == 17
