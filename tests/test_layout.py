"""The package's layout as a contract: layers that only point down (import-linter), no private
name crossing a module, one module per idea, and command lines that answer `--help` without
loading a deep-learning framework."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "sweep"
FRAMEWORKS = ("tensorflow", "keras", "jax", "torch")
COMMANDS = ("sweep.grid", "sweep.optuna", "sweep.report", "sweep.arch", "sweep.bench", "sweep.status", "sweep.apply")


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def private_imports(path: Path) -> list[str]:
    """`from sweep.x import _name` (or a relative `from .x import _name`) and `module._name`
    where `module` is a sweep module."""
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()  # local names bound to sweep modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and ((node.module or "").startswith("sweep") or node.level > 0):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.name}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
                modules.add(alias.asname or alias.name)  # maybe a module (from sweep import analysis)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sweep"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_or_test_uses_another_modules_private_names():
    files = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    found = [hit for path in files for hit in private_imports(path)]
    assert found == []


def test_the_private_name_check_can_fail(tmp_path):
    offender = tmp_path / "offender.py"
    offender.write_text("from sweep.run.jobs import _split_in_run\nfrom .step import _x\nimport sweep.train.step\nsweep.train.step._y\n")
    assert len(private_imports(offender)) == 3


def test_importing_anything_but_the_losses_loads_no_framework():
    """Keras (and so TensorFlow) loads only inside the functions that build or train: every
    module can be imported without it, except `sweep.losses`, which defines Keras losses."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import sweep\n"
        "names = [m.name for m in pkgutil.walk_packages(sweep.__path__, 'sweep.')]\n"
        "for name in names:\n"
        "    if name != 'sweep.losses' and not name.endswith('__main__'):\n"
        "        importlib.import_module(name)\n"
        f"print(len(names), sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, loaded = out.stdout.split(" ", 1)
    assert int(count) > 40 and loaded.strip() == "[]"


# One idea, one module: where a newcomer finds each (the README's module table says the same).
IDEAS = {
    "the latent-size formula and FLOP counting": ("sweep.arch.latent", ["latent_size", "conv_output_size", "model_flops"]),
    "the architecture families and the preset registry": ("sweep.arch.presets", ["PRESETS", "ARCH_FAMILIES", "build_autoencoder"]),
    "the grid enumeration of a search space": ("sweep.space.grid", ["grid_points", "Range", "Categorical"]),
    "the results schema": ("sweep.results.schema", ["COLUMNS", "METRICS", "OBJECTIVES", "per_epoch_metric"]),
    "the training step": ("sweep.train.step", ["fit", "epoch_plan", "epoch_batches", "make_optimizer", "make_loss", "trial_model"]),
    "the compiled training loop and device-resident data": ("sweep.backend", ["train_loop", "resident"]),
    "checkpoint and resume": ("sweep.train.checkpoint", ["Checkpoint"]),
    "packed training": ("sweep.train.pack", ["run_pack", "make_packs", "packable", "probe_pack_size"]),
    "a local grid run mirrored as an Optuna study (optuna-dashboard)": ("sweep.run.record", ["GridRecord"]),
    "the study storage, retried while the database is away": ("sweep.run.storage", ["open_storage", "queue_url"]),
    "who runs what: the grid queue, claims, heartbeats, retries": ("sweep.run.queue", ["Queue", "server_clock"]),
    "the job that runs one trial of a study": ("sweep.run.study_job", ["OptunaTrialJob"]),
    "python -m sweep.grid": ("sweep.cli.grid", ["main"]),
    "python -m sweep.optuna": ("sweep.cli.tune", ["main"]),
    "python -m sweep.report": ("sweep.cli.report", ["main"]),
    "python -m sweep.arch": ("sweep.cli.arch", ["main"]),
    "python -m sweep.bench": ("sweep.cli.bench", ["main"]),
}


@pytest.mark.parametrize("idea", sorted(IDEAS))
def test_each_idea_lives_in_the_module_the_readme_names(idea):
    module_name, names = IDEAS[idea]
    module = importlib.import_module(module_name)
    for name in names:
        value = getattr(module, name)
        if callable(value):  # defined there, not imported from elsewhere
            assert value.__module__ == module_name, name
    assert f"`{module_name}`" in (ROOT / "README.md").read_text(), f"the README's module table does not name {module_name}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_answers_without_loading_a_framework(command):
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{command!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_module({command!r}, run_name='__main__', alter_sys=True)\n"
        "except SystemExit as stop:\n"
        "    assert stop.code in (0, None), stop.code\n"
        f"print('LOADED', sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m " in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "LOADED []"


def test_the_optuna_entry_point_is_only_an_entry_point():
    """`sweep/optuna.py` holds no code of its own and nothing imports it, so the name `optuna`
    inside the project always means the Optuna package."""
    tree = ast.parse((PACKAGE / "optuna.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"sweep.cli.common", "sweep.cli.tune"}
    assert not [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "sweep.optuna import" not in text and "from sweep import optuna" not in text, path


# What the code uses that older releases lack: the lowest release that has it. The declared
# lower bounds must not be below these (`.ci/lowest` installs the lowest versions the bounds
# allow and runs the whole suite there; this table keeps the reasons next to the numbers).
NEEDS = {
    "numpy": ("2.0", "np.trapezoid (sweep.metrics)"),
    "scipy": ("1.15", "scipy.stats.bootstrap(rng=...) (sweep.analysis.stats)"),
    "optuna": ("4.9", "the lowest release the suite runs on; PartialFixedSampler, Study.tell(trial number) (sweep.run.study_job, sweep.run.queue)"),
    "scikit-image": ("0.23.1", "the first release that imports with NumPy 2"),
    "pandas": ("2.2.2", "the first 2.2 release built for NumPy 2"),
    "tensorflow": ("2.18", "the first release that works with NumPy 2"),
    "psycopg": ("3.2", "postgresql:// URLs: SQLAlchemy 2.1's default PostgreSQL driver (3.2: wheels for Python 3.11-3.13)"),
    "sqlalchemy": ("2.1", "a plain postgresql:// URL means psycopg 3 (sweep.results.shared)"),
    "import-linter": ("2.6", "the acyclic_siblings contract (pyproject.toml)"),
}


def test_declared_lower_bounds_cover_what_the_code_uses():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    lowest: dict[str, Version] = {}
    for text in requirements:
        requirement = Requirement(text)
        bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert bounds, f"{text}: every dependency declares a lower bound"
        lowest[requirement.name] = min(bounds + [lowest.get(requirement.name, bounds[0])])
    for name, (version, why) in NEEDS.items():
        assert lowest[name] >= Version(version), f"{name} >= {version} is needed: {why}"
