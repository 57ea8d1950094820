"""The analysis notebooks: committed without outputs, and executed headless against a real
(tiny, synthetic) sweep, so a notebook that breaks fails the suite."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PARAMETER = 'RESULTS = os.environ.get("SWEEP_RESULTS", "../results")'


def execute(path: Path, results: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run every cell of `path` in a fresh kernel, with RESULTS pointing at `results`."""
    monkeypatch.setenv("SWEEP_RESULTS", str(results))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as a user sees it
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, kind: str) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if kind in o.get("data", {})]


def test_the_notebooks_are_committed_executed_on_a_real_run():
    """A reader browsing the repository sees the figures and tables: every code cell ran, in
    order, on the default results folder (`python3 tasks.py notebooks --results results`)."""
    assert {p.stem for p in NOTEBOOKS} == {"latent_vs_error", "factor_effects", "gallery", "colorization"}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{path.name}: not executed top to bottom"
        assert not any(o.get("output_type") == "error" for c in code for o in c.outputs), f"{path.name} has an error"
        assert outputs(notebook, "image/png") or path.stem == "colorization", f"{path.name} shows no figure"
        assert "../results: " in "".join(o.get("text", "") for c in code for o in c.outputs), f"{path.name} ran elsewhere"
        assert PARAMETER in code[0].source, f"{path.name}: the first code cell should set RESULTS"
        assert any("sweep.analysis" in c.source or "from sweep import analysis" in c.source for c in code)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_real_sweep(path, synthetic_sweep, monkeypatch):
    committed = path.read_bytes()
    notebook = execute(path, synthetic_sweep, monkeypatch)
    assert path.read_bytes() == committed  # the suite never rewrites the committed outputs
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "4 trials, 4 complete, 0 failed -> 4 configurations" in text
    if path.stem == "colorization":
        assert "no colorization rows" in text
    else:
        assert outputs(notebook, "image/png"), f"{path.name} drew no figure"
    if path.stem == "latent_vs_error":
        assert "Spearman rho" in text and "no PCA reference" not in text


def test_the_notebooks_job_needs_a_results_folder(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "tasks.py"), "notebooks", "--results", str(tmp_path / "none")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and out.stderr.strip().endswith(f"--results {tmp_path / 'none'}: no rows/ there; run python3 tasks.py grid --results {tmp_path / 'none'} first")


@pytest.mark.slow
def test_a_broken_notebook_fails(tmp_path, synthetic_sweep, monkeypatch):
    notebook = nbformat.read(ROOT / "notebooks" / "latent_vs_error.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("analysis.latent_correlation(frame, 'kendall')"))
    broken = tmp_path / "broken.ipynb"
    nbformat.write(notebook, broken)
    with pytest.raises(CellExecutionError, match="'method' parameter of latent_correlation"):
        execute(broken, synthetic_sweep, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["latent_vs_error", "factor_effects"])
def test_notebook_runs_on_a_clusters_rows_from_a_storage_url(name, synthetic_sweep, tmp_path, monkeypatch):
    """RESULTS may be the --storage URL of a sweep run on many machines: the notebooks read the
    shared results table (here a SQLite database holding the sweep's rows)."""
    from sweep.results import RowStore

    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    assert RowStore(str(synthetic_sweep), url).push_missing() == 4
    notebook = execute(ROOT / "notebooks" / f"{name}.ipynb", url, monkeypatch)
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert f"{url}: 4 trials, 4 complete, 0 failed -> 4 configurations" in text
    assert outputs(notebook, "image/png"), f"{name} drew no figure"
