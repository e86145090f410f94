"""The few REST calls the monitor makes with its own token: list the hub's active
servers, read a user's groups, stop a server, start one (restart on CPU); cancel a job
in ``gpuhub-jobs`` (the admin's GPU page).  One client, so tests and the service share
it."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ..jobs.errors import HubUnavailable
from .state import HubServer, server_key

STOP_WAIT = 120.0
_PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}


def server_path(user: str, name: str) -> str:
    u = quote(user, safe="")
    return f"/users/{u}/server" if not name else f"/users/{u}/servers/{quote(name, safe='')}"


class HubClient:
    """``api_url``: the hub's ``…/hub/api``; ``token``: the service's API token."""

    what = "the hub"
    """Who answers, as errors name it."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """``(status, parsed JSON or None)``; :class:`HubUnavailable` when the hub does
        not answer or fails."""
        try:
            r = await AsyncHTTPClient().fetch(
                self.api_url + path,
                method=method,
                headers={"Authorization": f"token {self.token}", **(headers or {})},
                body=None if body is None else json.dumps(body),
                allow_nonstandard_methods=True,
                raise_error=False,
            )
        except (OSError, HTTPClientError) as e:
            raise HubUnavailable(f"{self.what} is not answering ({e})") from e
        if r.code >= 500 or r.code == 599:
            raise HubUnavailable(f"{self.what} answered {r.code} to {method} {path}")
        return r.code, json.loads(r.body) if r.body else None

    async def servers(self) -> dict[str, HubServer]:
        """Every active server by ledger key (all pages of the hub's user list)."""
        users: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            code, page = await self.call(
                "GET", f"/users?state=active&offset={offset}", headers=_PAGINATED
            )
            if code != 200:
                raise HubUnavailable(f"the hub refused to list users ({code})")
            users += page["items"]
            nxt = (page.get("_pagination") or {}).get("next")
            offset = nxt["offset"] if nxt else None
        out = {}
        for u in users:
            for name, s in (u.get("servers") or {}).items():
                opts = s.get("user_options") or {}
                profile, image = opts.get("profile"), opts.get("image")
                out[server_key(u["name"], name)] = HubServer(
                    user=u["name"],
                    name=name,
                    profile=profile if isinstance(profile, str) else None,
                    image=image if isinstance(image, str) else None,
                    ready=bool(s.get("ready")),
                )
        return out

    async def groups(self, user: str) -> list[str]:
        """``user``'s groups in the hub now (the service's ``read:users:groups``)."""
        code, model = await self.call("GET", f"/users/{quote(user, safe='')}")
        if code != 200 or not isinstance(model, dict):
            raise HubUnavailable(f"the hub did not answer {user}'s groups ({code})")
        return [g for g in model.get("groups") or () if isinstance(g, str)]

    async def stop(self, user: str, name: str) -> int:
        code, _ = await self.call("DELETE", server_path(user, name))
        return code

    async def start(self, user: str, name: str, options: dict[str, Any]) -> int:
        code, _ = await self.call("POST", server_path(user, name), options)
        return code

    async def wait_stopped(self, user: str, name: str) -> bool:
        """Whether the hub stopped listing the server within :data:`STOP_WAIT` seconds
        (the hub has no event for it: asked every half second)."""
        try:
            async with asyncio.timeout(STOP_WAIT):
                while True:
                    code, model = await self.call("GET", f"/users/{quote(user, safe='')}")
                    if code != 200 or name not in (model.get("servers") or {}):
                        return True
                    await asyncio.sleep(0.5)
        except TimeoutError:
            return False


class JobsClient(HubClient):
    """``api_url``: the ``gpuhub-jobs`` service's ``…/api``; ``token``: the monitor's
    own, which holds :data:`gpuhub.scopes.JOBS_CANCEL_ANY`."""

    what = "the jobs service"

    async def cancel(self, job_id: str) -> tuple[int, str]:
        """``DELETE api/jobs/{id}``: the status and the service's message."""
        code, body = await self.call("DELETE", f"/jobs/{quote(job_id, safe='')}")
        message = body.get("message", "") if isinstance(body, dict) else ""
        return code, str(message or "")
