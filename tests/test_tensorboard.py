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
    runs = sorted(p.name for p in (results / "tensorboard").iterdir() if p.is_dir())  # (beside them: the folder's HParams experiment)
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


def hparams_view(logdir) -> tuple[list[str], list[str]]:
    """What TensorBoard's HParams view gets from a real `tensorboard --logdir` server: every
    hyperparameter in its order, and those it shows by default (its frontend puts differing
    ones first, stably, and shows the first five)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1", "--load_fast", "false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/hparams/experiment", data=json.dumps({"experimentName": ""}).encode(),
                                                 headers={"Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"})  # fmt: skip
                experiment = json.loads(urllib.request.urlopen(request, timeout=5).read())
                if experiment.get("hparamInfos"):
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "tensorboard did not serve the HParams experiment"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=10)
    infos = experiment["hparamInfos"]
    shown = sorted(infos, key=lambda info: not info.get("differs", False))[:5]
    return [info["name"] for info in infos], [info["name"] for info in shown]


@pytest.mark.slow
def test_the_swept_factors_are_shown_by_default_in_the_hparams_view(tmp_path):
    """Two runs in one folder differ in many fields (batch size, channels, dataset, epochs...);
    TensorBoard alone would show the five first by name and hide `kernel_size`, which the first
    space swept. The rows' `varied` marks the swept factors: those are shown."""
    from sweep.results.tensorboard import write_trial

    common = {"status": "complete", "test_mse": 0.1, "history": json.dumps([{"loss": 1.0, "val_loss": 1.0}])}
    first = {"batch_size": 16, "channel_factor": 1, "compression_factor": 2, "dataset": "cifar10", "epochs": 10, "learning_rate": 1e-3, "varied": json.dumps(["kernel_size"])}
    second = {"batch_size": 32, "channel_factor": 2, "compression_factor": 4, "dataset": "synthetic", "epochs": 1, "kernel_size": 3, "varied": json.dumps(["learning_rate"])}
    for key, row in [("a3", {**first, "kernel_size": 3}), ("a5", {**first, "kernel_size": 5}), ("b1", {**second, "learning_rate": 1e-3}), ("b2", {**second, "learning_rate": 1e-2})]:
        write_trial(tmp_path, {**common, **row, "trial_key": key})
    names, shown = hparams_view(tmp_path / "tensorboard")
    assert {"kernel_size", "learning_rate", "batch_size", "dataset", "status"} <= set(names)
    assert shown[:2] == ["kernel_size", "learning_rate"], shown
