"""The admin's GPU page for real: a hub with its managed ``gpuhub-monitor`` reading a
replayed trace, the page reached through the proxy with the hub's OAuth (an admin's
login cookie, as a browser does).  It lists an idle and a busy GPU server and a GPU job
with their devices, utilisation and GPU-hours (the same as ``gpuhub-config usage``); a
non-admin gets 403 naming nobody else; the admin's stop stops a server and frees its
GPU; the admin's cancel cancels a job through ``gpuhub-jobs`` with the monitor's token,
which may do nothing else there."""

from __future__ import annotations

import contextlib
import copy
import html
import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from test_gpu_idle_culling import hours, wait_for
from test_jobs_local import WAIT, Jobs, torch_missing, wait_for_service
from test_local_hub import ledger_keys, login

from hubproc import Hub, auth, process_env
from localconfig import CONFIG

pytestmark = pytest.mark.integration

PAGE = "/services/gpuhub-monitor/"
# alice's GPU idles, bob's (on his named server "train") trains, carol's job runs at 50 %
TRACE = [
    {"key": "server:alice/", "t": 0, "util": 0, "memory_mib": 500},
    {"key": "server:bob/train", "t": 0, "util": 85, "memory_mib": 30000},
    {"key": "*", "t": 0, "util": 50},
]


def admin_page_config(trace: Path) -> dict[str, Any]:
    cfg = copy.deepcopy(CONFIG)
    gpu = next(p for p in cfg["profiles"] if p["slug"] == "gpu")
    # warned after 6 s of idleness, culled only after 10 min: the page shows the warning
    gpu["idle_culling"] = {"threshold_percent": 10, "idle_minutes": 10, "warn_minutes": 9.9}
    cfg["monitor"] = {"source": "replay", "replay_trace": str(trace), "sample_seconds": 0.5}
    return cfg


def cells(fragment: str) -> list[str]:
    return [
        html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
        for c in re.findall(r"<td[^>]*>(.*?)</td>", fragment, re.S)
    ]


def rows(page: str, attr: str) -> dict[str, list[str]]:
    """The page's table rows by their ``data-<attr>`` (holders: key; GPU-hours: name)."""
    return {
        html.unescape(key): cells(body)
        for key, body in re.findall(rf'<tr {attr}="([^"]*)">(.*?)</tr>', page, re.S)
    }


def hours_table(page: str, kind: str) -> dict[str, list[str]]:
    table = re.search(rf'data-hours="{kind}">(.*?)</table>', page, re.S)
    assert table, page
    return rows(table[1], "data-name")


def xsrf(page: str) -> str:
    m = re.search(r'name="_xsrf" value="([^"]+)"', page)
    assert m, page
    return html.unescape(m[1])


