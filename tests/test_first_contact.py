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
