"""What changed between two configs, in a few lines an admin can read after
``gpuhub-config reload`` (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import GpuhubConfig


def _names(items: Any) -> str:
    return ", ".join(sorted(items)) or "none"


def _added_removed(section: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    lines = []
    if added := new.keys() - old.keys():
        lines.append(f"{section}: added {_names(added)}")
    if removed := old.keys() - new.keys():
        lines.append(f"{section}: removed {_names(removed)}")
    return lines


def _keyed(section: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    lines = _added_removed(section, old, new)
    if changed := {k for k in old.keys() & new.keys() if old[k] != new[k]}:
        lines.append(f"{section}: changed {_names(changed)}")
    return lines


def _groups(old: GpuhubConfig, new: GpuhubConfig) -> list[str]:
    lines = _added_removed("groups", old.groups, new.groups)
    for g in sorted(old.groups.keys() & new.groups.keys()):
        before, after = set(old.groups[g]), set(new.groups[g])
        parts = [f"+{u}" for u in sorted(after - before)]
        parts += [f"-{u}" for u in sorted(before - after)]
        if parts:
            lines.append(f"groups.{g}: {' '.join(parts)}")
    return lines


def _quotas(old: GpuhubConfig, new: GpuhubConfig) -> list[str]:
    lines = []
    if old.quotas.per_user_gpus != new.quotas.per_user_gpus:
        lines.append(
            f"quotas.per_user_gpus: {old.quotas.per_user_gpus} -> {new.quotas.per_user_gpus}"
        )
    before = {q.group: q for q in old.quotas.groups}
    after = {q.group: q for q in new.quotas.groups}
    lines += _added_removed("quotas.groups", before, after)
    for g in sorted(before.keys() & after.keys()):
        a, b = before[g], after[g]
        if a.gpus != b.gpus:
            lines.append(f"quotas.groups.{g}.gpus: {a.gpus} -> {b.gpus}")
        if a.per_type != b.per_type:
            lines.append(f"quotas.groups.{g}.per_type: {a.per_type} -> {b.per_type}")
    if before.keys() == after.keys() and list(before) != list(after):
        lines.append("quotas.groups: charging order changed")
    return lines


def describe_changes(old: GpuhubConfig, new: GpuhubConfig) -> list[str]:
    """One line per changed area (``groups.vision: +erin -bob``,
    ``quotas.groups.vision.gpus: 2 -> 1``, ``profiles: changed gpu``); empty if none."""
    lines = _groups(old, new)
    if old.auth != new.auth:
        if old.auth.admin_users != new.auth.admin_users:
            lines.append(
                f"auth.admin_users: {_names(old.auth.admin_users)} -> "
                f"{_names(new.auth.admin_users)}"
            )
        if old.auth.allow_all != new.auth.allow_all:
            lines.append(f"auth.allow_all: {old.auth.allow_all} -> {new.auth.allow_all}")
    lines += _quotas(old, new)
    lines += _keyed(
        "profiles", {p.slug: p for p in old.profiles}, {p.slug: p for p in new.profiles}
    )
    if [p.slug for p in old.profiles] != [p.slug for p in new.profiles] and {
        p.slug for p in old.profiles
    } == {p.slug for p in new.profiles}:
        lines.append("profiles: order changed")
    lines += _keyed("images", old.images, new.images)
    lines += _keyed("gpu_types", old.gpu_types, new.gpu_types)
    if old.local != new.local:
        lines.append("local: inventory or devices changed")
    if old.monitor != new.monitor:
        lines.append("monitor: source or sampling changed (the monitor applies it at once)")
    return lines
