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
