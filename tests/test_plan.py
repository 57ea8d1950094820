"""`--dry-run`: the plan as a table and an estimated time, nothing trained, nothing written."""

from __future__ import annotations

import time

from conftest import run_cli, small_space
from sweep.results import write_row


def test_the_grid_dry_run_prints_the_36_point_plan_quickly_and_trains_nothing(tmp_path):
    results = tmp_path / "results"
    start = time.monotonic()
    out = run_cli("sweep.grid", "--dry-run", "--dataset", "synthetic", "--results", str(results))
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    header, rows, last = lines[0].split(), lines[1:-1], lines[-1]
    assert header == ["trial_key", "fewer_layers", "channel_factor", "kernel_size", "compression_factor", "latent_size", "params", "GFLOP/image", "status"]
    assert len(rows) == 36 and all(row.endswith("to run") for row in rows)
    first = next(row.split() for row in rows if row.split()[1:5] == ["False", "2", "3", "2"])  # seed 002's first model
    assert first[5:7] == ["1,024", "4,911"]
    assert last.startswith("36 of 36 trials to run, about ") and last.endswith("nothing was trained"), last
    assert not results.exists()  # nothing written
    print(f"grid --dry-run: {elapsed:.2f} s")


def test_a_stored_trial_shows_as_stored_and_leaves_the_estimate(tmp_path):
    space = small_space(tmp_path, {"kernel_size": [3, 5]})
    results = tmp_path / "results"
    out = run_cli("sweep.grid", "--dry-run", "--space", space, "--results", str(results))
    key = out.stdout.splitlines()[1].split()[0]
    write_row(results, {"trial_key": key, "status": "complete"})
    out = run_cli("sweep.grid", "--dry-run", "--space", space, "--results", str(results))
    assert out.returncode == 0, out.stderr
    assert [line.split()[-1] for line in out.stdout.splitlines()[1:3]] == ["stored", "run"]
    assert out.stdout.splitlines()[-1].startswith("1 of 2 trials to run")


def test_the_optuna_dry_run_samples_the_space(tmp_path):
    out = run_cli("sweep.optuna", "--trials", "4", "--dry-run", "--dataset", "synthetic", "--results", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "learning_rate" in lines[0].split() and 2 <= len(lines) - 2 <= 4
    assert "trials to run, about" in lines[-1] and not (tmp_path / "r").exists()
