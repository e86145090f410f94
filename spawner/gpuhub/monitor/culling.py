"""The GPU-idle culling policy: a pure state machine, one :class:`IdleClock` per
allocation, advanced by :func:`step` at every sample.

- An allocation is *idle* when it has samples and every GPU is below the profile's
  ``threshold_percent``; busy or unknown (no samples) restarts the clock, so nothing is
  ever culled on missing data.
- Once idle for ``idle_minutes - warn_minutes`` the user is warned; the cull comes no
  sooner than ``idle_minutes`` of idleness *and* ``warn_minutes`` after the warning (a
  warning is never skipped, even when samples were far apart).
- "Keep it" (:func:`keep`) restarts the clock: a full ``idle_minutes`` from now.
- Jobs are never culled for idleness (they end by themselves), nor servers of profiles
  without ``idle_culling``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..model import Allocation, IdleCulling
from .sources import DeviceSample

Action = Literal["none", "warn", "cull"]


@dataclass(frozen=True)
class IdleClock:
    """``idle_since``: when every GPU went below the threshold (``None``: not idle);
    ``warned_at``: when the current warning was given."""

    idle_since: float | None = None
    warned_at: float | None = None


@dataclass(frozen=True)
class Verdict:
    """What to do now; ``cull_at`` is when the server goes if it stays idle."""

    action: Action
    idle_seconds: float = 0.0
    cull_at: float | None = None


NOTHING = Verdict("none")


def is_idle(samples: Sequence[DeviceSample], threshold_percent: float) -> bool | None:
    """True when every GPU is below the threshold; ``None`` when nothing is known."""
    if not samples:
        return None
    return all(s.utilization < threshold_percent for s in samples)


def step(
    policy: IdleCulling | None,
    alloc: Allocation,
    clock: IdleClock,
    samples: Sequence[DeviceSample],
    now: float,
) -> tuple[IdleClock, Verdict]:
    """The clock after the samples taken at ``now``, and what to do."""
    if policy is None or alloc.kind == "job" or alloc.gpus == 0:
        return IdleClock(), NOTHING
    if not is_idle(samples, policy.threshold_percent):
        return IdleClock(), NOTHING
    since = clock.idle_since if clock.idle_since is not None else now
    idle_for = now - since
    warn_s, idle_s = policy.warn_minutes * 60, policy.idle_minutes * 60
    if clock.warned_at is None and idle_for < idle_s - warn_s:
        return IdleClock(since), Verdict("none", idle_for, since + idle_s)
    warned = clock.warned_at if clock.warned_at is not None else now
    cull_at = max(since + idle_s, warned + warn_s)
    action: Action = "cull" if now >= cull_at else "warn"
    return IdleClock(since, warned), Verdict(action, idle_for, cull_at)


def keep(clock: IdleClock, now: float) -> IdleClock:
    """Keep it: the idle clock starts again at ``now`` (the warning is withdrawn)."""
    return IdleClock(idle_since=now if clock.idle_since is not None else None)
