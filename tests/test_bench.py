"""python -m sweep.bench: both modes on the same work, and a speedup line."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import run_cli, small_space


@pytest.mark.slow
@pytest.mark.backends
def test_bench_prints_both_modes_and_a_speedup(tmp_path):
    space = small_space(tmp_path, {"kernel_size": [3, 5], "compression_factor": [2, 4]})
    result = run_cli("sweep.bench", "--space", space, "--workers", "1", "--pack", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sweep.bench: 4 configurations") and "1 epoch(s) x 43 training images" in lines[0]
    naive = next(line for line in lines if line.startswith("naive"))
    harness = next(line for line in lines if line.startswith("harness"))
    flops = re.compile(r"([\d.]+) s +(\d+) images/s +[\d.]+ [MGT]?FLOPs +[\d.]+ [MGT]?FLOP/s")
    (naive_s, naive_rate), (harness_s, harness_rate) = (flops.search(line).groups() for line in (naive, harness))
    # 4 configurations x 1 epoch x 43 images, at the printed rate, take the printed time.
    assert float(naive_rate) == pytest.approx(4 * 43 / float(naive_s), rel=0.05, abs=1)
    assert "training" in harness and "evaluation and artefacts" in harness
    speedup = float(re.fullmatch(r"speedup: ([\d.]+)", lines[-1]).group(1))
    # The times are printed to 0.1 s, the speedup from the unrounded times to 0.01.
    ratio = float(naive_s) / float(harness_s)
    rounding = ratio * (0.05 / float(naive_s) + 0.05 / float(harness_s)) + 0.005
    assert speedup == pytest.approx(ratio, abs=rounding)


def test_bench_help_and_bad_modes_are_one_line():
    result = run_cli("sweep.bench", "--help")  # (that no --help loads a framework: test_layout)
    assert result.returncode == 0 and "--train-images" in result.stdout and "--pack" in result.stdout
    bad = run_cli("sweep.bench", "--dataset", "synthetic", "--modes", "naive,fast")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "--modes: unknown mode 'fast' (allowed: harness, naive)" in bad.stderr


def test_bench_refuses_a_protocol_the_naive_loop_would_not_follow(tmp_path):
    space = small_space(tmp_path, early_stopping_patience=2)
    bad = run_cli("sweep.bench", "--space", space)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "this space sets early_stopping_patience" in bad.stderr


def test_repeated_training_images_cycle_and_change_the_data_id(synthetic):
    from sweep.data import repeated

    big = repeated(synthetic, 1300)
    assert len(big.x_train) == 1300 and np.array_equal(big.x_train[512], synthetic.x_train[0])
    assert np.array_equal(big.x_test, synthetic.x_test)
    assert big.data_id != synthetic.data_id and big.data_id.startswith("synthetic-repeated-1300-")


@pytest.mark.slow
def test_the_harness_alone_times_a_protocol_the_naive_loop_would_refuse(tmp_path):
    """`--modes harness` measures what only the harness runs, e.g. mixed precision."""
    space = small_space(tmp_path, precision="mixed_bfloat16")
    result = run_cli("sweep.bench", "--space", space, "--modes", "harness", "--workers", "1", "--no-peak")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["harness"]


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_gpu_script_runs_as_its_header_says(shared_data, tmp_path):
    """`bash benchmarks/gpu.sh` (README, BENCHMARKS.md) as its header's small rehearsal runs it:
    the harness, the naive loop scaled from 1 epoch, the peak, then the harness in bfloat16, under JAX."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import ROOT

    env = {**os.environ, "DATA_DIR": str(shared_data), "TRAIN_IMAGES": "64", "EPOCHS": "2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    result = subprocess.run(["bash", "benchmarks/gpu.sh", "--limit", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "Keras backend jax" in next(line for line in lines if line.startswith("sweep.bench: 2 configurations"))
    naive = next(line for line in lines if line.startswith("naive"))
    assert "timed on 1 epoch(s), time x2" in naive
    assert any(line.startswith("peak") for line in lines) and any(line.startswith("speedup:") for line in lines)
    assert "gpu.sh: the harness again with precision: mixed_bfloat16" in lines[-3]
    assert lines[-2].startswith("sweep.bench: 2 configurations") and lines[-1].startswith("harness")  # harness only


def test_where_the_time_went_adds_packed_members_shares_as_they_are():
    from sweep.cli.bench import time_shares

    packed = [  # a pack of two: each member's times are already its share of the pack's
        {"train_seconds": 3.0, "wall_seconds": 5.0, "eval_seconds": 1.0, "pack_size": 2},
        {"train_seconds": 1.0, "wall_seconds": 2.0, "eval_seconds": 0.5, "pack_size": 2},
    ]
    assert time_shares(packed, 1, 10.0) == (
        "of 1 worker(s) x 10.0 s: training 40%, evaluation and artefacts 15%, start-up, building and clean-up in trials 15%, outside trials 30%"
    )
