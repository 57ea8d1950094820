#!/usr/bin/env python3
"""Set up the project on first use and run its main jobs. Needs only Python >= 3.11.

    python3 tasks.py grid [ARGS...]   # the 36-model grid: python -m sweep.grid ARGS
    python3 tasks.py test [ARGS...]   # the test suite:    lint-imports, then python -m pytest ARGS,
                                      #   then the tests marked `backends` again under KERAS_BACKEND=jax
    python3 tasks.py notebooks [--results DIR]   # execute notebooks/*.ipynb on a results folder, outputs saved in them
    python3 tasks.py lab [--results DIR] [JUPYTER ARGS]   # JupyterLab on notebooks/, the notebooks reading DIR
    python3 tasks.py <module> [ARGS]  # any other entry point: optuna, report, arch, bench, status, apply

The first call creates `.venv/` and installs the package with its `dev` extra, pinned by
`constraints.txt`; later calls reuse it and reinstall only when `pyproject.toml` or
`constraints.txt` changed.

Signals: a SIGTERM to this script is passed on to the command it runs, and the script
returns that command's status (143 when a sweep stops on it); a terminal's Ctrl-C reaches
the command by itself (the whole process group gets it), so the script only waits for the
command and returns its status (130), as a shell does.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ENTRY_POINTS = ("grid", "optuna", "report", "arch", "bench", "status", "apply")  # python -m sweep.<name>
JOBS = ("grid", "test", "setup", "notebooks", "lab", *ENTRY_POINTS[1:])

# `tasks.py notebooks`: run every notebook top to bottom in a fresh kernel, on RESULTS, and
# save it with its outputs (so a reader of the repository sees the figures).
EXECUTE_NOTEBOOKS = """
import os
from pathlib import Path
import nbformat
from nbclient import NotebookClient
for path in sorted(Path("notebooks").glob("*.ipynb")):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}).execute()
    nbformat.write(notebook, path)
    print(f"tasks: executed {path} on {os.environ['SWEEP_RESULTS']}", flush=True)
"""
VENV = ROOT / ".venv"
STAMP = VENV / ".sweep-install-stamp"
INSTALL_INPUTS = ("pyproject.toml", "constraints.txt")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_script(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def install_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in INSTALL_INPUTS:
        path = ROOT / name
        if path.exists():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_environment() -> Path:
    python = venv_python()
    wanted = install_fingerprint()
    if python.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return python
    if not python.exists():
        print(f"tasks: creating {VENV.relative_to(ROOT)}/", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("tasks: installing sweep and its dependencies (first run takes a few minutes)", flush=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    constraints = ROOT / "constraints.txt"
    extra = ["-c", str(constraints)] if constraints.exists() else []
    subprocess.run([*pip, *extra, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)
    return python


def call(command: list[str], env: dict[str, str] | None = None, own_group: bool = True) -> int:
    """Run `command` and return its status (128 + N if a signal N ended it). The command runs
    in a process group of its own, and a SIGINT or SIGTERM to this script (a terminal's
    Ctrl-C, `kill`, Slurm, Kubernetes) is passed on to it exactly once, whether it came to
    this script alone or to its whole group. `own_group=False` (JupyterLab, which asks on the
    terminal whether to shut down) leaves the command in this script's group: a terminal's
    Ctrl-C reaches it directly, and only SIGTERM is passed on."""
    child = subprocess.Popen(command, env=env, **({"process_group": 0} if own_group and os.name == "posix" else {}))

    def forward(signum, frame):
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGINT: signal.signal(signal.SIGINT, forward if own_group else signal.SIG_IGN),
    }
    try:
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - status if status < 0 else status


def results_option(args: list[str]) -> tuple[str, list[str]]:
    """`--results DIR` (or `--results=DIR`) out of the job's arguments (default `results`),
    and the arguments left."""
    rest, results, i = [], "results", 0
    while i < len(args):
        if args[i] == "--results" and i + 1 < len(args):
            results, i = args[i + 1], i + 2
            continue
        if args[i].startswith("--results="):
            results = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    return results, rest


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    job, rest = argv[0], argv[1:]
    if job not in JOBS:
        close = difflib.get_close_matches(job, JOBS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(f"tasks: unknown job '{job}'{hint} (jobs: {', '.join(JOBS)})", file=sys.stderr)
        return 2
    if job in ("notebooks", "lab"):
        results, rest = results_option(rest)
        if not Path(results, "rows").is_dir():
            print(f"tasks: --results {results}: no rows/ there; run python3 tasks.py grid --results {results} first", file=sys.stderr)
            return 2
    try:
        python = ensure_environment()
    except subprocess.CalledProcessError as err:
        print(f"tasks: installation failed ({err}); see the pip output above", file=sys.stderr)
        return 2
    if job == "test":
        os.chdir(ROOT)
        # The package's layering (pyproject.toml, [tool.importlinter]) before the tests: a
        # back-edge or a cycle fails the suite.
        status = call([str(venv_script("lint-imports")), "--no-cache"])
        if status != 0:
            print("tasks: lint-imports found imports that break the package's layers (see above)", file=sys.stderr)
            return status
        status = call([str(python), "-m", "pytest", *rest])
        if status != 0:
            return status
        # The GPU machines run Keras on JAX: the tests marked `backends` (training step,
        # packs, a grid, a killed and resumed trial, the bench) run again under it.
        print("tasks: the tests marked 'backends' again, under KERAS_BACKEND=jax", flush=True)
        jax = {**os.environ, "KERAS_BACKEND": "jax"}
        return call([str(python), "-m", "pytest", "-m", "backends", *rest], env=jax)
    elif job == "setup":
        return 0
    elif job in ("notebooks", "lab"):
        relative = os.path.relpath(Path(results).resolve(), ROOT / "notebooks")  # as the notebooks' own default is
        env = {**os.environ, "SWEEP_RESULTS": relative, "PYTHONPATH": str(ROOT)}
        os.chdir(ROOT)
        if job == "notebooks":
            return call([str(python), "-c", EXECUTE_NOTEBOOKS], env=env)
        if subprocess.call([str(python), "-c", "import jupyterlab"], stderr=subprocess.DEVNULL) != 0:
            print(f"tasks: JupyterLab is missing; install the lab extra ({python} -m pip install -e '.[lab]')", file=sys.stderr)
            return 2
        print(f"tasks: JupyterLab on notebooks/, the notebooks reading {results} (SWEEP_RESULTS={relative}); Ctrl-C stops it", flush=True)
        as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in rest else []  # containers
        return call([str(python), "-m", "jupyterlab", f"--ServerApp.root_dir={ROOT / 'notebooks'}", *as_root, *rest], env=env, own_group=False)
    else:
        command = [str(python), "-m", f"sweep.{job}", *rest]
    os.chdir(ROOT)
    return call(command)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C while installing, or between commands: one line, no traceback
        print("tasks: interrupted", file=sys.stderr)
        sys.exit(130)
