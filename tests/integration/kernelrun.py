"""Run code in a user's kernel as a person's notebook does: a session through the hub's
proxy, then an ``execute_request`` over the kernel websocket (v1 subprotocol), reading the
output until the kernel is idle again (iopub ``status``), or until it dies."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
import websocket
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)

SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"


@dataclass
class Result:
    status: str  # "ok", "error", or "died" (the kernel went away)
    stdout: str


class Kernel:
    """One kernel of ``user``'s running server, driven over its websocket."""

    def __init__(self, hub_url: str, user: str, token: str, timeout: float = 60) -> None:
        self.base = f"{hub_url}/user/{user}/"
        self.headers = {"Authorization": f"token {token}"}
        r = requests.post(
            f"{self.base}api/sessions",
            headers=self.headers,
            timeout=timeout,
            json={
                "path": f"{uuid.uuid4().hex}.ipynb",
                "type": "notebook",
                "kernel": {"name": "python3"},
            },
        )
        r.raise_for_status()
        self.kernel_id = r.json()["kernel"]["id"]
        url = self.base.replace("http://", "ws://") + (
            f"api/kernels/{self.kernel_id}/channels?session_id={r.json()['id']}"
        )
        self.ws = websocket.create_connection(
            url,
            header=[f"Authorization: token {token}"],
            subprotocols=[SUBPROTOCOL],
            timeout=timeout,
        )
        self.session = uuid.uuid4().hex

    def run(self, code: str, timeout: float = 120) -> Result:
        msg_id = uuid.uuid4().hex
        msg = {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": "test",
                "session": self.session,
                "date": datetime.now(UTC).isoformat(),
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
            },
        }
        self.ws.send_binary(
            serialize_msg_to_ws_v1(msg, "shell", pack=lambda d: json.dumps(d).encode())
        )
        out, status, idle = "", None, False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.ws.recv()
            except (websocket.WebSocketException, OSError):
                return Result("died", out)
            channel, parts = deserialize_msg_from_ws_v1(
                data if isinstance(data, bytes) else data.encode()
            )
            header, parent, _meta, content = (json.loads(p) for p in parts[:4])
            if header["msg_type"] == "status" and content.get("execution_state") in (
                "dead",
                "restarting",
            ):
                return Result("died", out)
            if parent.get("msg_id") != msg_id:
                continue
            if channel == "iopub" and header["msg_type"] == "stream":
                out += content["text"]
            elif channel == "shell" and header["msg_type"] == "execute_reply":
                status = content["status"]
            elif header["msg_type"] == "status" and content["execution_state"] == "idle":
                idle = True
            if status and idle:  # the reply and the end of output may come in either order
                return Result(status, out)
        raise TimeoutError(f"no reply in {timeout}s; output so far: {out!r}")

    def close(self) -> None:
        self.ws.close()
