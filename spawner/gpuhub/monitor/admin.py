"""What the admin's GPU page does: assemble its view model (history read in a thread)
and the two actions, each checked against what is held *now*: stop a GPU server through
the hub, cancel a GPU job through ``gpuhub-jobs``, both with the monitor's own token."""

from __future__ import annotations

import asyncio
import time

from ..errors import GpuhubError
from .accounting import HOUR, Report, Tick
from .adminpage import AdminPage, admin_page, parse_period
from .hubapi import JobsClient
from .service import MonitorService
from .state import server_key


class NotHeld(GpuhubError):
    """The server or job holds no GPU now (it ended, or never did): nothing to do (404)."""

    status = 404


class Refused(GpuhubError):
    """The hub or the jobs service refused the action (409, with their reason)."""

    status = 409


class NoJobsService(GpuhubError):
    """The monitor was started without the jobs service's URL (503)."""

    status = 503


class AdminDesk:
    """``jobs``: the ``gpuhub-jobs`` client (``None`` where no jobs service runs)."""

    def __init__(self, service: MonitorService, jobs: JobsClient | None) -> None:
        self.service = service
        self.jobs = jobs

    def _read(self, since: float, now: float) -> tuple[Report, list[Tick]]:
        """The period's GPU-hours and the last hour's ticks (blocking: SQLite)."""
        history = self.service.history
        window = history.window(min(since, now - HOUR), now)
        last_hour = [t for t in window.ticks if t.at >= now - HOUR]
        return window.report(since, now), last_hour

    async def page(self, since_text: str | None) -> AdminPage:
        """The page for the period ``since_text`` (validated first)."""
        now = time.time()
        period, since = parse_period(since_text, now)
        report, last_hour = await asyncio.to_thread(self._read, since, now)
        cfg = self.service.active.get()
        held = list(self.service.monitor.held.values())
        return admin_page(cfg, held, last_hour, report, period, now)

    async def stop_server(self, user: str, name: str, by: str) -> str:
        """Stop ``user``'s GPU server ``name`` through the hub; the spawner's stop frees
        its GPUs.  While it stops, a "keep it" is answered 409 and no cull starts."""
        key = server_key(user, name)
        svc = self.service
        held = svc.monitor.held.get(key)
        if held is None or held.alloc.kind != "notebook":
            raise NotHeld(f"{user} has no GPU server {name!r} now")
        if key in svc.culling:
            return f"{describe(user, name)} is already being stopped"
        svc.culling.add(key)  # no await since the check: one stop per server at a time
        try:
            code = await svc.hub.stop(user, name)
        except GpuhubError:
            svc.culling.discard(key)
            raise
        if code >= 400 and code != 404:
            svc.culling.discard(key)
            raise Refused(f"the hub refused to stop {describe(user, name)} ({code})")
        svc.log.warning("gpuhub-monitor: %s (admin) stopped %s", by, key)
        return f"stopping {describe(user, name)}: its GPUs are freed when it has stopped"

    async def cancel_job(self, job_id: str, by: str) -> str:
        """Cancel GPU job ``job_id`` through the jobs service."""
        held = self.service.monitor.held.get(f"job:{job_id}")
        if held is None or held.alloc.kind != "job":
            raise NotHeld(f"no job {job_id!r} holds GPUs now")
        if self.jobs is None:
            raise NoJobsService("no jobs service runs beside this monitor: cannot cancel")
        code, message = await self.jobs.cancel(job_id)
        if code >= 400:
            raise Refused(f"the jobs service refused to cancel job {job_id} ({code}: {message})")
        self.service.log.warning("gpuhub-monitor: %s (admin) cancelled job:%s", by, job_id)
        return f"cancelled {held.alloc.user}'s job {job_id}: its GPUs are freed"


def describe(user: str, name: str) -> str:
    return f"{user}'s server" if not name else f"{user}'s server {name!r}"
