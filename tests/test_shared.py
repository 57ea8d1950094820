"""The shared results table (`--storage URL`): one row per trial key whichever machine
writes it, a complete row final, the same DataFrame as from a folder, retries while the
database is away; and the shared artefact store (`--artifacts`)."""

from __future__ import annotations

import multiprocessing
import time
import os

import pytest

from sweep.errors import StoreError
from sweep.results import RowStore, load_results, read_rows, write_row
from sweep.results import shared as shared_module
from sweep.results.shared import SharedRows, retrying, shared_rows

MARIADB_URL = os.environ.get("SWEEP_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")


def _reachable(url: str) -> str | None:
    try:
        import sqlalchemy

        sqlalchemy.create_engine(url).connect().close()
    except Exception as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0]}"
    return None


def _drop(url: str) -> None:
    import sqlalchemy

    with sqlalchemy.create_engine(url).begin() as conn:
        conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {shared_module.TABLE}"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mariadb"])
def url(request, tmp_path):
    """A database with no results table: a SQLite file, the test PostgreSQL server (required in
    CI), and MariaDB where one answers (optional: skipped otherwise)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cluster.db'}"
        return
    if request.param == "postgresql":
        shared_rows.cache_clear()
        yield request.getfixturevalue("postgres_url")  # a fresh database
        shared_rows.cache_clear()
        return
    problem = _reachable(MARIADB_URL)
    if problem:
        pytest.skip(f"no MariaDB at {MARIADB_URL} ({problem})")
    base = MARIADB_URL
    # The table is dropped before and after each test (tests of one file run one at a time).
    _drop(base)
    shared_rows.cache_clear()
    yield base
    shared_rows.cache_clear()
    _drop(base)


def row(key: str, status: str = "complete", **values) -> dict:
    base = {"trial_key": key, "status": status, "host": "here", "history": "[]", "test_mse": 0.01, "epochs": 3, "fewer_layers": False}
    if status != "complete":
        base.update(error="it went wrong", test_mse=None)
    return {**base, **values}


def test_a_complete_row_is_final_and_others_are_replaced(url):
    table = shared_rows(url)
    assert table.push(row("a", "failed")) is True
    assert table.push(row("a", "pruned")) is True  # a retry replaces a failed row
    assert table.push(row("a", test_mse=0.5)) is True  # ... and a complete one replaces it
    assert table.push(row("a", test_mse=0.9, host="zombie")) is False  # a late second result stays out
    assert table.push(row("a", "failed")) is False
    assert table.statuses() == {"a": "complete"}
    assert table.get("a")["test_mse"] == 0.5 and table.get("a")["host"] == "here"
    assert table.get("missing") is None


def _push_complete(url: str, key: str, value: float, barrier) -> bool:
    barrier.wait()
    return shared_rows(url).push(row(key, test_mse=value, host=f"machine-{value}"))


def test_machines_racing_to_store_one_key_leave_exactly_one_complete_row(url):
    shared_rows(url)  # the table exists before the race (creating it is raced in the netns tests)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(6)
        with context.Pool(6) as pool:
            stored = pool.starmap(_push_complete, [(url, "k", float(i), barrier) for i in range(6)])
    assert sum(stored) == 1
    winner = stored.index(True)
    assert shared_rows(url).rows() == [row("k", test_mse=float(winner), host=f"machine-{float(winner)}")]


def test_load_results_from_a_url_equals_load_results_from_the_folder(url, tmp_path):
    import pandas as pd

    folder = tmp_path / "results"
    rows = [
        row("a", test_psnr=20.0, params=100, finished_at="2026-01-01T00:00:01"),
        row("b", "failed", finished_at="2026-01-01T00:00:02", resumed_from_epoch=None),
        row("c", test_ssim=float("nan"), latent_size=64, finished_at="2026-01-01T00:00:03"),
    ]
    store = RowStore(str(folder), url)
    assert [store.write(r) for r in rows] == [True, True, True]
    from_folder, from_url = load_results(folder), load_results(url)
    assert list(from_url.columns) == list(from_folder.columns)
    pd.testing.assert_frame_equal(from_url, from_folder)


def test_rows_finished_while_the_database_was_away_are_pushed_on_the_next_start(url, tmp_path):
    folder = tmp_path / "results"
    for r in (row("done"), row("failed-here", "failed"), row("complete-elsewhere", "failed")):
        write_row(folder, r)
    shared_rows(url).push(row("complete-elsewhere"))
    store = RowStore(str(folder), url)
    assert store.push_missing() == 2
    assert shared_rows(url).statuses() == {"done": "complete", "failed-here": "failed", "complete-elsewhere": "complete"}
    assert store.push_missing() == 0
    assert store.complete_row("complete-elsewhere")["status"] == "complete"  # from the table
    assert store.complete_row("failed-here") is None
    assert len(read_rows(folder)) == 3


def test_a_newer_schema_adds_its_columns_to_an_existing_table(url):
    import sqlalchemy

    shared_rows(url)
    with sqlalchemy.create_engine(url).begin() as conn:
        conn.execute(sqlalchemy.text(f"ALTER TABLE {shared_module.TABLE} DROP COLUMN test_ssim"))
    shared_rows.cache_clear()
    assert shared_rows(url).push(row("a", test_ssim=0.5))
    columns = {c["name"] for c in sqlalchemy.inspect(sqlalchemy.create_engine(url)).get_columns(shared_module.TABLE)}
    assert "test_ssim" in columns and "row_json" in columns and "trial_key" in columns


# ---- retrying while the database is away ---------------------------------------------------------


class OperationalError(Exception):
    """Stands for a driver's error of a database that does not answer."""