def monitor_token(hub: Hub) -> str:
    """The monitor's own hub token, from its process (the tests run as root)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes()
            if b"gpuhub.monitor\0" in cmd and f"GPUHUB_DATA={hub.data_dir}\0".encode() in env:
                return process_env(int(entry.name))["JUPYTERHUB_API_TOKEN"]
    raise AssertionError("no gpuhub-monitor process for this hub")


@pytest.fixture
def admin_hub(hub_factory: Callable[..., Hub], tmp_path: Path) -> Iterator[Hub]:
    if torch_missing:
        pytest.fail("torch is not installed: run `source scripts/bootstrap.sh && gpuhub_torch`")
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(row) + "\n" for row in TRACE))
    hub = hub_factory(admin_page_config(trace))
    wait_for_service(hub)
    yield hub
    for pid in hub.job_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_admin_page_lists_holders_stops_a_server_cancels_a_job(admin_hub: Hub):
    hub = admin_hub
    url = f"{hub.url}{PAGE}"
    tokens = {u: hub.token(u) for u in ("alice", "bob")}
    names = {"alice": "", "bob": "train"}
    for user, token in tokens.items():
        r = requests.post(
            hub.server_path(user, names[user]),
            json={"profile": "gpu", "gpus": 1},
            headers=auth(token),
            timeout=60,
        )
        assert r.status_code in (201, 202), r.text
    for user, token in tokens.items():
        hub.wait_ready(user, token, name=names[user])
    carol = Jobs(hub, "carol")
    r = carol.submit(WAIT, args=["gpu"], workers=1, gpus_per_worker=1, gpu_type="a100")
    assert r.status_code == 201, r.text
    job = r.json()
    job_key = f"job:{job['id']}"
    held = ledger_keys(hub)
    assert set(held) == {"server:alice/", "server:bob/train", job_key}

    # the admin logs in to the hub; the page completes the hub's OAuth by itself
    admin = login(hub, "admin", hub.admin_password)
    r = admin.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert any("/hub/api/oauth2/authorize" in h.headers.get("Location", "") for h in r.history)

    def page_with_all_measured() -> str | None:
        text = admin.get(url, timeout=30).text
        holders = rows(text, "data-key")
        ready = all(
            k in holders and holders[k][9] != "—" and holders[k][11] for k in ("server:alice/",)
        ) and all(k in holders and holders[k][8] != "—" for k in held)
        return text if ready else None

    page = wait_for("every holder measured, alice warned", page_with_all_measured, hub)
    holders = rows(page, "data-key")
    alice, bob, job_row = holders["server:alice/"], holders["server:bob/train"], holders[job_key]
    # user, server or job, kind, group, type, GPUs, where, since, now, hour, idle, warned
    assert alice[:6] == ["alice", "default server", "notebook", "vision", "A100", "1"]
    for row, key in ((alice, "server:alice/"), (bob, "server:bob/train"), (job_row, job_key)):
        assert row[6] == "GPU " + ", ".join(str(i) for i in held[key])
    assert (alice[8], alice[9]) == ("0%", "0%")
    assert float(alice[10]) > 0 and alice[11].startswith("stop at ")
    assert (bob[0], bob[1], bob[8], bob[9], bob[10], bob[11]) == (
        "bob",
        "train",
        "85%",
        "85%",
        "0.0",
        "",
    )
    assert job_row[:6] == ["carol", f"job {job['id']}", "job", "nlp", "A100", "1"]
    assert (job_row[8], job_row[9], job_row[10], job_row[11]) == ("50%", "50%", "—", "")
    assert (alice[12], job_row[12]) == ("Stop", "Cancel")
    groups = rows(page, "data-group")
    assert groups["vision"][1:3] == ["2 / 2", "A100 2"]
    assert groups["nlp"][1:3] == ["1 / 4", "A100 1 · H100 0 / 1"]
    assert "jobs never queue" in page

    # a non-admin: 403, a clear page, nobody else's name (login cookie and API token alike)
    bob_session = login(hub, "bob")
    for r in (
        bob_session.get(url, timeout=30),
        requests.get(url, headers=auth(tokens["bob"]), timeout=30),
    ):
        assert r.status_code == 403, r.text
        text = html.unescape(r.text)
        assert "for the hub's admins" in text and "signed in as bob" in text
        assert "alice" not in r.text and "carol" not in r.text
    r = bob_session.post(
        f"{url}admin/stop",
        data={"_xsrf": xsrf(page), "user": "alice", "server": ""},
        timeout=30,
    )
    assert r.status_code == 403
    # an admin's API token opens the page too (no cookie, no XSRF needed)
    r = requests.get(url, headers=auth(hub.admin_token()), timeout=30, allow_redirects=False)
    assert r.status_code == 200 and set(rows(r.text, "data-key")) == set(held)
    # no login: off to the hub's login; a POST with the cookie but without XSRF: refused
    r = requests.get(url, timeout=30, allow_redirects=False)
    assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"]
    r = admin.post(f"{url}admin/stop", data={"user": "alice", "server": ""}, timeout=30)
    assert r.status_code == 403
    # forms are checked: an unknown server is a 404, a malformed job id a 400
    r = admin.post(
        f"{url}admin/stop", data={"_xsrf": xsrf(page), "user": "bob", "server": "x"}, timeout=30
    )
    assert r.status_code == 404 and "bob has no GPU server 'x' now" in html.unescape(r.text)
    r = admin.post(f"{url}admin/cancel", data={"_xsrf": xsrf(page), "job": "../x"}, timeout=30)
    assert r.status_code == 400
    assert "" in hub.user_model("alice", tokens["alice"])["servers"]

    # GPU-hours: the page's are the CLI's (held hours only grow: the CLI's lie between
    # two readings of the page)
    before = hours_table(admin.get(url, timeout=30).text, "user")
    out = hub.cli("usage", str(hub.config_path), "--since", "24h").stdout
    after = hours_table(admin.get(url, timeout=30).text, "user")
    for user in ("alice", "bob", "carol"):
        cli = hours(out, "user", user)
        assert float(before[user][1]) <= cli[0] <= float(after[user][1])
    assert float(after["bob"][2]) == 0 and float(after["alice"][2]) > 0

    # the admin stops alice's idle server: through the hub, its GPU freed
    r = admin.post(
        f"{url}admin/stop",
        data={"_xsrf": xsrf(page), "user": "alice", "server": "", "since": "7d"},
        timeout=30,
    )
    assert r.status_code == 200 and r.url.endswith("?since=7d"), r.text
    assert "stopping alice's server" in html.unescape(r.text)
    wait_for(
        "alice's server stopped",
        lambda: "" not in hub.user_model("alice", tokens["alice"])["servers"],
        hub,
    )
    wait_for("alice's GPU freed", lambda: "server:alice/" not in ledger_keys(hub), hub)
    assert "train" in hub.user_model("bob", tokens["bob"])["servers"]

    # the admin stops bob's named server: that server alone
    r = admin.post(
        f"{url}admin/stop",
        data={"_xsrf": xsrf(page), "user": "bob", "server": "train"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    wait_for("bob's GPU freed", lambda: "server:bob/train" not in ledger_keys(hub), hub)
    assert "train" not in hub.user_model("bob", tokens["bob"])["servers"]

    # the admin cancels carol's job through the jobs service
    r = admin.post(f"{url}admin/cancel", data={"_xsrf": xsrf(page), "job": job["id"]}, timeout=30)
    assert r.status_code == 200, r.text
    assert f"cancelled carol's job {job['id']}" in html.unescape(r.text)
    assert carol.get(job["id"])["state"] == "Cancelled"
    wait_for("the job's GPU freed", lambda: job_key not in ledger_keys(hub), hub)
    assert hub.job_pids() == []

    # once alice's hold is closed, the page and the CLI say the same, to the digit
    def closed() -> dict[str, list[str]] | None:
        table = hours_table(admin.get(f"{url}?since=24h", timeout=30).text, "user")
        return table if table["alice"][3] == "" and table["carol"][3] == "" else None

    table = wait_for("alice's and carol's holds closed", closed, hub)
    out = hub.cli("usage", str(hub.config_path), "--since", "24h").stdout
    for user in ("alice", "carol"):
        assert (float(table[user][1]), float(table[user][2])) == hours(out, "user", user)[:2]

    # the monitor's token may cancel jobs, and nothing else there
    mon = monitor_token(hub)
    jobs = f"{hub.url}/services/gpuhub-jobs/api"
    assert (
        requests.get(f"{jobs}/jobs/{job['id']}", headers=auth(mon), timeout=30).status_code == 403
    )
    assert requests.get(f"{jobs}/jobs", headers=auth(mon), timeout=30).status_code == 403
    r = requests.post(f"{jobs}/jobs", headers=auth(mon), json={}, timeout=30)
    assert r.status_code == 403
    # and bob, a user, still cannot cancel carol's jobs
    assert (
        requests.delete(
            f"{jobs}/jobs/{job['id']}", headers=auth(tokens["bob"]), timeout=30
        ).status_code
        == 403
    )
