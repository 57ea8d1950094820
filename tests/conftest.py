"""Shared fixtures. Tests run offline on tiny synthetic data; the ones that need real images
read the CIFAR-10 subset in ../shared/data (or the folder $SWEEP_SHARED_DATA names) and skip
without it, unless SWEEP_REQUIRE_SHARED_DATA=1 (as in CI), where a missing subset fails them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

# Before anything imports Keras: no GPU probing, quiet TensorFlow, small thread pools.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")  # figures are written to files, never shown

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SWEEP_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def fresh_task_arrays():
    """Trials cache their inputs and targets per process; a test that patches a task must not
    see another test's arrays."""
    yield
    if "sweep.train.arrays" in sys.modules:
        sys.modules["sweep.train.arrays"].clear_caches()
    if "sweep.train.step" in sys.modules:
        sys.modules["sweep.train.step"].forget_models()  # nor reuse another test's compiled model


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar-10-batches-py" / "data_batch_1").exists():
        message = f"no CIFAR-10 subset at {SHARED_DATA} (set SWEEP_SHARED_DATA to the folder holding cifar-10-batches-py/)"
        if os.environ.get("SWEEP_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"SWEEP_REQUIRE_SHARED_DATA=1: {message}")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic():
    from sweep.data import load_dataset

    return load_dataset("synthetic")


@pytest.fixture(scope="session")
def synthetic_sweep(tmp_path_factory) -> Path:
    """A small real sweep, made once per session by `python -m sweep.grid` on synthetic data:
    2 compression factors x 2 channel factors = 4 tiny models, 2 epochs each (about 30 s).
    The analysis, report and notebook tests read it; none of them trains."""
    import yaml

    root = tmp_path_factory.mktemp("synthetic_sweep")
    space = root / "space.yaml"
    protocol = {"dataset": "synthetic", "epochs": 2, "train_fraction": 1.0, "train_limit": 48, "batch_size": 16}
    document = {"name": "synthetic_sweep", "space": {"compression_factor": [2, 4], "channel_factor": [1, 2]}, "protocol": protocol}
    space.write_text(yaml.safe_dump(document, sort_keys=False))
    results = root / "results"
    out = run_cli("sweep.grid", "--space", str(space), "--results", str(results))
    assert out.returncode == 0, out.stderr
    return results


def small_space(tmp_path, factors: dict | None = None, name: str = "small", **protocol) -> str:
    """Write a tiny search space on synthetic data (one epoch on 48 images) and return its path."""
    import yaml

    base = {"dataset": "synthetic", "epochs": 1, "train_fraction": 1.0, "train_limit": 48, "batch_size": 16}
    document = {"name": name, "space": factors or {"kernel_size": [3, 5]}, "protocol": {**base, **protocol}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <args>` as a user would, capturing output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


POSTGRES_URL = os.environ.get("SWEEP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def report_folder(out: subprocess.CompletedProcess, cwd: Path) -> Path:
    """The folder a `sweep.report` run says it wrote (`report: PATH/report.md ...`), from `cwd`."""
    line = next(line for line in out.stdout.splitlines() if line.startswith("report: "))
    return cwd / Path(line.removeprefix("report: ").split(" (")[0]).parent


@pytest.fixture
def postgres_url():
    """A fresh database on the test PostgreSQL server (SWEEP_TEST_POSTGRES), dropped afterwards:
    its plain postgresql:// URL, as users type it. Skipped without a server, unless
    SWEEP_REQUIRE_POSTGRES=1 (as in CI)."""
    import sqlalchemy

    try:
        admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        admin.connect().close()
    except Exception as err:
        if os.environ.get("SWEEP_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable at {POSTGRES_URL}: {err}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}")
    name = f"sweep_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield sqlalchemy.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def study_summaries(url: str) -> list:
    """The Optuna studies of a storage, without the grid's enqueue locks; a storage still being
    created by the workers it is polled beside raises ValueError (not there yet)."""
    import optuna

    from sweep.run.storage import lost_schema_race

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        summaries = optuna.get_all_study_summaries(storage=url)
    except Exception as err:
        if lost_schema_race(err):
            raise ValueError("the study storage is being created") from err
        raise
    return [s for s in summaries if not s.study_name.endswith(".enqueue-lock")]


def require(reason: str | None, switch: str) -> None:
    """Skip the calling test when `reason` says why it cannot run here, or fail it when the
    environment's `switch` (SWEEP_REQUIRE_...) is 1, as in CI."""
    if reason is None:
        return
    if os.environ.get(switch) == "1":
        pytest.fail(f"{switch}=1: {reason}")
    pytest.skip(reason)


def pytest_report_header(config) -> str:
    return f"Keras backend: {os.environ.get('KERAS_BACKEND', 'tensorflow')}"


@pytest.fixture
def slurm():
    """The test Slurm cluster (`.ci/slurm up`; helpers in tests/slurm.py), the calling test's
    alone while it runs. Skipped without it, unless SWEEP_REQUIRE_SLURM=1 (as in CI)."""
    from slurm import exclusive, require_slurm

    require_slurm()
    with exclusive():
        yield
