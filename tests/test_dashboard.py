"""optuna-dashboard on a finished quick sweep, checked in a real headless browser: a grid run
and an Optuna run in one results folder are two studies of `RESULTS/optuna.db`, and each
study's page lists its trials. The command is the one the README gives
(`optuna-dashboard sqlite:///RESULTS/optuna.db`); the browser is the system's Chromium
driven by Playwright. Screenshots go to the test artefacts (`test-artifacts/`, or
$SWEEP_TEST_ARTIFACTS). Skipped without Chromium or Playwright, unless
SWEEP_REQUIRE_BROWSER=1 (as in CI, whose `.ci/run` installs Debian's `chromium`)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, small_space

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = Path(os.environ.get("SWEEP_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def need(what: str, found) -> None:
    if not found:
        if os.environ.get("SWEEP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SWEEP_REQUIRE_BROWSER=1 but {what} is missing")
        pytest.skip(f"{what} is missing (the browser test needs it)")


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    need("chromium (Debian: apt-get install chromium)", path)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        need("Playwright (pip install playwright)", False)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dashboard(tmp_path):
    """Start `optuna-dashboard sqlite:///RESULTS/optuna.db` (for a results folder given
    later) and return a function that does so and gives its URL; stopped afterwards."""
    servers = []

    def start(results: Path) -> str:
        command = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
        need("optuna-dashboard (pip install optuna-dashboard, or the dashboard extra)", command)
        port = free_port()
        log = open(tmp_path / "dashboard.log", "w")
        servers.append(subprocess.Popen([command, f"sqlite:///{results / 'optuna.db'}", "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/studies", timeout=2).read()
                return url
            except OSError:
                assert servers[-1].poll() is None, (tmp_path / "dashboard.log").read_text()
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 60 s"
                time.sleep(0.3)

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)


def test_optuna_dashboard_lists_a_grid_run_and_an_optuna_run_in_a_real_browser(tmp_path, chromium, dashboard):
    from playwright.sync_api import expect, sync_playwright

    space = small_space(tmp_path, {"kernel_size": [3, 5], "channel_factor": [1, 2]}, epochs=2)
    results = tmp_path / "results"
    grid = run_cli("sweep.grid", "--space", space, "--results", str(results))
    assert grid.returncode == 0, grid.stderr
    tuned = run_cli("sweep.optuna", "--trials", "3", "--space", space, "--results", str(results), "--sampler", "random")
    assert tuned.returncode == 0, tuned.stderr
    grid_study = re.search(r"\(study '([^']+)'", grid.stdout).group(1)
    url = dashboard(results)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/dashboard/")
            expect(page.get_by_text(grid_study)).to_be_visible(timeout=30_000)
            names = page.get_by_text(re.compile(r"^\d+\. small-(grid|optuna)-"))
            expect(names).to_have_count(2)
            page.screenshot(path=ARTIFACTS / "optuna-dashboard-studies.png", full_page=True)
            listed = {}
            for kind, trials in (("grid", 4), ("optuna", 3)):
                page.goto(f"{url}/dashboard/")
                page.get_by_text(re.compile(rf"^\d+\. small-{kind}-")).click()
                page.wait_for_url(re.compile(r"/dashboard/studies/\d+$"))
                page.goto(page.url + "/trials")
                expect(page.get_by_text(f"{trials} Trials", exact=True)).to_be_visible(timeout=30_000)
                items = page.get_by_text(re.compile(r"^Trial \d+$"))
                expect(items).to_have_count(trials)
                expect(page.get_by_text("Complete", exact=True).first).to_be_visible()
                listed[kind] = items.count()
                page.screenshot(path=ARTIFACTS / f"optuna-dashboard-{kind}-trials.png", full_page=True)
            assert listed == {"grid": 4, "optuna": 3}
        finally:
            browser.close()
    for name in ("studies", "grid-trials", "optuna-trials"):
        assert (ARTIFACTS / f"optuna-dashboard-{name}.png").stat().st_size > 10_000
