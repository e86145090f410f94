"""The monitor's work, one sample at a time: read every GPU allocation from the holdings
(the machine-wide ledger, or the cluster's pods), sample it, advance the idle clocks,
record the history, and give back the servers whose time is up through the hub (their
GPUs are then freed by the spawner's normal stop).  Blocking steps (ledger, NVML,
Prometheus, SQLite) run in threads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..activeconfig import ActiveConfig
from ..errors import GpuhubError
from ..ledger import Device
from ..model import Allocation, GpuhubConfig, MonitorConfig
from .history import HistoryStore
from .holdings import Holdings, HoldingsSource
from .hubapi import HubClient
from .metrics import MetricsSnapshot, queued_series
from .nvml import NvmlSource
from .sources import DeviceSample, ReplaySource, Source, SourceUnavailable
from .state import Held, HubServer, Monitor


def open_source(cfg: MonitorConfig) -> Source | None:
    """The configured source; ``None`` for ``auto`` without NVML.  Raises
    :class:`SourceUnavailable` when the configured one cannot be opened."""
    if cfg.source == "prometheus" and cfg.prometheus_url:
        from .prometheus import PrometheusSource

        return PrometheusSource(cfg.prometheus_url)
    if cfg.source == "replay":
        if cfg.replay_trace is None:
            raise SourceUnavailable("monitor.source is replay but monitor.replay_trace is unset")
        return ReplaySource.from_file(cfg.replay_trace)
    try:
        return NvmlSource()
    except SourceUnavailable:
        if cfg.source == "nvml":
            raise
        return None


def read_all(
    source: Source, allocs: Sequence[Allocation], devices: Mapping[int, Device], now: float
) -> dict[str, tuple[DeviceSample, ...]]:
    """Samples of every allocation (blocking)."""
    return {
        a.key: source.read(a, [devices[i] for i in a.devices if i in devices], now) for a in allocs
    }


KEEP_CULLED = 10
"""Servers given back that a user's ``GET api/servers`` lists (the newest)."""


@dataclass(frozen=True)
class Culled:
    """A server given back, as its owner is told (``GET api/servers``)."""

    server: str
    at: float
    action: str
    gpus: int
    gpu_type: str


