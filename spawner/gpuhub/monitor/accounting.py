"""GPU-hours per group and per user over a period, from allocation intervals
(:class:`Hold`), utilisation samples (:class:`Tick`) and, for older times, hourly rows
(:class:`Rolled`, see :mod:`gpuhub.monitor.rollup`).  Pure.

*Held* GPU-hours count every GPU of an allocation for the part of its interval inside
the period, measured or not.  *Idle* GPU-hours count only measured time: each tick
covers the ``seconds`` before its ``at``, during which ``idle_gpus`` GPUs were below the
idle threshold.  Time without samples is never called idle.  An hourly row only partly
inside the period counts pro rata.  Seconds are summed first and turned into hours once,
so whole-hour totals do not depend on how the time was split into rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..model import Kind

HOUR = 3600.0


@dataclass(frozen=True)
class Hold:
    """GPUs held by one allocation from ``start`` to ``end`` (``None``: still held)."""

    key: str
    user: str
    group: str
    gpu_type: str
    gpus: int
    kind: Kind
    start: float
    end: float | None = None
    counted_from: float | None = None
    """Time before this is in hourly rows (``None``: none of it is)."""


@dataclass(frozen=True)
class Rolled:
    """An hourly row as the report needs it: GPU-seconds held and idle by ``user`` for
    ``group`` in the hour starting at ``hour``."""

    user: str
    group: str
    hour: float
    held_gpu_seconds: float
    idle_gpu_seconds: float


@dataclass(frozen=True)
class Tick:
    """A sample of the hold ``(key, start)``: over the ``seconds`` up to ``at`` (clipped
    to the hold), ``idle_gpus`` of its GPUs were idle (``util``: mean utilisation, %)."""

    key: str
    start: float
    at: float
    seconds: float
    idle_gpus: int
    util: float = 0.0


@dataclass
class Totals:
    gpu_hours: float = 0.0
    idle_gpu_hours: float = 0.0
    holding: int = 0
    """GPUs still held at the end of the period."""

    @property
    def busy_gpu_hours(self) -> float:
        return self.gpu_hours - self.idle_gpu_hours


@dataclass
class Report:
    since: float
    until: float
    groups: dict[str, Totals] = field(default_factory=dict)
    users: dict[str, Totals] = field(default_factory=dict)


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Length of the intersection of ``[a0, a1]`` and ``[b0, b1]`` (0 when disjoint)."""
    return max(0.0, min(a1, b1) - max(a0, b0))


def gpu_hours(
    holds: Iterable[Hold],
    ticks: Iterable[Tick],
    since: float,
    until: float,
    rolled: Iterable[Rolled] = (),
    rolled_until: float | None = None,
) -> Report:
    """Held and idle GPU-hours of every group and user within ``[since, until]``.

    ``rolled``: hourly rows of the time before ``rolled_until`` (ticks count only after
    it; a hold only after its ``counted_from``)."""
    report = Report(since, until)
    seconds: dict[tuple[str, str], list[float]] = {}  # (book, name) -> [held, idle]

    def add(hold_group: str, hold_user: str, held: float, idle: float) -> None:
        for key in (("group", hold_group), ("user", hold_user)):
            acc = seconds.setdefault(key, [0.0, 0.0])
            acc[0] += held
            acc[1] += idle

    by_hold: dict[tuple[str, float], Hold] = {}
    for h in holds:
        by_hold[(h.key, h.start)] = h
        start = h.start if h.counted_from is None else max(h.start, h.counted_from)
        held = h.gpus * overlap(start, until if h.end is None else h.end, since, until)
        add(h.group, h.user, held, 0.0)
        holding = h.gpus if h.start <= until and (h.end is None or h.end > until) else 0
        report.groups.setdefault(h.group, Totals()).holding += holding
        report.users.setdefault(h.user, Totals()).holding += holding
    floor = rolled_until if rolled_until is not None else -math.inf
    for t in ticks:
        hold = by_hold.get((t.key, t.start))
        if hold is None:
            continue
        end = until if hold.end is None else hold.end
        lo, hi = max(t.at - t.seconds, hold.start, floor), min(t.at, end)
        add(hold.group, hold.user, 0.0, min(t.idle_gpus, hold.gpus) * overlap(lo, hi, since, until))
    for r in rolled:
        part = overlap(r.hour, r.hour + HOUR, since, until)
        if part <= 0:
            continue
        if part == HOUR:
            add(r.group, r.user, r.held_gpu_seconds, r.idle_gpu_seconds)
        else:
            add(r.group, r.user, r.held_gpu_seconds * part / HOUR, r.idle_gpu_seconds * part / HOUR)
    for (book, name), (held, idle) in seconds.items():
        totals = (report.groups if book == "group" else report.users).setdefault(name, Totals())
        totals.gpu_hours = held / HOUR
        totals.idle_gpu_hours = idle / HOUR
    return report


def mean_utilization(
    ticks: Iterable[Tick], since: float, until: float
) -> dict[tuple[str, float], float]:
    """Mean utilisation (%) of every hold ``(key, start)`` over its measured time within
    ``[since, until]``, each tick weighted by the part of its ``seconds`` inside."""
    weight: dict[tuple[str, float], float] = {}
    total: dict[tuple[str, float], float] = {}
    for t in ticks:
        w = overlap(t.at - t.seconds, t.at, since, until)
        if w <= 0:
            continue
        hold = (t.key, t.start)
        weight[hold] = weight.get(hold, 0.0) + w
        total[hold] = total.get(hold, 0.0) + w * t.util
    return {hold: total[hold] / w for hold, w in weight.items()}
