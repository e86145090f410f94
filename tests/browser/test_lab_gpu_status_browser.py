"""JupyterLab in Chromium on a GPU server: the status-bar item, the idle warning with
"Keep it", and "Give the GPUs back" from the item's popup, against the embedded hub whose
``gpuhub-monitor`` replays an idle utilisation trace."""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from browserkit import login
from playwright.sync_api import expect
from test_lab import LAB_SHELL
from test_local_hub import spawn

from hubproc import Hub, auth
from localconfig import CONFIG

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "lab-gpu-status.png"
STATUS = re.compile(r"^GPU: 1 × A100 · 3% · group vision · since \d\d:\d\d$")


@pytest.fixture
def gpu_hub(tmp_path: Path, _browser_tools: None) -> Iterator[Hub]:
    """The browser tier's hub with GPU-idle culling on the GPU profile: every GPU replays
    3 % (idle), so a server is warned 6 s after it starts and stopped after 5 minutes."""
    trace = tmp_path / "trace.jsonl"
    trace.write_text(json.dumps({"key": "*", "t": 0, "util": 3, "memory_mib": 900}) + "\n")
    cfg = copy.deepcopy(CONFIG)
    gpu = next(p for p in cfg["profiles"] if p["slug"] == "gpu")
    gpu["idle_culling"] = {"threshold_percent": 10, "idle_minutes": 5, "warn_minutes": 4.9}
    cfg["monitor"] = {"source": "replay", "replay_trace": str(trace), "sample_seconds": 1}
    h = Hub(tmp_path / "hub", cfg)
    try:
        yield h.start()
    finally:
        h.stop()


def shot_path(shots: Path) -> Path:
    """docs/screenshots/ when refreshing the README's pictures, else the session's folder."""
    if os.environ.get("GPUHUB_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        return SCREENSHOT
    return shots / SCREENSHOT.name


def test_status_bar_warning_keep_it_and_give_back(gpu_hub: Hub, new_page: Any, shots: Path):
    hub = gpu_hub
    token = hub.token("alice")  # sets alice's password; the browser logs in with it
    options = {"profile": "gpu", "gpus": 1, "gpu_type": "a100", "image": "python"}
    assert spawn(hub, "alice", token, options).status_code in (201, 202)
    hub.wait_ready("alice", token)
    # alice answers JupyterLab's "get notified about news?" beforehand: its toast would
    # cover the warning in the picture
    r = requests.put(
        f"{hub.url}/user/alice/lab/api/settings/@jupyterlab/apputils-extension:notification",
        headers=auth(token),
        json={"raw": json.dumps({"fetchNews": "false"})},
        timeout=30,
    )
    assert r.status_code == 204, r.text

    page = new_page()
    login(page, hub, "alice")
    page.goto(f"{hub.url}/user/alice/lab")
    expect(page.locator(LAB_SHELL)).to_be_visible(timeout=120_000)
    # the status-bar item: what the server holds, its utilisation, group and start
    item = page.get_by_test_id("gpuhub-gpu-status")
    expect(item).to_have_text(STATUS, timeout=60_000)

    # the idle warning, once, with "Keep it"
    toast = page.locator(".Toastify__toast").filter(
        has_text=re.compile(r"GPU idle: this server will be stopped at \d\d:\d\d")
    )
    expect(toast).to_have_count(1, timeout=90_000)
    expect(item).to_have_class(re.compile("gpuhub-mod-warned"))
    keep = toast.get_by_role("button", name="Keep it")
    expect(page.locator(".jp-Launcher")).to_be_visible(timeout=60_000)
    keep.click(trial=True)  # waits until the toast has slid in and stands still
    page.screenshot(path=shot_path(shots))
    keep.click()
    kept = page.locator(".Toastify__toast").filter(has_text="Kept: this server keeps its GPUs")
    expect(kept).to_have_count(1)
    expect(toast).to_have_count(0)
    r = requests.get(
        f"{hub.url}/services/gpuhub-monitor/api/servers", headers=auth(token), timeout=10
    )
    [mine] = r.json()["servers"]
    assert mine["warning"] is None and mine["cull_at"] > time.time() + 60

    # the item's popup: the details and "Give the GPUs back", confirmed
    item.click()
    details = page.get_by_test_id("gpuhub-gpu-details")
    expect(details).to_contain_text("Utilisation now")
    expect(details).to_contain_text("stopped after 5 min below 10%")
    details.get_by_test_id("gpuhub-give-back").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Give the GPUs back?")
    dialog.get_by_role("button", name="Give the GPUs back").click()
    expect(
        page.locator(".Toastify__toast").filter(
            has_text='Giving the GPUs back: this server restarts on "CPU only", same image'
        )
    ).to_have_count(1)

    # the hub runs the server again on the CPU profile, with the same image
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        server = hub.user_model("alice", token)["servers"].get("") or {}
        if server.get("ready") and server["user_options"].get("profile") == "cpu":
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"alice's server not back on CPU:\n{hub.log_tail()}")
    assert server["user_options"]["image"] == "python"