def test_retrying_waits_out_a_database_that_comes_back(monkeypatch, capsys):
    monkeypatch.setattr(shared_module.time, "sleep", lambda s: None)
    calls = iter([OperationalError("server closed the connection"), OperationalError("connection refused"), "ok"])

    def call():
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert retrying(call, url="postgresql://u:secret@db/x", timeout=60) == "ok"
    err = capsys.readouterr().err
    assert "does not answer; retrying" in err and "answers again" in err and "secret" not in err


def test_a_database_said_away_by_a_heartbeat_is_said_back_by_the_next_call_that_reaches_it(capsys):
    """A heartbeat that saw an outage can end with its trial before it sees the database come
    back: the next call of this process that reaches the database says so, once."""
    from sweep.results.shared import say_away

    say_away("postgresql://u:secret@db/x", " (a heartbeat); the trial goes on training")
    assert retrying(lambda: 1, url="postgresql://u:secret@db/x") == 1
    assert retrying(lambda: 2, url="postgresql://u:secret@db/x") == 2
    err = capsys.readouterr().err
    assert err.count("does not answer (a heartbeat)") == 1 and err.count("answers again") == 1 and "secret" not in err


def test_retrying_stops_with_one_line_after_the_timeout(monkeypatch):
    clock = iter(range(0, 10**6, 7))
    monkeypatch.setattr(shared_module.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(shared_module.time, "sleep", lambda s: None)

    def down():
        raise OperationalError("could not connect to server: Connection refused\nIs the server running?")

    with pytest.raises(StoreError) as caught:
        retrying(down, url="postgresql://u:secret@db/x", timeout=30, what="storing the row of trial k")
    message = str(caught.value)
    assert "\n" not in message and "secret" not in message
    assert message.startswith("--storage postgresql://u:***@db/x: storing the row of trial k did not answer for 30 s")
    assert "pushed on the next start" in message


def test_retrying_raises_other_errors_at_once():
    calls = []

    def wrong():
        calls.append(1)
        raise ValueError("not the database's absence")

    with pytest.raises(ValueError):
        retrying(wrong, url="sqlite://", timeout=60)
    assert calls == [1]


def test_a_database_that_cannot_be_used_is_one_line():
    with pytest.raises(StoreError, match=r"^--storage postgresql://nobody@127.0.0.1:9/none: "):
        SharedRows("postgresql://nobody@127.0.0.1:9/none", timeout=0.01)
    with pytest.raises(StoreError, match="cannot use the results table"):
        shared_rows("nosuchdialect://x/y")


# ---- the shared artefact store -------------------------------------------------------------------


def test_artifacts_in_a_folder(tmp_path):
    from sweep.artifacts import Artifacts

    store = Artifacts(str(tmp_path / "art"))
    trial = tmp_path / "trials" / "k1"
    trial.mkdir(parents=True)
    for name, text in {"model.keras": "m", "history.json": "[]", "checkpoint.npz": "c", "attempts.json": "{}"}.items():
        (trial / name).write_text(text)
    assert store.put_trial("k1", trial) == ["history.json", "model.keras"]
    assert sorted(p.name for p in (tmp_path / "art" / "k1").iterdir()) == ["history.json", "model.keras"]
    store.put("k1", trial / "checkpoint.npz")
    assert store.get("k1", "checkpoint.npz", tmp_path / "elsewhere" / "checkpoint.npz")
    assert (tmp_path / "elsewhere" / "checkpoint.npz").read_text() == "c"
    store.remove("k1", "checkpoint.npz")
    store.remove("k1", "checkpoint.npz")  # removing what is gone is fine
    assert not store.get("k1", "checkpoint.npz", tmp_path / "x")
    assert store.location("k1") == f"{tmp_path / 'art' / 'k1'}/"


def test_a_write_interrupted_midway_leaves_the_previous_file(tmp_path, monkeypatch):
    import shutil

    from sweep.artifacts import Artifacts

    store, source = Artifacts(str(tmp_path / "art")), tmp_path / "checkpoint.npz"
    source.write_bytes(b"first")
    store.put("k", source)

    def dies_midway(reader, writer, *args):
        writer.write(reader.read(2))
        raise OSError("the machine died mid-upload")

    monkeypatch.setattr(shutil, "copyfileobj", dies_midway)
    source.write_bytes(b"second")
    with pytest.raises(OSError):
        store.put("k", source)
    assert (tmp_path / "art" / "k" / "checkpoint.npz").read_bytes() == b"first"
    assert [p.name for p in (tmp_path / "art" / "k").iterdir()] == ["checkpoint.npz"]


def test_a_bad_artifacts_option_is_one_line(tmp_path):
    from sweep.artifacts import Artifacts

    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=r"^--artifacts .*file/sub: not a writable folder"):
        Artifacts(str(tmp_path / "file" / "sub")).check()
    with pytest.raises(StoreError, match=r"^--artifacts ftp://x: not a folder or an s3://bucket/prefix URL"):
        Artifacts("ftp://x").check()


