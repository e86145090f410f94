"""The admin's GPU page in Chromium: an admin logs in to the hub, opens
``/services/gpuhub-monitor/`` (the hub's OAuth completes without a prompt), sees an idle
and a busy GPU server and a GPU job with their utilisation, stops the idle server with
its button, and the hub stops it."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from browserkit import login
from playwright.sync_api import expect

from hubproc import Hub, auth
from localconfig import CONFIG

pytestmark = pytest.mark.browser

PAGE = "/services/gpuhub-monitor/"
TRACE = [
    {"key": "server:alice/", "t": 0, "util": 0, "memory_mib": 500},
    {"key": "server:bob/", "t": 0, "util": 85, "memory_mib": 30000},
    {"key": "*", "t": 0, "util": 50},
]
WAIT_NB = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    "cells": [
        {
            "cell_type": "code",
            "metadata": {},
            "source": "import os, time\nwhile not os.path.exists('release'):\n    time.sleep(0.5)",
            "outputs": [],
            "execution_count": None,
        }
    ],
}


def until(what: str, check: Callable[[], Any], hub: Hub, timeout: float = 120) -> Any:
    """Until ``check()`` is true (the hub offers no event to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"{what} not seen in {timeout}s:\n{hub.log_tail()}")


@pytest.fixture
def gpu_hub(tmp_path: Path, _browser_tools: None) -> Iterator[Hub]:
    """The browser tier's hub with GPU-idle culling and a replayed utilisation trace."""
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(row) + "\n" for row in TRACE))
    cfg = copy.deepcopy(CONFIG)
    gpu = next(p for p in cfg["profiles"] if p["slug"] == "gpu")
    gpu["idle_culling"] = {"threshold_percent": 10, "idle_minutes": 10, "warn_minutes": 9.9}
    cfg["monitor"] = {"source": "replay", "replay_trace": str(trace), "sample_seconds": 0.5}
    cfg["groups"]["nlp"] = ["carol"]
    h = Hub(tmp_path / "hub", cfg)
    try:
        h.start()
        for service in ("gpuhub-jobs/api/jobs", "gpuhub-monitor/api/servers"):
            until(
                service,
                lambda s=service: (
                    requests.get(f"{h.url}/services/{s}", timeout=5).status_code == 401
                ),
                h,
            )
        yield h
    finally:
        for pid in h.job_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        h.stop()


def test_admin_sees_every_holder_and_stops_an_idle_server(gpu_hub: Hub, new_page: Any, shots: Path):
    hub = gpu_hub
    tokens = {u: hub.token(u) for u in ("alice", "bob", "carol")}
    for user in ("alice", "bob"):
        r = requests.post(
            f"{hub.api}/users/{user}/server",
            json={"profile": "gpu", "gpus": 1},
            headers=auth(tokens[user]),
            timeout=60,
        )
        assert r.status_code in (201, 202), r.text
    r = requests.post(
        f"{hub.url}/services/gpuhub-jobs/api/jobs",
        json={
            "notebook": WAIT_NB,
            "path": "train.ipynb",
            "framework": "pytorch",
            "workers": 1,
            "gpus_per_worker": 1,
            "gpu_type": "h100",
        },
        headers=auth(tokens["carol"]),
        timeout=60,
    )
    assert r.status_code == 201, r.text
    job = r.json()

    page = new_page("admin")
    login(page, hub, "admin", hub.admin_password)
    page.goto(f"{hub.url}{PAGE}")
    expect(page.get_by_role("heading", name="Who holds GPUs now")).to_be_visible()
    alice = page.locator('tr[data-key="server:alice/"]')
    bob = page.locator('tr[data-key="server:bob/"]')
    carol = page.locator(f'tr[data-key="job:{job["id"]}"]')

    def measured() -> bool:
        page.reload()
        return bool(
            alice.count()
            and bob.count()
            and carol.count()
            and "starting" not in alice.inner_text() + bob.inner_text()
            and alice.locator("td").nth(11).inner_text().startswith("stop at")
            and carol.locator("td").nth(9).inner_text() == "50%"
        )

    until("every holder measured and alice warned", measured, hub)
    cells = {
        name: row.locator("td").all_inner_texts()
        for name, row in (("alice", alice), ("bob", bob), ("carol", carol))
    }
    assert cells["alice"][:6] == ["alice", "default server", "notebook", "vision", "A100", "1"]
    assert (cells["alice"][8], cells["alice"][9]) == ("0%", "0%")
    assert cells["bob"][:2] == ["bob", "default server"]
    assert (cells["bob"][8], cells["bob"][9], cells["bob"][11]) == ("85%", "85%", "")
    assert cells["carol"][:6] == ["carol", f"job {job['id']}", "job", "nlp", "H100", "1"]
    assert cells["carol"][6] == "GPU 4"  # the only H100
    vision = page.locator('tr[data-group="vision"] td').all_inner_texts()
    assert vision[:3] == ["vision", "2 / 2", "A100 2"]
    hours = page.locator('table[data-hours="user"]')
    for user in ("alice", "bob", "carol"):
        assert float(hours.locator(f'tr[data-name="{user}"] td').nth(1).inner_text()) > 0
    page.screenshot(path=shots / "admin-gpu-page.png", full_page=True)

    page.get_by_role("button", name="Stop alice's default server").click()
    expect(page.get_by_role("status")).to_contain_text("stopping alice's server")
    until(
        "alice's server stopped",
        lambda: (
            ""
            not in requests.get(
                f"{hub.api}/users/alice", headers=auth(tokens["alice"]), timeout=10
            ).json()["servers"]
        ),
        hub,
    )
    until("alice's row gone", lambda: (page.reload() or True) and alice.count() == 0, hub)
    assert bob.count() == 1 and carol.count() == 1
