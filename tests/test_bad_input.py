"""Bad input, clear answer: every row of the table exits with code 2 and one line on stderr
that names the thing and what is allowed, shows no traceback, and leaves the store as it was."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli, small_space
from sweep.results import write_row


def fake_cifar(root: Path, data=None, n: int = 8) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = data if data is not None else np.zeros((n, 3072), np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": batch, b"labels": [0] * len(batch)}, handle, protocol=2)
    return root


class Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


# Each case: (id, a function of tmp_path returning the command's arguments, words the line must contain)
CASES = [
    ("malformed YAML", lambda t: ["--space", write(t, "space: [1, 2\n")], ["space.yaml:", "malformed YAML"]),
    ("unknown key", lambda t: ["--space", write(t, "space: {kernal_size: [3]}\n")], ["space.kernal_size", "did you mean 'kernel_size'"]),
    ("wrong type", lambda t: ["--space", write(t, "space: {kernel_size: [3]}\nprotocol: {epochs: ten}\n")], ["'epochs'", "an int >= 1", "'ten'"]),
    ("out-of-range value", lambda t: ["--space", write(t, "space: {kernel_size: [3]}\nprotocol: {train_fraction: 2}\n")], ["'train_fraction'", "(0, 1]", "Got 2"]),
    ("empty space", lambda t: ["--space", write(t, "space: {}\n")], ["space.yaml: space: no factors"]),
    ("empty file", lambda t: ["--space", write(t, "")], ["space.yaml: the file is empty"]),
    ("impossible architecture", lambda t: ["--space", small_space(t, {"compression_factor": [3]})], ["compression_factor", "Got 3"]),
    ("unknown preset", lambda t: ["--space", write(t, "arch: resnet50\nspace: {kernel_size: [3]}\n")], ["arch:", "unknown architecture preset 'resnet50'"]),
    ("unknown encoding", lambda t: ["--space", write(t, "space: {kernel_size: [3]}\nprotocol: {task: colorize, encoding: hsv}\n")], ["unknown encoding 'hsv'", "allowed:"]),
    ("flag value out of range", lambda t: ["--train-fraction", "1.5"], ["--train-fraction 1.5:", "(0, 1]", "Got 1.5"]),
    ("missing data directory", lambda t: ["--dataset", "cifar10", "--data-dir", str(t / "nowhere")], ["--data-dir", "nowhere", "no such directory"]),
    (
        "truncated CIFAR batch",
        lambda t: ["--dataset", "cifar10", "--data-dir", str(truncate(fake_cifar(t / "d")))],
        ["data_batch_1", "truncated or corrupt"],
    ),
    (
        "data file of the wrong shape",
        lambda t: ["--dataset", "cifar10", "--data-dir", str(fake_cifar(t / "d", np.zeros((8, 100), np.uint8)))],
        ["data_batch_1", "(N, 3072)", "(8, 100)"],
    ),
    (
        "a data file that would run code",
        lambda t: ["--dataset", "cifar10", "--data-dir", str(malicious(t))],
        ["data_batch_1", "refusing to load posix.system"],
    ),
    (
        "results path that is a stored row's file",
        lambda t: ["--results", str(t / "results" / "rows" / f"{STORED_KEY}.json")],
        ["--results", "not a writable directory"],
    ),
    (
        "storage URL that cannot be reached",
        lambda t: ["--storage", "postgresql://nobody@127.0.0.1:9/none"],
        ["--storage postgresql://nobody@127.0.0.1:9/none", "cannot open the study storage"],
    ),
    ("bad option value", lambda t: ["--workers", "0"], ["--workers must be >= 1. Got 0 instead."]),
    (
        "postgres:// URL (SQLAlchemy knows only postgresql://)",
        lambda t: ["--storage", "postgres://nobody:secret@127.0.0.1:9/none"],
        ["--storage postgres://nobody:***@127.0.0.1:9/none", "scheme postgres://; write postgresql://nobody:***@127.0.0.1:9/none"],
    ),
]


def truncate(root: Path) -> Path:
    path = root / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(path.read_bytes()[:100])
    return root


def malicious(tmp_path: Path) -> Path:
    root = fake_cifar(tmp_path / "d")
    with open(root / "cifar-10-batches-py" / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": Payload(tmp_path / "pwned"), b"labels": []}, handle, protocol=2)
    return root


STORED_KEY = "0123456789abcdef"


def store_fingerprint(results: Path) -> dict[str, str]:
    return {str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(results.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("make_args, expected", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_the_store_unchanged(tmp_path, make_args, expected):
    results = tmp_path / "results"
    write_row(results, {"trial_key": STORED_KEY, "status": "complete", "test_mse": 0.01})
    before = store_fingerprint(results)
    args = make_args(tmp_path)
    if "--space" not in args:
        args += ["--space", small_space(tmp_path)]
    if "--results" not in args:
        args += ["--results", str(results)]
    out = run_cli("sweep.grid", *args)
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in out.stderr
    for word in expected:
        assert word in lines[0], (word, lines[0])
    assert store_fingerprint(results) == before
    assert not (tmp_path / "pwned").exists()


@contextlib.contextmanager
def read_only(directory: Path):
    """`directory` made unwritable for this process: by its mode, and for root, whom modes do
    not stop, by the file system's immutable flag."""
    mode = directory.stat().st_mode
    directory.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
        directory.chmod(mode)
        pytest.skip("cannot make a directory read-only for root here (no chattr)")
    try:
        yield directory
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(mode)


