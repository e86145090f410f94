"""``gpuhub-jobs``: the jobs service as a traitlets ``Application`` (a managed JupyterHub
service in the embedded default; see :func:`gpuhub.hubconfig.embedded_config`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Float, Integer, Type, Unicode

from ..activeconfig import active_config
from ..serviceapp import HubServiceApp, run_service
from .backends.base import JobBackend
from .errors import JobNotFound
from .handlers import BaseHandler, routes
from .offloop import ProcessRunner
from .service import JobsService

SERVICE_NAME = "gpuhub-jobs"


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        raise JobNotFound(self.request.path.rsplit("/", 1)[-1])


class JobsApp(HubServiceApp):
    """Run a notebook as a distributed training job: the hub service."""

    name = SERVICE_NAME
    description = __doc__ or ""
    default_port = 8011
    lock_file = "jobs-service.lock"

    aliases = {
        "config": "JobsApp.config_file",
        "gpuhub-config": "JobsApp.gpuhub_config_file",
        "data-dir": "JobsApp.data_dir",
        "bind-url": "JobsApp.bind_url",
    }

    config_file = Unicode(
        "",
        config=True,
        help="""A traitlets Python config file for the service and its backend (e.g.
        ``c.JobsApp.backend_class = "gpuhub.jobs.backends.kubeflow.KubeflowJobBackend"``).

        .. versionadded:: 0.1
        """,
    )

    backend_class = Type(
        default_value="gpuhub.jobs.backends.local.LocalJobBackend",
        klass=JobBackend,
        config=True,
        help="""The class that runs jobs: ``gpuhub.jobs.backends.local.LocalJobBackend``
        (local ``torchrun`` processes, the embedded default) or
        ``gpuhub.jobs.backends.kubeflow.KubeflowJobBackend`` (Kubeflow ``PyTorchJob`` /
        ``TFJob``).  Any subclass of :class:`gpuhub.jobs.backends.base.JobBackend`.

        .. versionadded:: 0.1
        """,
    )

    max_workers = Integer(
        8,
        config=True,
        help="""The most workers (nodes) one job may ask for.

        .. versionadded:: 0.1
        """,
    )

    max_notebook_bytes = Integer(
        16 << 20,
        config=True,
        help="""The largest ``POST api/jobs`` body (the notebook, with its outputs) the
        service accepts; a larger one is refused with 413 naming ``notebook``.

        .. versionadded:: 0.1
        """,
    )

    convert_workers = Integer(
        2,
        min=1,
        config=True,
        help="""How many notebooks are converted at once, each in a worker process of its
        own (others wait their turn); the event loop never converts.

        .. versionadded:: 0.1
        """,
    )

    convert_timeout = Float(
        60.0,
        config=True,
        help="""Seconds one notebook's validation and conversion may take before its
        worker process is killed and the job is refused (400 naming ``notebook``).

        .. versionadded:: 0.1
        """,
    )

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)

    def make_app(self) -> tuple[web.Application, JobsService]:
        from jupyterhub.services.auth import HubOAuth

        # the same file the hub reads, followed the same way (re-read when it changes)
        active = active_config(self.gpuhub_config_file, self.log)
        backend = self.backend_class(parent=self, active=active, data_dir=Path(self.data_dir))
        hub_auth = HubOAuth(cache_max_age=self.auth_cache_max_age, parent=self)
        runner = ProcessRunner(self.convert_workers, self.convert_timeout)
        service = JobsService(
            active, backend, hub_auth, self.max_workers, runner, self.max_notebook_bytes
        )
        app = web.Application(
            routes(self.service_prefix),  # type: ignore[arg-type]
            gpuhub_jobs=service,
            default_handler_class=NotFoundHandler,
            log_function=_log_request,
        )
        return app, service

    async def serve(self) -> None:
        app, service = self.make_app()
        await service.backend.recover()
        url = urlparse(self.bind_url)
        server = HTTPServer(app, xheaders=True, max_body_size=64 << 20)
        server.listen(url.port or 80, url.hostname or "127.0.0.1")
        self.log.info("gpuhub-jobs listening on %s%s", self.bind_url, self.service_prefix)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.log.info("gpuhub-jobs stopping (running jobs keep running)")
        server.stop()
        with contextlib.suppress(TimeoutError):  # let requests in flight (a cancel) finish
            async with asyncio.timeout(3):
                await service.drained()
        await service.backend.shutdown()  # a cancel still waiting for its job answers now
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await service.drained()
        service.runner.shutdown()

    def start(self) -> None:
        """Take the data directory's lock (before the event loop: it blocks), then serve.
        The lock is held until the process ends."""
        self.hold_instance_lock()
        asyncio.run(self.serve())


def _log_request(handler: web.RequestHandler) -> None:
    from tornado.log import access_log

    status = handler.get_status()
    fn = access_log.info if status < 400 else access_log.warning
    ms = 1000 * handler.request.request_time()
    fn("%d %s %s %.1fms", status, handler.request.method, handler.request.path, ms)


def main(argv: list[str] | None = None) -> None:
    """``gpuhub-jobs``."""
    run_service(JobsApp, argv)
