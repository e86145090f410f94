"""This server's GPUs: ``{base_url}/gpuhub/gpu...`` -> the gpuhub monitor, for *this*
server only.

The browser chooses neither the server nor the operation's arguments: the server name comes
from the server's own environment (``$JUPYTERHUB_SERVER_NAME``), the token is the server's
(``$JUPYTERHUB_API_TOKEN``), and only three operations exist (status, keep it, give back);
whatever body the browser sends is ignored.
"""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from .handlers import ForwardingHandler

MONITOR_NOT_CONFIGURED = (
    "the gpuhub monitor is not configured for this server "
    "(set GPUHUB_MONITOR_URL or c.GpuhubLabApp.monitor_url)"
)


def this_server(answer: Any, name: str) -> dict[str, Any]:
    """From the monitor's ``GET api/servers`` (the user's servers), what concerns server
    ``name``: ``{"server": its entry or None (no GPUs), "culled": its given-back entries}``."""
    data = answer if isinstance(answer, dict) else {}
    servers = [s for s in data.get("servers") or () if isinstance(s, dict)]
    culled = [c for c in data.get("culled") or () if isinstance(c, dict)]
    return {
        "server": next((s for s in servers if s.get("server") == name), None),
        "culled": [c for c in culled if c.get("server") == name],
    }


class MonitorHandler(ForwardingHandler):
    """Forward to the monitor, about this server."""

    upstream_name = "gpuhub monitor"
    not_configured = MONITOR_NOT_CONFIGURED

    def upstream_url(self) -> str:
        return self.gpuhub.monitor_upstream_url()

    @property
    def this_body(self) -> dict[str, Any]:
        """The body of ``keep`` and ``give-back``: this server, never the browser's."""
        return {"server": self.gpuhub.server_name()}


class GpuStatusHandler(MonitorHandler):
    """``GET /gpuhub/gpu``: this server's GPUs, utilisation and warning (``server`` is
    ``null`` on a CPU server), and its servers given back."""

    @tornado.web.authenticated
    async def get(self) -> None:
        got = await self.fetch_upstream("GET", "api/servers")
        if got is None:
            return
        response, base = got
        try:
            answer = json.loads(response.body or b"")
        except ValueError:
            answer = None
        if response.code != 200 or answer is None:
            self.pass_through(response, base)
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(this_server(answer, self.gpuhub.server_name())))


class KeepHandler(MonitorHandler):
    """``POST /gpuhub/gpu/keep``: "keep it" (the idle clock of this server restarts)."""

    @tornado.web.authenticated
    async def post(self) -> None:
        await self.forward("POST", "api/keep", body=self.this_body)


class GiveBackHandler(MonitorHandler):
    """``POST /gpuhub/gpu/give-back``: restart this server on a CPU profile (202)."""

    @tornado.web.authenticated
    async def post(self) -> None:
        await self.forward("POST", "api/give-back", body=self.this_body)
