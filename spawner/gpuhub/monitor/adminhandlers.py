"""The admin's GPU page (``/services/gpuhub-monitor/``): browser login through the hub's
OAuth (a cookie of this service), or a hub token in ``Authorization``.  Only callers
whose token holds :data:`gpuhub.scopes.MONITOR_ADMIN` see it; anyone else gets a 403
page naming nobody but themselves.  The POSTs (stop, cancel) need the XSRF token the
page carries when the caller came with the cookie.  Thin: the view model is
:mod:`gpuhub.monitor.adminpage`, the actions :mod:`gpuhub.monitor.admin`."""

from __future__ import annotations

import re
import time
from functools import cache
from typing import Any
from urllib.parse import urlencode

import jinja2
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado import web

from ..errors import GpuhubError, OptionError
from ..scopes import MONITOR_ADMIN
from .admin import AdminDesk
from .adminpage import DEFAULT_PERIOD, PERIODS, AdminPage, parse_period, stamp

NOTICE_COOKIE = "gpuhub-monitor-notice"
_JOB_ID = re.compile(r"[0-9a-f]{1,64}")
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class NotAdmin(GpuhubError):
    status = 403


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gpuhub", "templates/monitor"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def render_page(page: AdminPage, *, user: str, prefix: str, xsrf: str, notice: str) -> str:
    return (
        _env()
        .get_template("admin.html")
        .render(
            page=page,
            user=user,
            prefix=prefix,
            xsrf=xsrf,
            notice=notice,
            periods=PERIODS,
            custom_date="" if page.period in PERIODS else page.period,
            clock=lambda t: stamp(t, page.now),
        )
    )


class PageBase(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """Identifies the caller with the hub without blocking the event loop, and answers
    errors as a small HTML page."""

    def initialize(self) -> None:
        self.hub_auth = self.settings["hub_auth"]

    @property
    def desk(self) -> AdminDesk:
        desk: AdminDesk = self.settings["gpuhub_admin"]
        return desk

    @property
    def prefix(self) -> str:
        return str(self.settings["gpuhub_prefix"])

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", _CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")

    async def prepare(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        self._hub_auth_user_cache = None
        if model:
            try:
                self._hub_auth_user_cache = self.check_hub_user(model)
            except UserNotAllowed:
                raise NotAdmin("this sign-in may not use the gpuhub-monitor service") from None

    def admin(self) -> str:
        """The calling admin's name; :class:`NotAdmin` for anyone else."""
        model: dict[str, Any] = self.current_user
        if not self.hub_auth.check_scopes({MONITOR_ADMIN}, model):
            raise NotAdmin(
                f"The GPU page is for the hub's admins. You are signed in as "
                f"{model.get('name')!s}, without the {MONITOR_ADMIN} scope."
            )
        return str(model["name"])

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, GpuhubError):
            status_code, message = exc.status, exc.message
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_status(status_code)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        html = (
            _env()
            .get_template("error.html")
            .render(status=status_code, message=message, prefix=self.prefix)
        )
        self.finish(html)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, GpuhubError) and value.expected:
            from tornado.log import app_log

            app_log.warning(
                "gpuhub-monitor %s %s: %s", self.request.method, self.request.path, value
            )
            return
        super().log_exception(typ, value, tb)


class AdminPageHandler(PageBase):
    @web.authenticated
    async def get(self) -> None:
        user = self.admin()
        page = await self.desk.page(self.get_query_argument("since", None))
        raw = self.get_secure_cookie(NOTICE_COOKIE, max_age_days=1)
        if raw is not None:
            self.clear_cookie(NOTICE_COOKIE, path=self.prefix)
        xsrf = self.xsrf_token
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            render_page(
                page,
                user=user,
                prefix=self.prefix,
                xsrf=xsrf.decode() if isinstance(xsrf, bytes) else str(xsrf),
                notice=raw.decode("utf-8", "replace") if raw else "",
            )
        )


class ActionBase(PageBase):
    def field(self, name: str, pattern: re.Pattern[str] | None = None) -> str:
        value = self.get_body_argument(name, None)
        if value is None or len(value) > 255 or (pattern and not pattern.fullmatch(value)):
            raise OptionError(name, "is missing or not valid")
        return value

    def back(self, notice: str) -> None:
        """To the page again (303), with the outcome in a signed one-time cookie."""
        try:
            period = parse_period(self.get_body_argument("since", None), time.time())[0]
        except OptionError:
            period = DEFAULT_PERIOD
        self.set_secure_cookie(NOTICE_COOKIE, notice, expires_days=None, path=self.prefix)
        self.redirect(f"{self.prefix}?{urlencode({'since': period})}", status=303)


class StopHandler(ActionBase):
    @web.authenticated
    async def post(self) -> None:
        admin = self.admin()
        user, server = self.field("user"), self.field("server")
        self.back(await self.desk.stop_server(user, server, admin))


class CancelHandler(ActionBase):
    @web.authenticated
    async def post(self) -> None:
        admin = self.admin()
        self.back(await self.desk.cancel_job(self.field("job", _JOB_ID), admin))


class OAuthCallbackHandler(HubOAuthCallbackHandler):  # type: ignore[misc]
    """Completes the hub's OAuth login and sets this service's cookie."""

    def initialize(self) -> None:
        self.hub_auth = self.settings["hub_auth"]


def page_routes(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    p = prefix.rstrip("/")
    return [
        (rf"{p}/", AdminPageHandler),
        (rf"{p}/admin/stop", StopHandler),
        (rf"{p}/admin/cancel", CancelHandler),
        (rf"{p}/oauth_callback", OAuthCallbackHandler),
    ]
