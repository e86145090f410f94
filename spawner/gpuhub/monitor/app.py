"""``gpuhub-monitor``: GPU utilisation, idle culling, history and metrics as a traitlets
``Application`` (a managed hub service in the embedded default; see
:func:`gpuhub.hubconfig.apply_monitor_service`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Float, Integer, Unicode, default
from traitlets.config import Application

from ..activeconfig import active_config
from ..config import CONFIG_ENV
from ..jobs.singleton import HUB_PID_ENV, AlreadyRunning, die_with_parent, hold_lock, started_by_hub
from .handlers import NotFoundHandler, routes
from .history import HistoryStore, history_path
from .hubapi import HubClient
from .service import MonitorService

SERVICE_NAME = "gpuhub-monitor"
LOCK_FILE = "monitor-service.lock"


class MonitorApp(Application):
    """Measure GPU use, give back idle GPUs, keep the GPU-hours history."""

    name = SERVICE_NAME
    description = __doc__ or ""

    aliases = {
        "gpuhub-config": "MonitorApp.gpuhub_config_file",
        "data-dir": "MonitorApp.data_dir",
        "bind-url": "MonitorApp.bind_url",
    }

    gpuhub_config_file = Unicode(
        config=True,
        help="""Path of the gpuhub YAML (profiles' ``idle_culling``, ``monitor``), the
        file the hub uses.  Defaults to ``$GPUHUB_CONFIG``.

        .. versionadded:: 0.1
        """,
    )

    @default("gpuhub_config_file")
    def _default_gpuhub_config(self) -> str:
        return os.environ.get(CONFIG_ENV, "gpuhub.yaml")

    data_dir = Unicode(
        config=True,
        help="""gpuhub's data directory: the ledger it samples (``state/units.json``) and
        the history it writes (``state/usage.sqlite``).  Defaults to ``$GPUHUB_DATA``.

        .. versionadded:: 0.1
        """,
    )

    @default("data_dir")
    def _default_data_dir(self) -> str:
        from ..datadir import resolve_data_dir

        return str(resolve_data_dir(self.gpuhub_config_file))

    bind_url = Unicode(
        config=True,
        help="""Where the service listens.  Defaults to ``$JUPYTERHUB_SERVICE_URL``
        (set by the hub for a managed service), else ``http://127.0.0.1:8012``.

        .. versionadded:: 0.1
        """,
    )

    @default("bind_url")
    def _default_bind_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8012")

    service_prefix = Unicode(
        config=True,
        help="""URL prefix the hub's proxy forwards.  Defaults to
        ``$JUPYTERHUB_SERVICE_PREFIX``, else ``/services/gpuhub-monitor/``.

        .. versionadded:: 0.1
        """,
    )

    @default("service_prefix")
    def _default_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")

    auth_cache_max_age = Integer(
        10,
        config=True,
        help="""Seconds the identity of a token is cached.

        .. versionadded:: 0.1
        """,
    )

    instance_wait = Float(
        5.0,
        config=True,
        help="""Seconds a starting service waits for another monitor of the same data
        directory to end before it refuses to start (``state/monitor-service.lock``).

        .. versionadded:: 0.1
        """,
    )

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
        app = web.Application(
            routes(self.service_prefix),
            gpuhub_monitor=service,
            hub_auth=hub_auth,
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
        try:
            hold_lock(Path(self.data_dir) / "state" / LOCK_FILE, self.instance_wait)
        except AlreadyRunning as e:
            self.log.critical(
                "gpuhub-monitor not starting: another monitor (PID %s) serves %s; stop it first",
                e.pid or "unknown",
                self.data_dir,
            )
            raise SystemExit(1) from None
        app, service = self.make_app()  # opens the ledger (blocking): before the loop
        asyncio.run(self.serve(app, service))


def main(argv: list[str] | None = None) -> Any:
    """A managed service ends with the hub that started it; then the app."""
    if started_by_hub(os.environ):
        hub = int(os.environ.get(HUB_PID_ENV) or os.getppid())
        if not die_with_parent(hub):
            sys.exit(f"{SERVICE_NAME}: the hub that started it (PID {hub}) has ended; not starting")
    MonitorApp.launch_instance(argv)