def test_a_read_only_results_directory_is_one_line_and_keeps_its_rows(tmp_path):
    results = tmp_path / "results"
    write_row(results, {"trial_key": STORED_KEY, "status": "complete", "test_mse": 0.01})
    before = store_fingerprint(results)
    with read_only(results / "rows"):
        out = run_cli("sweep.grid", "--space", small_space(tmp_path), "--results", str(results))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"--results {results}: not a writable directory" in out.stderr and "Traceback" not in out.stderr
    assert store_fingerprint(results) == before


def test_a_flag_value_is_reported_as_the_flags_not_the_files(tmp_path):
    out = run_cli("sweep.grid", "--space", small_space(tmp_path), "--train-fraction", "1.5", "--results", str(tmp_path / "r"))
    assert out.returncode == 2 and out.stderr.startswith("error: --train-fraction 1.5: ") and "small.yaml" not in out.stderr


@pytest.mark.slow
def test_offline_without_data_the_one_line_names_both_ways_out_and_nothing_else_is_printed(tmp_path):
    """The README's main job on a machine without the data or a network: no framework
    start-up noise, and the error names --data-dir and the offline smoke run."""
    env = {"HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out = run_cli("sweep.grid", "--results", str(tmp_path / "r"), env=env)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if not line.startswith("Downloading data from")]  # (Keras' own line)
    assert len(lines) == 1 and lines[0].startswith("error: could not download cifar10"), out.stderr
    assert "--data-dir DIR" in lines[0] and "--dataset synthetic --quick" in lines[0]


def test_an_unknown_tasks_job_is_one_line_listing_the_jobs():
    out = subprocess.run([sys.executable, str(ROOT / "tasks.py"), "grdi"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "", out
    assert out.stderr.splitlines() == [
        "tasks: unknown job 'grdi'; did you mean 'grid'? (jobs: grid, test, setup, notebooks, lab, optuna, report, arch, bench, status, apply)"
    ]


def test_the_optuna_driver_follows_the_same_rule(tmp_path):
    out = run_cli("sweep.optuna", "--trials", "1", "--space", small_space(tmp_path), "--objectives", "test_mes", "--results", str(tmp_path / "r"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "unknown objective 'test_mes'; did you mean 'test_mse'?" in out.stderr


@pytest.mark.shared_data
def test_a_corrupt_copy_of_real_cifar(shared_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(shared_data / "cifar-10-batches-py", copy / "cifar-10-batches-py")
    batch = copy / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[: len(batch.read_bytes()) // 2])
    out = run_cli("sweep.grid", "--data-dir", str(copy), "--results", str(tmp_path / "r"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "data_batch_3: truncated or corrupt CIFAR file" in out.stderr



def test_a_postgres_url_read_from_python_gets_the_same_hint():
    from sweep.errors import StoreError
    from sweep.results import load_results

    with pytest.raises(StoreError, match=r"^--results postgres\+psycopg://u@h/db: .* write postgresql\+psycopg://u@h/db$"):
        load_results("postgres+psycopg://u@h/db")
