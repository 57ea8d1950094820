"""sweep's own queue beside a study (`sweep.run.queue`): filling without races, claims the
database decides, staleness on the server's clock, outages that hold off take-overs, retries
and hand-backs; and that nothing in the package reaches into Optuna's private API or tables."""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from sweep.run.queue import MAX_RETRY, Queue

POINTS = [({"x": index}, f"key{index}") for index in range(36)]


@pytest.fixture(autouse=True)
def a_process_talking_to_the_database_for_long(monkeypatch):
    """Each test as a process that has been up for a while and saw no outage (`quiet` holds
    off for a grace period after a process starts); the tests that need otherwise say so."""
    import sweep.run.queue as queue_module
    from sweep.results import shared

    monkeypatch.setattr(queue_module, "_STARTED", -float("inf"))
    monkeypatch.setattr(queue_module, "_reported", -float("inf"))
    monkeypatch.setattr(queue_module, "_unowned", {})
    monkeypatch.setattr(shared, "_last_outage_end", -float("inf"))


def queue(tmp_path, name: str = "study", grace: float = 2, **kwargs) -> Queue:
    return Queue(f"sqlite:///{tmp_path / 'q.db'}", name, grace_period=grace, heartbeat_interval=0.2, timeout=30, **kwargs)


def backdate(q: Queue, slot: int, seconds: float) -> None:
    """Make the row's heartbeat `seconds` older, on the database's own clock."""
    import sqlalchemy as sa

    t = q.t.queue
    with q.t.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.study_name == q.study_name, t.c.slot == slot).values(heartbeat=t.c.heartbeat - seconds))


def _fill(url: str, start) -> int:
    start.wait()
    return Queue(url, "study", timeout=60).fill(POINTS)


def test_machines_filling_the_queue_at_once_put_each_point_there_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    Queue(url, "study").rows()  # (the tables exist before the race, as after the first start)
    with multiprocessing.Manager() as manager:
        start = manager.Event()
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            added = pool.starmap_async(_fill, [(url, start)] * 4)
            time.sleep(2)
            start.set()
            counts = added.get(timeout=120)
    rows = Queue(url, "study").rows()
    assert sum(counts) == 36 and [row.slot for row in rows] == list(range(36))
    assert {row.state for row in rows} == {"waiting"}


def test_racing_workers_never_hold_the_same_point(tmp_path):
    import threading

    q = queue(tmp_path)
    q.fill(POINTS[:8])
    claims, barrier = [], threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        while (claim := q.claim_next("run")) is not None:
            claims.append(claim.slot)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == list(range(8))
    assert q.counts() == {"running": 8}


def test_staleness_is_judged_by_the_database_servers_clock_not_this_hosts(tmp_path, monkeypatch):
    q = queue(tmp_path, grace=120)
    q.fill(POINTS[:2])
    claim = q.claim_next("run")
    # This host's clock ten minutes ahead (or behind) changes nothing: only the server's counts.
    real = time.time
    for shift in (600, -600):
        with monkeypatch.context() as patched:
            patched.setattr(time, "time", lambda shift=shift: real() + shift)
            assert q.stale() == []
    backdate(q, claim.slot, 121)  # no heartbeat for the grace period, by the server's clock
    (stale,) = q.stale()
    assert stale.slot == claim.slot
    assert q.take_over(stale, "worker lost") == "waiting"
    assert q.take_over(stale, "worker lost") is None  # a second machine finds it taken over already
    (row, _) = q.rows()
    assert (row.state, row.attempts, row.claim) == ("waiting", 1, None)
    assert not q.finish(claim, "complete")  # the late holder is told it lost its claim


def test_an_outage_a_heartbeat_saw_holds_off_every_host_for_a_grace_period(tmp_path, monkeypatch):
    """A host whose heartbeats failed reports the outage once they go through again; until a
    grace period has passed since, no host fails a silent trial (its heartbeats may not have
    resumed yet)."""
    import sqlite3

    import sqlalchemy

    from sweep.results import shared

    monkeypatch.setattr(shared, "_last_outage_end", -float("inf"))
    q = queue(tmp_path, grace=1.5)
    q.fill(POINTS[:2])
    beating, silent = q.claim_next("run-a"), q.claim_next("run-b")
    away = {"on": True}

    @sqlalchemy.event.listens_for(q.t.engine, "before_cursor_execute")
    def outage(conn, cursor, statement, parameters, context, executemany):
        if away["on"] and statement.lstrip().upper().startswith("UPDATE"):
            raise sqlalchemy.exc.OperationalError(statement, parameters, sqlite3.OperationalError("database is locked"))

    with q.heartbeat(beating):
        time.sleep(0.7)  # beats fail: an outage this host saw
        assert shared.recently_away(1.5)
        away["on"] = False
        time.sleep(1.3)  # the next beat (a second after a failed one) goes through and reports the outage
    sqlalchemy.event.remove(q.t.engine, "before_cursor_execute", outage)
    q.finish(beating, "complete")
    backdate(q, silent.slot, 60)
    # Another host, which saw no outage itself, holds off too: the report is in the database.
    import sweep.run.queue as queue_module

    monkeypatch.setattr(shared, "_last_outage_end", -float("inf"))
    monkeypatch.setattr(queue_module, "_reported", -float("inf"))
    other = queue(tmp_path, grace=1.5)
    assert other.stale() == []
    time.sleep(1.6)
    assert [row.slot for row in other.stale()] == [silent.slot]


