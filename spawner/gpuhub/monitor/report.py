"""``gpuhub-config usage --since``: the period argument and the totals as text.  Pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from .accounting import Report

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_UNIT = {"m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """``24h``, ``7d``, ``90m`` (before ``now``), or an ISO date/time (UTC unless it names
    its zone); raises ``ValueError`` naming the accepted forms."""
    m = _RELATIVE.fullmatch(text.strip())
    if m:
        return now - float(m[1]) * _UNIT[m[2]]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: write a duration such as 24h, 7d or 90m, or a date or time "
            "such as 2026-12-01 or 2026-12-01T09:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_report(report: Report) -> list[str]:
    """One line per group, then one per user: GPU-hours held and of them idle."""
    lines = [f"GPU-hours from {_stamp(report.since)} to {_stamp(report.until)}:"]
    for kind, book in (("group", report.groups), ("user", report.users)):
        for name in sorted(book):
            t = book[name]
            now = f" (holding {t.holding} now)" if t.holding else ""
            lines.append(
                f"  {kind} {name}: {t.gpu_hours:.4f} GPU-hours, {t.idle_gpu_hours:.4f} idle{now}"
            )
    if not report.groups:
        lines.append("  no GPUs were held")
    return lines
