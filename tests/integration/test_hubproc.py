"""The hub harness starts *our* hub: a port taken by another process between the harness
picking it and the proxy binding it is detected (the bind failure, or a foreign process
answering), and the hub starts again on fresh ports."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from hubproc import Hub, listening_pids
from localconfig import CONFIG

pytestmark = pytest.mark.integration


class ImpostorHandler(BaseHTTPRequestHandler):
    """Another process's server that answers like a hub API (JSON with a version)."""

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"version": "impostor"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImpostorHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_taken_proxy_port_is_not_taken_for_our_hub(
    tmp_path: Path, impostor: ThreadingHTTPServer, _need_proxy: None
):
    taken = int(impostor.server_address[1])
    assert requests.get(f"http://127.0.0.1:{taken}/hub/api/", timeout=5).json()["version"]
    hub = Hub(tmp_path / "hub", copy.deepcopy(CONFIG), port=taken)
    try:
        hub.start()
        assert hub.port != taken
        info = requests.get(f"{hub.api}/", timeout=10).json()
        assert info["version"] != "impostor"
        assert all(hub.owns(pid) for pid in listening_pids(hub.port))
    finally:
        hub.stop()
