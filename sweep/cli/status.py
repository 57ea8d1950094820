"""`python -m sweep.status`: what a sweep is doing now, on one machine or a whole cluster.

    python -m sweep.status --storage postgresql://user@host/db   # every study in the database
    python -m sweep.status --results results                      # a local results folder
    python -m sweep.status --storage URL --study NAME             # one study
    python -m sweep.status --storage URL --window 30              # throughput over the last 30 minutes

For each study: trials by state, grid points complete, every running trial with its worker,
Slurm job, run time and heartbeat age on the database server's clock (older than
--grace-period: stale, the next worker retries it), failed points with their errors, the trials
finished per minute and an ETA; then the shared results table's rows by status and host. It
reads sweep's own queue (`sweep.run.queue`) and Optuna's public API, never Optuna's tables.
For a folder: its rows, the newest grid run's plan, the trials running on this host, the rate.
It only reads: a database without Optuna's tables or the results table is left as it is.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sweep.cli.common import duration
from sweep.errors import StoreError, SweepError, did_you_mean, must_be
from sweep.progress import alive

STATES = ("complete", "running", "waiting", "fail", "pruned")  # Optuna's TrialState names, lower-cased


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.status",
        description="Show what a sweep is doing now: trials by state, running trials and their heartbeats, throughput and ETA.",
        epilog="Example: python -m sweep.status --storage postgresql://user@host/db --window 30",
    )
    parser.add_argument("--storage", metavar="URL", help="the sweep's database: sqlite:///..., postgresql://..., mysql+pymysql://...")
    parser.add_argument("--results", metavar="DIR", help="a local results folder (default without --storage: results)")
    parser.add_argument("--study", help="show this study only (default: every study)")
    parser.add_argument("--window", type=float, default=10.0, metavar="MINUTES", help="throughput over the last MINUTES (default: %(default)g)")
    parser.add_argument(
        "--grace-period", type=int, default=120,
        help="seconds without a heartbeat after which a running trial counts as dead and is retried (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def throughput(done: int, other: int, remaining: int, window: float, grid: bool = False, running_for: float | None = None) -> str:
    """The trials finished per minute over the window (or since the sweep started, `running_for`
    seconds ago, when that is shorter), and the ETA of `remaining` at that rate."""
    minutes = min(window, max(running_for / 60, 0.1)) if running_for is not None else window
    rate = done / minutes
    line = f"  last {minutes:.3g} min: {done} complete ({rate:.2f}/min), {other} failed/pruned; "
    if remaining <= 0:
        return line + ("every point complete" if grid else "no target")
    eta = f"ETA {duration(remaining / rate * 60)}" if rate else "ETA unknown"
    return line + f"{eta} for {remaining} {'points' if grid else 'trials'} left"


def hosts(counter: Counter) -> str:
    return ", ".join(f"{host} ({n})" for host, n in sorted(counter.items(), key=lambda kv: str(kv[0])))


# ---- a database: Optuna studies and the shared results table -----------------------------------


def storage_report(url: str, args) -> list[str]:
    from sweep.results.shared import first_line, mask_url

    try:
        return storage_lines(url, args)
    except SweepError:
        raise
    except Exception as err:  # unreachable server, bad URL, missing driver: one line
        raise StoreError(f"--storage {mask_url(url)}: cannot read the database ({first_line(err)})") from None


def storage_lines(url: str, args) -> list[str]:
    import sqlalchemy as sa

    from sweep.results.shared import TABLE, engine_options, mask_url
    from sweep.run.queue import QUEUE_TABLE

    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") and not Path(parsed.database).exists():
        raise FileNotFoundError(f"no such file {parsed.database}")  # connecting would create it
    engine = sa.create_engine(url, **engine_options(url))
    inspector = sa.inspect(engine)
    has = {name: inspector.has_table(name) for name in ("studies", QUEUE_TABLE, TABLE)}
    lines, studies, storage = [f"storage {mask_url(url)}: no Optuna studies"], [], None
    if has["studies"]:  # else opening Optuna's storage would create its tables
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_options(url))
        studies = sorted((s.study_name for s in storage.get_all_studies() if not s.study_name.endswith(".enqueue-lock")))
    if args.study:
        if args.study not in studies:
            raise StoreError(f"--storage {mask_url(url)}: {did_you_mean('study', args.study, studies)}")
        studies = [args.study]
    if studies:
        lines = [f"storage {mask_url(url)}: {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}"]
    for name in studies:
        lines += study_block(storage, engine, name, args, has[QUEUE_TABLE])
    if has[TABLE]:
        lines.append(results_table(engine, TABLE, args.study))
    return lines


def queue_rows(engine, study: str) -> tuple[float, list]:
    """The database server's clock now (epoch seconds) and the study's rows of sweep's queue
    (`sweep.run.queue`), read without creating anything."""
    import sqlalchemy as sa

    from sweep.run.queue import QUEUE_TABLE, server_clock

    q = sa.table(QUEUE_TABLE, *(sa.column(c) for c in ("study_name", "slot", "kind", "state", "trial_key", "params", "attempts", "worker", "job", "optuna_trial", "error", "claimed", "heartbeat", "updated")))
    with engine.connect() as conn:
        now = float(conn.execute(sa.select(server_clock(engine.dialect.name))).scalar())
        rows = conn.execute(sa.select(q).where(q.c.study_name == study).order_by(q.c.slot)).all()
    return now, rows


def study_block(storage, engine, name: str, args, has_queue: bool) -> list[str]:
    """A study's trials by Optuna state; from sweep's queue its grid points, the trials running
    with their worker, Slurm job and heartbeat age (the server's clock), the failed ones and
    their errors; the throughput and an ETA."""
    trials = storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
    counts = Counter(t.state.name.lower() for t in trials)
    lines = [f"study {name}: {len(trials)} trials: " + ", ".join(f"{counts[s]} {s.replace('fail', 'failed')}" for s in STATES)]
    now, rows = queue_rows(engine, name) if has_queue else (time.time(), [])
    points = [r for r in rows if r.kind == "grid"]
    state = Counter(r.state for r in points)
    if points:
        lines.append(
            f"  grid: {state['complete']} of {len(points)} points complete, "
            + ", ".join(f"{state[s]} {s}" for s in ("failed", "pruned", "running", "waiting") if state[s] or s != "pruned")
        )
        remaining = state["waiting"] + state["running"]
    else:
        remaining = counts["waiting"] + counts["running"]
    running = [r for r in rows if r.state == "running"]
    if running:
        by_host = Counter((r.worker or "?").rpartition(":")[0] or "?" for r in running)
        lines.append(f"  running on {hosts(by_host)}:")
    for r in sorted(running, key=lambda r: (str(r.worker), r.slot)):
        host, _, pid = (r.worker or "?:?").rpartition(":")
        age = None if r.heartbeat is None else now - float(r.heartbeat)
        beat = "no heartbeat yet" if age is None else f"heartbeat {duration(age)} ago"
        if age is not None and age > args.grace_period:
            beat += ", stale (will be retried)"
        ran = duration(now - float(r.claimed)) if r.claimed is not None else "?"
        number = f"#{r.optuna_trial}" if r.optuna_trial is not None else f"point {r.slot}"
        extra = (f", attempt {r.attempts + 1}" if r.attempts else "") + (f", Slurm job {r.job}" if r.job else "")
        lines.append(f"    {number} {r.trial_key or '?'} on {host or '?'} pid {pid}: running {ran}, {beat}{extra}")
    lines += slurm_arrays(rows)
    for r in rows:
        if r.state == "failed":
            lines.append(f"  failed: {'point ' + str(r.slot) if r.kind == 'grid' else '#' + str(r.optuna_trial)} {r.trial_key or ''} {r.params or ''}: {r.error}")
    if rows:  # times on the server's clock
        recent = Counter(r.state for r in rows if r.state in ("complete", "failed", "pruned") and r.updated is not None and now - float(r.updated) <= args.window * 60)
        started = [float(r.claimed) for r in rows if r.claimed is not None]
        running_for = now - min(started) if started else None
        lines.append(throughput(recent["complete"], recent["failed"] + recent["pruned"], remaining, args.window, bool(points), running_for))
        return lines
    local = datetime.now()  # (a study without sweep's queue rows: Optuna's times, stamped by each worker's clock)
    since = local - timedelta(minutes=args.window)
    recent = Counter(t.state.name for t in trials if t.datetime_complete and t.datetime_complete >= since)
    started = [t.datetime_start for t in trials if t.datetime_start]
    running_for = (local - min(started)).total_seconds() if started else None
    lines.append(throughput(recent["COMPLETE"], recent["FAIL"] + recent["PRUNED"], remaining, args.window, False, running_for))
    return lines


def slurm_arrays(rows) -> list[str]:
    """Each Slurm job array that ran the study's points: its tasks pending and running now
    (squeue), and those that held a point and have ended."""
    from sweep.cli.launch import array_tasks

    seen: dict[str, set[str]] = {}
    for r in rows:
        if r.job:
            array, _, index = str(r.job).partition("_")
            seen.setdefault(array, set()).add(str(r.job))
    lines = []
    for array, tasks in sorted(seen.items()):
        now = array_tasks(array)
        if now is None:
            lines.append(f"  Slurm job {array}: {len(tasks)} task(s) held points (squeue does not answer here)")
            continue
        states = [now[t] for t in now]
        ended = len(tasks - set(now))
        lines.append(f"  Slurm job array {array}: {states.count('PENDING')} pending, {states.count('RUNNING')} running, {ended} ended (of the tasks that held a point)")
    return lines


def results_table(engine, table: str, study: str | None) -> str:
    import sqlalchemy as sa

    t = sa.table(table, sa.column("status"), sa.column("host"), sa.column("study_name"))
    query = sa.select(t.c.status, t.c.host, sa.func.count()).group_by(t.c.status, t.c.host)
    with engine.connect() as conn:
        rows = conn.execute(query.where(t.c.study_name == study) if study else query).all()
    statuses, by_host = Counter(), Counter()
    for status, host, n in rows:
        statuses[status] += n
        by_host[host or "?"] += n
    of = f" (study {study})" if study else ""
    detail = ", ".join(f"{n} {s}" for s, n in statuses.most_common())
    return f"results table {table}{of}: {sum(statuses.values())} rows" + (f" ({detail}) from {hosts(by_host)}" if rows else "")


# ---- a local results folder --------------------------------------------------------------------


def newest_plan(results: Path) -> tuple[Path | None, list[str]]:
    """The newest grid run record that lists its trials, and those trial keys."""
    for path in sorted((results / "runs").glob("*.json"), reverse=True):  # names start with the time
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("driver") == "grid" and isinstance(record.get("trials"), list):
            return path, record["trials"]
    return None, []


def finished_ago(row: dict, column: str = "finished_at") -> float | None:
    """Seconds since the row's `column` (an ISO time, UTC when unzoned), or None."""
    try:
        when = datetime.fromisoformat(str(row.get(column)))
    except ValueError:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - when).total_seconds()


