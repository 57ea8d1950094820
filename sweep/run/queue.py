"""Who runs what: the grid queue, claims, heartbeats and attempts, in tables of sweep's own.

Optuna records trials (ask, tell); everything about which machine holds which trial lives in
two tables beside `sweep_trials` in the study's database, written with SQLAlchemy Core in
statements whose conditions let the database decide every race. Nothing here touches
Optuna's own tables or private API.

`sweep_queue`: one row per grid point of a grid study (`slot` = the point's index, kind
"grid"), or per trial of a `sweep.optuna` study (`slot` = the Optuna trial number, kind
"optuna"); the primary key is (study_name, slot). Its columns: state (waiting, running,
complete, failed, pruned; an Optuna trial handed back as a new waiting Optuna trial is
"requeued"), the point's params and trial_key, attempts (how many times a worker holding it
died or its code raised), the holder's claim token, worker (host:pid), run (the driver's run
id) and Slurm job, the Optuna trial number, the error, and three times on the *database
server's* clock (epoch seconds): claimed, heartbeat, updated.

`sweep_hosts`: per host, when it last saw the database come back after an outage (server
clock).

The rules:

- Fill: every machine inserts the points it computed, each insert on its own; the primary key
  lets a point exist once, so machines that start together need no lock and never wait.
- Claim: a waiting point becomes running with a fresh token in one conditional UPDATE (`WHERE
  state = 'waiting'`): of the machines racing for it exactly one wins.
- Heartbeat: the holder stamps `heartbeat` with the server's clock every interval (`UPDATE ...
  WHERE claim = token`; a beat that finds no row means the claim was taken over). A beat that
  fails, or hangs for SLOW_S seconds, is an outage this host saw; it is written to
  `sweep_hosts` as soon as a beat goes through again (tried every second meanwhile).
- Stale: a running row whose heartbeat is older than the grace period *by the server's clock*
  (so clocks that disagree change nothing), or held by a process of this host that is gone. It
  is taken over (`WHERE claim = its token`: one machine wins) only while the database is
  quiet: no host has reported an outage within the grace period, this process has been
  talking to the database that long and has not seen one, and (PostgreSQL) the server has
  been up that long. So an outage that every machine sees (a restarted or unreachable
  server) fails no live trial, however long, within `--storage-timeout`: heartbeats first
  get a grace period to resume. A machine cut off alone for longer than the grace period
  has its trials taken over by the others, as a dead one does.
- Died or raised: attempts + 1; waiting again while attempts <= MAX_RETRY, else failed with
  its error. An interrupted trial (SIGINT, SIGTERM) is handed back with no attempt used up.
- Finished: complete, failed (the trial's row says failed: a NaN loss, say) or pruned; final.
  `--retry-failed` puts failed points back to waiting (attempts reset).

A host that gives up (the database away longer than `--storage-timeout`) leaves its claims;
they go stale and are retried elsewhere, from the checkpoints in `--artifacts`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

from sweep.progress import alive
from sweep.results.shared import DEFAULT_TIMEOUT, engine_options, first_line, last_outage, recently_away, retrying, saw_outage, say_away, say_back, transient

__all__ = ["MAX_RETRY", "QUEUE_TABLE", "HOSTS_TABLE", "Claim", "Queue", "here"]

QUEUE_TABLE = "sweep_queue"
HOSTS_TABLE = "sweep_hosts"
MAX_RETRY = 3  # a trial whose worker died, or whose code raised, runs at most this many times more
SLOW_S = 5.0  # a heartbeat or a look at the queue that took longer met an outage (a link cut and back)
T = TypeVar("T")

# This process's state, shared by every Queue in it: when it started (it judges nobody silent
# before it has itself been talking to the database for a grace period), the last outage it
# wrote to sweep_hosts, and the Optuna trials it has seen RUNNING with no holder, since when.
_STARTED = time.monotonic()
_reported = -float("inf")
_unowned: dict[tuple[str, str, int], float] = {}


def here() -> str:
    """This process as a worker: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@functools.lru_cache(maxsize=1)
