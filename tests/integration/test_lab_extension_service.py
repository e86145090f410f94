"""The JupyterLab extension's server side against the real jobs service: a user's real
single-user server (with ``gpuhub_lab`` loaded) forwards ``/user/<name>/gpuhub/...`` to the
``gpuhub-jobs`` hub service with its own token; the browser never talks to the service and
never sends the notebook — the server reads it from its contents manager."""

from __future__ import annotations

import json
import time

import pytest
import requests
from test_jobs_local import DDP, jobs_hub  # noqa: F401 - fixture
from test_local_hub import spawn

from hubproc import Hub, auth

pytestmark = pytest.mark.integration  # jobs_hub fails (never skips) without torch


def test_extension_server_side_runs_a_job_through_the_real_service(jobs_hub: Hub):  # noqa: F811
    hub = jobs_hub
    alice = hub.token("alice")
    assert spawn(hub, "alice", alice, {"profile": "cpu"}).status_code in (201, 202)
    base = hub.url + hub.wait_ready("alice", alice)["url"]
    # the notebook lives in alice's server, as a file she saved from JupyterLab
    r = requests.put(
        f"{base}api/contents/train.ipynb",
        headers=auth(alice),
        timeout=30,
        json={"type": "notebook", "format": "json", "content": DDP},
    )
    assert r.status_code in (200, 201), r.text
    ext = f"{base}gpuhub"
    options = requests.get(f"{ext}/options", headers=auth(alice), timeout=30)
    assert options.status_code == 200, options.text
    assert "pytorch" in options.json()["frameworks"]
    # a pod spec or a notebook sent by the browser is refused by the server side
    bad = requests.post(
        f"{ext}/jobs",
        headers=auth(alice),
        timeout=30,
        json={
            "path": "train.ipynb",
            "framework": "pytorch",
            "workers": 2,
            "gpus_per_worker": 0,
            "notebook": {"cells": []},
        },
    )
    assert bad.status_code == 400, bad.text
    r = requests.post(
        f"{ext}/jobs",
        headers=auth(alice),
        timeout=60,
        json={
            "path": "train.ipynb",
            "framework": "pytorch",
            "workers": 2,
            "gpus_per_worker": 0,
            "args": [],
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["user"] == "alice" and job["path"] == "train.ipynb"
    listed = requests.get(f"{ext}/jobs", headers=auth(alice), timeout=30).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = requests.get(f"{ext}/jobs/{job['id']}", headers=auth(alice), timeout=30).json()
        if state["state"] in ("Succeeded", "Failed", "Cancelled"):
            break
        time.sleep(1)
    assert state["state"] == "Succeeded", json.dumps(state)
    lines = []
    for worker in (0, 1):
        r = requests.get(
            f"{ext}/jobs/{job['id']}/logs",
            params={"worker": worker, "tail": 50},
            headers=auth(alice),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        lines.append("\n".join(r.json()["lines"]))
    assert "rank 0/2 loss" in lines[0] and "rank 1/2 loss" in lines[1], lines
    # another user's server cannot read alice's job through its own extension
    bob = hub.token("bob")
    assert spawn(hub, "bob", bob, {"profile": "cpu"}).status_code in (201, 202)
    bob_ext = hub.url + hub.wait_ready("bob", bob)["url"] + "gpuhub"
    assert (
        requests.get(f"{bob_ext}/jobs/{job['id']}", headers=auth(bob), timeout=30).status_code
        == 404
    )
