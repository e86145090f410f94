"""A JupyterLab terminal of a user's real server, opened and typed into over the same REST
API and terminado websocket JupyterLab uses: it runs as the user's account with the
server's environment — gpuhub's ``python`` (not the system one a login shell's
``/etc/profile`` would give) and exactly the server's GPUs."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import requests
import websocket
from test_local_hub import spawn

from hubproc import Hub, auth, process_env

pytestmark = pytest.mark.integration
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(hub: Hub, server: dict, token: str, command: str, end: str) -> str:
    """Open a terminal, type ``command`` and return its output up to the line ``end``."""
    base = hub.url + server["url"]
    r = requests.post(f"{base}api/terminals", headers=auth(token), timeout=30)
    assert r.ok, r.text
    name = r.json()["name"]
    ws = websocket.create_connection(
        base.replace("http://", "ws://") + f"terminals/websocket/{name}",
        header=[f"Authorization: token {token}"],
        timeout=30,
    )
    out = ""
    try:
        ws.send(json.dumps(["stdin", command + "\r"]))
        deadline = time.monotonic() + 60
        while f"\n{end}" not in out.replace("\r", ""):
            assert time.monotonic() < deadline, f"no {end!r} from the terminal:\n{out}"
            kind, *data = json.loads(ws.recv())
            if kind == "stdout":
                out += data[0]
    finally:
        ws.close()
        requests.delete(f"{base}api/terminals/{name}", headers=auth(token), timeout=30)
    return ANSI.sub("", out.replace("\r", ""))


def test_terminal_has_the_servers_python_and_gpus(hub: Hub):
    token = hub.token("alice")
    assert spawn(hub, "alice", token, {"profile": "gpu", "gpus": 1}).status_code in (201, 202)
    server = hub.wait_ready("alice", token)
    env = process_env(hub.server_pid("alice", hub.admin_token()))
    python = shutil.which("python", path=env["PATH"])
    assert python and not python.startswith("/usr/bin"), env["PATH"]
    # the markers are printed by the shell, so the echoed command line never matches them
    out = run_in_terminal(
        hub,
        server,
        token,
        'echo "py=$(command -v python)"; echo "gpus=$CUDA_VISIBLE_DEVICES"; '
        'echo "me=$(id -un)"; echo "d""one"',
        "done",
    )
    lines = out.splitlines()
    assert f"py={python}" in lines, out
    assert f"gpus={env['CUDA_VISIBLE_DEVICES']}" in lines and env["CUDA_VISIBLE_DEVICES"], out
    assert f"me={env['USER']}" in lines and env["USER"] != "root", out
    hub.stop_server("alice", token)
