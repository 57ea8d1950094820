"""The results store: atomic rows, one DataFrame, concurrent writers, no Keras."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from sweep.errors import StoreError
from sweep.results import COLUMNS, check_writable, completed_keys, export, load_results, read_rows, write_row

CORE = [c.name for c in COLUMNS if c.core]  # the columns every DataFrame has ...
DERIVED = ["group"]  # ... then each trial's comparable group, which load_results derives


def row(key: str, status: str = "complete", **values) -> dict:
    return {"trial_key": key, "status": status, "test_mse": 0.01, "latent_size": 1024, "finished_at": key, **values}


def test_rows_round_trip_as_one_dataframe(tmp_path):
    write_row(tmp_path, row("a", channel_factor=2, fewer_layers=False, history=json.dumps([{"loss": 1.0}])))
    write_row(tmp_path, row("b", "failed", error="NaN", test_mse=math.nan))
    frame = load_results(tmp_path)
    assert list(frame.columns) == CORE + DERIVED  # the rows hold core columns only
    assert frame["group"].tolist() == ["all", "all"]  # (rows that name no data, dataset or task)
    assert list(frame["trial_key"]) == ["a", "b"]
    assert frame.set_index("trial_key").loc["a", "channel_factor"] == 2
    assert pd.isna(frame.set_index("trial_key").loc["b", "test_mse"])
    assert completed_keys(tmp_path) == {"a"}
    assert completed_keys(tmp_path, ("complete", "failed")) == {"a", "b"}


def test_a_rewrite_replaces_the_row(tmp_path):
    write_row(tmp_path, row("a", "failed"))
    write_row(tmp_path, row("a", "complete"))
    assert len(read_rows(tmp_path)) == 1 and completed_keys(tmp_path) == {"a"}


def test_empty_store_has_the_columns(tmp_path):
    frame = load_results(tmp_path / "nothing")
    assert frame.empty and list(frame.columns) == CORE + DERIVED


def test_leftover_temporary_files_are_ignored(tmp_path):
    write_row(tmp_path, row("a"))
    (tmp_path / "rows" / ".b.123.tmp").write_text('{"trial_key": "b", "sta')  # a crash mid-write
    assert list(load_results(tmp_path)["trial_key"]) == ["a"]


def test_rows_are_strict_json(tmp_path):
    write_row(tmp_path, row("a", test_psnr=math.inf))
    path = tmp_path / "rows" / "a.json"
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))["test_psnr"] is None


def test_invalid_rows_are_refused(tmp_path):
    with pytest.raises(ValueError):
        write_row(tmp_path, {"trial_key": "a", "status": "done"})


def test_a_column_the_schema_does_not_declare_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not declared in sweep.results.schema: test_msee"):
        write_row(tmp_path, row("a", test_msee=0.1))
    assert read_rows(tmp_path) == []


def test_optional_columns_appear_in_schema_order_with_schema_types(tmp_path):
    write_row(tmp_path, row("a", filters=[8, 16], latent_dim=16, pack_size=2, test_mse="0.5"))
    write_row(tmp_path, row("b"))
    frame = load_results(tmp_path)
    names = [c.name for c in COLUMNS]
    assert list(frame.columns) == [n for n in names if n in set(CORE) | {"filters", "latent_dim", "pack_size"}] + DERIVED
    assert frame["latent_dim"].dtype.kind == "f" and frame["test_mse"].tolist() == [0.5, 0.01]  # numbers, whatever the row had


def test_rows_older_than_a_protocol_field_read_its_default(tmp_path):
    """A field added to the protocol later: the rows written before it trained with its
    default, and say so (a sweep mixing both must not look as if it varied the field)."""
    write_row(tmp_path, row("old"))
    write_row(tmp_path, row("new", annealed_temperature=0.7))
    assert load_results(tmp_path).set_index("trial_key")["annealed_temperature"].to_dict() == {"old": 0.38, "new": 0.7}
    write_row(tmp_path / "only_old", row("old"))
    assert "annealed_temperature" not in load_results(tmp_path / "only_old")


def _writer(args):
    results_dir, worker = args
    for i in range(50):
        write_row(results_dir, row(f"w{worker}-{i}", seed=worker))
        write_row(results_dir, row("shared", seed=worker))  # everyone rewrites one key too
    return worker


def test_concurrent_writers_never_clobber_or_tear(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_writer, [(str(tmp_path), w) for w in range(4)])
    frame = load_results(tmp_path)
    assert len(frame) == 4 * 50 + 1
    assert set(frame["trial_key"]) == {f"w{w}-{i}" for w in range(4) for i in range(50)} | {"shared"}
    assert not [p for p in os.listdir(tmp_path / "rows") if p.endswith(".tmp")]


def test_export_writes_parquet(tmp_path):
    write_row(tmp_path, row("a", base_channels=[8, 12, 16]))
    path = export(tmp_path)
    assert pd.read_parquet(path)["trial_key"].tolist() == ["a"]


def test_unwritable_results_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"--results .*file: not a writable directory"):
        check_writable(blocker)


def test_loading_results_does_not_import_keras(tmp_path):
    write_row(tmp_path, row("a"))
    code = f"import sys; from sweep.results import load_results; load_results({str(tmp_path)!r}); print('keras' in sys.modules or 'tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# ---- a complete row is final --------------------------------------------------------------------


def test_a_complete_row_is_final(tmp_path):
    """Two workers sampling one configuration: one completes it, the other is pruned (or fails,
    or completes too) later; the first complete row stays, as in the shared table."""
    later = [row("a", "pruned", test_mse=0.5, seed=2), row("a", "failed", error="NaN", seed=3), row("a", test_mse=0.02, seed=4)]
    stored = [write_row(tmp_path, row("a", test_mse=0.01, seed=1))]
    for r in later:
        stored.append(write_row(tmp_path, r))
        assert [(x["status"], x["test_mse"], x["seed"]) for x in read_rows(tmp_path)] == [("complete", 0.01, 1)], f"replaced by a {r['status']} row"
    assert stored == [True, False, False, False]


def test_an_unfinished_row_is_replaced_by_any_later_one(tmp_path):
    assert write_row(tmp_path, row("a", "pruned", seed=1)) is True
    assert write_row(tmp_path, row("a", "failed", error="NaN", seed=2)) is True
    assert write_row(tmp_path, row("a", "complete", seed=3)) is True
    assert [(r["status"], r["seed"]) for r in read_rows(tmp_path)] == [("complete", 3)]


def test_a_refused_row_has_no_side_effects(tmp_path, monkeypatch):
    """Nor is the refused row written as a TensorBoard run (it would replace the complete one's),
    and RowStore.write says it was not stored."""
    from sweep.results import RowStore, store

    views = []
    monkeypatch.setattr(store, "write_trial", lambda results_dir, r: views.append(r["status"]))
    rows = RowStore(str(tmp_path))
    assert rows.write(row("a")) is True
    assert rows.write(row("a", "pruned")) is False
    assert views == ["complete"]
    assert not [p for p in os.listdir(tmp_path / "rows") if p.endswith(".tmp")]


def _racer(args):
    """Write, for every key, a pruned row and a complete row (in an order that depends on the
    worker); return the keys whose complete row this worker stored."""
    results_dir, worker, keys, start = args
    while time.time() < start:  # both processes begin together
        time.sleep(0.001)
    won = []
    for key in keys:
        mine = [row(key, "pruned", seed=worker), row(key, seed=worker, test_mse=0.01 * (worker + 1))]
        for r in mine if worker % 2 == 0 else mine[::-1]:
            if write_row(results_dir, r) and r["status"] == "complete":
                won.append(key)
    return won


def test_concurrent_writers_end_with_the_first_complete_row(tmp_path):
    keys = [f"k{i}" for i in range(40)]
    start = time.time() + 3  # (after both processes have started)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        won = pool.map(_racer, [(str(tmp_path), w, keys, start) for w in range(2)])
    stored = {r["trial_key"]: r for r in read_rows(tmp_path)}
    assert set(stored) == set(keys) and {r["status"] for r in stored.values()} == {"complete"}
    for key in keys:
        winners = [w for w in range(2) if key in won[w]]
        assert len(winners) == 1, f"{key}: stored as complete by workers {winners}"
        assert stored[key]["seed"] == winners[0]
