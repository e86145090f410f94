"""What every gpuhub spawner shares: the active config, validating ``user_options``,
reserving GPUs in the ledger before the first ``await`` of ``start()``, the spawn form.

A concrete spawner mixes :class:`GpuhubSpawnerMixin` into a JupyterHub spawner and
supplies :meth:`gpuhub_backend` and :meth:`gpuhub_capacity`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from tornado import web
from traitlets import HasTraits, Unicode, default

from ..activeconfig import active_config
from ..availability import availability
from ..config import CONFIG_ENV
from ..errors import OptionError, QuotaDenied
from ..form import options_from_form, render_form
from ..hubconfig import JOBS_SERVICE
from ..ledger import Ledger
from ..model import Allocation, GpuhubConfig, Kind, SpawnRequest
from ..savedoptions import SavedOptions, saved_options
from ..startoptions import Start, resolve_start
from ..terminals import with_terminal_shell


def user_error(status: int, message: str) -> web.HTTPError:
    """An HTTP error whose text JupyterHub shows as it is, on the spawn form's banner and
    as the REST API's ``message`` (``jupyterhub_message``), not as "HTTP 403: error (…)"."""
    err = web.HTTPError(status, "%s", message)
    err.jupyterhub_message = message  # type: ignore[attr-defined]
    return err


JOBS_URL_ENV = "GPUHUB_JOBS_URL"


def service_jobs_url(services: Sequence[Mapping[str, Any]]) -> str:
    """The jobs service's URL as the hub's ``JupyterHub.services`` declares it (its ``url``
    plus the prefix it serves, ``/services/gpuhub-jobs/``), or ``""`` when the hub runs no
    such service.  On Kubernetes that is the hub Service's port (``http://hub:8011``)."""
    for service in services:
        if service.get("name") == JOBS_SERVICE and service.get("url"):
            return f"{str(service['url']).rstrip('/')}/services/{JOBS_SERVICE}/"
    return ""


class LedgerBackend(Protocol):
    """Where allocations live: a machine-wide store, or the cluster's watch cache."""

    def reserve(
        self, key: str, request: SpawnRequest, groups: Iterable[str], kind: Kind = "notebook"
    ) -> Allocation | None: ...

    def release(self, key: str) -> None: ...

    def snapshot(self) -> Ledger: ...


