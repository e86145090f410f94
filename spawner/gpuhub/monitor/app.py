"""``gpuhub-monitor``: GPU utilisation, idle culling, history and metrics as a traitlets
``Application`` (a managed hub service in the embedded default; see
:func:`gpuhub.hubconfig.apply_monitor_service`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Type, Unicode, default

from ..activeconfig import active_config
from ..errors import GpuhubError
from ..serviceapp import HubServiceApp, run_service
from .admin import AdminDesk
from .handlers import NotFoundHandler, routes
from .history import HistoryStore, history_path
from .holdings import HoldingsSource
from .hubapi import HubClient, JobsClient
from .service import MonitorService

SERVICE_NAME = "gpuhub-monitor"
LOCK_FILE = "monitor-service.lock"
JOBS_URL_ENV = "GPUHUB_JOBS_URL"


class MonitorApp(HubServiceApp):
    """Measure GPU use, give back idle GPUs, keep the GPU-hours history."""

    name = SERVICE_NAME
    description = __doc__ or ""
    default_port = 8012
    lock_file = LOCK_FILE

    aliases = {
        "config": "MonitorApp.config_file",
        "gpuhub-config": "MonitorApp.gpuhub_config_file",
        "data-dir": "MonitorApp.data_dir",
        "bind-url": "MonitorApp.bind_url",
    }

    jobs_url = Unicode(
        config=True,
        help="""URL of the ``gpuhub-jobs`` service (``…/services/gpuhub-jobs/``), where the
        admin's GPU page cancels jobs with this service's token.  Defaults to
        ``$GPUHUB_JOBS_URL`` (set by the embedded hub config); empty: jobs cannot be
        cancelled from the page.

        .. versionadded:: 0.1
        """,
    )

    @default("jobs_url")
    def _default_jobs_url(self) -> str:
        return os.environ.get(JOBS_URL_ENV, "")

    config_file = Unicode(
        "",
        config=True,
        help="""A traitlets Python config file for the service and its holdings (e.g.
        ``c.MonitorApp.holdings_class = "gpuhub.monitor.kubeholdings.KubeHoldings"``).

        .. versionadded:: 0.1
        """,
    )

    holdings_class = Type(
        default_value="gpuhub.monitor.holdings.LocalHoldings",
        klass=HoldingsSource,
        config=True,
        help="""Where the GPU allocations are read:
        ``gpuhub.monitor.holdings.LocalHoldings`` (the machine-wide ledger, the embedded
        default) or ``gpuhub.monitor.kubeholdings.KubeHoldings`` (gpuhub's pods, from the
        same cluster watch as the hub's ``GPUKubeSpawner``).  Any subclass of
        :class:`gpuhub.monitor.holdings.HoldingsSource`.

        .. versionadded:: 0.1
        """,
    )

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)

    def make_app(self) -> tuple[web.Application, MonitorService]:
        from jupyterhub.services.auth import HubOAuth

        active = active_config(self.gpuhub_config_file, self.log)
        hub_auth = HubOAuth(cache_max_age=self.auth_cache_max_age, parent=self)
        cls = cast(type[HoldingsSource], self.holdings_class)
        holdings = cls(parent=self, active=active, data_dir=Path(self.data_dir))
        service = MonitorService(
            active,
            holdings,
            HistoryStore(history_path(self.data_dir)),
            HubClient(hub_auth.api_url, hub_auth.api_token),
            self.log,
        )
        jobs = None
        if self.jobs_url:
            jobs = JobsClient(self.jobs_url.rstrip("/") + "/api", hub_auth.api_token)
        app = web.Application(
            routes(self.service_prefix),
            gpuhub_monitor=service,
            gpuhub_admin=AdminDesk(service, jobs),
            gpuhub_prefix=self.service_prefix,
            hub_auth=hub_auth,
            # the admin page's login cookie lives as long as this process: after a
            # restart the browser goes through the hub's OAuth again (no prompt)
            cookie_secret=secrets.token_bytes(32),
            default_handler_class=NotFoundHandler,
        )
        return app, service

    async def serve(self, app: web.Application, service: MonitorService) -> None:
        """Start the holdings (the cluster watch's first LIST), then listen and sample
        until SIGTERM: a listening monitor knows what is held."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await service.holdings.start()
        except GpuhubError as e:
            self.log.critical("gpuhub-monitor not starting: %s", e)
            raise SystemExit(1) from None
        url = urlparse(self.bind_url)
        server = HTTPServer(app, xheaders=True, max_body_size=64 << 10)
        server.listen(url.port or 80, url.hostname or "127.0.0.1")
        self.log.info("gpuhub-monitor listening on %s%s", self.bind_url, self.service_prefix)
        try:
            await service.run(stop)
        finally:
            server.stop()
            await service.holdings.stop()
        with contextlib.suppress(Exception):
            await server.close_all_connections()

    def start(self) -> None:
        """Take the data directory's monitor lock (before the event loop: it blocks),
        then serve until SIGTERM."""
        self.hold_instance_lock()
        app, service = self.make_app()  # may open the ledger (blocking): before the loop
        asyncio.run(self.serve(app, service))


def main(argv: list[str] | None = None) -> Any:
    """``gpuhub-monitor``."""
    return run_service(MonitorApp, argv)
