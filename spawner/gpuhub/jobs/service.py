"""What the handlers share: who is calling (from the hub), the config, the backend, and
the live numbers of ``GET api/options``."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ..activeconfig import ActiveConfig
from ..availability import availability
from ..ledger import Ledger
from ..model import GpuhubConfig
from ..profiles import default_image, visible_profiles
from ..scopes import JOBS_CANCEL_ANY
from .backends.base import JobBackend
from .errors import HubUnavailable, NotAllowed, NotAuthenticated, TooLarge
from .offloop import ProcessRunner
from .policy import FRAMEWORKS, JobSpec, job_from_request, time_limits

_TOKEN = re.compile(r"(?:token|bearer)\s+(\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class Caller:
    """An authenticated user: name, *current* groups, and the catalog slug of the image
    of the running server the call comes from (:func:`calling_server`; ``None`` when it
    does not run).  ``cancel_any``: the token
    holds :data:`~gpuhub.scopes.JOBS_CANCEL_ANY` (the monitor's, for the admin's GPU
    page); such a service caller may only cancel."""

    name: str
    groups: tuple[str, ...]
    server_image: str | None
    cancel_any: bool = False


def calling_server(scopes: Any, user: str) -> str:
    """The server whose own token (``$JUPYTERHUB_API_TOKEN``, scoped
    ``access:servers!server=<user>/<name>``) makes the call: ``<name>``; ``""`` (the
    default server) for any other token."""
    prefix = f"access:servers!server={user}/"
    names = {s[len(prefix) :] for s in scopes or () if isinstance(s, str) and s.startswith(prefix)}
    return names.pop() if len(names) == 1 else ""


class JobsService:
    """The service's state: ``active`` the gpuhub config (re-read when the file changes),
    ``hub_auth`` a :class:`jupyterhub.services.auth.HubOAuth`, ``runner`` where request
    bodies are parsed, validated and converted (off the event loop)."""

    def __init__(
        self,
        active: ActiveConfig,
        backend: JobBackend,
        hub_auth: Any,
        max_workers: int,
        runner: ProcessRunner,
        max_notebook_bytes: int,
    ) -> None:
        self.active = active
        self.runner = runner
        self.max_notebook_bytes = max_notebook_bytes
        self.backend = backend
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.hub_auth = hub_auth
        self.max_workers = max_workers

    @property
    def gpuhub(self) -> GpuhubConfig:
        """The config as the file says now (each request sees the current quotas)."""
        return self.active.get()

    # -- requests in flight (so a stopping service answers what it started) -------------
    def begin(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def end(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    async def drained(self) -> None:
        """Until no request is being handled."""
        await self._idle.wait()

    async def authenticate(self, header: str, canceller: bool = False) -> Caller:
        """Identify the caller by the hub token in ``Authorization``; then read the user's
        current groups and server with the service's own token (``read:users:groups``,
        ``read:servers``), never from a cache.  With ``canceller`` (a cancel request), a
        hub service whose token holds :data:`~gpuhub.scopes.JOBS_CANCEL_ANY` is accepted
        too."""
        m = _TOKEN.fullmatch(header.strip())
        if not m:
            raise NotAuthenticated(
                "send a hub token: 'Authorization: token <token>' (see docs/jobs-api.md)"
            )
        try:
            model = await self.hub_auth.user_for_token(m.group(1), sync=False)
        except web.HTTPError as e:
            if e.status_code < 500:
                raise
            raise HubUnavailable(
                "the hub is not answering (restarting?); nothing was done, try again"
            ) from e
        if not model:
            raise NotAuthenticated("the hub does not accept this token")
        cancel_any = self.hub_auth.check_scopes({JOBS_CANCEL_ANY}, model)
        if model.get("kind", "user") != "user":
            if canceller and cancel_any:
                return Caller(name=model["name"], groups=(), server_image=None, cancel_any=True)
            raise NotAllowed("only users can run jobs")
        if not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model):
            raise NotAllowed(
                "this token may not use the jobs service "
                f"(it needs {', '.join(sorted(self.hub_auth.access_scopes))})"
            )
        user = await self._hub_user(model["name"])
        name = calling_server(model.get("scopes"), model["name"])
        server = (user.get("servers") or {}).get(name) or {}
        image = (server.get("user_options") or {}).get("image") if server.get("ready") else None
        return Caller(
            name=model["name"],
            groups=tuple(sorted(user.get("groups") or ())),
            server_image=image if isinstance(image, str) else None,
            cancel_any=bool(cancel_any),
        )

    async def _hub_user(self, name: str) -> dict[str, Any]:
        url = f"{self.hub_auth.api_url.rstrip('/')}/users/{quote(name, safe='')}"
        try:
            r = await AsyncHTTPClient().fetch(
                url, headers={"Authorization": f"token {self.hub_auth.api_token}"}
            )
        except HTTPClientError as e:
            if e.code >= 500 or e.code == 599:
                raise HubUnavailable(
                    "the hub is not answering (restarting?); nothing was done, try again"
                ) from e
            raise NotAllowed(f"the hub refused to describe user {name!r} ({e.code})") from e
        except OSError as e:
            raise HubUnavailable(
                "the hub is not answering (restarting?); nothing was done, try again"
            ) from e
        data: dict[str, Any] = json.loads(r.body)
        return data

    async def job_spec(self, caller: Caller, raw: bytes, job_id: str) -> JobSpec:
        """The validated job of a ``POST api/jobs`` body, its notebook converted: in a
        worker process, so that a large notebook never stalls other users' requests.
        A body over ``max_notebook_bytes`` is refused (413) before any work."""
        if len(raw) > self.max_notebook_bytes:
            raise TooLarge(
                "notebook",
                f"the request is {len(raw) / 2**20:.1f} MiB; a notebook may be at most "
                f"{self.max_notebook_bytes / 2**20:.1f} MiB (c.JobsApp.max_notebook_bytes)",
            )
        return await self.runner.run(
            "notebook",
            job_from_request,
            self.gpuhub,
            caller.name,
            caller.groups,
            raw,
            job_id=job_id,
            max_workers=self.max_workers,
            server_image=caller.server_image,
        )

    def _live(self) -> tuple[Ledger, dict[str, tuple[int, int | None]]]:
        """The backend's ledger and capacity (blocking on one machine: a thread's job)."""
        return self.backend.quota_ledger(), self.backend.capacity()

    async def options(self, caller: Caller) -> dict[str, Any]:
        """``GET api/options``: what the dialog may offer ``caller``, with the quota left
        computed by :func:`gpuhub.availability.availability` (the spawn form's numbers,
        per GPU type and group), which framework each of the caller's images can run
        (where the backend knows), and the time limit of each choice."""
        cfg = self.gpuhub
        ledger, capacity = await asyncio.to_thread(self._live)
        avail = availability(
            cfg,
            ledger,
            user=caller.name,
            groups=caller.groups,
            capacity={t: (total, free or 0) for t, (total, free) in capacity.items()},
            source="jobs",
            queues=any(free is None for _total, free in capacity.values()),
        )
        types: dict[str, dict[str, Any]] = {}
        for entry in (t for p in avail["profiles"] for t in p["gpu_types"]):
            row = types.setdefault(
                entry["slug"],
                {
                    "slug": entry["slug"],
                    "display_name": entry["display_name"],
                    "free": capacity.get(entry["slug"], (0, 0))[1],
                    "total": entry["total"],
                    "groups": [],
                    "user_left": entry["user_left"],
                },
            )
            known = {g["group"] for g in row["groups"]}
            row["groups"] += [g for g in entry["groups"] if g["group"] not in known]
        best: dict[str, dict[str, Any]] = {}
        for g in (g for t in types.values() for g in t["groups"]):
            if g["group"] not in best or g["left"] > best[g["group"]]["left"]:
                best[g["group"]] = dict(g)
        user_left = next((t["user_left"] for t in types.values()), None)
        if user_left is None and cfg.quotas.per_user_gpus is not None:
            user_left = max(0, cfg.quotas.per_user_gpus - ledger.totals.used(user=caller.name))
        visible = visible_profiles(cfg, caller.groups)
        gpu_profiles = [p for p in visible if p.gpu is not None]
        image = None
        if visible:
            offered = {s for p in visible for s in p.images}
            img = (
                cfg.images[caller.server_image]
                if caller.server_image in offered and caller.server_image in cfg.images
                else default_image(cfg, (gpu_profiles or visible)[0])
            )
            image = {"slug": img.slug, "display_name": img.display_name}
        slugs = dict.fromkeys(s for p in visible for s in p.images if s in cfg.images)
        images = [
            {
                "slug": slug,
                "display_name": cfg.images[slug].display_name,
                "frameworks": await self.backend.frameworks(cfg.images[slug]),
            }
            for slug in slugs
        ]
        return {
            "frameworks": list(FRAMEWORKS),
            # per type: each group's quota left for that type (per_type limits included)
            "gpu_types": list(types.values()),
            # per group: the most it has left for any of the types above
            "groups": list(best.values()),
            "user_left": user_left,
            "max_workers": self.max_workers,
            # 0 = CPU workers (gloo), always allowed by the policy
            "gpu_counts": [0, *sorted({n for p in gpu_profiles if p.gpu for n in p.gpu.counts})],
            "image": image,
            "images": images,
            # per GPU type and count (CPU workers: null, 0): the job's time limit or null
            "time_limits": time_limits(cfg, caller.name, caller.groups),
            **self.backend.options_extra(),
        }
