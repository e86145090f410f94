"""The embedded hub for real: JupyterHub + configurable-http-proxy + single-user servers
started by GPULocalSpawner, driven through the REST API and the login form."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from hubproc import Hub, auth, process_env

pytestmark = pytest.mark.integration


def spawn(hub: Hub, user: str, token: str, options: dict) -> requests.Response:
    return requests.post(
        f"{hub.api}/users/{user}/server", json=options, headers=auth(token), timeout=60
    )


def login(hub: Hub, user: str, password: str | None = None) -> requests.Session:
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=10)
    r = s.post(
        f"{hub.url}/hub/login?next=",
        timeout=10,
        allow_redirects=False,
        data={
            "username": user,
            "password": password or hub.user_password(user),
            "_xsrf": s.cookies.get("_xsrf", ""),
        },
    )
    assert r.status_code == 302, r.text
    return s


def ledger_keys(hub: Hub) -> dict[str, tuple[int, ...]]:
    """The machine-wide ledger as another process sees it (the CLI, like an admin)."""
    out = subprocess.run(
        [sys.executable, "-m", "gpuhub.cli", "usage", str(hub.config_path)],
        env=hub.env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        m[0]: tuple(int(x) for x in m[1].split(",") if x.strip())
        for m in re.findall(r"^\s+(\S+): .*\[([0-9, ]*)\](?: \(no longer in \S+\))?$", out, re.M)
    }


def test_gpu_server_gets_its_own_devices(hub: Hub):
    admin = hub.admin_token()
    alice, bob, carol = (hub.token(u) for u in ("alice", "bob", "carol"))
    assert spawn(hub, "alice", alice, {"profile": "gpu", "gpus": 2}).status_code in (201, 202)
    assert spawn(hub, "carol", carol, {"profile": "gpu", "gpu_type": "h100"}).status_code in (
        201,
        202,
    )
    assert spawn(hub, "bob", bob, {}).status_code in (201, 202)
    for user, tok in (("alice", alice), ("bob", bob), ("carol", carol)):
        hub.wait_ready(user, tok)
    env = {u: process_env(hub.server_pid(u, admin)) for u in ("alice", "bob", "carol")}
    assert env["alice"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["carol"]["CUDA_VISIBLE_DEVICES"] == "4"  # the only H100
    assert env["bob"]["CUDA_VISIBLE_DEVICES"] == ""  # CPU profile: no GPU
    assert env["bob"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert env["alice"]["HOME"] == str(hub.data_dir / "users" / "alice")
    # the server really answers through the proxy
    r = requests.get(f"{hub.url}/user/alice/api/status", headers=auth(alice), timeout=10)
    assert r.status_code == 200
    assert ledger_keys(hub) == {"server:alice/": (0, 1), "server:carol/": (4,)}
    # stopping releases the devices; the next server may reuse them
    hub.stop_server("alice", alice)
    assert ledger_keys(hub) == {"server:carol/": (4,)}
    assert spawn(hub, "alice", alice, {"profile": "gpu", "gpus": 1}).status_code in (201, 202)
    hub.wait_ready("alice", alice)
    assert process_env(hub.server_pid("alice", admin))["CUDA_VISIBLE_DEVICES"] == "0"


def test_form_lists_only_the_users_profiles(hub: Hub):
    def profiles(user: str, password: str | None = None) -> list[str]:
        page = login(hub, user, password).get(f"{hub.url}/hub/spawn", timeout=10).text
        return re.findall(r'name="profile" id="gh-profile-[^"]+" value="([^"]+)"', page)

    assert profiles("bob") == ["cpu", "gpu"]
    assert profiles("dave") == ["cpu"]  # in no GPU group
    assert profiles("admin", hub.admin_password) == ["cpu", "big"]
    # a name outside the config's groups cannot log in at all (allow_all is off)
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=10)
    r = s.post(
        f"{hub.url}/hub/login",
        data={
            "username": "zed",
            "password": hub.user_password("zed"),
            "_xsrf": s.cookies.get("_xsrf", ""),
        },
        timeout=10,
    )
    assert r.status_code == 403


def test_form_shows_live_numbers_and_disabled_choices(hub: Hub):
    alice = hub.token("alice")
    assert spawn(hub, "alice", alice, {"profile": "gpu", "gpus": 1}).status_code in (201, 202)
    page = login(hub, "bob").get(f"{hub.url}/hub/spawn", timeout=10).content.decode()
    assert '"free": 3' in page and '"total": 4' in page and '"source": "declared"' in page
    assert re.search(
        r'<option value="2" disabled>2 GPUs — group vision has 1 of 2 GPUs left', page
    ), page
    assert '<option value="1" >1 GPU</option>' in page


def test_form_post_spawns_and_denial_is_shown(hub: Hub):
    s = login(hub, "bob")
    xsrf = s.cookies.get("_xsrf", "")
    r = s.post(
        f"{hub.url}/hub/spawn/bob",
        timeout=60,
        data={
            "_xsrf": xsrf,
            "profile": "gpu",
            "image--gpu": "torch",
            "gpu_type--gpu": "a100",
            "gpus--gpu": "2",
        },
    )
    assert r.status_code == 200
    alice = hub.token("alice")
    hub.wait_ready("bob", hub.token("bob"))
    s2 = login(hub, "alice")
    r = s2.post(
        f"{hub.url}/hub/spawn/alice",
        timeout=60,
        data={
            "_xsrf": s2.cookies.get("_xsrf", ""),
            "profile": "gpu",
            "image--gpu": "torch",
            "gpu_type--gpu": "a100",
            "gpus--gpu": "1",
            "group--gpu": "vision",
        },
    )
    assert r.status_code == 403
    assert "group vision uses 2 of 2 GPUs: bob 2 (since" in r.content.decode()
    assert "" not in hub.user_model("alice", alice)["servers"]


def test_concurrent_spawns_never_exceed_quota(hub: Hub):
    users = [f"u{i}" for i in range(10)]
    tokens = {u: hub.token(u) for u in users}

    def go(u: str) -> requests.Response:
        return spawn(hub, u, tokens[u], {"profile": "gpu", "gpus": 1})

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = dict(zip(users, pool.map(go, users), strict=True))
    started = [u for u, r in results.items() if r.status_code in (201, 202)]
    denied = [u for u, r in results.items() if r.status_code == 403]
    assert len(started) == 2 and len(denied) == 8, {u: r.status_code for u, r in results.items()}
    for u in denied:
        msg = results[u].json()["message"]
        assert "group vision uses 2 of 2 GPUs:" in msg
        assert all(s in msg for s in started)
    for u in started:
        hub.wait_ready(u, tokens[u])
    for u in denied:
        assert "" not in hub.user_model(u, tokens[u])["servers"]
    assert sorted(ledger_keys(hub)) == sorted(f"server:{u}/" for u in started)


FORGED = [
    ({"profile": "nope"}, 400, "profile"),
    ({"profile": "gpu", "image": "ghcr.io/evil/miner:latest"}, 400, "image"),
    ({"profile": "gpu", "gpus": 0}, 400, "gpus"),
    ({"profile": "gpu", "gpus": -1}, 400, "gpus"),
    ({"profile": "gpu", "gpus": 1000}, 400, "gpus"),
    ({"profile": "gpu", "gpus": "2; rm -rf /"}, 400, "gpus"),
    ({"profile": "big"}, 400, "profile"),  # hidden profile
    ({"profile": "gpu", "group": "nlp"}, 400, "group"),  # another group to charge
    ({"profile": "gpu\n"}, 400, "profile"),  # trailing newline
    ({"profile": "gpu", "gpu_type": "a100\n"}, 400, "gpu_type"),
    ({"profile": "cpu", "extra_resource_limits": {"nvidia.com/gpu": 8}}, 400, "extra_resource"),
    # explicit null / "" is no way to ask for the default (README: a 400 naming the field)
    ({"profile": None}, 400, "profile: must not be null or empty"),
    ({"profile": "gpu", "image": ""}, 400, "image: must not be null or empty"),
    ({"profile": "gpu", "gpus": None}, 400, "gpus: must not be null or empty"),
    ({"profile": "gpu", "group": ""}, 400, "group: must not be null or empty"),
]


def test_forged_options_are_refused(hub: Hub):
    bob = hub.token("bob")
    for options, status, field in FORGED:
        r = spawn(hub, "bob", bob, options)
        assert r.status_code == status, (options, r.status_code, r.text)
        assert field in r.json()["message"], r.text
        assert "" not in hub.user_model("bob", bob)["servers"], options
    assert ledger_keys(hub) == {}


def test_ledger_rebuilt_after_kill9(hub: Hub, hub_factory):
    admin = hub.admin_token()
    alice, carol = hub.token("alice"), hub.token("carol")
    spawn(hub, "alice", alice, {"profile": "gpu", "gpus": 2})
    spawn(hub, "carol", carol, {"profile": "gpu", "gpu_type": "h100"})
    hub.wait_ready("alice", alice)
    hub.wait_ready("carol", carol)
    pids = {u: hub.server_pid(u, admin) for u in ("alice", "carol")}
    before = ledger_keys(hub)
    hub.kill9()
    # restart the same hub (same data dir and ports); servers kept running meanwhile
    hub.start()
    for pid in pids.values():
        assert Path(f"/proc/{pid}").exists()
    assert ledger_keys(hub) == before == {"server:alice/": (0, 1), "server:carol/": (4,)}
    assert hub.wait_ready("alice", alice)
    # the rebuilt ledger still enforces the quota and the devices
    bob = hub.token("bob")
    r = spawn(hub, "bob", bob, {"profile": "gpu"})
    assert r.status_code == 403 and "alice 2" in r.json()["message"]
    hub.stop_server("alice", alice)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pids['alice']}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ledger_keys(hub) == {"server:carol/": (4,)}
