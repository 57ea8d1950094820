"""Every trial in TensorBoard: `tensorboard --logdir RESULTS/tensorboard`.

Each stored row is also written as a TensorBoard run, `RESULTS/tensorboard/<trial_key>/`:
its hyperparameters (every architecture and protocol field, through TensorBoard's HParams
plugin, so the HParams table and parallel-coordinates view show the whole sweep), its
per-epoch training and validation loss and learning rate (`epoch/...`), and its final
metrics, sizes and times as scalars at the last epoch (the HParams table's metric columns).
The event files are written with TensorBoard's own protocol buffers and writer, never a
framework's summary ops, so they are the same under every Keras backend. A row written
again (a retried trial) replaces its run. Nothing is written where TensorBoard is not
installed.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from sweep.results.schema import COLUMNS

__all__ = ["HPARAM_GROUPS", "SCALARS", "TENSORBOARD_DIR", "write_trial"]

TENSORBOARD_DIR = "tensorboard"
HPARAM_GROUPS = ("arch", "protocol")  # the schema groups whose columns are a trial's hyperparameters
SCALARS = tuple(c.name for c in COLUMNS if c.group in ("metric", "baseline", "size", "time") and c.dtype in ("int", "float"))


def _hparams(row: dict[str, Any]) -> dict[str, bool | float | str]:
    values: dict[str, bool | float | str] = {}
    for column in COLUMNS:
        value = row.get(column.name)
        if column.group not in HPARAM_GROUPS and column.name not in ("preset", "status"):
            continue
        if isinstance(value, bool) or isinstance(value, str):
            values[column.name] = value
        elif isinstance(value, (int, float)) and math.isfinite(value):
            values[column.name] = float(value)
        elif isinstance(value, (list, tuple)):
            values[column.name] = json.dumps(value)
    return values


def write_trial(results_dir: str | Path, row: dict[str, Any]) -> Path | None:
    """Write `row` as the TensorBoard run RESULTS/tensorboard/<trial_key>/; return its folder
    (None without TensorBoard)."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import summary_v2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        return None
    run = Path(results_dir) / TENSORBOARD_DIR / str(row["trial_key"])
    shutil.rmtree(run, ignore_errors=True)  # a rewritten row replaces its run
    run.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(run))
    now = time.time()

    def event(step: int, summary) -> None:
        writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary))

    def scalars(step: int, values: dict[str, float]) -> None:
        summary = summary_pb2.Summary()
        for tag, value in values.items():
            summary.value.add(tag=tag, simple_value=float(value))
        event(step, summary)

    event(0, summary_v2.hparams_pb(_hparams(row), trial_id=str(row["trial_key"])))
    try:
        history = json.loads(row.get("history") or "[]")
    except (TypeError, ValueError):
        history = []
    for epoch, entry in enumerate(history, start=1):
        scalars(epoch, {f"epoch/{k}": v for k, v in entry.items() if isinstance(v, (int, float)) and math.isfinite(v)})
    final = {name: row[name] for name in SCALARS if isinstance(row.get(name), (int, float)) and math.isfinite(row[name])}
    if final:
        scalars(max(len(history), 1), final)
    writer.close()
    return run
