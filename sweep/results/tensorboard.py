"""Every trial in TensorBoard: `tensorboard --logdir RESULTS/tensorboard`.

Each stored row is also written as a TensorBoard run, `RESULTS/tensorboard/<trial_key>/`:
its hyperparameters (every architecture and protocol field, through TensorBoard's HParams
plugin, so the HParams table and parallel-coordinates view show the whole sweep), its
per-epoch training and validation loss and learning rate (`epoch/...`), and its final
metrics, sizes and times as scalars at the last epoch (the HParams table's metric columns).
The folder's experiment (`RESULTS/tensorboard/` itself, kept in step with every row written,
`EXPERIMENT`) lists every hyperparameter and metric and marks the factors a space or study
varied (the rows' `varied`) as differing: the HParams view lists those first and shows them
by default (it shows five at most by default; others are a tick away in its left pane).
The event files are written with TensorBoard's own protocol buffers and writer, never a
framework's summary ops, so they are the same under every Keras backend. A row written
again (a retried trial) replaces its run. Nothing is written where TensorBoard is not
installed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from sweep.results.schema import COLUMNS

__all__ = ["EXPERIMENT", "HPARAM_GROUPS", "SCALARS", "TENSORBOARD_DIR", "write_trial"]

TENSORBOARD_DIR = "tensorboard"
EXPERIMENT = "events.out.tfevents.0.experiment"  # the folder's experiment, in RESULTS/tensorboard/
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
    _update_experiment(run.parent, _hparams(row), _varied(row))
    return run


def _varied(row: dict[str, Any]) -> set[str]:
    """The factors the row's space or study varied (its `varied` cell: a JSON list)."""
    varied = row.get("varied")
    if isinstance(varied, str):
        try:
            varied = json.loads(varied)
        except ValueError:
            return set()
    return {str(name) for name in varied} if isinstance(varied, (list, tuple)) else set()


def _update_experiment(folder: Path, hparams: dict[str, bool | float | str], varied: set[str]) -> None:
    """Add the row's hyperparameters and varied factors to the folder's experiment, under a
    lock (workers write rows at once); the event file is rewritten only when that changes.
    Without any varied factor there is none, and TensorBoard infers one from the runs."""
    types = {name: "bool" if isinstance(v, bool) else "str" if isinstance(v, str) else "float" for name, v in hparams.items()}
    with _locked(folder / ".experiment.lock"):
        state_path = folder / ".experiment.json"
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            state = {"hparams": {}, "varied": []}
        merged = {"hparams": {**types, **state["hparams"]}, "varied": sorted(set(state["varied"]) | (varied & {*types, *state["hparams"]}))}
        if merged == state or not merged["varied"]:
            return
        _write_experiment(folder, merged["hparams"], set(merged["varied"]))
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, sort_keys=True))
        os.replace(tmp, state_path)


def _write_experiment(folder: Path, types: dict[str, str], varied: set[str]) -> None:
    """Write the experiment's event file (replacing the folder's last one)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.hparams import api, api_pb2, plugin_data_pb2, summary_v2
    from tensorboard.summary.writer.record_writer import RecordWriter

    summary = summary_v2.hparams_config_pb([api.HParam(name) for name in sorted(types)], [api.Metric(name) for name in SCALARS])
    value = summary.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    kinds = {"bool": api_pb2.DATA_TYPE_BOOL, "str": api_pb2.DATA_TYPE_STRING, "float": api_pb2.DATA_TYPE_FLOAT64}
    for info in data.experiment.hparam_infos:
        info.type, info.differs = kinds[types[info.name]], info.name in varied  # (TensorBoard lists and shows differing ones first)
    value.metadata.plugin_data.content = data.SerializeToString()
    now = time.time()
    tmp = folder / ".experiment.tmp"
    with open(tmp, "wb") as stream:
        records = RecordWriter(stream)
        records.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        records.write(event_pb2.Event(wall_time=now, step=0, summary=summary).SerializeToString())
    os.replace(tmp, folder / EXPERIMENT)


class _locked:
    """An exclusive `flock` on `path` (none where the system has no flock)."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # (closing releases the lock)
