"""What a trial writes into its row besides scores: identity, data sizes, provenance, timing,
and why it failed. Columns are those of `sweep.results.schema`."""

from __future__ import annotations

import json
import socket
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sweep import backend
from sweep.arch import latent_size
from sweep.results.schema import spec_columns
from sweep.spec import TrialSpec
from sweep.train.checkpoint import CHECKPOINT_FILE

__all__ = ["classify_failure", "close_row", "data_columns", "record_failure", "start_row", "trial_dir"]


def trial_dir(results_dir: str | Path, key: str) -> Path:
    """Where a trial's artefacts live: RESULTS/trials/<trial_key>/."""
    return Path(results_dir) / "trials" / key


def start_row(spec: TrialSpec, started: datetime) -> dict[str, Any]:
    """A row that says 'failed' until the trial says otherwise."""
    row = spec_columns(spec)
    row.update(status="failed", error=None, started_at=started.isoformat(), host=socket.gethostname())
    return row


def data_columns(spec: TrialSpec, arrays: dict[str, np.ndarray], backend_name: str) -> dict[str, Any]:
    return {
        "latent_size": latent_size(spec.arch, arrays["x_train"].shape[1:]),
        "n_train": len(arrays["x_train"]),
        "n_val": len(arrays["x_val"]),
        "n_test": len(arrays["x_test"]),
        "backend": backend_name,
        "device": backend.device_description(),
        "versions": json.dumps(backend.versions(), sort_keys=True),
    }


def classify_failure(err: BaseException) -> str:
    """The row's `error`: the exception's first line, with out-of-memory named as such."""
    text = f"{type(err).__name__}: {err}".strip()
    first = text.splitlines()[0][:300]
    if "ResourceExhausted" in type(err).__name__ or "out of memory" in text.lower() or isinstance(err, MemoryError):
        return f"out of memory ({first})"
    return first


def record_failure(row: dict[str, Any], out: Path, err: BaseException) -> None:
    row["error"] = classify_failure(err)
    (out / "error.txt").write_text("".join(traceback.format_exception(err)))


def close_row(spec: TrialSpec, row: dict[str, Any], out: Path, t0: float) -> None:
    """Stamp the end of a trial. A finished trial (whatever its status) never resumes: a retry
    starts afresh."""
    row["wall_seconds"] = time.perf_counter() - t0
    row["finished_at"] = datetime.now(timezone.utc).isoformat()
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1, sort_keys=True))
