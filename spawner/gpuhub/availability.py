"""Live numbers for the spawn form: per profile and GPU type, the free devices, each
chargeable group's quota left and the user's own cap, and why a choice is disabled.
Pure: built from a ledger and capacity numbers the adapter supplies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .ledger import Ledger
from .model import GpuhubConfig
from .profiles import chargeable_groups, visible_profiles
from .quota import room


def _why_not(
    n: int, free: int | None, user_left: int | None, groups: list[dict[str, Any]], type_name: str
) -> str | None:
    if not groups:
        return "none of your groups has a GPU quota for this profile"
    best = max(groups, key=lambda g: g["left"])
    if best["left"] < n:
        return f"group {best['group']} has {max(best['left'], 0)} of {best['quota']} GPUs left"
    if user_left is not None and user_left < n:
        return f"your personal limit leaves {max(user_left, 0)} GPUs"
    if free is not None and free < n:
        return f"only {free} {type_name} free"
    return None


def availability(
    config: GpuhubConfig,
    ledger: Ledger,
    *,
    user: str,
    groups: Iterable[str],
    capacity: Mapping[str, tuple[int, int]],
    source: str,
    queues: bool = False,
) -> dict[str, Any]:
    """The form's data for ``user``.

    ``capacity`` maps a GPU type to ``(total, free)`` devices; ``queues`` is true where a
    scheduler queues requests (then a lack of free devices does not disable a choice).
    """
    groups = list(groups)
    usage = ledger.totals
    profiles = []
    for p in visible_profiles(config, groups):
        entry: dict[str, Any] = {"slug": p.slug, "gpu_types": []}
        if p.gpu is not None:
            charge = chargeable_groups(config, groups, p)
            for t in p.gpu.types:
                total, free = capacity.get(t, (0, 0))
                rooms = [
                    room(config, usage, user=user, group=g, gpu_type=t, free_devices=None)
                    for g in charge
                ]
                gs = [
                    {
                        "group": r.group,
                        "left": max(0, r.group_left or 0),
                        "quota": (
                            q.per_type.get(t, q.gpus)
                            if (q := config.quotas.for_group(r.group or ""))
                            else 0
                        ),
                    }
                    for r in rooms
                ]
                user_left = rooms[0].user_left if rooms else None
                if user_left is not None:
                    user_left = max(0, user_left)
                name = config.gpu_types[t].display_name
                counts = []
                for n in p.gpu.counts:
                    reason = _why_not(n, None if queues else free, user_left, gs, name)
                    counts.append({"n": n, "ok": reason is None, "reason": reason})
                entry["gpu_types"].append(
                    {
                        "slug": t,
                        "display_name": name,
                        "total": total,
                        "free": free,
                        "source": source,
                        "groups": gs,
                        "user_left": user_left,
                        "counts": counts,
                    }
                )
        profiles.append(entry)
    return {"user": user, "groups": groups, "source": source, "profiles": profiles}
