"""Every trial in TensorBoard: a quick sweep's runs, read back with TensorBoard's own reader,
carry each trial's hyperparameters (HParams plugin), per-epoch losses and final metrics."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, small_space
from sweep.results import load_results, write_row

pytest.importorskip("tensorboard")


def read_run(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    scalars = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return scalars, hparams


@pytest.mark.slow
def test_a_quick_sweep_is_a_tensorboard_hparams_experiment(tmp_path):
    space = small_space(tmp_path, {"kernel_size": [3, 5], "channel_factor": [1, 2]}, epochs=2)
    results = tmp_path / "results"
    out = run_cli("sweep.grid", "--space", space, "--results", str(results))
    assert out.returncode == 0, out.stderr
    frame = load_results(results)
    runs = sorted(p.name for p in (results / "tensorboard").iterdir())
    assert runs == sorted(frame["trial_key"]) and len(runs) == 4
    for _, row in frame.iterrows():
        scalars, hparams = read_run(results / "tensorboard" / row["trial_key"])
        assert hparams["kernel_size"] == row["kernel_size"] and hparams["channel_factor"] == row["channel_factor"]
        assert hparams["epochs"] == 2 and hparams["dataset"] == "synthetic" and hparams["status"] == "complete"
        history = json.loads(row["history"])
        assert [v for _, v in scalars["epoch/loss"]] == pytest.approx([h["loss"] for h in history])
        assert [s for s, _ in scalars["epoch/val_loss"]] == [1, 2]
        assert scalars["test_mse"] == [(2, pytest.approx(row["test_mse"]))]
        assert scalars["latent_size"][0][1] == row["latent_size"] and scalars["params"][0][1] == row["params"]


def test_a_rewritten_row_replaces_its_run(tmp_path):
    write_row(tmp_path, {"trial_key": "k", "status": "failed", "error": "x", "kernel_size": 3})
    write_row(tmp_path, {"trial_key": "k", "status": "complete", "kernel_size": 3, "test_mse": 0.5, "history": json.dumps([{"loss": 1.0, "val_loss": 2.0}])})
    assert len(list((tmp_path / "tensorboard" / "k").iterdir())) == 1
    scalars, hparams = read_run(tmp_path / "tensorboard" / "k")
    assert hparams == {"kernel_size": 3.0, "status": "complete"} and scalars["test_mse"] == [(1, 0.5)]
