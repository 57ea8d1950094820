"""`python -m sweep.status`: a study's trials, running workers and heartbeats, throughput and ETA;
a local results folder's rows, plan and running trials; fast help and one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone

import pytest

from conftest import ROOT, run_cli
from sweep.cli.status import duration, main
from sweep.results import write_row



def grid_study(url: str, name: str = "tiny-grid", size: int = 6, complete: int = 3):
    """A grid study as `sweep.grid --storage` leaves it: `size` points in sweep's queue,
    `complete` of them done by hostA and hostB, one running on hostA:123 with a heartbeat, the
    rest waiting. Returns the queue and the running point's claim."""
    import optuna
    import sqlalchemy as sa

    from sweep.run.queue import Queue

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url)
    queue = Queue(url, name, grace_period=120, heartbeat_interval=30, timeout=30)
    queue.fill([({"x": index}, f"key{index}") for index in range(size)])
    t = queue.t.queue
    for index in range(complete + 1):
        claim = queue.claim_next("run")
        trial = study.ask()
        trial.suggest_int("x", 0, size)
        queue.attach(claim, trial.number)
        worker = "hostA:123" if index == complete else f"host{'AB'[index % 2]}:{100 + index}"
        with queue.t.engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.study_name == name, t.c.slot == claim.slot).values(worker=worker))
        if index < complete:
            study.tell(trial, 0.1 * index)
            queue.finish(claim, "complete")
    return queue, claim


def backdate_heartbeat(queue, claim, seconds: float) -> None:
    """The running point's heartbeat `seconds` older, on the database's clock."""
    import sqlalchemy as sa

    t = queue.t.queue
    with queue.t.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.study_name == queue.study_name, t.c.slot == claim.slot).values(heartbeat=t.c.heartbeat - seconds))


def test_durations_read_like_clocks():
    assert [duration(s) for s in (0, 59.6, 192, 7500, 90000)] == ["0s", "1m00s", "3m12s", "2h05m", "1d01h"]


def test_a_grid_study_shows_counts_points_running_trial_and_eta(tmp_path, capsys):
    from sweep.results.shared import SharedRows

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    queue, running = grid_study(url)
    table = SharedRows(url)
    for key, host in (("key0", "hostA"), ("key1", "hostB"), ("key2", "hostA")):
        table.push({"trial_key": key, "status": "complete", "host": host})
    assert main(["--storage", url]) == 0
    out = capsys.readouterr().out
    assert f"storage {url}: 1 study" in out and "enqueue-lock" not in out
    assert "study tiny-grid: 4 trials: 3 complete, 1 running, 0 waiting, 0 failed, 0 pruned" in out
    assert "grid: 3 of 6 points complete, 0 failed, 1 running, 2 waiting" in out
    assert "running on hostA (1):" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("#3 "))
    assert re.fullmatch(r"\s+#3 key3 on hostA pid 123: running \d+s, heartbeat \ds ago", line), line
    # The study began moments ago: the rate is over the 0.1 minute it has run, not the window.
    assert "last 0.1 min: 3 complete (30.00/min), 0 failed/pruned; ETA 6s for 3 points left" in out
    assert "results table sweep_trials: 3 rows (3 complete) from hostA (2), hostB (1)" in out