def pid_space() -> str:
    """What makes this host's process ids comparable: the boot and the pid namespace (two
    containers may share a host name, not their processes)."""
    parts = []
    for path, read in (("/proc/sys/kernel/random/boot_id", lambda p: open(p).read().strip()), ("/proc/self/ns/pid", os.readlink)):
        try:
            parts.append(read(path))
        except OSError:
            parts.append("?")
    return " ".join(parts)


def slurm_job() -> str | None:
    """The Slurm job (and array task) this process runs in, if any."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job


def server_clock(dialect: str):
    """A SQL expression for the database server's clock, in epoch seconds."""
    import sqlalchemy as sa

    expression = {
        "postgresql": "EXTRACT(EPOCH FROM clock_timestamp())",
        "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
        "mysql": "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) / 1e6)",
        "mariadb": "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) / 1e6)",
    }.get(dialect)
    if expression is None:  # another database: its clock is this host's (documented)
        return sa.literal(time.time(), sa.Double)
    return sa.literal_column(expression, sa.Double)


@dataclass(frozen=True)
class Claim:
    """A running row this process holds."""

    study: str
    slot: int
    token: str
    params: dict[str, Any]
    trial_key: str | None
    attempts: int
    previous: int | None = None  # the Optuna trial that held this grid point before (failed, interrupted)


class _Tables:
    """The two tables in one database (one per process and URL)."""

    def __init__(self, url: str, timeout: float):
        import sqlalchemy as sa

        self.url, self.timeout = url, timeout
        self.engine = sa.create_engine(url, **engine_options(url))
        self.dialect = self.engine.dialect.name
        self.metadata = sa.MetaData()
        self.queue = sa.Table(
            QUEUE_TABLE, self.metadata,
            sa.Column("study_name", sa.String(255), primary_key=True),
            sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("trial_key", sa.String(64)),
            sa.Column("params", sa.Text),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            sa.Column("claim", sa.String(64)),
            sa.Column("worker", sa.String(255)),
            sa.Column("pid_space", sa.String(255)),
            sa.Column("run", sa.String(64)),
            sa.Column("job", sa.String(64)),
            sa.Column("optuna_trial", sa.Integer),
            sa.Column("error", sa.Text),
            sa.Column("claimed", sa.Double),
            sa.Column("heartbeat", sa.Double),
            sa.Column("updated", sa.Double),
        )  # fmt: skip
        self.hosts = sa.Table(
            HOSTS_TABLE, self.metadata,
            sa.Column("host", sa.String(255), primary_key=True),
            sa.Column("outage_end", sa.Double),
        )  # fmt: skip
        self.retry(self._create)

    def retry(self, call: Callable[[], T], what: str = "sweep's queue") -> T:
        return retrying(call, url=self.url, timeout=self.timeout, what=what)

    def now(self):
        return server_clock(self.dialect)

    def _create(self) -> None:
        import sqlalchemy as sa

        try:
            self.metadata.create_all(self.engine, checkfirst=True)
        except (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError) as err:
            if "already exists" not in str(err) and "duplicate" not in str(err).lower():
                raise  # (machines that start together race to create the tables: losing is fine)


@functools.lru_cache(maxsize=8)
def _tables(url: str, timeout: float) -> _Tables:
    return _Tables(url, timeout)


