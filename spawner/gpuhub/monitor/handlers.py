"""Thin tornado handlers of the monitor: a user's GPU servers and warnings, "keep it",
"give the GPUs back" and Prometheus ``/metrics``.  Callers send a hub token
(``Authorization: token …``); errors are answered as ``{"status", "message"}`` with the
status of their type.  The admin's GPU page, with its browser login, is
:mod:`gpuhub.monitor.adminhandlers`."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tornado import web

from ..errors import GpuhubError, OptionError
from ..jobs.errors import HubUnavailable, NotAllowed, NotAuthenticated
from .adminhandlers import page_routes
from .giveback import cpu_profile_for
from .metrics import CONTENT_TYPE, render
from .service import MonitorService, held_json
from .state import Held, server_key

_TOKEN = re.compile(r"(?:token|bearer)\s+(\S+)", re.IGNORECASE)
METRICS_SCOPE = "read:metrics"


class NoSuchServer(GpuhubError):
    status = 404


class BeingStopped(GpuhubError):
    status = 409


class BaseHandler(web.RequestHandler):
    @property
    def service(self) -> MonitorService:
        svc: MonitorService = self.settings["gpuhub_monitor"]
        return svc

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API: no cookies are accepted, so no XSRF check."""

    async def token_model(self) -> dict[str, Any]:
        """The hub's model of the token in ``Authorization`` (its owner and scopes)."""
        m = _TOKEN.fullmatch(self.request.headers.get("Authorization", "").strip())
        if not m:
            raise NotAuthenticated("send a hub token: 'Authorization: token <token>'")
        hub_auth = self.settings["hub_auth"]
        try:
            model = await hub_auth.user_for_token(m.group(1), sync=False)
        except web.HTTPError as e:
            if e.status_code < 500:
                raise
            raise HubUnavailable("the hub is not answering (restarting?); try again") from e
        if not model:
            raise NotAuthenticated("the hub does not accept this token")
        return dict(model)

    async def user(self) -> str:
        """The calling user, who must be allowed to reach this service."""
        model = await self.token_model()
        hub_auth = self.settings["hub_auth"]
        if model.get("kind", "user") != "user":
            raise NotAllowed("only users have GPU servers")
        if not hub_auth.check_scopes(hub_auth.access_scopes, model):
            raise NotAllowed("this token may not use the gpuhub-monitor service")
        return str(model["name"])

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, GpuhubError):
            status_code, message = exc.status, exc.message
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, GpuhubError) and value.expected:
            from tornado.log import app_log

            app_log.warning(
                "gpuhub-monitor %s %s: %s", self.request.method, self.request.path, value
            )
            return
        super().log_exception(typ, value, tb)


def server_name(body: bytes) -> str:
    """The ``server`` of a ``{"server": name}`` body (``""``: the default server)."""
    try:
        data = json.loads(body or b"{}")
    except ValueError as e:
        raise OptionError("body", f"is not valid JSON: {e}") from e
    name = data.get("server", "") if isinstance(data, dict) else None
    if not isinstance(name, str) or len(name) > 255:
        raise OptionError("server", 'must be a server name ("" for the default server)')
    return name


def own_gpu_server(svc: MonitorService, user: str, name: str) -> Held:
    """``user``'s GPU server ``name``, not being given back: 404 / 409 otherwise."""
    key = server_key(user, name)
    held = svc.monitor.held.get(key)
    if held is None or held.server is None:
        raise NoSuchServer(f"you have no GPU server {name!r}")
    if key in svc.culling:
        raise BeingStopped(f"server {name!r} is already being given back")
    return held


class ServersHandler(BaseHandler):
    async def get(self) -> None:
        self.write_json(self.service.view(await self.user()))


class KeepHandler(BaseHandler):
    async def post(self) -> None:
        user = await self.user()
        name = server_name(self.request.body)
        svc = self.service
        held = own_gpu_server(svc, user, name)
        kept = svc.monitor.keep(held.alloc.key, time.time())
        if kept is None:
            raise NoSuchServer(f"you have no GPU server {name!r}")
        self.write_json(held_json(kept))


class GiveBackHandler(BaseHandler):
    """``POST api/give-back {"server": name}``: restart the caller's GPU server on a CPU
    profile they may use (202; the stop and the start follow in the background)."""

    async def post(self) -> None:
        user = await self.user()
        name = server_name(self.request.body)
        svc = self.service
        own_gpu_server(svc, user, name)  # 404 before asking the hub anything
        groups = await svc.hub.groups(user)
        # from here to give_back() no await: a second give-back or a cull gets 409
        held = own_gpu_server(svc, user, name)
        if held.server is None or not held.server.ready:
            raise BeingStopped(f"server {name!r} is still starting; give it back once it runs")
        cfg = svc.active.get()
        target = cpu_profile_for(cfg, groups, held.policy)
        svc.give_back(held, target.slug, cfg)
        image = held.server.image
        self.write_json(
            {
                "server": name,
                "profile": target.slug,
                "profile_name": target.display_name,
                "image": image if image in target.images else None,
            },
            status=202,
        )


class MetricsHandler(BaseHandler):
    async def get(self) -> None:
        model = await self.token_model()
        if not self.settings["hub_auth"].check_scopes({METRICS_SCOPE}, model):
            raise NotAllowed(f"reading metrics needs a token with the {METRICS_SCOPE} scope")
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(render(self.service.metrics))


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        raise web.HTTPError(404)


def routes(prefix: str) -> list[Any]:
    p = prefix.rstrip("/")
    return [
        (rf"{p}/api/servers", ServersHandler),
        (rf"{p}/api/keep", KeepHandler),
        (rf"{p}/api/give-back", GiveBackHandler),
        (rf"{p}/metrics", MetricsHandler),
        (p, web.RedirectHandler, {"url": f"{p}/"}),
        *page_routes(prefix),
    ]
