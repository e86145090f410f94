"""What gpuhub's hub services (``gpuhub-jobs``, ``gpuhub-monitor``) share as traitlets
``Application``s: where their config and data are, where they listen, how long a token's
identity is cached, one instance per data directory, and ending with the hub that
started them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from traitlets import Float, Integer, Unicode, default
from traitlets.config import Application

from .config import CONFIG_ENV
from .datadir import resolve_data_dir
from .jobs.singleton import HUB_PID_ENV, AlreadyRunning, die_with_parent, hold_lock, started_by_hub


class HubServiceApp(Application):
    """A gpuhub hub service.  Subclasses set ``name``, :attr:`default_port` and
    :attr:`lock_file`."""

    default_port: ClassVar[int]
    lock_file: ClassVar[str]
    """The instance lock, under the data directory's ``state/``."""

    gpuhub_config_file = Unicode(
        config=True,
        help="""Path of the gpuhub YAML, the same file the hub uses.  Defaults to
        ``$GPUHUB_CONFIG``, else ``gpuhub.yaml``.

        .. versionadded:: 0.1
        """,
    )

    @default("gpuhub_config_file")
    def _default_gpuhub_config(self) -> str:
        return os.environ.get(CONFIG_ENV, "gpuhub.yaml")

    data_dir = Unicode(
        config=True,
        help="""gpuhub's data directory, found as the hub finds it
        (:func:`gpuhub.datadir.resolve_data_dir`: ``$GPUHUB_DATA``, else the config's
        directory when it holds gpuhub state, else the default).

        .. versionadded:: 0.1
        """,
    )

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return str(resolve_data_dir(self.gpuhub_config_file))

    bind_url = Unicode(
        config=True,
        help="""Where the service listens.  Defaults to ``$JUPYTERHUB_SERVICE_URL`` (set
        by the hub for a managed service), else ``http://127.0.0.1:<the service's port>``.

        .. versionadded:: 0.1
        """,
    )

    @default("bind_url")
    def _default_bind_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", f"http://127.0.0.1:{self.default_port}")

    service_prefix = Unicode(
        config=True,
        help="""URL prefix the hub's proxy forwards.  Defaults to
        ``$JUPYTERHUB_SERVICE_PREFIX``, else ``/services/<service name>/``.

        .. versionadded:: 0.1
        """,
    )

    @default("service_prefix")
    def _default_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{self.name}/")

    auth_cache_max_age = Integer(
        10,
        config=True,
        help="""Seconds the identity of a token is cached (groups are always re-read).

        .. versionadded:: 0.1
        """,
    )

    instance_wait = Float(
        5.0,
        config=True,
        help="""Seconds a starting service waits for another instance of the same data
        directory to end (e.g. one finishing its shutdown after its hub died) before it
        refuses to start.  One instance per data directory (a lock under ``state/``).

        .. versionadded:: 0.1
        """,
    )

    @property
    def lock_path(self) -> Path:
        return Path(self.data_dir) / "state" / self.lock_file

    def hold_instance_lock(self) -> None:
        """Take the data directory's lock for this service (blocking: call before the
        event loop), held until the process ends; exit 1 if another instance keeps it."""
        try:
            hold_lock(self.lock_path, self.instance_wait)
        except AlreadyRunning as e:
            self.log.critical("%s not starting: %s", self.name, e)
            raise SystemExit(1) from None


def run_service(app: type[HubServiceApp], argv: list[str] | None = None) -> Any:
    """A managed service ends with the hub that started it (first thing, so that no
    start-up time is left unguarded); then the app."""
    if started_by_hub(os.environ):
        hub = int(os.environ.get(HUB_PID_ENV) or os.getppid())
        if not die_with_parent(hub):
            sys.exit(f"{app.name}: the hub that started it (PID {hub}) has ended; not starting")
    app.launch_instance(argv)
