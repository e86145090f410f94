"""The VS Code JupyterHub extension's connection flow, step by step, against the embedded
hub (see ../shared/reference/vscode-jupyterhub.md §1): password → token, start the server,
kernelspecs, a session, code run over the kernel websocket with the Authorization header."""

from __future__ import annotations

import json
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
    # 5. the plain Jupyter server REST API with the header
    specs = requests.get(f"{base}api/kernelspecs", headers=auth(token), timeout=10)
    assert specs.ok and "python3" in specs.json()["kernelspecs"]
    assert requests.get(f"{base}api/sessions", headers=auth(token), timeout=10).ok
    assert requests.get(f"{base}api/kernels", headers=auth(token), timeout=10).ok
    # negative checks: ?token= alone is refused; no auth on POST → _xsrf error
    assert requests.get(f"{base}api/kernels?token={token}", timeout=10).status_code == 403
    noauth = requests.post(f"{base}api/sessions", json={}, timeout=10)
    assert noauth.status_code == 403 and "_xsrf" in noauth.text
    # 6. a session (no _xsrf needed with the header)
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
    # 7. kernel websocket, v1 subprotocol, Authorization header
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
        code = "import os\nprint(6*7, repr(os.environ['CUDA_VISIBLE_DEVICES']))"
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
        # the kernel inherits the server's GPU isolation
        assert out.strip() == "42 '0'"
    finally:
        ws.close()
    # 8. removing the server entry deletes the token
    r = requests.delete(f"{hub.api}/users/alice/tokens/{token_id}", headers=auth(token), timeout=10)
    assert r.status_code == 204
    assert (
        requests.get(f"{hub.api}/users/alice", headers=auth(token), timeout=10).status_code == 403
    )
    print(f"server ready {ready_after:.1f}s after the start request (VS Code waits ~10 s)")