def test_a_reader_changes_nothing_in_the_database(url):
    import sqlalchemy

    if url.startswith("sqlite"):  # a misspelt file name is said, not created
        with pytest.raises(StoreError, match=r"^--results sqlite:///.*: no such database file$"):
            load_results(url)
        sqlalchemy.create_engine(url).connect().close()  # an empty database
    assert load_results(url).empty  # no table yet: no rows, and no table made
    assert not sqlalchemy.inspect(sqlalchemy.create_engine(url)).has_table(shared_module.TABLE)
    with pytest.raises(ValueError, match="takes no rows"):
        shared_rows(url, writer=False).push(row("a"))
    shared_rows(url).push(row("a"))
    assert list(load_results(url)["trial_key"]) == ["a"]


# ---- the study storage while the database is away ------------------------------------------------


def test_every_call_of_the_study_storage_is_retried_while_the_database_is_away(tmp_path, monkeypatch):
    """Statements fail now and then as a restarting server's would: creating, sampling and
    telling a trial still go through (every call of Optuna's storage interface is retried)."""
    import sqlite3

    import optuna
    import sqlalchemy

    from sweep.run.study import StudyConfig, open_study

    monkeypatch.setattr(shared_module.time, "sleep", lambda s: None)
    config = StudyConfig(storage_url=f"sqlite:///{tmp_path / 'study.db'}", study_name="flaky", sampler="random", pruner="none", heartbeat_interval=1)
    study = open_study(config)
    engine = config.storage().inner.engine  # (the RDBStorage the retrying storage hands every call to)
    statements = {"seen": 0, "failed": 0}

    @sqlalchemy.event.listens_for(engine, "before_cursor_execute")
    def away_every_third(conn, cursor, statement, parameters, context, executemany):
        statements["seen"] += 1
        if statements["seen"] % 3 == 0 and statements["failed"] < 12:
            statements["failed"] += 1
            raise sqlalchemy.exc.OperationalError(statement, parameters, sqlite3.OperationalError("database is locked"))

    for value in (1.0, 2.0):
        trial = study.ask()  # create_new_trial, through the cache layer
        trial.suggest_int("x", 0, 10)
        study.tell(trial, value)
    sqlalchemy.event.remove(engine, "before_cursor_execute", away_every_third)
    assert statements["failed"] >= 5
    assert [(t.state.name, t.value) for t in optuna.load_study(study_name="flaky", storage=config.storage_url).trials] == [("COMPLETE", 1.0), ("COMPLETE", 2.0)]


