"""GPU-hours per group and per user over a period, from allocation intervals
(:class:`Hold`) and utilisation samples (:class:`Tick`).  Pure.

*Held* GPU-hours count every GPU of an allocation for the part of its interval inside
the period, measured or not.  *Idle* GPU-hours count only measured time: each tick
covers the ``seconds`` before its ``at``, during which ``idle_gpus`` GPUs were below the
idle threshold.  Time without samples is never called idle.
"""

from __future__ import annotations

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


def gpu_hours(holds: Iterable[Hold], ticks: Iterable[Tick], since: float, until: float) -> Report:
    """Held and idle GPU-hours of every group and user within ``[since, until]``."""
    report = Report(since, until)
    by_hold: dict[tuple[str, float], Hold] = {}
    for h in holds:
        by_hold[(h.key, h.start)] = h
        held = h.gpus * overlap(h.start, until if h.end is None else h.end, since, until) / HOUR
        holding = h.gpus if h.start <= until and (h.end is None or h.end > until) else 0
        for book, name in ((report.groups, h.group), (report.users, h.user)):
            totals = book.setdefault(name, Totals())
            totals.gpu_hours += held
            totals.holding += holding
    for t in ticks:
        hold = by_hold.get((t.key, t.start))
        if hold is None:
            continue
        end = until if hold.end is None else hold.end
        lo, hi = max(t.at - t.seconds, hold.start), min(t.at, end)
        idle = min(t.idle_gpus, hold.gpus) * overlap(lo, hi, since, until) / HOUR
        for book, name in ((report.groups, hold.group), (report.users, hold.user)):
            book.setdefault(name, Totals()).idle_gpu_hours += idle
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