class MonitorService:
    """``holdings``: where the GPU allocations are read (started by the app)."""

    def __init__(
        self,
        active: ActiveConfig,
        holdings: HoldingsSource,
        history: HistoryStore,
        hub: HubClient,
        log: logging.Logger,
    ) -> None:
        self.active = active
        self.holdings = holdings
        self.history = history
        self.hub = hub
        self.log = log
        self.queued: tuple[Allocation, ...] = ()
        self.monitor = Monitor()
        self.culling: set[str] = set()
        self.culled: dict[str, list[Culled]] = {}
        self.metrics = MetricsSnapshot()
        self._source: tuple[MonitorConfig, Source | None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def source(self, cfg: MonitorConfig) -> Source | None:
        """The source for ``cfg`` (opened again only when the settings change; blocking:
        called in the sampling thread)."""
        if self._source is None or self._source[0] != cfg:
            try:
                src = open_source(cfg)
            except SourceUnavailable as e:
                self.log.error("gpuhub-monitor: %s; GPU-hours are recorded, nothing is culled", e)
                src = None
            if src is None and cfg.source == "auto":
                self.log.info("gpuhub-monitor: no NVML here; GPU utilisation is not measured")
            self._source = (cfg, src)
        return self._source[1]

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every ``monitor.sample_seconds`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                self.log.exception("gpuhub-monitor: sample failed")
            interval = self.active.get().monitor.sample_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
        for task in list(self._tasks):
            await asyncio.wait([task], timeout=5)

    def _sample(
        self, cfg: GpuhubConfig, holdings: Holdings, now: float
    ) -> dict[str, tuple[DeviceSample, ...]]:
        """The samples of the allocations held (blocking: NVML, Prometheus)."""
        source = self.source(cfg.monitor)
        if source is None:
            return {}
        return read_all(source, holdings.held, holdings.devices, now)

    async def tick(self) -> None:
        cfg = self.active.get()
        now = time.time()
        holdings = await self.holdings.read(cfg)
        allocs, self.queued = list(holdings.held), holdings.queued
        samples = await asyncio.to_thread(self._sample, cfg, holdings, now)
        try:
            servers = await self.hub.servers()
        except GpuhubError as e:
            self.log.warning("gpuhub-monitor: %s; nothing is culled this time", e)
            servers = {}
        # from the verdicts to the culls with no await between: a "keep it" is either
        # seen by this tick or answered 409 (already being given back)
        due = self.monitor.tick(cfg, allocs, samples, servers, time.time())
        self.culling &= {a.key for a in allocs}  # a cull ends when its GPUs are free
        for held in due:
            if held.alloc.key not in self.culling:
                self.culling.add(held.alloc.key)
                self._keep_task(asyncio.create_task(self._cull(held, cfg)))
        gap = 2 * cfg.monitor.sample_seconds
        await asyncio.to_thread(self.history.record, now, self.monitor.observations(cfg), gap)
        await self._refresh_metrics(cfg)
        m = cfg.monitor  # old samples to hourly rows: one bounded batch per sample
        await asyncio.to_thread(self.history.roll_up, now, m.history_days, m.history_max_days)

    def _keep_task(self, task: asyncio.Task[None]) -> None:
        """Hold a reference to ``task`` until it is done (awaited by :meth:`run` at stop)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_metrics(self, cfg: GpuhubConfig) -> None:
        seconds, culls = await asyncio.to_thread(self.history.counters)
        self.metrics = MetricsSnapshot(
            allocated=dict(self.monitor.allocated()),
            queued=queued_series(cfg, self.queued),
            quotas={q.group: q.gpus for q in cfg.quotas.groups},
            seconds=seconds,
            culls=culls,
        )

    async def _cull(self, held: Held, cfg: GpuhubConfig) -> None:
        """Stop the server through the hub (and start it again on the CPU profile when the
        profile says so)."""
        a, server, policy = held.alloc, held.server, held.policy
        if server is None or policy is None:  # only servers with a policy are ever due
            return
        self.log.warning(
            "gpuhub-monitor: %s idle for %.1f min (below %g%%): %s",
            a.key,
            held.verdict.idle_seconds / 60,
            policy.threshold_percent,
            policy.action,
        )
        try:
            if not await self._stop(a.key, server):
                return  # tried again at the next sample
            at = time.time()
            mine = self.culled.setdefault(a.user, [])
            mine[:] = [
                *mine[-(KEEP_CULLED - 1) :],
                Culled(server.name, at, policy.action, a.gpus, a.gpu_type),
            ]
            await asyncio.to_thread(self.history.note_cull, a, at, policy.action)
            await self._refresh_metrics(cfg)
            if policy.action == "restart-on-cpu" and policy.cpu_profile:
                await self._restart_on_cpu(
                    server.user, server.name, server.image, cfg, policy.cpu_profile
                )
        except GpuhubError as e:
            self.log.error("gpuhub-monitor: could not give back %s: %s", a.key, e)
            self.culling.discard(a.key)

    async def _stop(self, key: str, server: HubServer) -> bool:
        """Stop ``server`` through the hub; ``False`` when the hub refuses (``key`` is no
        longer being given back then)."""
        code = await self.hub.stop(server.user, server.name)
        if code >= 400:
            self.log.error("gpuhub-monitor: the hub refused to stop %s (%d)", key, code)
            self.culling.discard(key)
            return False
        return True

    async def _restart_on_cpu(
        self, user: str, name: str, image: str | None, cfg: GpuhubConfig, cpu_profile: str
    ) -> None:
        """Once the hub no longer lists the server, start it on ``cpu_profile`` (with its
        image when that profile offers it)."""
        if not await self.hub.wait_stopped(user, name):
            self.log.error("gpuhub-monitor: %s/%s did not stop; not restarting it", user, name)
            return
        target = cfg.profile(cpu_profile)
        options: dict[str, Any] = {"profile": cpu_profile}
        if target is not None and image in target.images:
            options["image"] = image
        code = await self.hub.start(user, name, options)
        if code >= 400:
            self.log.error("gpuhub-monitor: restarting %s/%s on CPU failed (%d)", user, name, code)

    def give_back(self, held: Held, cpu_profile: str, cfg: GpuhubConfig) -> None:
        """Give the GPUs back at the owner's request: stop the server through the hub and
        start it again on ``cpu_profile``.  The caller checked that ``held`` is not being
        given back already, with no await since (the key joins :attr:`culling` here)."""
        self.culling.add(held.alloc.key)
        self._keep_task(asyncio.create_task(self._give_back(held, cpu_profile, cfg)))

    async def _give_back(self, held: Held, cpu_profile: str, cfg: GpuhubConfig) -> None:
        a, server = held.alloc, held.server
        if server is None:  # only servers are given back (the handler checked)
            return
        self.log.info("gpuhub-monitor: %s gives its GPUs back (on %s)", a.key, cpu_profile)
        try:
            if not await self._stop(a.key, server):
                return
            await self._restart_on_cpu(server.user, server.name, server.image, cfg, cpu_profile)
        except GpuhubError as e:
            self.log.error("gpuhub-monitor: could not give back %s: %s", a.key, e)
            self.culling.discard(a.key)

    def view(self, user: str) -> dict[str, Any]:
        """``GET api/servers``: the caller's GPU servers now (with the GPU type's display
        name), and those given back."""
        types = self.active.get().gpu_types
        return {
            "servers": [
                {
                    **held_json(h),
                    "gpu_type_name": t.display_name
                    if (t := types.get(h.alloc.gpu_type))
                    else h.alloc.gpu_type,
                }
                for h in self.monitor.held.values()
                if h.server and h.server.user == user
            ],
            "culled": [c.__dict__ for c in self.culled.get(user, [])],
        }


def held_json(h: Held) -> dict[str, Any]:
    v = h.verdict
    warning = None
    if v.action in ("warn", "cull") and h.policy is not None:
        warning = {"cull_at": v.cull_at, "action": h.policy.action}
    return {
        "server": h.server.name if h.server else None,
        "gpus": h.alloc.gpus,
        "gpu_type": h.alloc.gpu_type,
        "group": h.alloc.group,
        "devices": list(h.alloc.devices),
        "since": h.alloc.since.isoformat() if h.alloc.since else None,
        "utilization": h.utilization,
        "idle_seconds": v.idle_seconds,
        "idle_culling": None
        if h.policy is None
        else {
            "threshold_percent": h.policy.threshold_percent,
            "idle_minutes": h.policy.idle_minutes,
            "warn_minutes": h.policy.warn_minutes,
            "action": h.policy.action,
        },
        "cull_at": v.cull_at,
        "warning": warning,
    }
