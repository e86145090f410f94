"""Giving the GPUs back (``POST api/give-back``): which CPU profile a user's GPU server
restarts on.  Pure: who may use which profile is :func:`gpuhub.profiles.visible_profiles`'s
decision, never made again here."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import GpuhubError
from ..model import GpuhubConfig, IdleCulling, Profile
from ..profiles import default_profile, visible_profiles


class NoCpuProfile(GpuhubError):
    """The user may use no CPU profile to restart on (400, naming the fix)."""

    status = 400


def cpu_profile_for(
    config: GpuhubConfig, groups: Iterable[str], policy: IdleCulling | None
) -> Profile:
    """The CPU profile to restart on: the server profile's ``idle_culling.cpu_profile``
    when the user may use it, else the user's default CPU profile (the one marked
    ``default``, else the first).  Raises :class:`NoCpuProfile` when there is none."""
    groups = sorted(groups)
    cpu = [p for p in visible_profiles(config, groups) if not p.is_gpu]
    preferred = policy.cpu_profile if policy else None
    for p in cpu:
        if p.slug == preferred:
            return p
    chosen = default_profile(cpu)
    if chosen is None:
        mine = ", ".join(groups) or "none"
        raise NoCpuProfile(
            f"no CPU profile is available to your groups ({mine}), so this server cannot "
            "be restarted without GPUs. Fix: an admin adds a profile without 'gpu' for one "
            "of your groups (profiles[].groups), or stop the server from the hub's home page"
        )
    return chosen
