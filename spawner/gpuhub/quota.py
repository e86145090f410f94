"""Quota arithmetic: a usage snapshot plus a request gives a decision with a story.

Pure functions of plain data; the ledger calls :func:`decide` between its check and its
reservation with no ``await`` in between.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from .model import Allocation, GpuhubConfig, GroupQuota


@dataclass(frozen=True)
class Decision:
    """The outcome of a quota check.  ``explanation`` is shown to the user when denied."""

    allowed: bool
    group: str | None
    explanation: str = ""


@dataclass(frozen=True)
class Room:
    """How many GPUs of one type a user could still get, and the binding limit."""

    group: str | None
    group_left: int | None
    user_left: int | None
    free_devices: int | None


class Usage:
    """Allocations by key with running totals per group, group and type, and user, so a
    quota decision costs O(1) however many pods or processes hold GPUs."""

    def __init__(self, allocations: Iterable[Allocation] = ()) -> None:
        self._allocs: dict[str, Allocation] = {}
        self._group: Counter[str] = Counter()
        self._group_type: Counter[tuple[str, str]] = Counter()
        self._user: Counter[str] = Counter()
        for a in allocations:
            self.put(a)

    def _count(self, a: Allocation, sign: int) -> None:
        self._group[a.group] += sign * a.gpus
        self._group_type[(a.group, a.gpu_type)] += sign * a.gpus
        self._user[a.user] += sign * a.gpus

    def put(self, a: Allocation) -> None:
        """Add ``a``, replacing any allocation under the same key."""
        self.pop(a.key)
        self._allocs[a.key] = a
        self._count(a, 1)

    def pop(self, key: str) -> Allocation | None:
        a = self._allocs.pop(key, None)
        if a is not None:
            self._count(a, -1)
        return a

    def get(self, key: str) -> Allocation | None:
        return self._allocs.get(key)

    def used(
        self, *, group: str | None = None, user: str | None = None, gpu_type: str | None = None
    ) -> int:
        """GPUs held by a group (optionally of one type) or by a user."""
        if group is not None:
            return self._group[group] if gpu_type is None else self._group_type[(group, gpu_type)]
        if user is not None:
            return self._user[user]
        raise ValueError("used() needs group or user")

    def __iter__(self) -> Iterator[Allocation]:
        return iter(list(self._allocs.values()))

    def __len__(self) -> int:
        return len(self._allocs)


def _clock(t: datetime | None) -> str:
    return f" (since {t:%H:%M})" if t else ""


def holders(usage: Iterable[Allocation], group: str, gpu_type: str | None = None) -> str:
    """``alice 4 (since 09:12), bob 4`` — who holds the group's GPUs, largest first."""
    per_user: dict[str, tuple[int, datetime | None, int]] = {}
    for a in usage:
        if a.group != group or (gpu_type and a.gpu_type != gpu_type):
            continue
        n, since, jobs = per_user.get(a.user, (0, None, 0))
        first = min((t for t in (since, a.since) if t), default=None)
        per_user[a.user] = (n + a.gpus, first, jobs + (a.kind == "job"))
    ranked = sorted(per_user.items(), key=lambda kv: (-kv[1][0], kv[0]))
    parts = []
    for user, (n, since, jobs) in ranked:
        job_note = f", {jobs} in job{'s' if jobs > 1 else ''}" if jobs else ""
        parts.append(f"{user} {n}{_clock(since)}{job_note}")
    return ", ".join(parts) if parts else "nobody"


def _group_story(
    usage: Usage, q: GroupQuota, gpu_type: str | None, type_name: str, gpus: int
) -> str:
    """The sentence about the limit that binds: the group total, else the per-type one."""
    total = usage.used(group=q.group)
    if gpu_type and gpu_type in q.per_type and total + gpus <= q.gpus:
        n = usage.used(group=q.group, gpu_type=gpu_type)
        return (
            f"group {q.group} uses {n} of {q.per_type[gpu_type]} {type_name} GPUs: "
            f"{holders(usage, q.group, gpu_type)}"
        )
    return f"group {q.group} uses {total} of {q.gpus} GPUs: {holders(usage, q.group)}"


def room(
    config: GpuhubConfig,
    usage: Usage,
    *,
    user: str,
    group: str | None,
    gpu_type: str,
    free_devices: int | None,
) -> Room:
    """What is left for ``user`` charging ``group`` for GPUs of ``gpu_type``."""
    group_left = None
    q = config.quotas.for_group(group) if group else None
    if group is not None:
        if q is None:
            group_left = 0
        else:
            group_left = q.gpus - usage.used(group=group)
            if gpu_type in q.per_type:
                group_left = min(
                    group_left,
                    q.per_type[gpu_type] - usage.used(group=group, gpu_type=gpu_type),
                )
    cap = config.quotas.per_user_gpus
    user_left = None if cap is None else cap - usage.used(user=user)
    return Room(group=group, group_left=group_left, user_left=user_left, free_devices=free_devices)


def decide(
    config: GpuhubConfig,
    usage: Usage,
    *,
    user: str,
    gpus: int,
    gpu_type: str,
    candidates: Sequence[str],
    requested_group: str | None,
    free_devices: int | None,
) -> Decision:
    """Decide a GPU request.

    ``candidates`` are the groups the user may charge (quota order); ``requested_group``
    the user's explicit choice, if any (already known to be among the candidates).
    ``free_devices`` is the number of free devices of the type (``None`` where a
    scheduler queues the request instead, as on Kubernetes).
    Without an explicit choice, the first candidate with room is charged.
    """
    type_name = (
        config.gpu_types[gpu_type].display_name if gpu_type in config.gpu_types else gpu_type
    )
    if not candidates:
        return Decision(
            False,
            None,
            f"none of your groups has a GPU quota for {type_name}; "
            "ask an admin to add your group under quotas",
        )
    order = [requested_group] if requested_group else list(candidates)
    stories = []
    cap = config.quotas.per_user_gpus
    if cap is not None:
        mine = usage.used(user=user)
        if mine + gpus > cap:
            return Decision(
                False,
                order[0],
                f"you already use {mine} of your {cap}-GPU limit ({_own(usage, user)});"
                f" asking for {gpus} more would exceed it",
            )
    for group in order:
        r = room(config, usage, user=user, group=group, gpu_type=gpu_type, free_devices=None)
        if r.group_left is not None and r.group_left >= gpus:
            if free_devices is not None and free_devices < gpus:
                return Decision(
                    False,
                    group,
                    f"no {type_name} is free: {free_devices} free on this machine, "
                    f"you asked for {gpus}",
                )
            return Decision(True, group)
        q = config.quotas.for_group(group)
        assert q is not None
        stories.append(_group_story(usage, q, gpu_type, type_name, gpus))
    ask = f"you asked for {gpus} {type_name} GPU{'s' if gpus > 1 else ''}"
    return Decision(False, order[0], "; ".join(stories) + f" — {ask}")


def _own(usage: Iterable[Allocation], user: str) -> str:
    mine = [a for a in usage if a.user == user]
    return ", ".join(
        f"{a.gpus} in {'job' if a.kind == 'job' else 'server'} {a.key.split(':', 1)[-1]}"
        f"{_clock(a.since)}"
        for a in mine
    )
