"""What a finished run prints: the end-of-run table with one precision per column, the
per-trial line with the sampled factors, importances with a caveat when trials are few."""

from __future__ import annotations

import re

from sweep.cli.common import one_line
from sweep.cli.grid import summarize
from sweep.results import load_results, write_row


def row(key: str, **values) -> dict:
    base = {"trial_key": key, "status": "complete", "family": "conv_ae", "fewer_layers": False, "channel_factor": 1,
            "kernel_size": 3, "compression_factor": 2, "task": "reconstruct", "finished_at": f"2026-01-01T00:00:0{key[-1]}"}  # fmt: skip
    return {**base, **values}


def test_the_end_of_run_table_prints_each_metric_at_one_precision(tmp_path):
    rows = [
        row("k1", latent_size=1024, params=4911, test_mse=0.0618, test_psnr=13.2, test_ssim=0.25),
        row("k2", latent_size=64, params=1377, test_mse=0.06426, test_psnr=12.09, test_ssim=0.1248),
        row("k3", latent_size=4096, params=9000, test_mse=0.01691, test_psnr=17.72, test_ssim=0.6887),
    ]
    for r in rows:
        write_row(tmp_path, r)
    text = summarize(load_results(tmp_path), "k1")
    table = text.splitlines()[1:5]
    assert re.search(r"^first\s+k1\b.*\s0\.06180\s+13\.20\s+0\.2500$", table[1]), table
    assert re.search(r"^best\s+k3\b.*\s0\.01691\s+17\.72\s+0\.6887$", table[2]), table
    assert re.search(r"^worst\s+k2\b.*\s0\.06426\s+12\.09\s+0\.1248$", table[3]), table


def test_a_trial_line_shows_the_sampled_factors_its_architecture_does_not_name():
    line = one_line(
        row("k1", learning_rate=0.00123456, seed=3, optuna_trial=7, latent_size=1024, val_mse=0.01, test_mse=0.02, test_psnr=17.0, wall_seconds=2.0),
        factors=("kernel_size", "learning_rate", "seed"),
    )
    assert line.startswith("  k1 #7 5conv ch1 k3 f2 learning_rate=0.00123 seed=3: latent 1024, val MSE 0.01000"), line
