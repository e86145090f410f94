"""The VS Code JupyterHub extension's connection flow, step by step, against the embedded
hub (see ../shared/reference/vscode-jupyterhub.md §1): password → token, start the server,
kernelspecs, a session, code run over the kernel websocket with the Authorization header.

The extension starts servers with no options: they get the options the user saved on the
spawn form ("Use these options for VS Code and API starts"), charged to the quota like any
spawn; named servers too."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests
import websocket
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)

from hubproc import Hub, auth

CODE = "import os\nprint(6*7, repr(os.environ['CUDA_VISIBLE_DEVICES']))"

pytestmark = pytest.mark.integration
SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"


def _msg(msg_type: str, content: dict, session: str) -> dict:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "vscode",
            "session": session,
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
    }


def _send(ws: websocket.WebSocket, channel: str, msg: dict) -> str:
    ws.send_binary(serialize_msg_to_ws_v1(msg, channel, pack=lambda d: json.dumps(d).encode()))
    return str(msg["header"]["msg_id"])


def _recv(ws: websocket.WebSocket) -> tuple[str, dict]:
    data = ws.recv()
    channel, parts = deserialize_msg_from_ws_v1(data if isinstance(data, bytes) else data.encode())
    header, parent, _meta, content = (json.loads(p) for p in parts[:4])
    return channel, {"header": header, "parent_header": parent, "content": content}


def run_in_kernel(hub: Hub, server: dict, token: str, code: str = CODE) -> str:
    """Steps 5-7: kernelspecs, a session, ``code`` run over the kernel websocket (v1
    subprotocol, Authorization header); its stdout."""
    base = hub.url + server["url"]
    specs = requests.get(f"{base}api/kernelspecs", headers=auth(token), timeout=10)
    assert specs.ok and "python3" in specs.json()["kernelspecs"]
    assert requests.get(f"{base}api/sessions", headers=auth(token), timeout=10).ok
    assert requests.get(f"{base}api/kernels", headers=auth(token), timeout=10).ok
    r = requests.post(
        f"{base}api/sessions",
        headers=auth(token),
        timeout=30,
        json={
            "path": "vscode.ipynb",
            "name": "vscode.ipynb",
            "type": "notebook",
            "kernel": {"name": "python3"},
        },
    )
    assert r.status_code == 201, r.text
    kernel_id, session_id = r.json()["kernel"]["id"], r.json()["id"]
    ws_url = base.replace("http://", "ws://") + (
        f"api/kernels/{kernel_id}/channels?session_id={session_id}"
    )
    ws = websocket.create_connection(
        ws_url, header=[f"Authorization: token {token}"], subprotocols=[SUBPROTOCOL], timeout=30
    )
    try:
        assert ws.getsubprotocol() == SUBPROTOCOL
        session = uuid.uuid4().hex
        _send(ws, "shell", _msg("kernel_info_request", {}, session))
        msg_id = _send(
            ws,
            "shell",
            _msg(
                "execute_request",
                {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                },
                session,
            ),
        )
        # the reply (shell) and the output (iopub) travel on different channels: wait for
        # the reply and for iopub's "idle", which the kernel sends after all the output
        out, reply, idle = "", None, False
        deadline = time.monotonic() + 60
        while (reply is None or not idle) and time.monotonic() < deadline:
            channel, msg = _recv(ws)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if channel == "iopub" and kind == "stream":
                out += msg["content"]["text"]
            if channel == "iopub" and kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
            if channel == "shell" and kind == "execute_reply":
                reply = msg["content"]
        assert reply is not None and reply["status"] == "ok"
        return out
    finally:
        ws.close()


def vscode_token(hub: Hub, user: str) -> str:
    """Step 2: a token from the user name and password, as the extension makes one."""
    r = requests.post(
        f"{hub.api}/users/{user}/tokens",
        timeout=10,
        json={"auth": {"username": user, "password": hub.user_password(user)}, "note": "VS Code"},
    )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["token"])


def vscode_start(hub: Hub, user: str, token: str, name: str = "") -> requests.Response:
    """Steps 3-4: the user model (with stopped servers, for a named one), then a start
    with no options, as the extension sends it (no body)."""
    model = requests.get(
        f"{hub.api}/users/{user}?include_stopped_servers", headers=auth(token), timeout=10
    )
    assert model.ok, model.text
    assert not (model.json()["servers"].get(name) or {}).get("ready")
    return requests.post(hub.server_path(user, name), headers=auth(token), timeout=60)


def save_default_on_form(hub: Hub, user: str, **fields: str) -> None:
    """A person ticks "Use these options for VS Code and API starts" on the spawn form
    and starts the server (GPU profile, A100, PyTorch); the server is then stopped."""
    s = hub.login(user)
    page = s.get(f"{hub.url}/hub/spawn", timeout=10).text
    assert 'name="save_default"' in page and "Nothing saved" in page
    r = s.post(
        f"{hub.url}/hub/spawn/{user}",
        timeout=60,
        data={
            "_xsrf": s.cookies.get("_xsrf", ""),
            "profile": "gpu",
            "image--gpu": "torch",
            "gpu_type--gpu": "a100",
            "gpus--gpu": "1",
            "save_default": "on",
            **fields,
        },
    )
    assert r.status_code == 200, r.text
    token = hub.token(user)
    hub.wait_ready(user, token)
    hub.stop_server(user, token)
    page = s.get(f"{hub.url}/hub/spawn", timeout=10).text
    assert "Saved for VS Code and API starts: profile gpu, 1 a100 GPU, image torch" in page


def ledger(hub: Hub) -> str:
    """``gpuhub-config usage`` as an admin runs it."""
    out = hub.cli("usage", str(hub.config_path))
    assert out.returncode == 0, out.stderr
    return str(out.stdout)


def test_vscode_jupyterhub_extension_flow(hub: Hub):
    # 1. base-URL detection, no auth
    assert "version" in requests.get(f"{hub.api}", timeout=10).json()
    # 2. the password tried as a token fails; then a token from username + password
    password = hub.user_password("alice")
    r = requests.get(f"{hub.api}/users/alice", headers=auth(password), timeout=10)
    assert r.status_code == 403
    r = requests.post(
        f"{hub.api}/users/alice/tokens",
        timeout=10,
        json={"auth": {"username": "alice", "password": password}, "note": "VS Code"},
    )
    assert r.status_code in (200, 201), r.text
    token, token_id = r.json()["token"], r.json()["id"]
    # a wrong password gets no token
    bad = requests.post(
        f"{hub.api}/users/alice/tokens",
        timeout=10,
        json={"auth": {"username": "alice", "password": "wrong-password"}},
    )
    assert bad.status_code == 403
    # 3-4. user model, start the (GPU) server, poll until ready as the extension does
    assert requests.get(f"{hub.api}/users/alice", headers=auth(token), timeout=10).ok
    started = time.monotonic()
    r = requests.post(
        f"{hub.api}/users/alice/server",
        headers=auth(token),
        timeout=60,
        json={"profile": "gpu", "gpus": 1},
    )
    assert r.status_code in (201, 202), r.text
    server = hub.wait_ready("alice", token)
    ready_after = time.monotonic() - started
    base = hub.url + server["url"]
    # negative checks: ?token= alone is refused; no auth on POST → _xsrf error
    assert requests.get(f"{base}api/kernels?token={token}", timeout=10).status_code == 403
    noauth = requests.post(f"{base}api/sessions", json={}, timeout=10)
    assert noauth.status_code == 403 and "_xsrf" in noauth.text
    # 5-7. kernelspecs, a session, code over the websocket; the kernel inherits the
    # server's GPU isolation
    assert run_in_kernel(hub, server, token).strip() == "42 '0'"
    # 8. removing the server entry deletes the token
    r = requests.delete(f"{hub.api}/users/alice/tokens/{token_id}", headers=auth(token), timeout=10)
    assert r.status_code == 204
    assert (
        requests.get(f"{hub.api}/users/alice", headers=auth(token), timeout=10).status_code == 403
    )
    print(f"server ready {ready_after:.1f}s after the start request (VS Code waits ~10 s)")


def test_vscode_start_uses_the_default_saved_on_the_form_across_a_hub_restart(hub: Hub):
    save_default_on_form(hub, "alice")
    # the server's last options are now CPU ones: an empty start without the saved
    # default would get those
    alice = hub.token("alice")
    r = requests.post(
        hub.server_path("alice"), json={"profile": "cpu"}, headers=auth(alice), timeout=60
    )
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", alice)
    hub.stop_server("alice", alice)
    hub.terminate()
    hub.start()
    token = vscode_token(hub, "alice")
    started = time.monotonic()
    r = vscode_start(hub, "alice", token)
    assert r.status_code in (201, 202), r.text
    server = hub.wait_ready("alice", token)
    ready_after = time.monotonic() - started
    assert server["user_options"] == {
        "profile": "gpu",
        "image": "torch",
        "gpu_type": "a100",
        "gpus": "1",
    }
    assert run_in_kernel(hub, server, token).strip() == "42 '0'"
    assert "server:alice/: " in ledger(hub)
    print(f"server ready {ready_after:.1f}s after the empty start (VS Code waits ~10 s)")
    # the person forgets the default on the form while starting a CPU server; an empty
    # start then gets the server's last options again
    hub.stop_server("alice", token)
    s = hub.login("alice")
    page = s.get(f"{hub.url}/hub/spawn", timeout=10).text
    assert 'value="forget"' in page and "Nothing saved" not in page
    r = s.post(
        f"{hub.url}/hub/spawn/alice",
        timeout=60,
        data={"_xsrf": s.cookies.get("_xsrf", ""), "profile": "cpu", "save_default": "forget"},
    )
    assert r.status_code == 200, r.text
    hub.wait_ready("alice", token)
    hub.stop_server("alice", token)
    assert "Nothing saved" in s.get(f"{hub.url}/hub/spawn", timeout=10).text
    r = vscode_start(hub, "alice", token)
    assert r.status_code in (201, 202), r.text
    assert hub.wait_ready("alice", token)["user_options"] == {"profile": "cpu"}
    assert "server:alice/" not in ledger(hub)


def test_vscode_start_of_a_named_gpu_server_beside_a_cpu_server(hub: Hub):
    save_default_on_form(hub, "alice")
    alice = hub.token("alice")
    r = requests.post(
        hub.server_path("alice"), json={"profile": "cpu"}, headers=auth(alice), timeout=60
    )
    assert r.status_code in (201, 202), r.text
    cpu = hub.wait_ready("alice", alice)
    # VS Code: the named server "train" was never started; an empty start gets the
    # saved GPU default, charged under the server's own ledger key
    token = vscode_token(hub, "alice")
    r = vscode_start(hub, "alice", token, "train")
    assert r.status_code in (201, 202), r.text
    gpu = hub.wait_ready("alice", token, name="train")
    assert gpu["url"] == "/user/alice/train/"
    assert run_in_kernel(hub, gpu, token).strip() == "42 '0'"
    assert run_in_kernel(hub, cpu, token).strip() == "42 ''"
    usage = ledger(hub)
    assert "server:alice/train: " in usage and "server:alice/: " not in usage
    # stopping the named server gives its GPU back; the CPU server runs on
    hub.stop_server("alice", token, name="train")
    assert "server:alice/train" not in ledger(hub)
    assert hub.user_model("alice", token)["servers"][""]["ready"]


HOLDERS = re.compile(
    r"Not enough GPU quota: group vision uses 2 of 2 GPUs: "
    r"u1 1 \(since \d\d:\d\d\), u2 1 \(since \d\d:\d\d\) — you asked for 1 A100 GPU"
)


def test_vscode_start_over_quota_answers_the_denial_and_a_stale_default_is_refused(hub: Hub):
    save_default_on_form(hub, "bob")
    for user in ("u1", "u2"):
        token = hub.token(user)
        r = requests.post(
            hub.server_path(user),
            json={"profile": "gpu", "gpus": 1},
            headers=auth(token),
            timeout=60,
        )
        assert r.status_code in (201, 202), r.text
    token = vscode_token(hub, "bob")
    r = vscode_start(hub, "bob", token)
    assert r.status_code == 403, r.text
    assert r.json()["status"] == 403
    assert HOLDERS.fullmatch(r.json()["message"]), r.json()["message"]
    assert "" not in hub.user_model("bob", token)["servers"]
    # bob leaves group vision: his saved GPU default is refused, saying why
    config = dict(hub.config)
    groups = dict(config["groups"])
    groups["vision"] = [u for u in groups["vision"] if u != "bob"]
    groups["guests"] = [*groups["guests"], "bob"]
    hub.write_config({**config, "groups": groups})
    out = hub.cli("reload", str(hub.config_path))
    assert out.returncode == 0, out.stderr
    r = vscode_start(hub, "bob", token)
    assert r.status_code == 400, r.text
    assert r.json()["message"] == (
        "Invalid spawn option profile: your saved default for VS Code and API starts "
        "(profile gpu, 1 a100 GPU, image torch) is no longer available: profile 'gpu' is "
        "not available to you (choose one of: cpu): it is for groups vision, nlp and your "
        "groups are guests. Start a server from the spawn form with “Use these options for "
        "VS Code and API starts” to save new ones"
    )
    # options sent explicitly still work
    r = requests.post(
        hub.server_path("bob"), json={"profile": "cpu"}, headers=auth(token), timeout=60
    )
    assert r.status_code in (201, 202), r.text
