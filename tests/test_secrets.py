"""No secret stored or printed: a database URL's password never reaches a message, a run
record, a report, the results folder or the database, whatever characters it holds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import run_cli, small_space
from sweep.results import mask_url, paste_url
from sweep.results.shared import mask_args, mask_text

PASSWORD = "Wh1sp3r/s3cr@t:x%7"  # a `/`, an `@`, a `:` and a `%` in one password
PIECES = (PASSWORD, quote(PASSWORD, safe=""), "Wh1sp3r", "s3cr")  # as typed, as escaped in a URL, and parts of it


def leaks(text: str | bytes) -> list[str]:
    """The pieces of the password found in `text`."""
    data = text.encode() if isinstance(text, str) else text
    return [piece for piece in PIECES if piece.encode() in data]


@pytest.mark.parametrize(
    "url, masked, pasted",
    [
        ("postgresql://u:pa%2Fss@db:5432/sweep", "postgresql://u:***@db:5432/sweep", "postgresql://u@db:5432/sweep"),
        ("postgresql://u:pa/ss@db/sweep", "postgresql://u:***@db/sweep", "postgresql://u@db/sweep"),  # a raw `/`
        ("postgresql://u:pa%40ss@db/sweep", "postgresql://u:***@db/sweep", "postgresql://u@db/sweep"),
        ("postgresql://u:pa@ss@db/sweep", "postgresql://u:***@db/sweep", "postgresql://u@db/sweep"),  # a raw `@`: SQLAlchemy cuts it there
        ("postgresql://u:p@s/s@db/sweep", "postgresql://u:***@db/sweep", "postgresql://u@db/sweep"),  # `@` and `/` raw
        ("postgresql://u:pa:ss@db/sweep", "postgresql://u:***@db/sweep", "postgresql://u@db/sweep"),  # a raw `:`
        ("postgresql://u:pa%3Ass%25@db/sweep", "postgresql://u:***@db/sweep", "postgresql://u@db/sweep"),
        ("postgresql://u:p%zz@db/sweep", "postgresql://u:***@db/sweep", "postgresql://u@db/sweep"),  # a `%` that escapes nothing
        ("mysql+pymysql://root:s3cr@t@db:3306/x", "mysql+pymysql://root:***@db:3306/x", "mysql+pymysql://root@db:3306/x"),
        ("postgresql://u@db/sweep?password=pass&sslmode=require", "postgresql://u@db/sweep?password=***&sslmode=require", "postgresql://u@db/sweep?sslmode=require"),
        ("postgresql://u@db:5432/sweep", "postgresql://u@db:5432/sweep", "postgresql://u@db:5432/sweep"),  # nothing to hide
    ],
)
def test_mask_url_and_paste_url(url, masked, pasted):
    assert mask_url(url) == masked
    assert paste_url(url) == pasted
    for secret in ("pa", "ss", "s3cr", "pass", "zz"):
        assert f":{secret}" not in mask_url(url) and f":{secret}" not in paste_url(url)
    assert "***" not in paste_url(url)  # a command to copy works with ~/.pgpass; `***` would be taken for the password


@pytest.mark.parametrize("text", ["results", "/tmp/r1", "journal:/tmp/study.log", "s3://bucket/prefix", "sqlite:///results/optuna.db", ""])
def test_what_is_not_a_url_with_a_password_passes_unchanged(text):
    assert mask_url(text) == paste_url(text) == text
    assert mask_url(Path("/tmp/r1")) == Path("/tmp/r1")


def test_every_url_in_a_command_line_or_a_message_is_masked():
    url = f"postgresql://postgres:{quote(PASSWORD, safe='')}@db/sweep"
    argv = ["sweep/grid.py", "--storage", url, f"--results={url}", f"SWEEP_RESULTS={url}", "--data-dir", "/data/cifar"]
    masked = mask_args(argv)
    assert masked == ["sweep/grid.py", "--storage", mask_url(url), f"--results={mask_url(url)}", f"SWEEP_RESULTS={mask_url(url)}", "--data-dir", "/data/cifar"]
    assert not leaks(" ".join(masked))
    message = f"could not reach '{url}' (raw: postgresql://u:{PASSWORD}@db/sweep); conninfo host=db password={PASSWORD}."
    assert not leaks(mask_text(message)) and "'postgresql://postgres:***@db/sweep' (raw: postgresql://u:***@db/sweep)" in mask_text(message)


def test_the_run_record_holds_no_password(tmp_path, monkeypatch):
    from sweep.analysis.reference import recorded_data_dirs
    from sweep.cli.common import write_run_record

    url = f"postgresql://postgres:{quote(PASSWORD, safe='')}@db/sweep"
    monkeypatch.setattr(sys, "argv", ["sweep/grid.py", "--storage", url, f"--storage={url}", "--results", url, "--data-dir", "/data/cifar"])
    path = write_run_record(tmp_path, "grid", {"storage": url, "nested": {"urls": [url, f"at {url}"]}, "path": tmp_path})
    assert not leaks(path.read_bytes()), path.read_text()
    record = json.loads(path.read_text())
    assert record["argv"] == ["sweep/grid.py", "--storage", mask_url(url), f"--storage={mask_url(url)}", "--results", mask_url(url), "--data-dir", "/data/cifar"]
    assert record["storage"] == "postgresql://postgres:***@db/sweep" and record["path"] == str(tmp_path)
    assert recorded_data_dirs(tmp_path) == ["/data/cifar"]  # what the report reads back is intact


BAD_URL = f"postgresql://postgres:{quote(PASSWORD, safe='')}@127.0.0.1:1/nowhere"  # (nothing listens on port 1)


def test_a_study_that_cannot_be_read_is_one_line_without_the_password():
    from sweep.analysis.studies import load_study
    from sweep.errors import StoreError

    with pytest.raises(StoreError) as caught:
        load_study(BAD_URL, "s")
    assert str(caught.value).startswith(f"--storage {mask_url(BAD_URL)}: cannot read study 's'") and not leaks(str(caught.value))


@pytest.mark.parametrize("study", [None, "s"])
def test_the_report_with_a_bad_storage_url_is_one_line_without_the_password(tmp_path, study):
    from sweep.results import write_row

    write_row(tmp_path / "r", {"trial_key": "a", "status": "failed", "error": "NaN loss", "finished_at": "1"})
    out = run_cli("sweep.report", "--results", str(tmp_path / "r"), "--storage", BAD_URL, *(["--study", study] if study else []), "--no-reference")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"error: --storage {mask_url(BAD_URL)}: "), out.stderr
    assert not leaks(out.stdout + out.stderr)
    assert not [p for p in (tmp_path / "r").rglob("*") if p.is_file() and leaks(p.read_bytes())]


@pytest.mark.slow
@pytest.mark.postgres
def test_a_sweep_on_a_database_url_with_a_password_stores_and_prints_none_of_it(tmp_path, postgres_url):
    """`python -m sweep.grid --storage URL` with a password (trust authentication accepts any),
    then `python -m sweep.report --results URL`: the password is in no file of the results
    folder or the report, in no output, and nowhere in the database (pg_dump)."""
    from sqlalchemy import make_url

    database = make_url(postgres_url)
    url = database._replace(password=PASSWORD).render_as_string(hide_password=False)  # escaped: %2F, %40, %3A, %25
    assert quote(PASSWORD, safe="") in url and make_url(url).password == PASSWORD
    results, report = tmp_path / "results", tmp_path / "report"
    grid = run_cli("sweep.grid", "--space", small_space(tmp_path), "--storage", url, "--results", str(results), "--workers", "1", cwd=tmp_path)
    assert grid.returncode == 0, grid.stderr
    shown = run_cli("sweep.report", "--results", url, "--out", str(report), "--no-reference", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    status = run_cli("sweep.status", "--storage", url, cwd=tmp_path)
    assert status.returncode == 0, status.stderr

    assert not leaks(grid.stdout + grid.stderr), grid.stdout + grid.stderr
    assert not leaks(shown.stdout + shown.stderr), shown.stdout + shown.stderr
    assert not leaks(status.stdout + status.stderr), status.stdout + status.stderr
    files = [p for folder in (results, report) for p in folder.rglob("*") if p.is_file()]
    assert len(files) > 10 and (report / "report.md").exists()
    assert [str(p) for p in files if leaks(p.read_bytes())] == []
    (record,) = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    assert record["argv"][record["argv"].index("--storage") + 1] == mask_url(url)
    text = (report / "report.md").read_text()
    assert "***" in mask_url(url) and mask_url(url) in text  # what the report covers, as shown
    assert f"--results {paste_url(url)} " in text  # the command that made it, to copy: no password at all

    if shutil.which("pg_dump") is None:
        message = "pg_dump is not installed: the database itself was not searched for the password"
        if os.environ.get("SWEEP_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    dump = subprocess.run(
        ["pg_dump", "-h", database.host or "127.0.0.1", "-p", str(database.port or 5432), "-U", database.username or "postgres", database.database],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    assert b"sweep_trials" in dump.stdout and not leaks(dump.stdout)
