"""`python -m sweep.grid` as a user runs it: help, a sweep, a resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli, small_space
from sweep.arch import ArchSpec, latent_size
from sweep.results import load_results


def test_help_does_not_load_a_framework():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sweep.grid", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and "--data-dir" in out.stdout and "--workers" in out.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"tensorflow", "keras", "jax", "torch", "optuna", "pandas"}


@pytest.mark.slow
@pytest.mark.backends
def test_a_sweep_runs_then_resumes_without_training(tmp_path):
    space = small_space(tmp_path)
    results = tmp_path / "results"
    first = run_cli("sweep.grid", "--space", space, "--results", str(results))
    assert first.returncode == 0, first.stderr
    assert "2 trials from" in first.stderr and "2 to run" in first.stderr
    frame = load_results(results)
    assert len(frame) == 2 and set(frame["status"]) == {"complete"}
    assert set(frame["kernel_size"]) == {3, 5} and set(frame["driver"]) == {"grid"}
    assert set(frame["backend"]) == {os.environ.get("KERAS_BACKEND", "tensorflow")}  # the test command runs it under JAX too
    assert "first" in first.stdout and "best" in first.stdout and "worst" in first.stdout
    finished = dict(zip(frame["trial_key"], frame["finished_at"]))
    assert (results / "results.parquet").exists() and len(list((results / "runs").iterdir())) == 1

    again = run_cli("sweep.grid", "--space", space, "--results", str(results))
    assert again.returncode == 0, again.stderr
    assert "2 already stored, 0 to run" in again.stderr
    frame = load_results(results)
    assert len(frame) == 2 and dict(zip(frame["trial_key"], frame["finished_at"])) == finished


@pytest.mark.slow
def test_two_workers_share_a_sweep(tmp_path):
    space = small_space(tmp_path, {"kernel_size": [3, 5], "fewer_layers": [False, True]})
    results = tmp_path / "results"
    out = run_cli("sweep.grid", "--space", space, "--results", str(results), "--workers", "2")
    assert out.returncode == 0, out.stderr
    frame = load_results(results)
    assert len(frame) == 4 and set(frame["status"]) == {"complete"}
    assert frame["trial_key"].is_unique


def test_a_misspelt_key_is_one_line_with_the_closest_valid_key(tmp_path):
    space = small_space(tmp_path, {"kernal_size": [3, 5]})
    out = run_cli("sweep.grid", "--space", space, "--results", str(tmp_path / "r"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert space in lines[0] and "kernal_size" in lines[0] and "did you mean 'kernel_size'?" in lines[0]
    assert "Traceback" not in out.stderr


def test_debug_shows_the_traceback(tmp_path):
    space = small_space(tmp_path, {"kernal_size": [3, 5]})
    out = run_cli("sweep.grid", "--space", space, "--results", str(tmp_path / "r"), "--debug")
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_an_architecture_that_does_not_fit_the_images(tmp_path):
    space = small_space(tmp_path, {"compression_factor": [2, 3]})
    out = run_cli("sweep.grid", "--space", space, "--results", str(tmp_path / "r"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "compression_factor" in out.stderr and "Got 3 instead" in out.stderr and "32x32" in out.stderr


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_cifar10_subset(shared_data, tmp_path):
    """A corner of the seed-002 grid on real CIFAR-10: formula, built model and store agree."""
    results = tmp_path / "r"
    space = ROOT / "search_spaces" / "seed002_grid.yaml"
    small = tmp_path / "corner.yaml"
    text = space.read_text().replace("fewer_layers: [false, true]", "fewer_layers: [false]")
    text = text.replace("kernel_size: [3, 5]", "kernel_size: [3]").replace("channel_factor: [1, 2, 4]", "channel_factor: [2]")
    small.write_text(text)
    out = run_cli(
        "sweep.grid", "--space", str(small), "--data-dir", str(shared_data), "--epochs", "1",
        "--train-fraction", "0.05", "--results", str(results),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    frame = load_results(results)
    assert len(frame) == 3 and set(frame["status"]) == {"complete"}
    for _, row in frame.iterrows():
        spec = ArchSpec(**{k: row[k] for k in ("fewer_layers", "channel_factor", "kernel_size", "compression_factor")})
        assert row["latent_size"] == latent_size(spec, (32, 32, 3))
        assert json.loads(row["spec"])["arch"]["kernel_size"] == 3
    first = frame[frame["compression_factor"] == 2].iloc[0]
    assert first["params"] == 4911 and first["latent_size"] == 1024
    assert first["n_train"] + first["n_val"] == round(0.05 * 5085) and first["n_test"] == 1017


@pytest.mark.parametrize(
    "factors, decides",
    [
        ({"filters": [[16, 32, 64], [64, 128, 256]]}, "depth=3 and base_width=32 decide the widths"),  # the preset's depth/base_width overwrote them
        ({"output_kernel": [1, 2]}, "ab_classification decides: its head is a 1x1 convolution"),
        ({"reduce_lr_factor": [0.1, 0.5], "kernel_size": [3, 5]}, "reduce_lr_patience decides"),
    ],
)
def test_a_factor_that_changes_nothing_is_refused_naming_what_decides(tmp_path, factors, decides):
    """Before, `filters` on unet32 gave one model and a dry run listed 1 trial; the others
    were merged into one trial silently."""
    ab = {"task": "colorize", "encoding": "lab", "loss": "ab_classification"} if "output_kernel" in factors else {}
    space = small_space(tmp_path, factors, **ab)
    text = open(space).read().replace("name: small", "name: small\narch: unet32") if "kernel_size" not in factors else open(space).read()
    open(space, "w").write(text)
    out = run_cli("sweep.grid", "--space", space, "--dry-run", "--results", str(tmp_path / "r"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    name = next(iter(factors))
    assert f"space.{name}" in out.stderr and decides in out.stderr and "Traceback" not in out.stderr


def test_a_rerun_counts_stored_trials_it_trains_again_under_a_new_key(tmp_path):
    """A row stored under an earlier version's key (an early-stopping patience of epochs - 1,
    keyed apart from none until this version) trains again: the start line says how many."""
    from sweep.cli.grid import rekeyed_trials
    from sweep.spec import TrainingProtocol, TrialSpec

    data = "cifar10-5085-1000-0123456789abcdef"
    patient = TrialSpec(ArchSpec(), TrainingProtocol(epochs=10, early_stopping_patience=9), data, 32, backend="tensorflow")
    stands = TrialSpec(ArchSpec(kernel_size=5), TrainingProtocol(), data, 32, backend="tensorflow")
    rows = tmp_path / "rows"
    rows.mkdir()
    for old_key, spec in (("b8db0eb5614b4ad9", patient), (stands.key, stands)):  # b8db...: its key before this version
        (rows / f"{old_key}.json").write_text(json.dumps({"trial_key": old_key, "status": "complete", "spec": json.dumps(spec.to_dict())}))
    assert patient.key == TrialSpec(ArchSpec(), TrainingProtocol(epochs=10), data, 32, backend="tensorflow").key != "b8db0eb5614b4ad9"
    assert rekeyed_trials(tmp_path, {patient.key, stands.key}, ("complete",)) == 1
    assert rekeyed_trials(tmp_path, {stands.key}, ("complete",)) == 0  # (not in this grid)
