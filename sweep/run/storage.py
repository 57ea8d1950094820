"""The study storage: where Optuna keeps a study, reached through Optuna's public API only.

Without `--storage`, a study lives in `<results>/optuna.db` (SQLite). SQLite was chosen over
Optuna's journal file after measuring both under 1-8 local worker processes
(`benchmarks/optuna_storage.py`): the journal file is faster per trial (about 0.03 s against
0.1-0.3 s), but at sweep's trial lengths (seconds to hours) SQLite's cost is noise, with a
60 s lock timeout eight writers produced no errors, and the same database holds sweep's own
tables (`sweep.run.queue`: the grid queue, claims and heartbeats). `--storage
postgresql://...` is the way to run one study from many machines. A journal file
(`--storage journal:PATH`) works too; sweep's tables then live in the SQLite file
`PATH.sweep.db` beside it.

Every call of the study storage is retried with back-off while the database does not answer
(a restarted server, a link that went down), for at most `--storage-timeout` seconds
(`sweep.results.shared.retrying`). This is done by `RetryingStorage`, an
`optuna.storages.BaseStorage` (the interface Optuna documents for storages of one's own) that
hands every call to Optuna's `RDBStorage`; no method of Optuna's is patched. When a retried
call's first attempt did reach the database but its answer was lost, setting a trial's state
again is refused (`sweep.run.study_job` copes), and creating a trial again creates a second
one (left RUNNING with nobody holding it: `sweep.run.queue.Queue.sweep_unowned` fails it).
"""

from __future__ import annotations

import functools
import random
import re
import time
from pathlib import Path

from sweep.errors import StoreError
from sweep.results.shared import DEFAULT_TIMEOUT, check_scheme, engine_options, first_line, mask_url, retrying

__all__ = ["default_storage_url", "lost_schema_race", "open_storage", "queue_url"]


def default_storage_url(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'optuna.db'}"


def queue_url(storage_url: str) -> str:
    """The SQLAlchemy URL of the database that holds sweep's own tables beside the study: the
    study's own database, or for a journal file a SQLite file beside it."""
    if storage_url.startswith("journal:"):
        path = Path(storage_url.removeprefix("journal:")).expanduser().resolve()
        return f"sqlite:///{path.with_name(path.name + '.sweep.db')}"
    return storage_url


def lost_schema_race(err: BaseException) -> bool:
    """Whether `err`, or an error it wraps, says another process created the same table, type
    or row first (what opening an empty database from several machines at once can meet)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if re.search(r"already exists|duplicate key|UNIQUE constraint failed|Duplicate entry", str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


@functools.lru_cache(maxsize=8)
def open_storage(url: str, timeout: float = DEFAULT_TIMEOUT):
    """The study storage of `url` (one per process and URL): a `RetryingStorage` around
    Optuna's RDBStorage, or Optuna's JournalStorage for `journal:PATH`. Opening is not
    retried: a database unreachable at the start is a wrong URL until proven otherwise, and
    says so at once (one line, StoreError)."""
    import warnings

    import optuna

    check_scheme(url, "--storage")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:")).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        for attempt in range(5):
            try:
                inner = optuna.storages.RDBStorage(url, engine_kwargs=engine_options(url))
                return _retrying_storage_class()(inner, url, timeout)
            except Exception as err:
                # Machines that start together on an empty database race to create Optuna's
                # tables and its version row; the losers see "already exists" or a duplicate
                # key (inside Optuna's "exception raised during the commit") and try again.
                if attempt == 4 or not lost_schema_race(err):
                    raise
                time.sleep(0.2 + random.random())
    except Exception as err:  # unreachable server, bad URL, missing driver: one line
        raise StoreError(f"--storage {mask_url(url)}: cannot open the study storage ({first_line(err)})") from None


@functools.lru_cache(maxsize=1)
def _retrying_storage_class():
    """`RetryingStorage`: every method of Optuna's storage interface, handed to an RDBStorage
    and retried while the database does not answer. Made on first use (it needs Optuna)."""
    from optuna.storages import BaseStorage

    def forward(name: str):
        def call(self, *args, **kwargs):
            method = getattr(self.inner, name)
            failed = False

            def attempt():
                nonlocal failed
                if failed:  # a session whose connection was lost is not used again
                    self.inner.remove_session()
                try:
                    return method(*args, **kwargs)
                except Exception:
                    failed = True
                    raise

            return retrying(attempt, url=self.url, timeout=self.retry_timeout, what="the study storage")

        call.__name__ = name
        call.__doc__ = getattr(BaseStorage, name).__doc__
        return call

    methods = {name: forward(name) for name in dir(BaseStorage) if not name.startswith("_") and callable(getattr(BaseStorage, name))}

    def __init__(self, inner, url: str, timeout: float) -> None:
        self.inner, self.url, self.retry_timeout = inner, url, timeout

    return type("RetryingStorage", (BaseStorage,), {**methods, "__init__": __init__, "__module__": __name__})
