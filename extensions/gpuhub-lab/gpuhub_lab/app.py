"""The server extension application: configuration and route table."""

from __future__ import annotations

import os

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Unicode

from .gpustatus import GiveBackHandler, GpuStatusHandler, KeepHandler
from .handlers import JobHandler, JobLogsHandler, JobsHandler, OptionsHandler

#: Route patterns, relative to the server's ``base_url`` (ExtensionApp prepends it).
JOB_ID = r"(?P<job_id>[A-Za-z0-9][A-Za-z0-9_.:-]{0,127})"


class GpuhubLabApp(ExtensionApp):
    """Forward ``{base_url}/gpuhub/...`` to the gpuhub jobs service, and
    ``{base_url}/gpuhub/gpu...`` to the gpuhub monitor (about this server only).

    The notebook server holds no cluster credentials: it only calls the services with the
    server's own hub token, and adds the notebook's content (read with the contents manager) to
    job submissions.
    """

    name = "gpuhub_lab"
    load_other_extensions = True

    jobs_url = Unicode(
        "",
        config=True,
        help="""URL of the gpuhub jobs service, e.g. ``http://127.0.0.1:8000/services/gpuhub-jobs/``.

        When empty, the ``GPUHUB_JOBS_URL`` environment variable is read on every request;
        when both are empty, the routes answer 503.

        .. versionadded:: 0.1
        """,
    )

    api_token = Unicode(
        "",
        config=True,
        help="""Token sent to the jobs service and the monitor as
        ``Authorization: token <api_token>``.

        When empty, the ``JUPYTERHUB_API_TOKEN`` environment variable is read on every request
        (the single-user server's own hub token).

        .. versionadded:: 0.1
        """,
    )

    monitor_url = Unicode(
        "",
        config=True,
        help="""URL of the gpuhub monitor service, e.g.
        ``http://127.0.0.1:8012/services/gpuhub-monitor/`` (the status-bar item, the idle
        warning's "keep it", "give the GPUs back").

        When empty, the ``GPUHUB_MONITOR_URL`` environment variable is read on every request;
        when both are empty, the ``gpuhub/gpu`` routes answer 503.

        .. versionadded:: 0.1
        """,
    )

    request_timeout = Float(
        30.0,
        config=True,
        help="""Seconds to wait for the jobs service or the monitor before answering 504.

        .. versionadded:: 0.1
        """,
    )

    def upstream_url(self) -> str:
        """The jobs service base URL (always ending in ``/``), or ``""`` when not configured."""
        return _with_slash(self.jobs_url or os.environ.get("GPUHUB_JOBS_URL", ""))

    def monitor_upstream_url(self) -> str:
        """The monitor's base URL (always ending in ``/``), or ``""`` when not configured."""
        return _with_slash(self.monitor_url or os.environ.get("GPUHUB_MONITOR_URL", ""))

    def server_name(self) -> str:
        """This server's name as the hub started it (``""``: the user's default server)."""
        return os.environ.get("JUPYTERHUB_SERVER_NAME", "")

    def upstream_token(self) -> str:
        """The token for the jobs service, or ``""``."""
        return self.api_token or os.environ.get("JUPYTERHUB_API_TOKEN", "")

    def initialize_handlers(self) -> None:
        """Register the forwarding routes."""
        self.handlers.extend(
            [
                (r"/gpuhub/options", OptionsHandler),
                (r"/gpuhub/jobs", JobsHandler),
                (rf"/gpuhub/jobs/{JOB_ID}", JobHandler),
                (rf"/gpuhub/jobs/{JOB_ID}/logs", JobLogsHandler),
                (r"/gpuhub/gpu", GpuStatusHandler),
                (r"/gpuhub/gpu/keep", KeepHandler),
                (r"/gpuhub/gpu/give-back", GiveBackHandler),
            ]
        )


def _with_slash(url: str) -> str:
    url = url.strip()
    return url + "/" if url and not url.endswith("/") else url
