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

# The tier's own hub: the integration tier's shape (declared GPUs, vision quota 2), smaller.
CONFIG: dict[str, Any] = {
    "gpu_types": {
        "a100": {"display_name": "A100", "node_label": "NVIDIA-A100-SXM4-80GB"},
        "h100": {"display_name": "H100", "node_label": "NVIDIA-H100-80GB-HBM3"},
    },
    "images": {
        "python": {"display_name": "Python", "image": "local/python"},
        "torch": {
            "display_name": "PyTorch",
            "image": "ghcr.io/gpuhub/pytorch:2.11-cu128",
            "framework": "pytorch",
            "cuda": "12.8",
            "min_driver": "525.60.13",
        },
    },
    "profiles": [
        {
            "slug": "cpu",
            "display_name": "CPU only",
            "description": "For editing, data wrangling and small experiments.",
            "images": ["python"],
            "default": True,
        },
        {
            "slug": "gpu",
            "display_name": "GPU",
            "description": "One or two GPUs for training and inference.",
            "images": ["torch", "python"],
            "groups": ["vision", "nlp"],
            "gpu": {"types": ["a100", "h100"], "counts": [1, 2]},
        },
        {
            "slug": "big",
            "display_name": "Big",
            "images": ["torch"],
            "groups": ["admins"],
            "gpu": {"types": ["a100"], "counts": [4]},
        },
    ],
    "quotas": {
        "per_user_gpus": 2,
        "groups": {"vision": {"gpus": 2}, "nlp": {"gpus": 4, "per_type": {"h100": 1}}},
    },
    "groups": {
        "vision": ["alice", "bob", "erin"],
        "nlp": ["carol", "alice"],
        "admins": ["admin"],
        "guests": ["dave"],
    },
    "auth": {"admin_users": ["admin"]},
    "local": {
        "inventory": "declared",
        "devices": [{"index": i, "type": "a100"} for i in range(4)]
        + [{"index": 4, "type": "h100"}],
    },
}


@pytest.fixture(scope="session")
def _browser_tools() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if shutil.which("configurable-http-proxy") is None:
        missing.append("configurable-http-proxy (npm, scripts/bootstrap.sh)")
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


def job_pids(hub: Hub) -> list[int]:
    """Processes of this hub's jobs (they carry GPUHUB_JOB=<data>/jobs/<id>)."""
    mark = f"GPUHUB_JOB={hub.data_dir}/jobs/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if mark in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
    return found


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
        for pid in job_pids(h):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        h.stop()
