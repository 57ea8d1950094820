"""The analysis notebooks: committed executed on a real run, executed headless again against a
tiny synthetic sweep (so a notebook that breaks fails the suite), and opened in JupyterLab on a
results folder by `python3 tasks.py lab`."""

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
        said = "".join(o.get("text", "") for o in code[1].outputs)
        assert "../results holds " in said and "comparable group(s)" in said, f"{path.name} does not list the folder's groups"
        assert "../results: group '" in said, f"{path.name} does not say which group it shows"
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
    assert f"{url} holds 1 comparable group(s): synthetic reconstruct" in text, text
    assert f"{url}: group 'synthetic reconstruct': 4 trials, 4 complete, 0 failed -> 4 configurations" in text, text
    assert outputs(notebook, "image/png"), f"{name} drew no figure"


def _kernel_output(base: str, token: str, kernel_id: str, code: str, timeout: float = 120) -> str:
    """Run `code` in a kernel of the Jupyter server at `base` (Jupyter's messaging protocol over
    the server's websocket) and return what it printed."""
    import json
    import time
    import uuid

    import websocket

    socket = websocket.create_connection(f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?token={token}", timeout=timeout)
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request", "version": "5.3", "date": ""}
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
    socket.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": []}))
    printed, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = json.loads(socket.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            if kind == "stream":
                printed.append(message["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                return "".join(printed)
    finally:
        socket.close()
    raise AssertionError(f"no answer from the kernel in {timeout} s")


@pytest.mark.slow
def test_the_lab_job_opens_the_notebooks_on_a_results_folder(tmp_path, synthetic_sweep):
    """`python3 tasks.py lab --results DIR`: JupyterLab serves notebooks/, and a notebook's
    kernel there reads DIR (its RESULTS parameter) as the notebooks do."""
    import json
    import secrets
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = secrets.token_hex(8)
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "lab.log", "w")  # (read back by path: a seek here would move the server's offset too)
    command = [sys.executable, str(ROOT / "tasks.py"), "lab", "--results", str(synthetic_sweep), "--no-browser", f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}"]
    lab = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")})

    def get(path: str, data: dict | None = None) -> dict:
        request = urllib.request.Request(f"{base}{path}", data=json.dumps(data).encode() if data else None, headers={"Authorization": f"token {token}"}, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                listing = get("/api/contents")
                break
            except OSError:
                assert lab.poll() is None, (tmp_path / "lab.log").read_text()
                assert time.monotonic() < deadline, "JupyterLab did not answer in 180 s: " + (tmp_path / "lab.log").read_text()
                time.sleep(0.5)
        assert sorted(item["name"] for item in listing["content"] if item["type"] == "notebook") == [p.name for p in NOTEBOOKS]
        with urllib.request.urlopen(urllib.request.Request(f"{base}/lab", headers={"Authorization": f"token {token}"}), timeout=10) as page:
            assert page.status == 200 and b"JupyterLab" in page.read()
        session = get("/api/sessions", {"path": "latent_vs_error.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}})
        printed = _kernel_output(base, token, session["kernel"]["id"], "import os\nfrom sweep.results import load_results\nprint(os.path.abspath(os.environ['SWEEP_RESULTS']), len(load_results(os.environ['SWEEP_RESULTS'])))")
        assert printed.split() == [str(synthetic_sweep.resolve()), "4"]
        assert f"tasks: JupyterLab on notebooks/, the notebooks reading {synthetic_sweep}" in (tmp_path / "lab.log").read_text()
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):  # the server and its kernels
            try:
                os.killpg(lab.pid, sig)
                lab.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.mark.slow
def test_a_notebook_shows_one_group_of_a_folder_of_two(tmp_path, synthetic_sweep, monkeypatch):
    """The synthetic sweep and a copy of it at other epochs in one folder: the notebook lists
    both groups and shows one, never the 8 trials pooled."""
    import json
    import shutil

    results = tmp_path / "results"
    shutil.copytree(synthetic_sweep / "rows", results / "rows")
    for path in list((results / "rows").glob("*.json")):
        row = json.loads(path.read_text())
        spec = json.loads(row["spec"])
        spec["protocol"]["epochs"] = 3
        row.update(trial_key=f"{row['trial_key']}e3", config_key=f"{row['config_key']}e3", epochs=3, test_mse=row["test_mse"] * 2, spec=json.dumps(spec))
        (results / "rows" / f"{row['trial_key']}.json").write_text(json.dumps(row))
    notebook = execute(ROOT / "notebooks" / "latent_vs_error.ipynb", results, monkeypatch)
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "holds 2 comparable group(s): synthetic reconstruct epochs=2; synthetic reconstruct epochs=3" in text
    assert "group 'synthetic reconstruct epochs=2': 4 trials, 4 complete, 0 failed -> 4 configurations" in text
    assert "n = 4)" in text and "n = 8" not in text
