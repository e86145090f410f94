"""The process node's kubelet HTTPS endpoint: container logs for ``kubectl logs``.

The apiserver proxies ``GET pods/<name>/log`` to
``https://<node InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>/containerLogs/<ns>/<pod>/<c>``.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# (namespace, pod, container) -> (log file, is the container still running?)
LogLocator = Callable[[str, str, str], tuple[Path, Callable[[], bool]] | None]


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class _Handler(BaseHTTPRequestHandler):
    locate: LogLocator

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404, "only /containerLogs/<ns>/<pod>/<container> is served")
            return
        query = dict(urllib.parse.parse_qsl(url.query))
        if query.get("previous") == "true":
            self.send_error(400, "the process node keeps no previous containers")
            return
        found = type(self).locate(parts[1], parts[2], parts[3])
        if found is None:
            self.send_error(404, f"container {parts[3]} of pod {parts[1]}/{parts[2]} not found")
            return
        path, running = found
        data = path.read_bytes() if path.exists() else b""
        if "tailLines" in query:
            data = _tail(data, int(query["tailLines"]))
        if "limitBytes" in query:
            data = data[: int(query["limitBytes"])]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(data)
        if query.get("follow") == "true":
            self._follow(path, path.stat().st_size if path.exists() else 0, running)

    def _follow(self, path: Path, offset: int, running: Callable[[], bool]) -> None:
        while True:
            alive = running()
            with path.open("rb") as log:
                log.seek(offset)
                chunk = log.read()
            if chunk:
                offset += len(chunk)
                self.wfile.write(chunk)
                self.wfile.flush()
            elif not alive:
                return
            time.sleep(0.2)


def serve_logs(
    host: str, port: int, cert: Path, key: Path, locate: LogLocator
) -> ThreadingHTTPServer:
    """Start the HTTPS log server in a daemon thread; returns the server (``shutdown()``)."""
    handler = type("LogHandler", (_Handler,), {"locate": staticmethod(locate)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="kubelet-logs", daemon=True).start()
    return server
