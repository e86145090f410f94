"""``gpuhub-config reload`` against the real embedded hub: groups and quotas change for the
next spawn, running servers keep running, an invalid edit changes nothing."""

from __future__ import annotations

import copy
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from test_local_hub import spawn

from hubproc import Hub, auth

pytestmark = pytest.mark.integration


def answers(hub: Hub, user: str, token: str) -> bool:
    r = requests.get(f"{hub.url}/user/{user}/api/status", headers=auth(token), timeout=10)
    return r.status_code == 200


def groups_of(hub: Hub, user: str, admin: str) -> list[str]:
    r = requests.get(f"{hub.api}/users/{user}", headers=auth(admin), timeout=10)
    r.raise_for_status()
    return sorted(r.json()["groups"])


def wait_for_status(hub: Hub, after: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = hub.status()
        if status["generation"] > after:
            return status
        time.sleep(0.1)
    raise TimeoutError(f"no status after generation {after}:\n{hub.log_tail()}")


def test_reload_applies_groups_and_quotas_and_keeps_servers(hub: Hub):
    admin = hub.admin_token()
    tokens = {u: hub.token(u) for u in ("alice", "dave", "bob", "u0", "u1", "carol")}
    # two running servers: alice's GPU server (charged to vision) and dave's CPU server
    assert spawn(hub, "alice", tokens["alice"], {"profile": "gpu"}).status_code in (201, 202)
    assert spawn(hub, "dave", tokens["dave"], {}).status_code in (201, 202)
    for u in ("alice", "dave"):
        hub.wait_ready(u, tokens[u])
    pids = {u: hub.server_pid(u, admin) for u in ("alice", "dave")}
    hub_pid = int(hub.pid_file.read_text())
    assert groups_of(hub, "u1", admin) == ["vision"]

    # the admin edits the YAML: vision's quota 2 -> 1, u1 moves from vision to guests,
    # bob is removed from vision (and so from the YAML), alice (who holds a vision GPU) too
    cfg = copy.deepcopy(hub.config)
    cfg["quotas"]["groups"]["vision"]["gpus"] = 1
    gone = ("u1", "bob", "alice")
    cfg["groups"]["vision"] = [u for u in cfg["groups"]["vision"] if u not in gone]
    cfg["groups"]["guests"].append("u1")
    hub.write_config(cfg)
    r = hub.cli("reload", str(hub.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "groups.guests: +u1" in r.stdout
    assert "groups.vision: -alice -bob -u1" in r.stdout
    assert "quotas.groups.vision.gpus: 2 -> 1" in r.stdout

    # nothing running was touched: same hub, same servers, still answering
    assert int(hub.pid_file.read_text()) == hub_pid and hub.proc and hub.proc.poll() is None
    assert {u: hub.server_pid(u, admin) for u in ("alice", "dave")} == pids
    assert all(answers(hub, u, tokens[u]) for u in ("alice", "dave"))
    # the hub database shows the new groups at once (the admin page)
    assert groups_of(hub, "u1", admin) == ["guests"]
    assert groups_of(hub, "bob", admin) == []

    # u1's next GPU spawn is checked against the new groups
    r = spawn(hub, "u1", tokens["u1"], {"profile": "gpu"})
    assert r.status_code == 400, r.text
    assert "it is for groups vision, nlp and your groups are guests" in r.json()["message"], r.text
    # bob, no longer listed, can neither spawn nor log in again
    assert spawn(hub, "bob", tokens["bob"], {"profile": "gpu"}).status_code == 403
    assert hub.token_response("bob", hub.user_password("bob")).status_code == 403
    # the new quota applies to the next spawn: vision is full with alice's 1 GPU
    r = spawn(hub, "u0", tokens["u0"], {"profile": "gpu"})
    assert r.status_code == 403, r.text
    assert "group vision uses 1 of 1 GPUs: alice 1" in r.json()["message"]
    # the admin sees who holds GPUs outside their groups now
    usage = hub.cli("usage", str(hub.config_path)).stdout
    assert re.search(r"server:alice/: alice charges vision .* \(no longer in vision\)", usage), (
        usage
    )

    # an invalid edit is refused with its key path; the hub keeps the config it has
    bad = copy.deepcopy(cfg)
    bad["profiles"][0]["memory"] = "4 GB"
    hub.write_config(bad)
    generation = hub.status()["generation"]
    r = hub.cli("reload", str(hub.config_path))
    assert r.returncode == 1
    assert "profiles[0].memory" in r.stderr and "keeps its current config" in r.stderr
    assert hub.status()["generation"] == generation  # the hub was not even asked
    # ... and a SIGHUP sent by hand only reports the error
    os.kill(hub_pid, signal.SIGHUP)
    status = wait_for_status(hub, generation)
    assert "profiles[0].memory" in status["error"]
    assert hub.proc.poll() is None
    r = spawn(hub, "carol", tokens["carol"], {"profile": "gpu"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("carol", tokens["carol"])

    # a graceful hub restart leaves the servers running too
    hub.write_config(cfg)
    hub.terminate()
    assert all(Path(f"/proc/{pid}").exists() for pid in pids.values())
    hub.start()
    assert {u: hub.server_pid(u, admin) for u in ("alice", "dave")} == pids
    assert all(answers(hub, u, tokens[u]) for u in ("alice", "dave"))