def test_a_session_whose_connection_was_lost_mid_transaction_is_replaced(tmp_path, monkeypatch):
    """A server restart can leave this thread's session holding a transaction on a dead
    connection (SQLAlchemy: "Can't reconnect until invalid transaction is rolled back"); the
    next call of the study storage gets a fresh session instead of failing the run."""
    import optuna

    from sweep.run.storage import open_storage

    monkeypatch.setattr(shared_module.time, "sleep", lambda s: None)
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", 5)
    optuna.create_study(storage=storage, study_name="lost")
    session = storage.inner.scoped_session()  # (the session Optuna's next call will use)
    session.begin()
    session.connection().invalidate()
    assert [s.study_name for s in storage.get_all_studies()] == ["lost"]


def test_what_counts_as_the_database_being_away():
    import sqlite3

    from sqlalchemy.exc import PendingRollbackError

    from sweep.results.shared import transient

    class DriverError(OperationalError):
        def __init__(self, *args, sqlstate=None):
            super().__init__(*args)
            self.sqlstate = sqlstate

    assert transient(OperationalError("connection to server at 10.0.0.1 failed: Connection refused"))
    assert transient(DriverError("terminating connection due to administrator command", sqlstate="57P01"))
    assert transient(DriverError("could not receive data from server", sqlstate="08006"))
    assert not transient(DriverError('column "x" does not exist', sqlstate="42703"))
    assert not transient(OperationalError('connection failed: FATAL:  password authentication failed for user "me"'))
    assert not transient(OperationalError('connection failed: FATAL:  database "sweeep" does not exist'))
    assert transient(OperationalError(2003, "Can't connect to MySQL server on 'db' (timed out)"))
    assert transient(OperationalError(2013, "Lost connection to MySQL server during query"))
    assert not transient(OperationalError(1054, "Unknown column 'x' in 'field list'"))
    assert not transient(OperationalError(1045, "Access denied for user 'me'@'host'"))
    assert transient(sqlite3.OperationalError("database is locked"))
    assert not transient(sqlite3.OperationalError("no such table: sweep_trials"))
    assert not transient(ValueError("not the database"))
    assert transient(PendingRollbackError("Can't reconnect until invalid transaction is rolled back."))


def test_artifacts_in_an_s3_bucket(tmp_path, monkeypatch):
    """`--artifacts s3://bucket/prefix` through Optuna's Boto3ArtifactStore, against moto's
    in-process S3 (the same calls a real bucket answers)."""
    moto = pytest.importorskip("moto")
    import boto3

    from sweep.artifacts import Artifacts

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    trial = tmp_path / "trials" / "k1"
    trial.mkdir(parents=True)
    (trial / "model.keras").write_text("m")
    (trial / "checkpoint.npz").write_text("c")
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="sweep-bucket")
        store = Artifacts("s3://sweep-bucket/runs/one")
        store.check()
        assert store.put_trial("k1", trial) == ["model.keras"]
        store.put("k1", trial / "checkpoint.npz")
        assert store.get("k1", "checkpoint.npz", tmp_path / "elsewhere" / "checkpoint.npz")
        assert (tmp_path / "elsewhere" / "checkpoint.npz").read_text() == "c"
        store.remove("k1", "checkpoint.npz")
        assert not store.get("k1", "checkpoint.npz", tmp_path / "gone")
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="sweep-bucket")["Contents"]]
        assert keys == ["runs/one/k1/model.keras"] and store.location("k1") == "s3://sweep-bucket/runs/one/k1/"
