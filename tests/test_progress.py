"""Progress inside trials: a trial reports its epochs for the driver's bar, which shows the
running trials' epochs and an ETA fitted to the finished trials' FLOPs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sweep import progress
from sweep.cli.common import duration


def test_reports_are_read_back_per_live_worker_and_cleared(tmp_path, monkeypatch):
    monkeypatch.setenv(progress.ENV, str(tmp_path))
    progress.report("3fa9c2d1e0b84f67", 4, 10)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{dead.pid}.json").write_text('{"key": "gone", "epoch": 1, "epochs": 2, "time": 0}')
    (running,) = progress.running(tmp_path)
    assert (running["key"], running["epoch"], running["epochs"], running["pid"]) == ("3fa9c2d1e0b84f67", 4, 10, os.getpid())
    progress.clear()
    assert progress.running(tmp_path) == []


def test_without_the_variable_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    progress.report("k", 1, 2)
    progress.clear()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_trial_reports_each_epoch(synthetic, tmp_path, monkeypatch):
    from sweep.arch import ArchSpec
    from sweep.spec import TrainingProtocol, TrialSpec
    from sweep.train import run_trial

    seen = []
    monkeypatch.setattr(progress, "report", lambda key, epoch, epochs: seen.append((key, epoch, epochs)))
    spec = TrialSpec(ArchSpec(), TrainingProtocol(dataset="synthetic", epochs=3, train_fraction=1.0, train_limit=48, batch_size=16), synthetic.data_id)
    row = run_trial(spec, synthetic, tmp_path)
    assert row["status"] == "complete"
    assert seen == [(spec.key, 0, 3), (spec.key, 1, 3), (spec.key, 2, 3)]  # start, then each epoch but the last


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (9.4, 252, 11100, -3)] == ["9s", "4m12s", "3h05m", "0s"]


def _bar_states(text: str) -> list[str]:
    """Every state the progress bar was drawn in (tqdm redraws with \\r)."""
    return [part.strip() for part in text.replace("\r", "\n").splitlines() if part.strip().startswith("grid:")]


def test_the_bar_shows_one_eta_while_trials_run_and_neither_eta_nor_epochs_at_the_end(tmp_path, monkeypatch, capsys):
    import time

    from sweep.cli import common
    from sweep.run.schedule import WorkerPlan

    def job(key: str, seconds: float):
        def run():
            progress.report(key, 5, 10)  # mid-trial, as a trial reports its epochs
            time.sleep(seconds)
            return {"trial_key": key, "status": "complete", "wall_seconds": seconds, "family": "conv_ae"}

        return run

    keys = [f"{i:016x}" for i in range(5)]
    monkeypatch.setattr(common, "LOG_REFRESH_S", 0.05, raising=False)
    environ = dict(os.environ)
    try:
        rows = common.run_with_progress(
            [job(k, 0.2 + 0.1 * i) for i, k in enumerate(keys)], WorkerPlan(1, (), 1, 1), tmp_path / "workers", "grid",
            work={k: 1e6 * (i + 1) for i, k in enumerate(keys)},
        )  # fmt: skip
    finally:
        os.environ.clear()
        os.environ.update(environ)
    assert [row["trial_key"] for row in rows] == keys
    states = _bar_states(capsys.readouterr().err)
    assert states and all(s.count("ETA") <= 1 and "<" not in s and "s/trial" not in s for s in states), states  # not tqdm's too
    assert any("ETA" in s and "epoch 5/10" in s for s in states), states  # while trials run
    assert "5/5" in states[-1] and "ETA" not in states[-1] and "epoch" not in states[-1], states[-1]


def test_the_eta_fits_the_trials_flops_once_it_can_and_uses_the_pace_before():
    from sweep.cli.common import eta

    assert eta([], [None, None], 2, 0.0, 0) is None  # nothing to go by yet
    assert eta([], [None] * 4, 2, 30.0, 3) == "40s"  # 10 s a trial so far, 4 left
    timed = [(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]  # 1 s a trial + 2 s per unit of work
    assert eta(timed, [4.0, 5.0], 1, 999.0, 3) == "20s"  # 9 s + 11 s, on one worker
    assert eta(timed, [4.0, 5.0], 2, 999.0, 3) == "10s"
    assert eta(timed, [], 2, 10.0, 3) is None  # nothing left