class GpuhubSpawnerMixin(HasTraits):
    """Validation, quota reservation and the form, shared by the local and Kubernetes
    spawners.  Mix in *before* the JupyterHub spawner class."""

    gpuhub_config_file = Unicode(
        config=True,
        help="""Path of the gpuhub YAML (profiles, images, GPU types, quotas).

        Defaults to ``$GPUHUB_CONFIG``, else ``gpuhub.yaml`` in the hub's working directory.

        .. versionadded:: 0.1
        """,
    )

    @default("gpuhub_config_file")
    def _default_config_file(self) -> str:
        return os.environ.get(CONFIG_ENV, "gpuhub.yaml")

    jobs_url = Unicode(
        config=True,
        help="""URL of the gpuhub jobs service as servers reach it, given to them as
        ``$GPUHUB_JOBS_URL`` (the lab extension calls it with ``$JUPYTERHUB_API_TOKEN``).

        Defaults to the ``url`` of the hub's ``gpuhub-jobs`` service
        (``c.JupyterHub.services``) plus ``/services/gpuhub-jobs/``; empty (not set) when
        the hub runs no such service.

        .. versionadded:: 0.1
        """,
    )

    @default("jobs_url")
    def _default_jobs_url(self) -> str:
        services = self.config.JupyterHub.get("services", [])  # type: ignore[attr-defined]
        return service_jobs_url(services if isinstance(services, list) else [])

    saved_options_file = Unicode(
        config=True,
        help="""JSON file (mode 0600) where the hub keeps each user's saved start options:
        the options a start without any (VS Code's JupyterHub extension, the admin page,
        an API call with an empty body) uses, chosen on the spawn form with "Use these
        options for VS Code and API starts".

        Defaults to ``gpuhub-saved-options.json`` in the hub's working directory (on the
        Zero to JupyterHub chart ``/srv/jupyterhub``, the hub's volume); the embedded
        default keeps it in its data directory.

        .. versionadded:: 0.1
        """,
    )

    @default("saved_options_file")
    def _default_saved_options_file(self) -> str:
        return os.path.abspath("gpuhub-saved-options.json")

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()  # type: ignore[misc]
        if self.jobs_url:
            env[JOBS_URL_ENV] = self.jobs_url
        return env

    def get_args(self) -> list[str]:
        """JupyterHub's server arguments, with terminals that keep the server's
        environment (:mod:`gpuhub.terminals`)."""
        return with_terminal_shell(super().get_args())  # type: ignore[misc]

    @default("options_form")
    def _default_options_form(self) -> Any:
        return type(self)._render_options_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return type(self)._check_user_options

    def _check_user_options(self, user_options: Mapping[str, Any]) -> None:
        """JupyterHub's ``apply_user_options`` hook.  gpuhub handles every option in
        ``start()``, where validation and the quota reservation happen in one synchronous
        step (a 400 naming the field, or a 403 with the quota story); nothing to do here
        but to tell JupyterHub the options are handled."""

    gpuhub_notice: str = ""
    """A sentence for the user about their last server (e.g. an out-of-memory kill)."""

    # -- the parts each spawner supplies ------------------------------------------------
    def gpuhub_backend(self) -> LedgerBackend:
        raise NotImplementedError

    def gpuhub_capacity(self) -> tuple[dict[str, tuple[int, int]], str, bool]:
        """``({gpu_type: (total, free)}, source, queues)`` for the form."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------
    @property
    def gpuhub(self) -> GpuhubConfig:
        """The config as the file says now (:mod:`gpuhub.activeconfig`): quota and profile
        changes apply at the next spawn, running servers are not touched."""
        return active_config(self.gpuhub_config_file, self.log).get()  # type: ignore[attr-defined]

    @property
    def gpuhub_groups(self) -> list[str]:
        """The user's *current* JupyterHub groups (re-read on every call)."""
        return sorted(g.name for g in self.user.groups)  # type: ignore[attr-defined]

    @property
    def gpuhub_key(self) -> str:
        return f"server:{self.user.name}/{self.name}"  # type: ignore[attr-defined]

    @property
    def gpuhub_saved(self) -> SavedOptions:
        return saved_options(self.saved_options_file)

    def sent_options(self) -> Mapping[str, Any] | None:
        """The options this start's request carried; ``None`` for a REST start with an
        empty body (or ``{}`` / ``"user_options": null``), for which JupyterHub hands
        the spawner the server's last-used options instead."""
        from jupyterhub.apihandlers.users import UserServerAPIHandler

        handler = getattr(self, "handler", None)
        if isinstance(handler, UserServerAPIHandler):
            body = handler.get_server_json_body()
            if not body.get("user_options"):
                return None
        options: Mapping[str, Any] = self.user_options or {}  # type: ignore[attr-defined]
        return options

    def resolve_start(self) -> Start:
        """:func:`gpuhub.startoptions.resolve_start` for this start; the server records
        the options it runs with (never the "save" flag).  400 naming the field."""
        user: str = self.user.name  # type: ignore[attr-defined]
        sent = self.sent_options()
        last = self.user_options if sent is None else None  # type: ignore[attr-defined]
        try:
            start = resolve_start(
                self.gpuhub, user, self.gpuhub_groups, sent, self.gpuhub_saved.get(user), last
            )
        except OptionError as e:
            raise user_error(400, f"Invalid spawn option {e}") from e
        self.user_options = start.options
        if self.orm_spawner is not None:  # type: ignore[attr-defined]
            self.orm_spawner.user_options = start.options  # type: ignore[attr-defined]
        return start

    def claim_resources(self) -> tuple[SpawnRequest, Allocation | None]:
        """Decide the options (sent, saved default or last used), validate them and
        reserve GPUs.  Synchronous on purpose: call it before the first ``await`` of
        ``start()`` so check and reserve cannot interleave with another spawn.  Raises
        400 for a bad option and 403 for a quota denial; a start that asked to save its
        options saves them once reserved, one that asked to forget the saved default drops it
        (:meth:`save_default` writes the change)."""
        start = self.resolve_start()
        request = start.request
        try:
            alloc = self.gpuhub_backend().reserve(self.gpuhub_key, request, self.gpuhub_groups)
        except QuotaDenied as e:
            raise user_error(403, f"Not enough GPU quota: {e.explanation}") from e
        if start.save is not None:
            self.gpuhub_saved.put(request.user, start.save)
            self._gpuhub_save = True
        elif start.forget:
            self.gpuhub_saved.forget(request.user)
            self._gpuhub_save = True
        if start.source == "saved":
            self.log.info("gpuhub: %s starts with its saved default", self.gpuhub_key)  # type: ignore[attr-defined]
        self.log.info(  # type: ignore[attr-defined]
            "gpuhub: %s reserved %s",
            self.gpuhub_key,
            f"{alloc.gpus} {alloc.gpu_type} (group {alloc.group}, devices {alloc.devices})"
            if alloc
            else "no GPU",
        )
        return request, alloc

    _gpuhub_save: bool = False

    async def save_default(self) -> None:
        """Write the saved defaults if this start changed one (off the event loop)."""
        if self._gpuhub_save:
            self._gpuhub_save = False
            await self.gpuhub_saved.flush()

    def release_resources(self) -> None:
        self.gpuhub_backend().release(self.gpuhub_key)

    def gpuhub_availability(self) -> dict[str, Any]:
        capacity, source, queues = self.gpuhub_capacity()
        return availability(
            self.gpuhub,
            self.gpuhub_backend().snapshot(),
            user=self.user.name,  # type: ignore[attr-defined]
            groups=self.gpuhub_groups,
            capacity=capacity,
            source=source,
            queues=queues,
        )

    def _render_options_form(self) -> str:
        return render_form(
            self.gpuhub,
            self.gpuhub_groups,
            self.gpuhub_availability(),
            previous=self.orm_spawner.user_options if self.orm_spawner else None,  # type: ignore[attr-defined]
            notice=self.gpuhub_notice,
            saved=self.gpuhub_saved.get(self.user.name),  # type: ignore[attr-defined]
        )

    def options_from_form(self, formdata: Mapping[str, list[str]]) -> dict[str, str]:
        return options_from_form(formdata)
