"""The results store: one row per trial, read back as one pandas DataFrame.

With `--storage URL`, a job writes each row to the folder and then to the shared table of
that database (`sweep.results.shared`), through a `RowStore`; `load_results(URL)` reads
the whole cluster's rows from that table.

Layout under a results directory::

    rows/<trial_key>.json     one row per trial: the store itself
    trials/<trial_key>/       that trial's artefacts (model, reconstructions, history)
    tensorboard/<trial_key>/  that trial as a TensorBoard run (`sweep.results.tensorboard`)
    runs/<time>-<driver>.json the command line and configuration of each sweep invocation
    results.parquet           a snapshot of all rows for other tools (written by `export`)

A row is written to a temporary file in `rows/` and renamed into place: the rename is
atomic, so a crash leaves either the previous row or the new one, never a torn file, and
worker processes writing different trials never touch the same file. This module imports
pandas and pyarrow only, never Keras.

A complete row is final, here as in the shared table (`sweep.results.shared`): `write_row`
never replaces the complete row of a key, neither by a failed or pruned row nor by a second
complete one (two Optuna workers sampling one configuration: the one pruned after the other
completed must not replace its row), and says so by returning False; a failed or pruned row
is replaced by any later row of its key (a retry). Writers of one key take turns: each holds
an exclusive lock (`flock`) on `rows/.locks/<trial_key>` while it reads the stored status,
renames its row into place and writes the TensorBoard run, so of two processes writing one
key at the same moment the first complete row wins and the other learns it was refused. The
lock is the kernel's, released when its holder exits, however it exits; the lock files stay
(empty, one per key). Writers of different keys never wait for each other.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sweep.errors import SpecError, StoreError
from sweep.faults import failpoint
from sweep.files import TEMPORARY_SUFFIX, atomic_path
from sweep.results.schema import COLUMNS, PROTOCOL_DEFAULTS, STATUSES, unknown_columns
from sweep.results.shared import DEFAULT_TIMEOUT, READ_TIMEOUT, SharedRows, is_url, shared_rows
from sweep.results.tensorboard import write_trial

__all__ = [
    "GroupError",
    "RowStore",
    "check_writable",
    "completed_keys",
    "comparable_groups",
    "export",
    "groups",
    "load_results",
    "read_row",
    "read_rows",
    "single_group",
    "write_row",
]

STALE_TMP_SECONDS = 3600  # a row is written in milliseconds; an older temporary is a crash's leftover


def _rows_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "rows"


def check_writable(results_dir: str | Path) -> Path:
    """Create the results directory if needed; raise StoreError if it cannot be written."""
    root = Path(results_dir)
    try:
        _rows_dir(root).mkdir(parents=True, exist_ok=True)
        probe = _rows_dir(root) / f".probe-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise StoreError(f"--results {results_dir}: not a writable directory ({err.strerror or err})") from None
    _remove_stale_temporaries(_rows_dir(root))
    return root


def _remove_stale_temporaries(rows: Path) -> None:
    cutoff = time.time() - STALE_TMP_SECONDS
    for tmp in rows.glob(f".*{TEMPORARY_SUFFIX}"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except OSError:
            pass


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf; store them as null (floats) so every row file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    return value


@contextlib.contextmanager
def _key_lock(rows: Path, key: str) -> Iterator[None]:
    """Hold the exclusive lock of `key`'s row (see the module docstring)."""
    try:
        import fcntl
    except ImportError:  # (no flock on this system: writers of one key are not serialised)
        yield
        return
    locks = rows / ".locks"
    locks.mkdir(exist_ok=True)
    fd = os.open(locks / key, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def write_row(results_dir: str | Path, row: dict[str, Any]) -> bool:
    """Write the row of `row['trial_key']` atomically, unless its key already has a complete
    row, which is final (see the module docstring); return whether it was stored. A refused
    row changes nothing (nor the key's TensorBoard run). Every column must be one the schema
    declares (`sweep.results.schema`)."""
    key = row.get("trial_key")
    if not key or row.get("status") not in STATUSES:
        raise ValueError(f"a row needs a trial_key and a status in {STATUSES}; got {key!r}, {row.get('status')!r}")
    unknown = unknown_columns(row)
    if unknown:
        raise ValueError(f"columns not declared in sweep.results.schema: {', '.join(sorted(unknown))}")
    rows = _rows_dir(results_dir)
    rows.mkdir(parents=True, exist_ok=True)
    text = json.dumps({k: _clean(v) for k, v in row.items()}, sort_keys=True, allow_nan=False)
    target = rows / f"{key}.json"
    with _key_lock(rows, str(key)):
        if _stored_status(target) == "complete":
            return False
        with atomic_path(target, fsync=True) as tmp:
            tmp.write_text(text)
            failpoint("store.write_row.before_rename")
        try:
            write_trial(results_dir, row)  # the same row as a TensorBoard run (RESULTS/tensorboard/<key>/)
        except Exception as err:  # a view of the row, never a reason to lose it
            print(f"trial {key}: not written for TensorBoard ({type(err).__name__}: {err})", file=sys.stderr)
    return True


def _stored_status(path: Path) -> str | None:
    """The status of the row stored at `path`, or None where there is none (or an unreadable
    one, which any row replaces)."""
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def read_rows(results_dir: str | Path) -> list[dict[str, Any]]:
    """All rows as dicts; leftover temporary files from a crash are ignored."""
    rows_dir = _rows_dir(results_dir)
    if not rows_dir.is_dir():
        return []
    rows = []
    for path in sorted(rows_dir.glob("*.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:  # cannot happen through write_row; say so if it does
            raise StoreError(f"{path}: unreadable row ({err}); move it aside to continue") from None
    return rows


def read_row(results_dir: str | Path, key: str) -> dict[str, Any] | None:
    path = _rows_dir(results_dir) / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def completed_keys(results_dir: str | Path, statuses: Iterable[str] = ("complete",)) -> set[str]:
    wanted = set(statuses)
    return {row["trial_key"] for row in read_rows(results_dir) if row.get("status") in wanted}


def load_results(results: str | Path, group: str | None = None):
    """Every trial of a results folder, or of the shared table of a storage URL (the whole
    cluster's: `load_results("postgresql://user@host/db")`), as one DataFrame, one row per
    trial. Its columns are the schema's in declared order: the core ones always, the others
    when some row has them; numbers are numeric and flags boolean whatever rows are missing
    them. Columns the schema does not know (rows of an older version) come last, then
    `group`: each trial's comparable group (`comparable_groups`), which the analysis never
    pools. `group=NAME` keeps that group's trials only (an unknown name is a SpecError
    listing the folder's groups)."""
    frame = _load(results)
    frame["group"] = comparable_groups(frame)
    if group is not None:
        names = list(dict.fromkeys(frame["group"]))
        if group not in names:
            raise SpecError(f"group {group!r}: not a group of {results}; its groups: {'; '.join(map(repr, names)) or 'none (no rows)'}")
        frame = frame[frame["group"] == group].reset_index(drop=True)
    return frame


def _load(results: str | Path):
    import pandas as pd

    frame = pd.DataFrame(shared_rows(str(results), READ_TIMEOUT, writer=False).rows() if is_url(results) else read_rows(results))
    known = [c for c in COLUMNS if c.core or c.name in frame.columns]
    for column in known:
        if column.name not in frame.columns:
            frame[column.name] = None
        if column.name in PROTOCOL_DEFAULTS and frame[column.name].notna().any():  # rows older than the field
            frame[column.name] = frame[column.name].where(frame[column.name].notna(), PROTOCOL_DEFAULTS[column.name])
        if column.dtype in ("int", "float"):
            frame[column.name] = pd.to_numeric(frame[column.name], errors="coerce")
        elif column.dtype == "bool" and len(frame) and frame[column.name].notna().all():
            frame[column.name] = frame[column.name].astype(bool)
    extra = sorted(c for c in frame.columns if c not in {k.name for k in known})
    frame = frame[[c.name for c in known] + extra]
    if len(frame):
        frame = frame.sort_values(["finished_at", "trial_key"], na_position="last", kind="stable")
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------- comparable groups

ALWAYS_APART = ("data_id", "dataset", "task")  # never one group, whatever a space swept
NEVER_APART = ("seed",)  # replicates of one configuration
SPACES = Path(__file__).resolve().parents[2] / "search_spaces"  # the committed spaces (rows older than `varied`)


class GroupError(SpecError):
    """A frame that pools comparable groups was given to a statistic."""


def _swept_by_row(row: dict[str, Any]) -> set[str]:
    """The factors the row's space or study varied: its `varied` cell, or, for a row written
    before there was one, the factors of the committed space of its `space` name."""
    varied = row.get("varied")
    if isinstance(varied, str):
        try:
            return set(json.loads(varied))
        except ValueError:
            return set()
    if isinstance(varied, (list, tuple)):
        return set(varied)
    space = row.get("space")
    if isinstance(space, str) and (SPACES / f"{space}.yaml").is_file():
        import yaml

        try:
            return set((yaml.safe_load((SPACES / f"{space}.yaml").read_text()) or {}).get("space") or {})
        except (OSError, yaml.YAMLError, AttributeError):
            return set()
    return set()


def _acting(row: dict[str, Any]) -> dict[str, Any] | None:
    """The row's protocol as it acts on training (`TrainingProtocol.canonical`, what its trial
    key hashes), so a row reused under another spelling of the same training (a patience of
    epochs - 1 against none) is in the group of every run it serves; None when the row holds
    no readable spec (then its recorded fields decide)."""
    from sweep.spec import TrialSpec, train_images_of

    text = row.get("spec")
    if not isinstance(text, str):
        return None
    try:
        spec = TrialSpec.from_dict(json.loads(text))
        return spec.protocol.canonical(spec.native_size, train_images_of(spec.data_id))
    except Exception:  # (a row of another version, or hand-made)
        return None


def _cell(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (list, tuple)):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 10 and 10.0 alike (a column made float by a missing value)
    return value


def _shown(value: Any) -> str:
    return "none" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))


def comparable_groups(frame) -> "pd.Series":  # noqa: F821
    """Each trial's comparable group, a readable name: the trials that may be compared share
    the data id, the dataset and task, and every protocol field that no space or study of the
    frame varied (its rows' `varied`: a field someone swept never splits a group; the seed
    never does). Two runs of one space with different `--epochs` are two groups; a trial
    reused by a second space (one trial key, one row) is in the group its values match.

    A frame without a `varied` column (one built by hand) is split by data id, dataset and
    task only. Names are the dataset and task, then the fields that tell the groups of that dataset and
    task apart (`cifar10 reconstruct epochs=1`), then the data id where that is not enough."""
    import pandas as pd

    if len(frame) == 0:
        return pd.Series([], index=frame.index, dtype=object)
    records = frame.to_dict(orient="records")
    swept = set().union(*(_swept_by_row(r) for r in records))
    protocol = [c.name for c in COLUMNS if c.group == "protocol"]
    if "varied" not in frame.columns:  # a frame built by hand, not by load_results: nothing says what was swept
        protocol = []
    fields = [f for f in (*ALWAYS_APART, *protocol) if f in frame.columns and f not in NEVER_APART and (f in ALWAYS_APART or f not in swept)]
    fields = list(dict.fromkeys(fields))
    acting = [_acting(r) for r in records]
    keys = [tuple(_cell(a.get(f) if a is not None and f in protocol else r.get(f)) for f in fields) for r, a in zip(records, acting)]
    distinct = list(dict.fromkeys(keys))
    names: dict[tuple, str] = {}
    for key in distinct:
        values = dict(zip(fields, key))
        base = " ".join(_shown(values[f]) for f in ("dataset", "task") if values.get(f) is not None) or "all"
        same = [dict(zip(fields, k)) for k in distinct if all(dict(zip(fields, k)).get(f) == values.get(f) for f in ("dataset", "task"))]
        apart = [f for f in fields if f not in ALWAYS_APART and len({json.dumps(o.get(f), default=str) for o in same}) > 1]
        names[key] = " ".join([base, *(f"{f}={_shown(values[f])}" for f in apart)])
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    for key, name in names.items():
        if counts[name] > 1:  # the same protocol on other data
            names[key] = f"{name} data={str(dict(zip(fields, key)).get('data_id'))[:8]}"
    return pd.Series([names[k] for k in keys], index=frame.index, dtype=object)


def groups(frame) -> dict[str, Any]:
    """The frame's comparable groups, name -> its trials, in order of first appearance."""
    column = frame["group"] if "group" in frame.columns else comparable_groups(frame)
    return {name: frame[column == name] for name in dict.fromkeys(column)}


def single_group(frame, what: str = "this frame") -> None:
    """Raise GroupError (one line) when `frame` pools trials of several comparable groups."""
    column = frame["group"] if "group" in frame.columns else comparable_groups(frame)
    names = list(dict.fromkeys(n for n in column if isinstance(n, str)))
    if len(names) > 1:
        raise GroupError(
            f"{what} pools {len(names)} comparable groups ({'; '.join(map(repr, names))}): trials that differ in more than "
            f"the swept factors; analyse one, e.g. frame[frame['group'] == {names[0]!r}], or load_results(RESULTS, group={names[0]!r})"
        )


def export(results_dir: str | Path) -> Path:
    """Write all rows to `results.parquet` (atomically) and return its path."""
    frame = load_results(results_dir)
    target = Path(results_dir) / "results.parquet"
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    return target


@dataclass(frozen=True)
class RowStore:
    """Where a job's rows go: the results folder, and with a storage URL the shared table of
    that database too (the folder first, so a row survives the database being away; see
    `SharedRows.push_missing`). Picklable: a worker opens the table itself."""

    results_dir: str
    storage: str | None = None  # a database URL, or None: the folder alone
    timeout: float = DEFAULT_TIMEOUT  # seconds to retry a database that does not answer

    @property
    def shared(self) -> SharedRows | None:
        return shared_rows(self.storage, self.timeout) if self.storage and is_url(self.storage) else None

    def write(self, row: dict[str, Any]) -> bool:
        """Write `row` to the folder, then to the shared table; False when either already had a
        complete row of its key, which stays. A row the folder refuses (this machine completed
        the key before) goes no further; one the table refuses (another machine's complete row
        is there) is kept in the folder all the same."""
        if not write_row(self.results_dir, row):
            return False
        return self.shared.push(row) if self.shared is not None else True

    def complete_row(self, key: str) -> dict[str, Any] | None:
        """The complete row of `key` from the folder or, failing that, the shared table."""
        row = read_row(self.results_dir, key)
        if row is not None and row.get("status") == "complete":
            return row
        row = self.shared.get(key) if self.shared is not None else None
        return row if row is not None and row.get("status") == "complete" else None

    def push_missing(self, select: Callable[[dict[str, Any]], bool] = lambda row: True) -> int:
        """Push the folder's rows the shared table lacks (rows finished while the database was
        away), of those `select` picks (this sweep's: a folder may hold others); return how many."""
        if self.shared is None:
            return 0
        return self.shared.push_missing(row for row in read_rows(self.results_dir) if select(row))
