"""What a new user meets first: the README's links lead somewhere, results/ keeps its guide."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)


@pytest.fixture
def tracked() -> set[str]:
    out = _git("ls-files")
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return set(out.stdout.splitlines())


def test_every_relative_link_of_the_readme_is_a_tracked_file(tracked):
    text = (ROOT / "README.md").read_text()
    links = {target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", text)}
    local = {link for link in links if link and not re.match(r"^[a-z]+:", link)}
    assert "results/README.md" in local
    missing = sorted(link for link in local if link.rstrip("/") not in tracked and not any(t.startswith(link.rstrip("/") + "/") for t in tracked))
    assert missing == []


def test_results_keeps_its_readme_and_nothing_else(tracked):
    assert "results/README.md" in tracked
    assert [path for path in tracked if path.startswith("results/")] == ["results/README.md"]
    assert _git("check-ignore", "-q", "results/README.md").returncode == 1  # not ignored
    for path in ("results/rows/abc.json", "results/optuna.db", "results/report/report.md", "results/.workers/x"):
        assert _git("check-ignore", "-q", path).returncode == 0, path


WORKERS_THAT_GROW = """
import sys
sys.path.insert(0, {root!r})
from sweep.run import run_jobs
from sweep.run.schedule import WorkerPlan


def job(i):
    def run():
        import builtins, time
        import numpy as np

        builtins.__dict__.setdefault("_held", []).append(np.ones(450_000_000 // 8))  # 450 MB kept, as a framework's caches
        time.sleep(1.2)
        return {{"trial_key": str(i)}}

    return run


if __name__ == "__main__":
    rows = list(run_jobs([job(i) for i in range(6)], WorkerPlan(2, (), 1, 1), {lock!r}, on_restart=print))
    print(sorted(row["trial_key"] for row in rows))
"""


def test_a_worker_the_pool_replaces_for_its_memory_leaves_no_pool_warning(tmp_path):
    """loky replaces a worker whose memory grew by 300 MB; its warning ("A worker stopped ...
    memory leak") landed in the progress bar. Every job still runs, and nothing is said."""
    import sys

    script = tmp_path / "grow.py"
    script.write_text(WORKERS_THAT_GROW.format(root=str(ROOT), lock=str(tmp_path / "lock")))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([str(i) for i in range(6)])
    assert "worker stopped" not in out.stderr and "memory leak" not in out.stderr, out.stderr
