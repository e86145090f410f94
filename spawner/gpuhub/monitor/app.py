"""``gpuhub-monitor``: GPU utilisation, idle culling, history and metrics as a traitlets
``Application`` (a managed hub service in the embedded default; see
:func:`gpuhub.hubconfig.apply_monitor_service`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from typing import Any
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Unicode, default

from ..activeconfig import active_config
from ..serviceapp import HubServiceApp, run_service
from .admin import AdminDesk
from .handlers import NotFoundHandler, routes
from .history import HistoryStore, history_path
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

    def make_app(self) -> tuple[web.Application, MonitorService]:
        from jupyterhub.services.auth import HubOAuth

        from ..spawners.local import inventory, local_store

        active = active_config(self.gpuhub_config_file, self.log)
        hub_auth = HubOAuth(cache_max_age=self.auth_cache_max_age, parent=self)
        service = MonitorService(
            active,
            local_store(self.data_dir),
            HistoryStore(history_path(self.data_dir)),
            HubClient(hub_auth.api_url, hub_auth.api_token),
            lambda cfg: inventory(cfg).devices,
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
        url = urlparse(self.bind_url)
        server = HTTPServer(app, xheaders=True, max_body_size=64 << 10)
        server.listen(url.port or 80, url.hostname or "127.0.0.1")
        self.log.info("gpuhub-monitor listening on %s%s", self.bind_url, self.service_prefix)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)
        server.stop()
        with contextlib.suppress(Exception):
            await server.close_all_connections()

    def start(self) -> None:
        """Take the data directory's monitor lock (before the event loop: it blocks),
        then serve until SIGTERM."""
        self.hold_instance_lock()
        app, service = self.make_app()  # opens the ledger (blocking): before the loop
        asyncio.run(self.serve(app, service))


def main(argv: list[str] | None = None) -> Any:
    """``gpuhub-monitor``."""
    return run_service(MonitorApp, argv)