def test_a_host_reports_an_outage_once_not_with_every_queue_it_opens(tmp_path):
    """Every job opens the queue anew: an outage this process saw long ago must not be
    written again each time (that would hold off every take-over for good)."""
    import sqlalchemy

    from sweep.results import shared

    q = queue(tmp_path, grace=1.0)
    q.fill(POINTS[:3])
    shared.saw_outage()
    q.report_outage()

    def reported() -> float:
        with q.t.engine.connect() as conn:
            return conn.execute(sqlalchemy.text("SELECT outage_end FROM sweep_hosts")).scalar()

    first = reported()
    time.sleep(1.1)
    assert queue(tmp_path, grace=1.0).claim_next("run") is not None and queue(tmp_path, grace=1.0).quiet()
    assert reported() == first


def test_a_process_judges_nobody_silent_before_it_has_talked_to_the_database_for_a_grace_period(tmp_path, monkeypatch):
    """A machine that starts after an outage ended, before the others' heartbeats resumed
    (and reported it), must not take their trials over."""
    import sweep.run.queue as queue_module

    q = queue(tmp_path, grace=60)
    q.fill(POINTS[:1])
    claim = q.claim_next("run")
    backdate(q, claim.slot, 120)
    monkeypatch.setattr(queue_module, "_STARTED", time.monotonic())
    assert q.stale() == []
    monkeypatch.setattr(queue_module, "_STARTED", time.monotonic() - 61)
    assert [row.slot for row in q.stale()] == [claim.slot]


def test_interrupted_points_wait_again_with_no_attempt_used_and_raised_ones_use_one(tmp_path):
    q = queue(tmp_path)
    q.fill(POINTS[:2])
    claim = q.claim_next("run")
    assert q.release(claim)
    assert [(r.state, r.attempts, r.error) for r in q.rows()][0] == ("waiting", 0, "interrupted")
    for attempt in range(MAX_RETRY + 1):
        claim = q.claim_next("run")
        assert claim.slot == 0 and claim.attempts == attempt
        state = q.charge(claim, "RuntimeError: boom")
        assert state == ("waiting" if attempt < MAX_RETRY else "failed")
    row = q.rows()[0]
    assert (row.state, row.attempts, row.error) == ("failed", MAX_RETRY + 1, "RuntimeError: boom")
    assert q.retry_failed() == 1 and q.rows()[0].state == "waiting" and q.rows()[0].attempts == 0


def test_a_driver_hands_back_what_its_run_holds(tmp_path):
    q = queue(tmp_path)
    q.fill(POINTS[:3])
    mine, other = [q.claim_next("mine"), q.claim_next("mine")], q.claim_next("theirs")
    q.finish(mine[0], "complete")
    handed = q.release_run("mine")
    assert [row.slot for row in handed] == [mine[1].slot]
    assert {r.slot: r.state for r in q.rows()} == {0: "complete", 1: "waiting", 2: "running"}
    assert other.slot == 2


def test_a_claim_of_a_process_of_this_host_that_is_gone_is_stale_at_once(tmp_path, monkeypatch):
    """(Of this host: its name, its boot and its pid namespace; a container sharing the host
    name has processes of its own.)"""
    import sweep.run.queue as queue_module

    q = queue(tmp_path, grace=600)
    q.fill(POINTS[:1])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    monkeypatch.setattr(queue_module, "here", lambda: f"{queue_module.socket.gethostname()}:{dead.pid}")
    q.claim_next("run")
    (stale,) = q.stale()
    assert stale.worker.endswith(f":{dead.pid}")


def test_the_package_uses_no_private_optuna_api_and_no_sql_on_optunas_tables():
    """Optuna's private methods, attributes and tables can change in any release: the package
    goes through its public API only (its own tables live beside Optuna's)."""
    offences = []
    private = re.compile(
        r"\._trial_id\b|\._study_id\b|\.(_storage|_get_stale_trial_ids|_create_new_trial|_set_trial_param|_get_trials|_pop_waiting_trial_id"
        r"|_get_filepath|_base_path|_backend|_cached_frozen_trial|_log_completed_trial|_tell_with_warning)\b"
        r"|trial_heartbeats|RDBStorage\.\w+\s*=|setattr\(\s*\w*RDBStorage|optuna\.\w+(\.\w+)*\._\w+"
    )
    names = r"(trials|studies|trial_\w+|study_\w+|version_info|alembic_version)"
    optuna_tables = re.compile(rf"""(sa\.table|Table)\(\s*["']{names}["']|\b(FROM|JOIN|UPDATE|INTO)\s+{names}\b""", re.I)
    for path in sorted((ROOT / "sweep").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if private.search(line) or optuna_tables.search(line):
                offences.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offences, "\n".join(offences)


@pytest.mark.postgres
def test_the_queue_on_postgresql_stamps_the_servers_clock(postgres_url):
    q = Queue(postgres_url, "pg", grace_period=2, heartbeat_interval=1, timeout=30)
    q.fill(POINTS[:2])
    claim = q.claim_next("run")
    assert q.beat(claim) and q.stale() == []
    (row, _) = q.rows()
    assert abs(row.heartbeat - time.time()) < 60  # epoch seconds (this host and the server agree here)
    backdate(q, claim.slot, 10)
    assert [r.slot for r in q.stale()] == [claim.slot]


def test_a_study_name_reused_for_another_grid_is_refused(tmp_path):
    from sweep.errors import SpecError

    q = queue(tmp_path)
    q.fill(POINTS[:3])
    assert q.fill(POINTS[:3]) == 0
    with pytest.raises(SpecError, match=r"--study study: its queue holds another grid \(point 1 is trial key1 there, other here\)"):
        q.fill([POINTS[0], ({"x": 1}, "other"), POINTS[2]])
