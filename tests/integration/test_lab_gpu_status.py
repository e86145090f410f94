"""The JupyterLab status-bar item's server side against the real monitor: a user's real GPU
server (with ``gpuhub_lab`` loaded) asks ``gpuhub-monitor`` about *itself* with its own
token — its GPUs and the idle warning, "keep it", and "give the GPUs back", after which the
hub runs it again on the CPU profile and its GPU is free."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from test_gpu_idle_culling import Monitor, culling_config, wait_for
from test_local_hub import ledger_keys, spawn

from hubproc import Hub, auth, process_env

pytestmark = pytest.mark.integration


class Lab:
    """``/user/<name>/gpuhub/gpu...`` of one user's server, as the browser calls it."""

    def __init__(self, hub: Hub, user: str, token: str) -> None:
        self.base = f"{hub.url}/user/{user}/gpuhub/gpu"
        self.token = token

    def status(self) -> dict[str, Any] | None:
        """``GET gpuhub/gpu``; ``None`` while the server does not answer (restarting)."""
        r = requests.get(self.base, headers=auth(self.token), timeout=30)
        return dict(r.json()) if r.status_code == 200 else None

    def post(self, op: str, body: Any = None) -> requests.Response:
        data = None if body is None else json.dumps(body)
        return requests.post(f"{self.base}/{op}", data=data, headers=auth(self.token), timeout=30)


def test_status_keep_and_give_back_through_the_lab_server(
    hub_factory: Callable[..., Hub], tmp_path: Path
):
    trace = tmp_path / "trace.jsonl"
    trace.write_text(json.dumps({"key": "*", "t": 0, "util": 0, "memory_mib": 400}) + "\n")
    cfg = culling_config(trace)
    gpu = next(p for p in cfg["profiles"] if p["slug"] == "gpu")
    # warned after 6 s idle; culled only after 5 min: the give-back comes first
    gpu["idle_culling"].update(idle_minutes=5, warn_minutes=4.9)
    hub = hub_factory(cfg)
    alice, bob = hub.token("alice"), hub.token("bob")
    options = {"profile": "gpu", "gpus": 1, "image": "python"}
    assert spawn(hub, "alice", alice, options).status_code in (201, 202)
    hub.wait_ready("alice", alice)
    env = process_env(hub.server_pid("alice", hub.admin_token()))
    assert env["GPUHUB_MONITOR_URL"].endswith("/services/gpuhub-monitor/")
    lab = Lab(hub, "alice", alice)

    # the status bar's data: this server's GPU, then its idle warning
    mine = wait_for("alice's GPU in the status", lambda: (lab.status() or {}).get("server"), hub)
    assert (mine["server"], mine["gpus"], mine["gpu_type_name"], mine["group"]) == (
        "",
        1,
        "A100",
        "vision",
    )
    assert mine["devices"] == list(ledger_keys(hub)["server:alice/"])
    warned = wait_for(
        "alice's warning", lambda: ((lab.status() or {}).get("server") or {}).get("warning"), hub
    )
    assert warned["action"] == "stop"

    # "Keep it": whatever the browser names, the server side asks about this server only
    r = lab.post("keep", {"server": "someone-elses"})
    assert r.status_code == 200, r.text
    kept = r.json()
    assert kept["server"] == "" and kept["warning"] is None
    assert kept["cull_at"] > warned["cull_at"]

    # nobody else's server is given back: bob has none
    mon = Monitor(hub)
    r = requests.post(
        f"{mon.base}/api/give-back", json={"server": ""}, headers=auth(bob), timeout=10
    )
    assert r.status_code == 404, r.text

    # "Give the GPUs back": 202 naming the CPU profile, the image is kept
    r = lab.post("give-back")
    assert r.status_code == 202, r.text
    assert r.json() == {
        "server": "",
        "profile": "cpu",
        "profile_name": "CPU only",
        "image": "python",
    }
    again = requests.post(
        f"{mon.base}/api/give-back", json={"server": ""}, headers=auth(alice), timeout=10
    )
    if again.status_code == 404:  # already done: only once the GPU is free
        assert "server:alice/" not in ledger_keys(hub)
    else:
        assert again.status_code == 409, again.text
        assert "already being given back" in again.json()["message"]

    def on_cpu() -> dict[str, Any] | None:
        server = hub.user_model("alice", alice)["servers"].get("") or {}
        opts = server.get("user_options") or {}
        return server if server.get("ready") and opts.get("profile") == "cpu" else None

    back = wait_for("alice's server back on the CPU profile", on_cpu, hub, timeout=180)
    assert back["user_options"]["image"] == "python"
    assert "server:alice/" not in ledger_keys(hub)  # the GPU is free
    env = process_env(hub.server_pid("alice", hub.admin_token()))
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    # the same lab, now on CPU: no GPUs, no warning, nothing to give back
    assert wait_for("alice's lab back", lab.status, hub)["server"] is None
    r = lab.post("give-back")
    assert r.status_code == 404, r.text
