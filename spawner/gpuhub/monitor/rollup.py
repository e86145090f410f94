"""Old history as hourly rows: what :meth:`HistoryStore.roll_up
<gpuhub.monitor.history.HistoryStore.roll_up>` writes in place of raw samples.  Pure.

An hourly row holds, for one allocation (hold) and one UTC hour, the GPU-seconds it held,
the GPU-seconds of them measured idle, the seconds measured and the mean utilisation over
them: exactly the parts of its hold and ticks inside that hour, so GPU-hours over whole
hours are the same before and after a roll-up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..model import Kind
from .accounting import HOUR, Hold, Tick, overlap


@dataclass(frozen=True)
class HourRow:
    """One allocation's use in the hour starting at ``hour`` (epoch seconds, UTC)."""

    key: str
    start: float
    hour: float
    user: str
    group: str
    gpu_type: str
    gpus: int
    kind: Kind
    held_gpu_seconds: float = 0.0
    idle_gpu_seconds: float = 0.0
    measured_seconds: float = 0.0
    util_mean: float = 0.0


def floor_hour(t: float) -> float:
    """The start of the UTC hour holding ``t``."""
    return math.floor(t / HOUR) * HOUR


def _hours(lo: float, hi: float) -> Iterable[float]:
    h = floor_hour(lo)
    while h < hi:
        yield h
        h += HOUR


def hour_rows(holds: Iterable[Hold], ticks: Iterable[Tick], lo: float, hi: float) -> list[HourRow]:
    """Hourly rows of everything before ``hi`` not yet rolled up: each hold from its
    ``counted_from`` (else its start), each tick from ``lo`` (the previous roll-up's end;
    a tick's part before it was rolled up then).  Ticks of holds not given are dropped,
    as :func:`~gpuhub.monitor.accounting.gpu_hours` ignores them."""
    rows: dict[tuple[str, float, float], HourRow] = {}
    by_hold: dict[tuple[str, float], Hold] = {}

    def row(h: Hold, hour: float) -> HourRow:
        k = (h.key, h.start, hour)
        if k not in rows:
            rows[k] = HourRow(h.key, h.start, hour, h.user, h.group, h.gpu_type, h.gpus, h.kind)
        return rows[k]

    for h in holds:
        by_hold[(h.key, h.start)] = h
        start = h.start if h.counted_from is None else max(h.start, h.counted_from)
        end = hi if h.end is None else min(h.end, hi)
        for hour in _hours(start, end):
            r = row(h, hour)
            held = h.gpus * overlap(start, end, hour, hour + HOUR)
            rows[(h.key, h.start, hour)] = _add(r, held=held)
    for t in ticks:
        hold = by_hold.get((t.key, t.start))
        if hold is None:
            continue
        t0 = max(t.at - t.seconds, hold.start, lo)
        t1 = min(t.at, hi if hold.end is None else min(hold.end, hi))
        for hour in _hours(t0, t1):
            seconds = overlap(t0, t1, hour, hour + HOUR)
            if seconds <= 0:
                continue
            r = row(hold, hour)
            idle = min(t.idle_gpus, hold.gpus) * seconds
            rows[(hold.key, hold.start, hour)] = _add(r, idle=idle, measured=seconds, util=t.util)
    return sorted(rows.values(), key=lambda r: (r.hour, r.key, r.start))


def _add(
    r: HourRow, *, held: float = 0.0, idle: float = 0.0, measured: float = 0.0, util: float = 0.0
) -> HourRow:
    total = r.measured_seconds + measured
    mean = (r.util_mean * r.measured_seconds + util * measured) / total if total else 0.0
    return HourRow(
        r.key,
        r.start,
        r.hour,
        r.user,
        r.group,
        r.gpu_type,
        r.gpus,
        r.kind,
        r.held_gpu_seconds + held,
        r.idle_gpu_seconds + idle,
        total,
        mean,
    )