class Queue:
    """The queue rows of one study. Picklable by its arguments: each process opens the
    database itself."""

    def __init__(self, url: str, study_name: str, *, grace_period: float = 120, heartbeat_interval: float = 30, timeout: float = DEFAULT_TIMEOUT):
        self.url, self.study_name = url, study_name
        self.grace_period, self.heartbeat_interval, self.timeout = grace_period, heartbeat_interval, timeout

    def __reduce__(self):
        return (_queue, (self.url, self.study_name, self.grace_period, self.heartbeat_interval, self.timeout))

    @property
    def t(self) -> _Tables:
        return _tables(self.url, self.timeout)

    def _where(self, *conditions):
        q = self.t.queue
        return (q.c.study_name == self.study_name, *conditions)

    # ---- filling and reading -------------------------------------------------------------

    def fill(self, points: list[tuple[dict[str, Any], str]]) -> int:
        """Insert the grid's points (params, trial_key) that are not there yet; return how many
        this call added. Safe to run on every machine at once."""
        import sqlalchemy as sa

        q = self.t.queue
        present = {row.slot: row.trial_key for row in self.rows() if row.kind == "grid"}
        for slot, (params, key) in enumerate(points):
            if slot in present and present[slot] != key:
                from sweep.errors import SpecError

                raise SpecError(
                    f"--study {self.study_name}: its queue holds another grid (point {slot} is trial {present[slot]} there, "
                    f"{key} here); leave --study out, or name a new study"
                )
        added = 0
        for slot, (params, key) in enumerate(points):
            if slot in present:
                continue
            values = dict(study_name=self.study_name, slot=slot, kind="grid", state="waiting", trial_key=key, params=_dump(params), attempts=0)

            def insert(values=values) -> int:
                try:
                    with self.t.engine.begin() as conn:
                        conn.execute(sa.insert(q).values(**values, updated=self.t.now()))
                    return 1
                except sa.exc.IntegrityError:
                    return 0  # another machine inserted it first

            added += self.t.retry(insert, "filling the grid queue")
        return added

    def rows(self, *states: str) -> list[Any]:
        """This study's queue rows (of these states), by slot."""
        import sqlalchemy as sa

        q = self.t.queue
        query = sa.select(q).where(*self._where(*([q.c.state.in_(states)] if states else []))).order_by(q.c.slot)

        def read():
            with self.t.engine.connect() as conn:
                return conn.execute(query).all()

        return self.t.retry(read, "reading the grid queue")

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows():
            counts[row.state] = counts.get(row.state, 0) + 1
        return counts

    def retry_failed(self) -> int:
        """--retry-failed: failed points wait again, with their attempts reset."""
        import sqlalchemy as sa

        q = self.t.queue

        def update() -> int:
            with self.t.engine.begin() as conn:
                return conn.execute(
                    sa.update(q).where(*self._where(q.c.state == "failed", q.c.kind == "grid"))
                    .values(state="waiting", attempts=0, error=None, claim=None, worker=None, updated=self.t.now())
                ).rowcount  # fmt: skip

        return self.t.retry(update, "putting failed points back in the queue")

    # ---- holding a row ---------------------------------------------------------------------

    def claim_next(self, run: str) -> Claim | None:
        """Take the first waiting grid point for this process; None when none is waiting."""
        import sqlalchemy as sa

        q = self.t.queue
        self.report_outage()
        for row in self.rows("waiting"):
            token = uuid.uuid4().hex

            def take(row=row, token=token) -> int:
                with self.t.engine.begin() as conn:
                    return conn.execute(
                        sa.update(q).where(*self._where(q.c.slot == row.slot, q.c.state == "waiting", q.c.attempts == row.attempts))
                        .values(state="running", claim=token, worker=here(), pid_space=pid_space(), run=run, job=slurm_job(), error=None,
                                claimed=self.t.now(), heartbeat=self.t.now(), updated=self.t.now())
                    ).rowcount  # fmt: skip

            if self.t.retry(take, "claiming a grid point"):
                return Claim(self.study_name, row.slot, token, json.loads(row.params or "{}"), row.trial_key, row.attempts, row.optuna_trial)
        return None

    def claim_trial(self, number: int, run: str, attempts: int = 0) -> Claim:
        """Hold the Optuna trial `number` (just asked) for this process."""
        import sqlalchemy as sa

        q = self.t.queue
        self.report_outage()
        token = uuid.uuid4().hex
        values = dict(
            study_name=self.study_name, slot=number, kind="optuna", state="running", attempts=attempts, claim=token,
            worker=here(), pid_space=pid_space(), run=run, job=slurm_job(), optuna_trial=number,
        )  # fmt: skip

        def insert() -> None:
            with self.t.engine.begin() as conn:
                try:
                    with conn.begin_nested():
                        conn.execute(sa.insert(q).values(**values, claimed=self.t.now(), heartbeat=self.t.now(), updated=self.t.now()))
                except sa.exc.IntegrityError:  # a retried insert whose first answer was lost
                    conn.execute(sa.update(q).where(*self._where(q.c.slot == number)).values(**values, heartbeat=self.t.now(), updated=self.t.now()))

        self.t.retry(insert, "claiming a trial")
        return Claim(self.study_name, number, token, {}, None, attempts)

    def _update(self, held: Claim, what: str, **values) -> bool:
        """Update the row `held` holds, if it still does; whether it did."""
        import sqlalchemy as sa

        q = self.t.queue

        def update() -> int:
            with self.t.engine.begin() as conn:
                return conn.execute(
                    sa.update(q).where(*self._where(q.c.slot == held.slot, q.c.claim == held.token)).values(**values, updated=self.t.now())
                ).rowcount

        return bool(self.t.retry(update, what))

    def attach(self, claim: Claim, trial_number: int, trial_key: str | None = None) -> bool:
        """Record the Optuna trial (and trial key) of the held row."""
        extra = {"trial_key": trial_key} if trial_key else {}
        return self._update(claim, "recording the Optuna trial", optuna_trial=trial_number, **extra)

    def finish(self, claim: Claim, state: str, error: str | None = None, params: dict[str, Any] | None = None) -> bool:
        """The held row ended (complete, failed, pruned; requeued for an Optuna trial handed
        back); False when it was taken over meanwhile."""
        extra = {"params": _dump(params)} if params is not None else {}
        return self._update(claim, f"recording the end of trial slot {claim.slot}", state=state, error=error, claim=None, **extra)

    def release(self, claim: Claim) -> bool:
        """Interrupted: the grid point waits again, no attempt used up."""
        return self._update(claim, "handing a grid point back", state="waiting", claim=None, worker=None, run=None, error="interrupted")

    def charge(self, claim: Claim, error: str) -> str:
        """The holder's code raised: one attempt used up; the point waits again, or has failed
        for good after MAX_RETRY retries. Returns the new state."""
        attempts = claim.attempts + 1
        state = "waiting" if attempts <= MAX_RETRY else "failed"
        self._update(claim, "recording a failed attempt", state=state, attempts=attempts, error=error, claim=None, worker=None)
        return state

    def beat(self, claim: Claim) -> bool:
        """One heartbeat (one attempt, no retry); False when the claim was taken over."""
        import sqlalchemy as sa

        q = self.t.queue
        with self.t.engine.begin() as conn:
            return bool(conn.execute(sa.update(q).where(*self._where(q.c.slot == claim.slot, q.c.claim == claim.token)).values(heartbeat=self.t.now())).rowcount)

    @contextlib.contextmanager
    def heartbeat(self, claim: Claim) -> Iterator[None]:
        """Beat for `claim` every interval while the block runs. A beat that fails is an outage
        this host saw (said once on stderr): the next beat is tried a second later, and once
        one goes through the outage is reported (`sweep_hosts`), so no machine fails another's
        trial until heartbeats have had a grace period to resume."""
        stop = threading.Event()

        def beat() -> None:
            lost = away = False
            while not stop.wait(1.0 if away else self.heartbeat_interval):
                began = time.monotonic()
                try:
                    held = self.beat(claim)
                    if time.monotonic() - began > SLOW_S:  # a beat that hung on a cut link is an outage too
                        saw_outage()
                except Exception as err:
                    if not transient(err):
                        print(f"trial slot {claim.slot}: heartbeat failed ({first_line(err)})", file=sys.stderr)
                        continue
                    saw_outage()
                    if not away:
                        say_away(self.url, " (a heartbeat); the trial goes on training")
                    away = True
                    continue
                if away:
                    saw_outage()  # (it came back just now)
                    away = False
                say_back(self.url)
                self.report_outage()
                if not held and not lost:
                    lost = True
                    print(f"trial slot {claim.slot}: another machine took this trial over (no heartbeat from here for the grace period)", file=sys.stderr)

        thread = threading.Thread(target=beat, name=f"heartbeat-{claim.slot}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=1.0)  # a beat waiting on an unanswering database is left to finish alone

    # ---- outages and stale claims ------------------------------------------------------------

    def report_outage(self) -> None:
        """Write this host's latest outage end to `sweep_hosts` if this process saw one it has
        not reported yet (best effort: the database may be away again; the next call reports)."""
        import sqlalchemy as sa

        global _reported
        seen = last_outage()
        if seen <= _reported:
            return
        h = self.t.hosts
        host = socket.gethostname()
        try:
            with self.t.engine.begin() as conn:
                if not conn.execute(sa.update(h).where(h.c.host == host).values(outage_end=self.t.now())).rowcount:
                    conn.execute(sa.insert(h).values(host=host, outage_end=self.t.now()))
            _reported = seen
        except Exception as err:
            if not (transient(err) or isinstance(err, sa.exc.IntegrityError)):  # (two processes of a host inserting at once)
                print(f"sweep: could not record an outage in {HOSTS_TABLE} ({first_line(err)})", file=sys.stderr)

    def quiet(self) -> bool:
        """Whether stale claims may be taken over now: this process has been talking to the
        database for a grace period and saw no outage within it, no host reported one within
        it, and the server has been up that long."""
        import sqlalchemy as sa

        if recently_away(self.grace_period) or time.monotonic() - _STARTED < self.grace_period:
            return False
        self.report_outage()
        t = self.t

        def read():
            with t.engine.connect() as conn:
                now = float(conn.execute(sa.select(t.now())).scalar())
                last = conn.execute(sa.select(sa.func.max(t.hosts.c.outage_end))).scalar()
                started = None
                if t.dialect == "postgresql":
                    started = conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM pg_postmaster_start_time())")).scalar()
                return now, last, started

        now, last, started = t.retry(read, "reading the hosts' outages")
        return all(mark is None or now - float(mark) > self.grace_period for mark in (last, started))

    def stale(self) -> list[Any]:
        """The running rows whose holder is gone: a heartbeat older than the grace period by the
        server's clock (only while `quiet`), or a worker process of this host that has exited."""
        import sqlalchemy as sa

        q, t = self.t.queue, self.t
        began = time.monotonic()
        quiet = self.quiet()
        if time.monotonic() - began > SLOW_S:
            saw_outage()
            quiet = False
        host = socket.gethostname()

        def read():
            with t.engine.connect() as conn:
                now = float(conn.execute(sa.select(t.now())).scalar())
                return now, conn.execute(sa.select(q).where(*self._where(q.c.state == "running"))).all()

        began = time.monotonic()
        now, running = t.retry(read, "reading the running trials")
        if time.monotonic() - began > SLOW_S:  # the database hung meanwhile (a cut link that came back): not quiet
            saw_outage()
            quiet = False
        found = []
        for row in running:
            worker_host, _, pid = (row.worker or "").rpartition(":")
            gone_here = worker_host == host and row.pid_space == pid_space() and pid.isdigit() and not alive(int(pid))
            silent = quiet and (row.heartbeat is None or now - float(row.heartbeat) > self.grace_period)
            if gone_here or silent:
                found.append(row)
        return found

    def take_over(self, row, error: str) -> str | None:
        """Fail the stale `row`'s attempt (one machine wins: `WHERE claim = its token`); the
        new state (waiting, failed; requeued or failed for an Optuna trial), or None if
        another machine took it first or its holder finished meanwhile."""
        import sqlalchemy as sa

        q = self.t.queue
        attempts = row.attempts + 1
        if row.kind == "grid":
            state = "waiting" if attempts <= MAX_RETRY else "failed"
        else:
            state = "requeued" if attempts <= MAX_RETRY else "failed"

        def update() -> int:
            with self.t.engine.begin() as conn:
                return conn.execute(
                    sa.update(q).where(*self._where(q.c.slot == row.slot, q.c.claim == row.claim, q.c.state == "running"))
                    .values(state=state, attempts=attempts, error=error, claim=None, worker=None, updated=self.t.now())
                ).rowcount  # fmt: skip

        return state if self.t.retry(update, "taking over a stale trial") else None

    def release_run(self, run: str) -> list[Any]:
        """Hand back every row the driver run `run` still holds (its workers were stopped):
        grid points wait again, no attempt used up. Returns the rows as they were."""
        import sqlalchemy as sa

        q = self.t.queue
        released = []
        for row in self.rows("running"):
            if row.run != run:
                continue
            state = "waiting" if row.kind == "grid" else "requeued"

            def update(row=row, state=state) -> int:
                with self.t.engine.begin() as conn:
                    return conn.execute(
                        sa.update(q).where(*self._where(q.c.slot == row.slot, q.c.claim == row.claim))
                        .values(state=state, claim=None, worker=None, run=None, error="interrupted", updated=self.t.now())
                    ).rowcount  # fmt: skip

            if self.t.retry(update, "handing trials back"):
                released.append(row)
        return released

    def brief(self, timeout: float = 3.0) -> Queue:
        """This queue, trying the database for at most `timeout` seconds a call."""
        return Queue(self.url, self.study_name, grace_period=self.grace_period, heartbeat_interval=self.heartbeat_interval, timeout=min(self.timeout, timeout))

    def hand_back(self, study, run: str, timeout: float = 3.0) -> list[Any] | None:
        """A stopped driver's last act: every row its run `run` still holds goes back (grid
        points wait again; an Optuna trial's params wait as a new trial), no attempt used up,
        and the study is told their trials failed. Tries the database for at most `timeout`
        seconds (a stop must not wait for an outage to end); None when it could not (the
        claims then go stale and are retried after the grace period)."""
        from sweep.errors import StoreError

        try:
            handed = self.brief(timeout).release_run(run)
            for row in handed:
                if row.optuna_trial is not None and tell_failed(study, row.optuna_trial) and row.kind == "optuna":
                    requeue(study, row.optuna_trial, row.attempts)
            return handed
        except StoreError:
            return None
        except Exception as err:
            if not transient(err):
                print(f"sweep: could not hand back this run's trials ({first_line(err)}); they are retried after the grace period", file=sys.stderr)
            return None

    def sweep(self, study) -> int:
        """Fail the Optuna trials of stale rows and retry them (see the module's rules), and
        fail Optuna trials left RUNNING that no row holds for a grace period (a worker killed
        between asking and claiming, or a retried ask whose first answer was lost). Returns
        how many stale rows this call took over."""
        taken = 0
        for row in self.stale():
            state = self.take_over(row, "the worker running this trial stopped sending heartbeats (killed, out of memory, or cut off)")
            if state is None:
                continue
            taken += 1
            if row.optuna_trial is not None:
                tell_failed(study, row.optuna_trial)  # its worker was lost
                if state == "requeued":
                    requeue(study, row.optuna_trial, row.attempts + 1)
        self.sweep_unowned(study)
        return taken

    def sweep_unowned(self, study, at_once: bool = False) -> None:
        """Fail the Optuna trials RUNNING that no row holds, once this process has seen them so
        for a grace period (its own monotonic clock: a duration, not a time of day), or
        `at_once` (a grid with no point waiting or running, read again here: nobody can be
        about to hold them)."""
        import optuna

        if at_once and any(row.state in ("waiting", "running") for row in self.rows()):
            return
        held = {row.optuna_trial for row in self.rows("running")}
        now = time.monotonic()
        running = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        mine = {(url, name, number) for (url, name, number) in _unowned if (url, name) == (self.url, self.study_name)}
        for entry in mine:
            if entry[2] not in running or entry[2] in held:
                del _unowned[entry]
        for number in running - held:
            since = _unowned.setdefault((self.url, self.study_name, number), now)
            if at_once or (now - since > self.grace_period and not recently_away(self.grace_period)):
                tell_failed(study, number)  # held by no worker
                _unowned.pop((self.url, self.study_name, number), None)


def _queue(url, study_name, grace_period, heartbeat_interval, timeout) -> Queue:
    return Queue(url, study_name, grace_period=grace_period, heartbeat_interval=heartbeat_interval, timeout=timeout)


def _dump(params: dict[str, Any] | None) -> str:
    return json.dumps(params, sort_keys=True, default=lambda v: v.item() if hasattr(v, "item") else list(v))


def tell_failed(study, number: int) -> bool:
    """Tell the study its trial `number` failed, unless it has finished already."""
    import optuna

    try:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False  # finished meanwhile (its holder came back), or failed by another machine first
    return True


def requeue(study, number: int, attempts: int) -> None:
    """Add a waiting copy of Optuna trial `number` (its params and distributions, and its
    system attributes, as Optuna's own RetryFailedTrialCallback does, so a grid sampler knows
    its grid cell): the next `ask` takes it."""
    import optuna

    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        return
    copy = optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={**{k: v for k, v in trial.user_attrs.items() if k in ("grid_point",)}, "retry_of": number, "sweep_attempts": attempts},
        system_attrs=trial.system_attrs,
    )  # fmt: skip
    study.add_trial(copy)
