"""The browser tier: Debian's Chromium driven by Playwright (the Python package, which ships
its own driver; no browser is downloaded) against the embedded hub of
tests/integration/hubproc.py.

Screenshots go to a temporary folder, or to docs/screenshots/ when GPUHUB_SCREENSHOTS=1
(``GPUHUB_SCREENSHOTS=1 scripts/test browser`` refreshes the README's pictures)."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from hubproc import Hub  # noqa: E402
from localconfig import CONFIG as INTEGRATION_CONFIG  # noqa: E402

CHROMIUM = os.environ.get("GPUHUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = ROOT / "docs" / "screenshots"

# The integration tier's hub config, with descriptions (they show in the screenshots) and
# one more user, erin, for the browser's own spawns.
CONFIG: dict[str, Any] = copy.deepcopy(INTEGRATION_CONFIG)
_DESCRIPTIONS = {
    "cpu": "For editing, data wrangling and small experiments.",
    "gpu": "One or two GPUs for training and inference.",
}
for _p in CONFIG["profiles"]:
    if _p["slug"] in _DESCRIPTIONS:
        _p["description"] = _DESCRIPTIONS[_p["slug"]]
CONFIG["groups"]["vision"] = ["alice", "bob", "erin"]


@pytest.fixture(scope="session")
def _browser_tools() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if shutil.which("configurable-http-proxy") is None:
        missing.append("configurable-http-proxy (npm, scripts/bootstrap.sh)")
    if shutil.which("code-server") is None:
        missing.append("code-server (npm, scripts/bootstrap.sh)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (requirements/browser.txt)")
    if missing:
        pytest.fail("the browser tier needs: " + ", ".join(missing) + "; run scripts/test browser")


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: docs/screenshots/ only when GPUHUB_SCREENSHOTS=1."""
    if os.environ.get("GPUHUB_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session")
def playwright(_browser_tools: None) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def new_page(playwright: Any, tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    """``new_page(name)``: a page in a fresh Chromium (own user-data-dir, so own cookies)."""
    contexts: list[Any] = []

    def make(name: str = "browser") -> Any:
        ctx = playwright.chromium.launch_persistent_context(
            str(tmp_path / f"chromium-{name}"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
            device_scale_factor=1,
            locale="en-US",
            timezone_id="UTC",
        )
        ctx.set_default_timeout(30_000)
        contexts.append(ctx)
        return ctx.pages[0] if ctx.pages else ctx.new_page()

    yield make
    for ctx in contexts:
        with contextlib.suppress(Exception):
            ctx.close()


@pytest.fixture
def hub(tmp_path: Path, _browser_tools: None) -> Iterator[Hub]:
    h = Hub(tmp_path / "hub", copy.deepcopy(CONFIG))
    try:
        h.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the managed jobs service starts after the hub
            with contextlib.suppress(requests.RequestException):
                r = requests.get(f"{h.url}/services/gpuhub-jobs/api/jobs", timeout=5)
                if r.status_code == 401:
                    break
            time.sleep(0.3)
        else:
            raise TimeoutError(f"jobs service did not come up:\n{h.log_tail()}")
        yield h
    finally:
        for pid in h.job_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        h.stop()
