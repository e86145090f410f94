"""Prometheus ``/metrics`` of the monitor (``prometheus_client``, a JupyterHub
dependency), from a plain :class:`MetricsSnapshot` taken at each sample.

Names follow Prometheus conventions (``gpuhub_`` prefix, base units, ``_total`` for
counters); labels are groups, GPU types, kinds and actions, never user names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..model import Allocation, GpuhubConfig

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class MetricsSnapshot:
    allocated: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    """GPUs held now by ``(group, gpu_type, kind)``."""
    queued: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    """GPUs asked for and not yet held (Kubernetes: Pending pods) by
    ``(group, gpu_type, kind)``."""
    quotas: Mapping[str, int] = field(default_factory=dict)
    """GPU quota by group."""
    seconds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """All-time ``(held, idle)`` GPU-seconds by group."""
    culls: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """Servers given back for idleness by ``(group, action)``."""


def queued_series(
    cfg: GpuhubConfig, queued: Iterable[Allocation]
) -> dict[tuple[str, str, str], int]:
    """``gpuhub_gpus_queued``: the GPUs of ``queued`` allocations (Kubernetes: Pending
    pods) by ``(group, gpu_type, kind)``, with a 0 for every other group with a quota, GPU
    type and kind, so that a dashboard shows 0, not "no data".  On one machine nothing
    waits: a server or job gets its GPUs when it starts, or is refused (403 naming who
    holds them), so every series is 0."""
    out = {
        (q.group, t, kind): 0
        for q in cfg.quotas.groups
        for t in sorted(cfg.gpu_types)
        for kind in ("job", "notebook")
    }
    for a in queued:
        out[(a.group, a.gpu_type, a.kind)] = out.get((a.group, a.gpu_type, a.kind), 0) + a.gpus
    return out


def families(s: MetricsSnapshot) -> list[Metric]:
    allocated = GaugeMetricFamily(
        "gpuhub_gpus_allocated",
        "GPUs held now by servers and jobs",
        labels=["group", "gpu_type", "kind"],
    )
    for (group, gpu_type, kind), n in sorted(s.allocated.items()):
        allocated.add_metric([group, gpu_type, kind], n)
    queued = GaugeMetricFamily(
        "gpuhub_gpus_queued",
        "GPUs of servers and jobs waiting to be placed (Kubernetes: Pending pods)",
        labels=["group", "gpu_type", "kind"],
    )
    for (group, gpu_type, kind), n in sorted(s.queued.items()):
        queued.add_metric([group, gpu_type, kind], n)
    quota = GaugeMetricFamily("gpuhub_group_quota_gpus", "GPU quota of a group", labels=["group"])
    for group, n in sorted(s.quotas.items()):
        quota.add_metric([group], n)
    held = CounterMetricFamily(
        "gpuhub_gpu_held_seconds",
        "GPU-seconds held by a group's servers and jobs",
        labels=["group"],
    )
    idle = CounterMetricFamily(
        "gpuhub_gpu_idle_seconds",
        "GPU-seconds held while below the idle threshold (measured time only)",
        labels=["group"],
    )
    for group, (h, i) in sorted(s.seconds.items()):
        held.add_metric([group], h)
        idle.add_metric([group], i)
    culls = CounterMetricFamily(
        "gpuhub_idle_culls", "Servers given back for GPU idleness", labels=["group", "action"]
    )
    for (group, action), n in sorted(s.culls.items()):
        culls.add_metric([group, action], n)
    return [allocated, queued, quota, held, idle, culls]


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from families(self.snapshot)


def render(snapshot: MetricsSnapshot) -> bytes:
    """The text exposition format of ``snapshot``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)