def test_a_stale_heartbeat_is_flagged(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    queue, running = grid_study(url, complete=0)
    backdate_heartbeat(queue, running, 600)
    assert main(["--storage", url, "--study", "tiny-grid", "--window", "5"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"#0 key0 on hostA pid 123: running \d+s, heartbeat 10m0\ds ago, stale \(will be retried\)", out), out
    assert re.search(r"last [\d.]+ min: 0 complete \(0.00/min\), 0 failed/pruned; ETA unknown for 6 points left", out), out
    assert "results table" not in out  # none was created
    assert main(["--storage", url, "--grace-period", "900"]) == 0
    assert "will be retried" not in capsys.readouterr().out


def test_an_unknown_study_or_missing_database_is_one_error(tmp_path):
    from sweep.errors import StoreError

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    grid_study(url, complete=0)
    with pytest.raises(StoreError, match=r"--storage sqlite:.*: unknown study .tiny-gird.; did you mean .tiny-grid."):
        main(["--storage", url, "--study", "tiny-gird"])
    with pytest.raises(StoreError, match=r"--storage sqlite:///.*nothing\.db: cannot read the database .*no such file"):
        main(["--storage", f"sqlite:///{tmp_path / 'nothing.db'}"])
    assert not (tmp_path / "nothing.db").exists()
    with pytest.raises(StoreError, match="--results .*: no such directory"):
        main(["--results", str(tmp_path / "nowhere")])


def test_a_results_folder_shows_rows_plan_and_trials_running_here(tmp_path, capsys):
    results = tmp_path / "results"
    now = datetime.now(timezone.utc)
    for key, status, ago in (("a", "complete", 60), ("b", "complete", 120), ("c", "failed", 30), ("old", "complete", 3600)):
        write_row(results, {"trial_key": key, "status": status, "host": "here", "finished_at": (now - timedelta(seconds=ago)).isoformat()})
    runs = results / "runs"
    runs.mkdir()
    (runs / "20240101T000000-grid-1.json").write_text(json.dumps({"driver": "grid", "trials": ["x"]}))
    (runs / "20250101T000000-grid-2.json").write_text(json.dumps({"driver": "grid", "trials": ["a", "b", "c", "d", "e"]}))
    (runs / "20260101T000000-optuna-3.json").write_text(json.dumps({"driver": "optuna"}))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for key, pid in (("d", os.getpid()), ("e", dead.pid), ("a", os.getpid())):
        (results / "trials" / key).mkdir(parents=True)
        (results / "trials" / key / "attempts.json").write_text(json.dumps({"attempts": 1, "run": "r", "pid": pid}))
    assert main(["--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert f"results folder {results}: 4 rows (3 complete, 1 failed) from here (4)" in out
    assert "newest grid run (20250101T000000-grid-2.json): 5 planned: 2 complete, 1 running, 1 waiting, 1 failed" in out
    assert "running on this host (1):" in out and re.search(rf"\n    d pid {os.getpid()}: started \ds ago\n", out), out
    assert f"pid {dead.pid}" not in out and "\n    a pid" not in out
    assert "last 10 min: 2 complete (0.20/min), 1 failed/pruned; ETA 10m00s for 2 trials left" in out  # (no started_at)
    assert "storage" not in out  # no optuna.db here


def test_a_results_folder_with_an_optuna_db_shows_its_studies_too(tmp_path, capsys):
    grid_study(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert main(["--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"results folder {tmp_path}: 0 rows" in out and "no target" in out
    assert "study tiny-grid: 4 trials" in out and "#3 key3 on hostA pid 123" in out


def test_help_is_fast_and_imports_no_framework():
    start = time.perf_counter()
    out = run_cli("sweep.status", "--help", timeout=60)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0 and "--grace-period" in out.stdout and "--window" in out.stdout
    assert elapsed < 2, f"--help took {elapsed:.2f} s"
    probe = "import sys, sweep.cli.status; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    heavy = {"tensorflow", "keras", "jax", "optuna", "sqlalchemy", "pandas"} & set(eval(loaded))
    assert not heavy, f"importing sweep.cli.status loaded {heavy}"


def test_an_unreachable_storage_is_exit_2_and_one_line():
    out = run_cli("sweep.status", "--storage", "postgresql://nobody@127.0.0.1:9/none", timeout=60)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --storage postgresql://nobody@127.0.0.1:9/none: cannot read"), out.stderr


@pytest.mark.postgres
def test_heartbeat_ages_on_postgresql_use_the_database_clock(postgres_url, capsys):
    postgres = "grid-on-postgresql"
    queue, running = grid_study(postgres_url, name=postgres)
    assert main(["--storage", postgres_url, "--study", postgres]) == 0
    out = capsys.readouterr().out
    assert f"study {postgres}: 4 trials: 3 complete, 1 running, 0 waiting" in out
    assert re.search(r"#3 key3 on hostA pid 123: running \d+s, heartbeat \ds ago\n", out), out
    backdate_heartbeat(queue, running, 300)
    assert main(["--storage", postgres_url, "--study", postgres]) == 0
    assert re.search(r"heartbeat 5m0\ds ago, stale \(will be retried\)", capsys.readouterr().out)
