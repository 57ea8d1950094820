"""The results store: one row per trial, read back as one pandas DataFrame.

Layout under a results directory::

    rows/<trial_key>.json     one row per trial: the store itself
    trials/<trial_key>/       that trial's artefacts (model, reconstructions, history)
    runs/<time>-<driver>.json the command line and configuration of each sweep invocation
    results.parquet           a snapshot of all rows for other tools (written by `export`)

A row is written to a temporary file in `rows/` and renamed into place: the rename is
atomic, so a crash leaves either the previous row or the new one, never a torn file, and
worker processes writing different trials never touch the same file. This module imports
pandas and pyarrow only, never Keras.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

from sweep.errors import StoreError
from sweep.faults import failpoint

__all__ = ["completed_keys", "export", "load_results", "read_rows", "write_row", "check_writable"]

STATUSES = ("complete", "failed", "pruned")

# The columns every DataFrame from `load_results` has, in this order, whatever rows exist.
COLUMNS = [
    "trial_key", "status", "error",
    "family", "preset", "fewer_layers", "channel_factor", "kernel_size", "compression_factor",
    "latent_size", "params",
    "val_mse", "test_mse", "test_mae", "test_psnr", "test_ssim",
    "test_ab_rmse", "test_ab_auc", "test_colorfulness", "test_colorfulness_truth",
    "test_gray_psnr", "test_gray_ssim", "test_gray_ab_rmse", "test_gray_ab_auc",
    "epochs_run", "best_epoch", "stop_reason", "train_seconds", "wall_seconds",
    "dataset", "task", "encoding", "epochs", "train_fraction", "batch_size", "optimizer",
    "learning_rate", "loss", "seed",
    "n_train", "n_val", "n_test", "data_id",
    "driver", "space", "study_name", "optuna_trial", "optuna_state",
    "started_at", "finished_at", "host", "device", "backend", "versions", "code_version",
    "history", "spec",
]  # fmt: skip


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


STALE_TMP_SECONDS = 3600  # a row is written in milliseconds; an older temporary is a crash's leftover


def _remove_stale_temporaries(rows: Path) -> None:
    import time

    cutoff = time.time() - STALE_TMP_SECONDS
    for tmp in rows.glob(".*.tmp"):
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


def write_row(results_dir: str | Path, row: dict[str, Any]) -> Path:
    """Write (or replace) the row of `row['trial_key']` atomically."""
    key = row.get("trial_key")
    if not key or row.get("status") not in STATUSES:
        raise ValueError(f"a row needs a trial_key and a status in {STATUSES}; got {key!r}, {row.get('status')!r}")
    rows = _rows_dir(results_dir)
    rows.mkdir(parents=True, exist_ok=True)
    target = rows / f"{key}.json"
    tmp = rows / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    text = json.dumps({k: _clean(v) for k, v in row.items()}, sort_keys=True, allow_nan=False)
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    failpoint("store.write_row.before_rename")
    os.replace(tmp, target)
    return target


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


def load_results(results_dir: str | Path):
    """Every trial under `results_dir` as one DataFrame (one row per trial, `COLUMNS` first)."""
    import pandas as pd

    rows = read_rows(results_dir)
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    extra = sorted(c for c in frame.columns if c not in COLUMNS)
    frame = frame[COLUMNS + extra]
    for column in ("fewer_layers",):
        if frame[column].notna().all() and len(frame):
            frame[column] = frame[column].astype(bool)
    numeric = [
        "channel_factor", "kernel_size", "compression_factor", "latent_size", "params",
        "val_mse", "test_mse", "test_mae", "test_psnr", "test_ssim", "epochs_run", "best_epoch",
        "test_ab_rmse", "test_ab_auc", "test_colorfulness", "test_colorfulness_truth",
        "test_gray_psnr", "test_gray_ssim", "test_gray_ab_rmse", "test_gray_ab_auc",
        "train_seconds", "wall_seconds", "epochs", "train_fraction", "batch_size", "learning_rate",
        "seed", "n_train", "n_val", "n_test", "optuna_trial",
    ]  # fmt: skip
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if len(frame):
        frame = frame.sort_values(["finished_at", "trial_key"], na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def export(results_dir: str | Path) -> Path:
    """Write all rows to `results.parquet` (atomically) and return its path."""
    frame = load_results(results_dir)
    target = Path(results_dir) / "results.parquet"
    tmp = target.with_name(f".results.{os.getpid()}.parquet")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, target)
    return target
