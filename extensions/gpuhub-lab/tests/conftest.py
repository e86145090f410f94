"""Fixtures for the in-process tier: a Jupyter server with gpuhub_lab, and a stand-in upstream.

The stand-in upstream is a small tornado app that records what the server extension sends and
answers from a route table.  It is used ONLY here; the integration test against the real jobs
service lives with the service (it points ``c.GpuhubLabApp.jobs_url``/``api_token`` at it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.testing
import tornado.web

pytest_plugins = ["pytest_jupyter.jupyter_server"]

SERVICE_PREFIX = "/services/gpuhub-jobs/"
HUB_TOKEN = "secret-hub-token"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Upstream:
    """Route table ``(method, path) -> (status, body)`` plus the requests seen."""

    url: str
    routes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def answer(self, method: str, path: str, status: int, body: Any) -> None:
        self.routes[(method, SERVICE_PREFIX + path)] = (status, body)


class _RecordingHandler(tornado.web.RequestHandler):
    def initialize(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def _handle(self) -> None:
        request = self.request
        self.upstream.requests.append(
            Recorded(
                method=request.method or "",
                path=request.path,
                query={k: [v.decode() for v in vs] for k, vs in request.query_arguments.items()},
                headers=dict(request.headers),
                body=request.body,
            )
        )
        status, body = self.upstream.routes.get(
            (request.method or "", request.path),
            (404, {"status": 404, "field": None, "message": "no such route in the stand-in"}),
        )
        self.set_status(status)
        if isinstance(body, bytes):
            self.set_header("Content-Type", "text/html")
            self.finish(body)
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body))

    def get(self) -> None:
        self._handle()

    def post(self) -> None:
        self._handle()

    def delete(self) -> None:
        self._handle()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run under pytest-asyncio's auto mode (the repository root's config).

    In auto mode pytest-asyncio runs these coroutines in its own loop, not in the loop that
    serves pytest-jupyter's server, and every request would time out.  This folder has its own
    pytest config (``extensions/gpuhub-lab/pyproject.toml``): run it on its own.
    """
    try:
        mode = config.getini("asyncio_mode")
    except ValueError:  # pytest-asyncio is not installed
        return
    here = Path(__file__).parent
    if mode == "auto" and any(item.path.is_relative_to(here) for item in items):
        raise pytest.UsageError(
            "run the gpuhub-lab server-extension tests in their own pytest invocation "
            "(`pytest extensions/gpuhub-lab/tests`): they need pytest-jupyter's event loop, "
            "not asyncio_mode=auto"
        )


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"gpuhub_lab": True}}}


@pytest.fixture
def upstream(jp_asyncio_loop):
    """A stand-in jobs service on a free local port, in the server's event loop."""
    sock, port = tornado.testing.bind_unused_port()
    state = Upstream(url=f"http://127.0.0.1:{port}{SERVICE_PREFIX}")
    app = tornado.web.Application([(r".*", _RecordingHandler, {"upstream": state})])

    async def start() -> tornado.httpserver.HTTPServer:
        server = tornado.httpserver.HTTPServer(app)
        server.add_socket(sock)
        return server

    server = jp_asyncio_loop.run_until_complete(start())
    yield state
    server.stop()
    jp_asyncio_loop.run_until_complete(server.close_all_connections())
    sock.close()


@pytest.fixture
def service_env(monkeypatch, upstream):
    """The single-user server's environment as the hub would set it."""
    monkeypatch.setenv("GPUHUB_JOBS_URL", upstream.url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", HUB_TOKEN)
    return upstream