def local_report(results: Path, args) -> list[str]:
    from sweep.results.store import read_rows

    if not results.is_dir():
        raise StoreError(f"--results {results}: no such directory")
    rows = {row.get("trial_key"): row for row in read_rows(results)}
    statuses = Counter(row.get("status") for row in rows.values())
    by_host = Counter(row.get("host") or "?" for row in rows.values())
    detail = ", ".join(f"{n} {s}" for s, n in statuses.most_common())
    lines = [f"results folder {results}: {len(rows)} rows" + (f" ({detail}) from {hosts(by_host)}" if rows else "")]
    running = {}
    for path in sorted((results / "trials").glob("*/attempts.json")):
        key = path.parent.name
        try:
            pid, written = int(json.loads(path.read_text())["pid"]), path.stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if rows.get(key, {}).get("status") != "complete" and alive(pid):
            running[key] = (pid, time.time() - written)
    record, planned = newest_plan(results)
    remaining = len(running)
    if record is not None:
        state = Counter("running" if k in running else rows.get(k, {}).get("status", "waiting") for k in planned)
        remaining = state["waiting"] + state["running"]
        parts = ", ".join(f"{state[s]} {s}" for s in ("complete", "running", "waiting", "failed", "pruned") if state[s] or s != "pruned")
        lines.append(f"  newest grid run ({record.name}): {len(planned)} planned: {parts}")
    if running:
        lines.append(f"  running on this host ({len(running)}):")
    for key, (pid, ago) in running.items():
        lines.append(f"    {key} pid {pid}: started {duration(ago)} ago")
    recent = Counter(row.get("status") for row in rows.values() if (ago := finished_ago(row)) is not None and ago <= args.window * 60)
    starts = [ago for row in rows.values() if (ago := finished_ago(row, "started_at")) is not None]
    lines.append(throughput(recent["complete"], recent["failed"] + recent["pruned"], remaining, args.window, running_for=max(starts, default=None)))
    if (results / "optuna.db").exists():
        lines += storage_report(f"sqlite:///{(results / 'optuna.db').resolve()}", args)
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.window > 0:
        raise SweepError(must_be("--window", None, "> 0", args.window))
    if args.grace_period < 1:
        raise SweepError(must_be("--grace-period", None, ">= 1", args.grace_period))
    lines = storage_report(args.storage, args) if args.storage else []
    if args.results or not args.storage:
        lines += local_report(Path(args.results or "results"), args)
    print("\n".join(lines))
    return 0
