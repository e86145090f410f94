"""The admin's GPU page as plain data: from the allocations held now (with their last
samples and idle verdicts), the last hour's utilisation samples, the GPU-hours report of
the chosen period and the config.  Pure: the handlers only render it.

The period of the GPU-hours (``since``) is one of :data:`PERIODS` or a date, checked
against that allow-list before anything is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import OptionError
from ..model import Allocation, GpuhubConfig, Kind
from .accounting import HOUR, Report, Tick, Totals, mean_utilization
from .report import parse_since
from .state import Held

PERIODS = ("24h", "7d", "30d")
"""The choices of the period selector (a date ``YYYY-MM-DD`` is accepted too)."""
DEFAULT_PERIOD = "24h"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

NO_QUEUE = "On one machine jobs never queue: a job over its group's quota is refused."


@dataclass(frozen=True)
class TypeUse:
    """GPUs of one type a group holds, and its per-type limit (``None``: none)."""

    gpu_type: str
    used: int
    quota: int | None


@dataclass(frozen=True)
class GroupRow:
    """A group's GPUs held now against its quota (``None``: no quota configured), by type
    where it holds any or has a per-type limit; ``queued`` jobs waiting (``None``: this
    backend does not queue)."""

    group: str
    used: int
    quota: int | None
    by_type: tuple[TypeUse, ...]
    queued: int | None


@dataclass(frozen=True)
class HolderRow:
    """One server or job holding GPUs."""

    key: str
    user: str
    kind: Kind
    name: str
    """The server name (``""``: the default server) or the job id."""
    group: str
    gpu_type: str
    gpus: int
    where: str
    """Device IDs on one machine (``GPU 0, 1``); on a cluster, where the backend says."""
    since: float | None
    starting: bool
    """A server the hub does not call ready yet."""
    util_now: float | None
    """Mean utilisation of its GPUs at the last sample (``None``: not measured)."""
    util_hour: float | None
    """Mean over its measured time in the last hour."""
    idle_minutes: float | None
    """How long every GPU has been below its profile's threshold (``None``: the profile
    has no ``idle_culling``, or it is a job)."""
    cull_at: float | None
    """When it is given back if it stays idle, once its owner is warned."""
    cull_action: str | None


@dataclass(frozen=True)
class UsageRow:
    name: str
    gpu_hours: float
    idle_gpu_hours: float
    holding: int


@dataclass(frozen=True)
class AdminPage:
    now: float
    period: str
    since: float
    until: float
    groups: tuple[GroupRow, ...]
    holders: tuple[HolderRow, ...]
    group_hours: tuple[UsageRow, ...]
    user_hours: tuple[UsageRow, ...]
    queue_note: str
    """Why ``queued`` is not shown (empty when it is)."""
    type_names: Mapping[str, str]
    """GPU type slugs to their display names."""


def parse_period(text: str | None, now: float) -> tuple[str, float]:
    """The period selector's value and its start: one of :data:`PERIODS` or a past date
    ``YYYY-MM-DD`` (UTC); anything else is an :class:`OptionError` naming ``since``."""
    value = (text or DEFAULT_PERIOD).strip()
    if value not in PERIODS and not _DATE.fullmatch(value):
        raise OptionError("since", f"must be one of {', '.join(PERIODS)} or a date YYYY-MM-DD")
    try:
        since = parse_since(value, now)
    except ValueError:
        raise OptionError("since", f"{value!r} is not a date (YYYY-MM-DD)") from None
    if since >= now:
        raise OptionError("since", f"{value} is not in the past")
    return value, since


def where(alloc: Allocation) -> str:
    """Where its GPUs are: local device IDs (none on a cluster, where the kubelet picks)."""
    if alloc.devices:
        return "GPU " + ", ".join(str(i) for i in alloc.devices)
    return ""


def holder_row(h: Held, util_hour: float | None) -> HolderRow:
    a, v = h.alloc, h.verdict
    warned = v.action in ("warn", "cull") and h.policy is not None
    name = a.key.partition(":")[2].partition("/")[2] if a.kind == "notebook" else a.key[4:]
    return HolderRow(
        key=a.key,
        user=a.user,
        kind=a.kind,
        name=name,
        group=a.group,
        gpu_type=a.gpu_type,
        gpus=a.gpus,
        where=where(a),
        since=a.since.timestamp() if a.since else None,
        starting=h.server is not None and not h.server.ready,
        util_now=h.utilization,
        util_hour=util_hour,
        idle_minutes=v.idle_seconds / 60 if h.policy is not None else None,
        cull_at=v.cull_at if warned else None,
        cull_action=h.policy.action if warned and h.policy else None,
    )


def group_rows(
    config: GpuhubConfig, allocs: Iterable[Allocation], queued: Mapping[str, int] | None
) -> tuple[GroupRow, ...]:
    """Every group with a quota (in the YAML's order), then any other group holding GPUs."""
    used: dict[str, dict[str, int]] = {}
    for a in allocs:
        by_type = used.setdefault(a.group, {})
        by_type[a.gpu_type] = by_type.get(a.gpu_type, 0) + a.gpus
    quotas = {q.group: q for q in config.quotas.groups}
    names = [*quotas, *sorted(used.keys() - quotas.keys())]
    rows = []
    for g in names:
        mine, q = used.get(g, {}), quotas.get(g)
        limits = q.per_type if q else {}
        types = sorted(mine.keys() | limits.keys())
        rows.append(
            GroupRow(
                group=g,
                used=sum(mine.values()),
                quota=q.gpus if q else None,
                by_type=tuple(TypeUse(t, mine.get(t, 0), limits.get(t)) for t in types),
                queued=None if queued is None else queued.get(g, 0),
            )
        )
    return tuple(rows)


def usage_rows(book: Mapping[str, Totals]) -> tuple[UsageRow, ...]:
    return tuple(
        UsageRow(name, book[name].gpu_hours, book[name].idle_gpu_hours, book[name].holding)
        for name in sorted(book)
    )


def admin_page(
    config: GpuhubConfig,
    held: Iterable[Held],
    last_hour: Sequence[Tick],
    report: Report,
    period: str,
    now: float,
    queued: Mapping[str, int] | None = None,
) -> AdminPage:
    """The page at ``now``: ``held`` the monitor's last view of every GPU allocation,
    ``last_hour`` the history's ticks of the hour before ``now``, ``report`` the
    GPU-hours of the chosen period, ``queued`` jobs waiting per group (``None`` where the
    backend never queues)."""
    held = sorted(held, key=lambda h: (h.alloc.group, h.alloc.user, h.alloc.key))
    hour = mean_utilization(last_hour, now - HOUR, now)
    holders = []
    for h in held:
        start = h.alloc.since.timestamp() if h.alloc.since else None
        holders.append(holder_row(h, hour.get((h.alloc.key, start)) if start else None))
    return AdminPage(
        now=now,
        period=period,
        since=report.since,
        until=report.until,
        groups=group_rows(config, (h.alloc for h in held), queued),
        holders=tuple(holders),
        group_hours=usage_rows(report.groups),
        user_hours=usage_rows(report.users),
        queue_note=NO_QUEUE if queued is None else "",
        type_names={slug: t.display_name for slug, t in config.gpu_types.items()},
    )


def stamp(t: float | None, now: float) -> str:
    """``09:12`` today (UTC), else ``2026-11-30 09:12``; ``""`` for ``None``."""
    if t is None:
        return ""
    when, today = datetime.fromtimestamp(t, UTC), datetime.fromtimestamp(now, UTC)
    fmt = "%H:%M" if when.date() == today.date() else "%Y-%m-%d %H:%M"
    return when.strftime(fmt)
