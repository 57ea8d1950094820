"""Packed training: grouping, and a packed pair equal to the same two trials trained apart."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sweep.arch import ArchSpec, DenseLatentSpec, UNetSpec
from sweep.train import make_packs
from sweep.spec import TrainingProtocol, TrialSpec

PROTOCOL = TrainingProtocol(dataset="synthetic", epochs=3, train_fraction=1.0, train_limit=64, batch_size=16, early_stopping_patience=1)


def spec(protocol: TrainingProtocol = PROTOCOL, **arch) -> TrialSpec:
    return TrialSpec(ArchSpec(**arch), protocol, "synthetic")


def test_packs_are_full_balanced_and_never_mix_protocols():
    specs = [spec(channel_factor=c, kernel_size=k, compression_factor=f) for c in (1, 2, 4) for k in (3, 5) for f in (1, 2, 4)]
    other = [spec(TrainingProtocol(**{**PROTOCOL.to_dict(), "learning_rate": 0.01}), channel_factor=c) for c in (1, 2)]
    adaptive = spec(TrainingProtocol(**{**PROTOCOL.to_dict(), "reduce_lr_patience": 2}))
    cost = lambda s: s.arch.flops((32, 32, 3), 3)  # noqa: E731
    packs = make_packs(specs + other + [adaptive], 4, cost)

    assert sorted(s.key for p in packs for s in p) == sorted(s.key for s in specs + other + [adaptive])
    assert all(len({(s.protocol, s.data_id) for s in p}) == 1 for p in packs)
    sizes = [len(p) for p in packs if p[0].protocol == PROTOCOL]
    assert len(sizes) == 5 and sum(sizes) == 18 and max(sizes) <= 4  # 18 trials in the fewest packs
    assert [p for p in packs if adaptive in p] == [[adaptive]]  # its own learning rate: never packed
    totals = [sum(map(cost, p)) for p in packs if p[0].protocol == PROTOCOL and len(p) == 4]
    assert max(totals) / min(totals) < 1.5, totals  # the one-by-one order would give > 10x
    assert [sum(map(cost, p)) for p in packs] == sorted((sum(map(cost, p)) for p in packs), reverse=True)
    assert make_packs(specs, 1, cost) == [[s] for s in sorted(specs, key=cost, reverse=True)]


@pytest.mark.slow
@pytest.mark.backends
def test_a_packed_pair_equals_the_same_two_trained_separately(synthetic, tmp_path):
    import keras

    from sweep.train import run_pack, run_trial, trial_dir

    a, b = spec(), spec(fewer_layers=True, channel_factor=4, kernel_size=5)
    packed = run_pack([a, b], synthetic, tmp_path / "packed")
    alone = [run_trial(s, synthetic, tmp_path / "alone") for s in (a, b)]
    for s, p, q in zip((a, b), packed, alone):
        assert p["status"] == q["status"] == "complete", (p["error"], q["error"])
        assert p["trial_key"] == q["trial_key"] == s.key and p["pack_size"] == 2 and q["pack_size"] == 1
        assert p["params"] == q["params"] and p["latent_size"] == q["latent_size"]
        assert (p["epochs_run"], p["best_epoch"], p["stop_reason"]) == (q["epochs_run"], q["best_epoch"], q["stop_reason"])
        for h, g in zip(json.loads(p["history"]), json.loads(q["history"])):
            assert h["loss"] == pytest.approx(g["loss"], rel=1e-5)  # 58 images: a partial last batch too
            assert h["val_loss"] == pytest.approx(g["val_loss"], rel=1e-5)
        for name in ("val_mse", "test_mse", "test_psnr", "test_ssim"):
            assert p[name] == pytest.approx(q[name], rel=1e-5), name
        saved = [keras.models.load_model(trial_dir(tmp_path / d, s.key) / "model.keras").get_weights() for d in ("packed", "alone")]
        for w, v in zip(*saved):
            np.testing.assert_allclose(w, v, rtol=1e-5, atol=1e-6)
    assert packed[0]["params"] != packed[1]["params"]  # two different models really were packed


@pytest.mark.slow
def test_each_member_stops_early_on_its_own(synthetic, tmp_path):
    """A learning rate high enough that one model stops early and the other trains on: each
    member stops exactly where it stops when trained alone."""
    from sweep.train import run_pack, run_trial

    protocol = TrainingProtocol(**{**PROTOCOL.to_dict(), "epochs": 8, "learning_rate": 0.01, "early_stopping_patience": 1})
    specs = [spec(protocol, channel_factor=c, compression_factor=f) for c, f in ((1, 1), (4, 4))]
    packed = run_pack(specs, synthetic, tmp_path / "packed")
    alone = [run_trial(s, synthetic, tmp_path / "alone") for s in specs]
    assert [r["epochs_run"] for r in packed] == [r["epochs_run"] for r in alone]
    assert [r["best_epoch"] for r in packed] == [r["best_epoch"] for r in alone]
    assert [r["stop_reason"] for r in packed] == [None, "early_stopping"], [r["epochs_run"] for r in packed]


@pytest.mark.slow
@pytest.mark.backends
def test_grid_pack_option_stores_every_member(tmp_path):
    from conftest import run_cli, small_space

    from sweep.results import load_results

    path = small_space(tmp_path, {"kernel_size": [3, 5], "channel_factor": [1, 2, 4]})
    result = run_cli("sweep.grid", "--space", path, "--results", str(tmp_path / "r"), "--pack", "4")
    assert result.returncode == 0, result.stderr
    frame = load_results(tmp_path / "r")
    assert len(frame) == 6 and set(frame["status"]) == {"complete"}
    assert set(frame["backend"]) == {os.environ.get("KERAS_BACKEND", "tensorflow")}
    assert frame["pack_size"].between(2, 4).all() and frame["pack_size"].value_counts().to_dict() in ({3: 6}, {4: 4, 2: 2})
    again = run_cli("sweep.grid", "--space", path, "--results", str(tmp_path / "r"), "--pack", "4")
    assert "6 already stored, 0 to run" in again.stderr


@pytest.mark.slow
def test_the_pack_size_probe_measures_growing_packs(synthetic):
    """`--pack auto` on a GPU: packs of 1, 2, 4, ... timed on this device; it stops growing
    when a bigger pack is not faster (here, on CPU, whatever it measures) and says the rates."""
    from sweep.train import probe_pack_size

    specs = [spec(channel_factor=c, kernel_size=k) for c in (1, 2) for k in (3, 5)]
    size, rates = probe_pack_size(specs, synthetic, max_size=4)
    assert size in rates and list(rates)[0] == 1 and set(rates) <= {1, 2, 4}
    assert all(rate > 0 for rate in rates.values())
    for smaller, bigger in zip(rates, list(rates)[1:]):
        assert bigger == 2 * smaller
    if size > 1:  # chosen only for a real gain over the size before it
        assert rates[size] >= 1.1 * rates[size // 2]


@pytest.mark.slow
@pytest.mark.parametrize("seconds, chosen", [
    ((1.0, 1.0, 1.9), 2),  # 2 trains twice the images/s of 1; 4 only 5% more than 2: stop at 2
    ((1.0, 1.0, 1.5), 4),  # 4 gains a third over 2: take it (max_size 4 ends the probe)
    ((1.0, 1.9, 1.0), 1),  # 2 gains 5% over 1: not worth packing
])  # fmt: skip
def test_the_pack_size_probe_chooses_by_the_rates_it_measures(synthetic, monkeypatch, seconds, chosen):
    """The probe's timings made known (a clock whose timed calls take `seconds` for packs of
    1, 2, 4): it grows while a pack trains at least PROBE_GAIN times the images/s of the size
    before, and returns that size and the rates it measured."""
    from sweep.train import pack, probe_pack_size

    durations = iter(seconds)
    now = [0.0]

    def perf_counter() -> float:  # called at the start and the end of each timed call
        if perf_counter.started:
            now[0] += next(durations)
        perf_counter.started = not perf_counter.started
        return now[0]

    perf_counter.started = False
    monkeypatch.setattr(pack, "time", type("Clock", (), {"perf_counter": staticmethod(perf_counter)}))
    specs = [spec(channel_factor=c, kernel_size=k) for c in (1, 2) for k in (3, 5)]
    size, rates = probe_pack_size(specs, synthetic, max_size=4)
    tried = list(rates)
    assert size == chosen and tried == [1, 2, 4][: len(tried)]
    images = rates[1] * seconds[0]  # the images one timed call of one model trains
    assert [rates[n] for n in tried] == pytest.approx([n * images / seconds[i] for i, n in enumerate(tried)])


def test_pack_auto_is_one_without_a_gpu_and_bad_values_are_one_line(tmp_path, monkeypatch):
    from conftest import run_cli

    from sweep.run import WorkerPlan, resolve_pack

    plan = WorkerPlan(2, (), 1, 1)
    assert resolve_pack("auto", [spec()], plan, None) == (1, "packs of 1 (--pack auto: no GPU)")
    assert resolve_pack(3, [spec()], plan, None)[0] == 3
    bad = run_cli("sweep.grid", "--dataset", "synthetic", "--pack", "many", "--results", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "--pack" in bad.stderr and "'auto'" in bad.stderr and "many" in bad.stderr


def test_a_members_time_share_follows_its_training_flops():
    from sweep.train.pack import time_shares

    small, large = spec(), spec(channel_factor=4, kernel_size=5)
    shares = time_shares([small, large, small], (32, 32, 3))
    assert sum(shares) == pytest.approx(1.0)
    flops = [s.training_flops((32, 32, 3)) for s in (small, large)]
    assert shares[1] / shares[0] == pytest.approx(flops[1] / flops[0]) and shares[0] == shares[2]


@pytest.mark.slow
def test_a_packed_members_times_are_its_share_and_add_up_to_the_packs(synthetic, tmp_path):
    import time

    from sweep.train import run_pack
    from sweep.train.pack import time_shares

    members = [spec(), spec(fewer_layers=True, channel_factor=4, kernel_size=5)]
    start = time.perf_counter()
    rows = run_pack(members, synthetic, tmp_path)
    elapsed = time.perf_counter() - start
    assert all(row["status"] == "complete" and row["pack_size"] == 2 for row in rows)
    walls, trains = [row["wall_seconds"] for row in rows], [row["train_seconds"] for row in rows]
    assert 0.8 * elapsed < sum(walls) <= elapsed  # each member's share, not the whole pack's twice
    assert sum(trains) < elapsed and all(t < w for t, w in zip(trains, walls))
    shares = time_shares(members, (32, 32, 3))
    assert trains[1] / trains[0] == pytest.approx(shares[1] / shares[0])


def assert_packed_equals_alone(specs: list[TrialSpec], dataset, tmp_path) -> list[dict]:
    """Train `specs` as one pack and each alone; every member's row (its history to the last
    epoch, metrics, early stop) and saved weights are those of its lone trial. Returns the
    packed rows."""
    import keras

    from sweep.train import run_pack, run_trial, trial_dir

    packed = run_pack(specs, dataset, tmp_path / "packed")
    alone = [run_trial(s, dataset, tmp_path / "alone") for s in specs]
    for s, p, q in zip(specs, packed, alone, strict=True):
        assert p["status"] == q["status"] == "complete", (p["error"], q["error"])
        assert p["trial_key"] == q["trial_key"] == s.key and p["pack_size"] == len(specs) and q["pack_size"] == 1
        assert p["params"] == q["params"] and p["latent_size"] == q["latent_size"]
        assert (p["epochs_run"], p["best_epoch"], p["stop_reason"]) == (q["epochs_run"], q["best_epoch"], q["stop_reason"])
        history, lone = json.loads(p["history"]), json.loads(q["history"])
        assert len(history) == len(lone) == q["epochs_run"]
        for h, g in zip(history, lone):
            assert h["loss"] == pytest.approx(g["loss"], rel=1e-5)
            assert h["val_loss"] == pytest.approx(g["val_loss"], rel=1e-5)
        metrics = [name for name, value in q.items() if name.startswith(("val_", "test_")) and isinstance(value, float)]
        assert {"val_mse", "test_mse", "test_psnr", "test_ssim"} <= set(metrics), metrics
        for name in metrics:
            assert p[name] == pytest.approx(q[name], rel=1e-5, nan_ok=True), name
        saved = [keras.models.load_model(trial_dir(tmp_path / d, s.key) / "model.keras").get_weights() for d in ("packed", "alone")]
        assert len(saved[0]) == len(saved[1])
        for w, v in zip(*saved):
            np.testing.assert_allclose(w, v, rtol=1e-5, atol=1e-6)
    return packed


COLORIZE = TrainingProtocol(**{**PROTOCOL.to_dict(), "task": "colorize", "early_stopping_patience": None})
CLASSES = TrainingProtocol(**{**COLORIZE.to_dict(), "encoding": "lab", "loss": "ab_classification"})
EARLY = TrainingProtocol(**{**PROTOCOL.to_dict(), "epochs": 8, "learning_rate": 0.01, "early_stopping_patience": 1})
PACKS = {  # two different models each (58 training images: a partial last batch too)
    "batch_norm": [
        TrialSpec(UNetSpec(depth=2, base_width=8, batch_norm_from=1), COLORIZE, "synthetic"),
        TrialSpec(UNetSpec(depth=2, base_width=4, batch_norm_from=2, kernel_size=5), COLORIZE, "synthetic"),
    ],
    "dropout": [
        TrialSpec(DenseLatentSpec(filters=(8, 16, 32), latent_dim=16, dropout=0.3), COLORIZE, "synthetic"),
        TrialSpec(UNetSpec(depth=2, base_width=8, batch_norm_from=3, dropout=0.3), COLORIZE, "synthetic"),
    ],
    "classification_head": [
        TrialSpec(UNetSpec(depth=2, base_width=8, batch_norm_from=3, output_kernel=1, last_width=8), CLASSES, "synthetic"),
        TrialSpec(UNetSpec(depth=2, base_width=4, batch_norm_from=3, output_kernel=1, last_width=4), CLASSES, "synthetic"),
    ],
    "early_stopped_member": [spec(EARLY, channel_factor=1, compression_factor=1), spec(EARLY, channel_factor=4, compression_factor=4)],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(PACKS))
def test_a_packed_member_trains_as_it_would_alone(case, synthetic, tmp_path):
    """Batch normalisation (its batch statistics, no padding in them), dropout (each member's
    own masks), a classification head (its logits and rebalanced loss), and a member that
    stops early while the other trains on: each member of the pack is its lone trial, to
    the same tolerances as the plain pair above."""
    specs = PACKS[case]
    packed = assert_packed_equals_alone(specs, synthetic, tmp_path)
    assert packed[0]["params"] != packed[1]["params"]  # two different models really were packed
    if case == "early_stopped_member":  # one stopped while the other trained on
        assert [r["stop_reason"] for r in packed] == [None, "early_stopping"] and packed[1]["epochs_run"] < packed[0]["epochs_run"]
