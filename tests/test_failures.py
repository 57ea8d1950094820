"""Failing trials: NaN loss, out of memory, an exception. Each is recorded as failed with its
reason, the sweep goes on, the summary counts them, and --retry-failed runs only those."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import small_space
from sweep.cli.grid import main as grid_main
from sweep.results import read_rows

pytestmark = pytest.mark.slow


def test_failures_are_recorded_counted_and_retried(tmp_path, monkeypatch, capsys):
    import sweep.train.step

    real_build = sweep.train.step.build_autoencoder

    def faulty_build(spec, *args, **kwargs):
        if spec.kernel_size == 5 and not spec.fewer_layers:
            raise MemoryError("simulated: cannot allocate the activations")
        if spec.kernel_size == 5 and spec.fewer_layers:
            raise RuntimeError("simulated bug")
        model = real_build(spec, *args, **kwargs)
        if spec.fewer_layers:  # a diverged model: the loss is NaN from the first batch
            kernel = model.get_layer("latent").kernel
            kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))
        return model

    monkeypatch.setattr(sweep.train.step, "build_autoencoder", faulty_build)
    space = small_space(tmp_path, {"kernel_size": [3, 5], "fewer_layers": [False, True]}, epochs=2)
    results = tmp_path / "results"
    assert grid_main(["--space", space, "--results", str(results), "--workers", "1"]) == 0
    summary = capsys.readouterr().out
    assert "4 trials: 1 complete, 3 failed, 0 pruned" in summary

    rows = {(r["kernel_size"], r["fewer_layers"]): r for r in read_rows(results)}
    assert rows[(3, False)]["status"] == "complete"
    assert rows[(3, True)]["status"] == "failed"
    assert rows[(3, True)]["error"].startswith("FloatingPointError: loss became NaN or infinite in epoch 1")
    assert rows[(5, False)]["error"].startswith("out of memory (MemoryError: simulated")
    assert rows[(5, True)]["error"] == "RuntimeError: simulated bug"
    for row in rows.values():
        assert row["trial_key"] in summary or row["status"] == "complete"

    # A plain rerun leaves failed trials alone; --retry-failed runs exactly those.
    assert grid_main(["--space", space, "--results", str(results), "--workers", "1"]) == 0
    assert {r["finished_at"] for r in read_rows(results)} == {r["finished_at"] for r in rows.values()}
    monkeypatch.setattr(sweep.train.step, "build_autoencoder", real_build)
    assert grid_main(["--space", space, "--results", str(results), "--workers", "1", "--retry-failed"]) == 0
    after = {(r["kernel_size"], r["fewer_layers"]): r for r in read_rows(results)}
    assert {r["status"] for r in after.values()} == {"complete"} and len(after) == 4
    assert after[(3, False)]["finished_at"] == rows[(3, False)]["finished_at"]
    assert all(after[k]["finished_at"] != rows[k]["finished_at"] for k in rows if k != (3, False))
