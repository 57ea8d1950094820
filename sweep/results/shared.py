"""The shared results table: every machine's rows in the database of `--storage URL`.

With `--storage URL` (PostgreSQL for a cluster; any SQLAlchemy URL Optuna accepts: MySQL or
MariaDB through `mysql+pymysql://`, SQLite), each trial's row is also written to the table
`sweep_trials` of that database, so `load_results(URL)` gives the whole cluster's DataFrame.
Its columns are the schema's (`sweep.results.schema`: one typed SQL column per declared
column, for queries in SQL), plus `row_json`, the row exactly as the folder stores it (what
`load_results` reads back), and who pushed it when.

The rules a row obeys, whichever machine writes it (each push is one transaction):

- one row per `trial_key` (the primary key);
- a complete row is final: it is never replaced, neither by a failed or pruned row nor by a
  second complete one, so a worker whose trial was failed and retried elsewhere and that
  comes back with a late result (a "zombie") never creates a second complete row;
- a failed or pruned row is replaced by any later row of its key (a retry).

Database trouble: every statement is retried with back-off while the database does not
answer (`retrying`), for at most `--storage-timeout` seconds, then the command stops with one
line. Rows finished meanwhile stay in the local `--results` folder, and `push_missing` sends
them on the next start. The module imports SQLAlchemy only when a table is used.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from sweep.errors import StoreError
from sweep.results.schema import COLUMNS, STATUSES

__all__ = [
    "DEFAULT_TIMEOUT",
    "READ_TIMEOUT",
    "SharedRows",
    "TABLE",
    "check_scheme",
    "engine_options",
    "is_url",
    "first_line",
    "mask_args",
    "mask_text",
    "mask_url",
    "paste_url",
    "last_outage",
    "recently_away",
    "retrying",
    "saw_outage",
    "shared_rows",
    "transient",
]

TABLE = "sweep_trials"
DEFAULT_TIMEOUT = 300.0  # seconds a worker keeps retrying a database that does not answer
READ_TIMEOUT = 10.0  # ... and a reader (load_results, the report): a wrong URL is said at once
_SQL_TYPES = {"str": "Text", "json": "Text", "int": "BigInteger", "float": "Double", "bool": "Boolean"}
T = TypeVar("T")
WRITER_HINT = "; rows finished here are kept in --results and pushed on the next start"


def is_url(text: str | os.PathLike) -> bool:
    """Whether a `--results`/`--storage` value is a database URL rather than a folder."""
    return bool(re.match(r"^[a-z][a-z0-9+]*://", str(text)))


SCHEME_FIXES = {"postgres": "postgresql"}  # schemes other tools write (Heroku, libpq) that SQLAlchemy does not know


def check_scheme(url: str, flag: str) -> None:
    """Refuse, in one line with the fix, a URL whose scheme SQLAlchemy knows by another name
    (`postgres://`: SQLAlchemy knows only `postgresql://`)."""
    scheme, sep, rest = str(url).partition("://")
    base, plus, driver = scheme.partition("+")
    if sep and base.lower() in SCHEME_FIXES:
        fixed = f"{SCHEME_FIXES[base.lower()]}{plus}{driver}://{rest}"
        raise StoreError(f"{flag} {mask_url(url)}: SQLAlchemy does not know the scheme {scheme}://; write {mask_url(fixed)}")


# Secrets in URLs. A database URL may carry its password (`scheme://user:PASSWORD@host/db`,
# or `?password=` in the query). Nothing the tool prints or saves shows it: messages, run
# records, reports and status lines show `mask_url(url)` (the password as `***`), and a
# command printed for the user to copy shows `paste_url(url)` (no password at all: libpq
# then reads ~/.pgpass). SQLAlchemy's parser reads a password up to the first `@`, so a raw
# `@` in one (it should be written %40) would leave the rest in the "host"; for a URL with
# several `@`, the password is taken to run from `scheme://user:` to the LAST `@`, which may
# hide too much but never too little.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-_]*://")
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-_]*://[^:/@?#]*):(?P<secret>.*)@(?P<tail>[^@]*)$", re.S)
_QUERY_SECRET = re.compile(r"(?P<sep>[?&])password=[^&#]*", re.I)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-_]*://\S+")
_KEYWORD_SECRET = re.compile(r"(?<![?&])\b(password\s*=\s*)('[^']*'|\S+)", re.I)  # libpq's `key=value` connection strings


def _without_password(url: str | os.PathLike, masked: bool):
    """`url` with its password shown as `***` (`masked`) or dropped; anything that is not a
    URL as it is."""
    text = str(url)
    if not _SCHEME.match(text):
        return url
    parsed = None
    if text.count("@") <= 1:  # else SQLAlchemy would cut the password at its first `@`
        try:
            from sqlalchemy.engine import make_url

            parsed = make_url(text)
        except Exception:  # not a URL SQLAlchemy reads: the patterns below still find the password
            parsed = None
    if parsed is not None:
        in_query = [k for k in parsed.query if k.lower() == "password"]
        if parsed.password is None and not in_query:
            return text  # nothing to hide: the URL as the user spelt it
        if masked:
            return _QUERY_SECRET.sub(lambda m: f"{m['sep']}password=***", parsed.render_as_string(hide_password=True))
        # (`URL.set(password=None)` would keep the password: `set` ignores None)
        return parsed.difference_update_query(in_query)._replace(password=None).render_as_string(hide_password=False)
    found = _USERINFO.match(text)
    if found:
        text = f"{found['head']}:***@{found['tail']}" if masked else f"{found['head']}@{found['tail']}"
    if masked:
        return _QUERY_SECRET.sub(lambda m: f"{m['sep']}password=***", text)
    text = _QUERY_SECRET.sub(lambda m: m["sep"], text)
    return re.sub(r"[?&]+$", "", re.sub(r"([?&])&+", r"\1", text))


def mask_url(url: str) -> str:
    """`url` with its password shown as `***` (in the user part, or a `password=` query
    parameter), for everything the tool prints or saves: messages, run records, reports,
    status. A password may hold `/`, `:`, `%`-escapes, even a raw `@`. Anything that is not a
    URL (a folder, `journal:PATH`) comes back as it is, and so does a URL without a password
    (`s3://bucket/prefix`, `sqlite:///x.db`)."""
    return _without_password(url, masked=True)


def paste_url(url: str) -> str:
    """`url` without its password, for commands printed for the user to copy: they work as
    they are with the password in ~/.pgpass (libpq's password file), and never carry `***`.
    Anything that is not a URL comes back as it is."""
    return _without_password(url, masked=False)


def mask_text(text: str) -> str:
    """`text` (an error message, a command line) with the password of every URL in it masked
    (`mask_url`), and any libpq `password=...` keyword."""

    def masked(found: re.Match) -> str:
        url = found.group(0)
        end = len(url.rstrip("'\"`)]},;:.!?"))  # the sentence's punctuation after a URL is not part of it
        return mask_url(url[:end]) + url[end:]

    text = _URL_IN_TEXT.sub(masked, str(text))
    return _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}***", text)


def mask_args(args: Iterable[str], paste: bool = False) -> list[str]:
    """A command line with every URL's password masked: an argument that is a URL
    (`--storage URL`), one that ends in one (`--storage=URL`, `VAR=URL`), or holds one. With
    `paste`, URL arguments lose their password instead (`paste_url`: a command to copy)."""
    hide = paste_url if paste else mask_url
    masked = []
    for arg in map(str, args):
        name, equals, value = arg.partition("=")
        if _SCHEME.match(arg):
            masked.append(hide(arg))
        elif equals and _SCHEME.match(value):
            masked.append(f"{name}={hide(value)}")
        else:
            masked.append(mask_text(arg) if "://" in arg or "password" in arg.lower() else arg)
    return masked


def engine_options(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for a storage URL, shared by Optuna's storage and the table.

    SQLite waits for other writers instead of failing. A network database checks a pooled
    connection before using it (one the server closed by restarting is replaced). With the
    default drivers (psycopg, PyMySQL) connecting gives up after 10 s and TCP notices a dead
    link within about 15 s (keepalives and a user timeout) instead of the operating system's
    15 minutes: a statement in flight when the link goes down fails, and `retrying` takes
    over. Other drivers get their own defaults."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    from sqlalchemy.engine import make_url

    options: dict[str, Any] = {"pool_pre_ping": True}
    driver = make_url(url).get_driver_name()
    if driver in ("psycopg", "psycopg2"):
        options["connect_args"] = {
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 15000,
        }
    elif driver == "pymysql":
        options["connect_args"] = {"connect_timeout": 10, "read_timeout": 30, "write_timeout": 30}
    return options


# Server answers that mean "not now" rather than "never": PostgreSQL's SQLSTATE classes 08
# (connection), 57P0x (shutting down, starting up), 53300 (too many connections), 40001/40P01
# (serialization failure, deadlock); MySQL's client codes for a server gone or unreachable,
# and its lock timeout, deadlock, too many connections and shutdown.
_PG_TRANSIENT = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")
_MYSQL_TRANSIENT = {1040, 1053, 1205, 1213, 2003, 2006, 2013, 2055}
_NEVER = re.compile(r"authentication failed|password|does not exist|no pg_hba\.conf entry|access denied|unknown database", re.I)


def transient(err: BaseException) -> bool:
    """Whether `err` is the database not answering (down, restarting, unreachable, locked),
    which retrying can cure, rather than a mistake retrying would repeat (wrong password, no
    such database, a bad statement)."""
    wrapped = err.__cause__ or err.__context__
    names = {cls.__name__ for cls in type(err).__mro__}
    if "StorageInternalError" in names:  # Optuna's wrapper of SQLAlchemy's errors
        return wrapped is not None and wrapped is not err and transient(wrapped)
    if getattr(err, "connection_invalidated", False):
        return True
    if "PendingRollbackError" in names and "invalid transaction" in str(err):
        return True  # a connection lost inside a transaction (the retry starts a new one)
    original = getattr(err, "orig", None) or err  # the driver's own error inside SQLAlchemy's
    text = str(original)
    state = getattr(original, "sqlstate", None)
    if state:
        return state.startswith(_PG_TRANSIENT)
    code = original.args[0] if original.args and isinstance(original.args[0], int) else None
    if code is not None:
        return code in _MYSQL_TRANSIENT
    if "sqlite3" in type(original).__module__:
        return "locked" in text or "busy" in text
    if _NEVER.search(text):
        return False
    kinds = {cls.__name__ for cls in type(original).__mro__} | names
    return bool(kinds & {"OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError", "ConnectionError"})


_last_outage_end = -math.inf  # when this process last saw the database come back
_said_away = False  # this process said the database does not answer, and not yet that it answers again


def say_away(url: str, how: str) -> None:
    """Say on stderr that the database at `url` does not answer (`how`: what goes on)."""
    global _said_away
    print(f"sweep: {mask_url(url)} does not answer{how}", file=sys.stderr, flush=True)
    _said_away = True


def say_back(url: str) -> None:
    """Say that the database answers again, once after each time it was said away (by any
    call of this process: a heartbeat that saw the outage may end before it sees the end)."""
    global _said_away
    if _said_away:
        _said_away = False
        print(f"sweep: {mask_url(url)} answers again", file=sys.stderr, flush=True)


def saw_outage() -> None:
    """Record that the database did not answer this process just now (a failed heartbeat:
    calls retried by `retrying` record it themselves)."""
    global _last_outage_end
    _last_outage_end = time.monotonic()


def last_outage() -> float:
    """When (monotonic) this process last saw the database away, or -inf."""
    return _last_outage_end


def recently_away(seconds: float) -> bool:
    """Whether this process saw the database away less than `seconds` ago. A machine that
    was cut off itself must not fail other machines' trials as silent: their heartbeats could
    not reach the database either (see `sweep.run.study`)."""
    return time.monotonic() - _last_outage_end < seconds


def retrying(
    call: Callable[[], T], *, url: str, timeout: float = DEFAULT_TIMEOUT, what: str = "the database", flag: str = "--storage", hint: str = WRITER_HINT
) -> T:
    """`call()`, retried with exponential back-off (0.5 s doubling to 15 s, jittered) while
    the database does not answer, for at most `timeout` seconds; then one clear StoreError
    naming `flag` and the URL (and `hint`). Errors that are not the database's absence are
    raised at once. A writer (`--storage`) says on stderr when it starts retrying and when
    the database answers again."""
    global _last_outage_end
    deadline = time.monotonic() + timeout
    delay, away = 0.5, False
    while True:
        try:
            result = call()
        except Exception as err:
            if not transient(err):
                raise
            away = True
            _last_outage_end = time.monotonic()  # (away now: recently_away says so meanwhile too)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _last_outage_end = time.monotonic()
                raise StoreError(f"{flag} {mask_url(url)}: {what} did not answer for {timeout:.0f} s ({first_line(err)}){hint}") from None
            if delay == 0.5 and flag == "--storage":
                say_away(url, f"; retrying for up to {remaining:.0f} s")
            time.sleep(min(delay * (0.75 + random.random() / 2), remaining))
            delay = min(delay * 2, 15.0)
        else:
            if away:
                _last_outage_end = time.monotonic()
            if flag == "--storage":
                say_back(url)
            return result


def first_line(err: BaseException) -> str:
    """`Type: the first line of the message` (at most 200 characters), for one-line errors."""
    lines = mask_text(str(err)).strip().splitlines()  # (a driver may quote the URL it was given)
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def _sql_value(column, value: Any) -> Any:
    """A row's value as its SQL column holds it (JSON values as text; no NaN)."""
    if value is None:
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if column.dtype in ("str", "json"):
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if column.dtype == "float":
        value = float(value)
        return value if math.isfinite(value) else None
    if column.dtype == "int":
        return int(value)
    return bool(value)


class SharedRows:
    """The table `sweep_trials` in one database. Get it with `shared_rows(url)`: a writer
    creates the table (or adds a newer schema's columns); a reader (`writer=False`: the
    report, `load_results`) changes nothing and sees no rows where there is no table."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT, writer: bool = True):
        import sqlalchemy as sa

        check_scheme(url, "--storage" if writer else "--results")
        self.url, self.timeout, self.writer = url, timeout, writer
        database = sa.engine.make_url(url).database
        if not writer and url.startswith("sqlite") and database and not Path(database).exists():
            raise StoreError(f"--results {mask_url(url)}: no such database file")
        self.engine = sa.create_engine(url, **engine_options(url))
        self.metadata = sa.MetaData()
        columns = [sa.Column("trial_key", sa.String(64), primary_key=True)]
        columns += [sa.Column(c.name, getattr(sa, _SQL_TYPES[c.dtype])()) for c in COLUMNS if c.name != "trial_key"]
        columns += [
            sa.Column("row_json", sa.Text, nullable=False),
            sa.Column("pushed_at", sa.Double),
            sa.Column("pushed_by", sa.String(255)),
        ]
        self.table = sa.Table(TABLE, self.metadata, *columns)
        self.present = False  # whether the table is known to exist (a reader looks again each time until it does)
        if writer:
            self._retry(self._create, "creating the results table")
            self.present = True

    def _exists(self) -> bool:
        import sqlalchemy as sa

        if not self.present:
            self.present = self._retry(lambda: sa.inspect(self.engine).has_table(TABLE), "reading the results table")
        return self.present

    def _retry(self, call: Callable[[], T], what: str = "the database") -> T:
        if self.writer:
            return retrying(call, url=self.url, timeout=self.timeout, what=what)
        return retrying(call, url=self.url, timeout=self.timeout, what=what, flag="--results", hint="")

    def _create(self) -> None:
        """Create the table, or add the columns a newer schema declared. Machines that start
        together race to do it; losing the race is not an error."""
        import sqlalchemy as sa

        try:
            self.metadata.create_all(self.engine, checkfirst=True)
        except (sa.exc.ProgrammingError, sa.exc.IntegrityError) as err:  # (PostgreSQL: a duplicate key in pg_type)
            if not re.search(r"already exists|duplicate", str(err), re.I):
                raise
        present = {c["name"] for c in sa.inspect(self.engine).get_columns(TABLE)}
        for column in self.table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=self.engine.dialect)
            name = self.engine.dialect.identifier_preparer.quote(column.name)
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.text(f"ALTER TABLE {TABLE} ADD COLUMN {name} {kind}"))
            except sa.exc.SQLAlchemyError as err:
                if not re.search(r"already exists|duplicate", str(err), re.I):
                    raise

    def push(self, row: dict[str, Any]) -> bool:
        """Store `row` under the rules above, in one transaction; True when it was stored,
        False when the key already has a complete row (which stays as it is)."""
        key, status = row.get("trial_key"), row.get("status")
        if not key or status not in STATUSES:
            raise ValueError(f"a row needs a trial_key and a status in {STATUSES}; got {key!r}, {status!r}")
        if not self.writer:
            raise ValueError("a reader's table (shared_rows(url, writer=False)) takes no rows")
        values = {c.name: _sql_value(c, row.get(c.name)) for c in COLUMNS}
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        values.update(
            row_json=json.dumps(clean, sort_keys=True, default=_json_default),
            pushed_at=time.time(),
            pushed_by=f"{socket.gethostname()}:{os.getpid()}",
        )
        return self._retry(lambda: self._push(key, values), f"storing the row of trial {key}")

    def _push(self, key: str, values: dict[str, Any]) -> bool:
        import sqlalchemy as sa

        t = self.table
        for _ in range(5):
            try:
                with self.engine.begin() as conn:
                    # The guard is in the statement itself: a complete row is never overwritten,
                    # however many machines push the same key at the same moment.
                    changed = conn.execute(
                        sa.update(t).where(t.c.trial_key == key, t.c.status != "complete").values(**values)
                    ).rowcount
                    if changed:
                        return True
                    found = conn.execute(sa.select(t.c.status).where(t.c.trial_key == key)).first()
                    if found is not None and found.status == "complete":
                        return False
                    if found is not None:
                        continue  # another machine's unfinished row arrived meanwhile: update it
                    conn.execute(sa.insert(t).values(**values))
                    return True
            except sa.exc.IntegrityError:
                continue  # another machine inserted this key meanwhile: look again
        raise StoreError(f"--storage {mask_url(self.url)}: could not store the row of trial {key} (kept changing under us)")

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored row of `key`, or None."""
        import sqlalchemy as sa

        if not self._exists():
            return None

        def read():
            with self.engine.connect() as conn:
                return conn.execute(sa.select(self.table.c.row_json).where(self.table.c.trial_key == key)).scalar()

        text = self._retry(read, f"reading the row of trial {key}")
        return None if text is None else json.loads(text)

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row, as the folder store reads them back."""
        import sqlalchemy as sa

        if not self._exists():
            return []

        def read():
            with self.engine.connect() as conn:
                return conn.execute(sa.select(self.table.c.row_json).order_by(self.table.c.trial_key)).scalars().all()

        return [json.loads(text) for text in self._retry(read, "reading the results table")]

    def statuses(self) -> dict[str, str]:
        """{trial_key: status} of every stored row."""
        import sqlalchemy as sa

        if not self._exists():
            return {}

        def read():
            with self.engine.connect() as conn:
                return dict(conn.execute(sa.select(self.table.c.trial_key, self.table.c.status)).all())

        return self._retry(read, "reading the results table")

    def push_missing(self, rows: Iterable[dict[str, Any]]) -> int:
        """Push the rows the table lacks or holds only unfinished (the local copies of rows a
        worker could not push before it stopped); return how many were stored."""
        stored = self.statuses()
        pushed = 0
        for row in rows:
            have = stored.get(row.get("trial_key"))
            if have == "complete" or (have is not None and row.get("status") != "complete"):
                continue
            pushed += self.push(row)
        return pushed


def _json_default(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


@functools.lru_cache(maxsize=8)
def shared_rows(url: str, timeout: float = DEFAULT_TIMEOUT, writer: bool = True) -> SharedRows:
    """The results table of `url` (one per process, URL and role), created by a writer if
    needed. A URL that cannot be used at all (a missing driver, a malformed URL) is one
    StoreError line."""
    try:
        return SharedRows(url, timeout, writer)
    except StoreError:
        raise
    except Exception as err:
        flag = "--storage" if writer else "--results"
        raise StoreError(f"{flag} {mask_url(url)}: cannot use the results table ({first_line(err)})") from None
