"""Which profiles a user may see, and validation of untrusted ``user_options``.

Every value a browser or API client sends is checked against allow-lists built from the
user's *current* groups, by exact string equality (never a partial regex match).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import OptionError
from .model import GpuhubConfig, ImageSpec, Profile, SpawnRequest

OPTION_KEYS = ("profile", "image", "gpu_type", "gpus", "group")
_COUNT = re.compile(r"[0-9]{1,3}")


def visible_profiles(config: GpuhubConfig, groups: Iterable[str]) -> list[Profile]:
    """The profiles a member of ``groups`` may see and use, in config order."""
    gs = frozenset(groups)
    return [p for p in config.profiles if p.visible_to(gs)]


def default_profile(profiles: list[Profile]) -> Profile | None:
    """The profile marked ``default``, else the first one."""
    for p in profiles:
        if p.default:
            return p
    return profiles[0] if profiles else None


def chargeable_groups(config: GpuhubConfig, groups: Iterable[str], profile: Profile) -> list[str]:
    """Groups a user may charge a GPU request on ``profile`` to, in quota (preference) order:
    groups the user belongs to, that have a quota, and that may use the profile."""
    gs = frozenset(groups)
    return [
        q.group
        for q in config.quotas.groups
        if q.group in gs and profile.visible_to(frozenset({q.group}))
    ]


def default_image(config: GpuhubConfig, profile: Profile) -> ImageSpec:
    """First CUDA image for a GPU profile, first image otherwise."""
    images = [config.images[s] for s in profile.images]
    if profile.is_gpu:
        for img in images:
            if img.cuda:
                return img
    return images[0]


def _one_of(field: str, value: Any, allowed: Iterable[str], what: str) -> str:
    allowed = list(allowed)
    if not isinstance(value, str) or value not in allowed:
        shown = value if isinstance(value, str | int) else type(value).__name__
        raise OptionError(
            field,
            f"{what} {shown!r} is not available to you (choose one of: {', '.join(allowed)})",
        )
    return value


def _count(value: Any, allowed: tuple[int, ...]) -> int:
    if isinstance(value, bool):
        n = None
    elif isinstance(value, int):
        n = value
    elif isinstance(value, str) and _COUNT.fullmatch(value):
        n = int(value)
    else:
        n = None
    if n is None or n not in allowed:
        raise OptionError(
            "gpus",
            f"GPU count {value!r} is not offered by this profile "
            f"(choose one of: {', '.join(map(str, allowed))})",
        )
    return n


def _check_profile_groups(
    config: GpuhubConfig, slug: Any, visible: list[Profile], groups: list[str]
) -> None:
    """A configured profile the user's groups do not see: say which groups it is for
    (e.g. after the user was removed from one)."""
    profile = config.profile(slug) if isinstance(slug, str) else None
    if profile is None or profile in visible:
        return
    word = "group" if len(profile.groups) == 1 else "groups"
    raise OptionError(
        "profile",
        f"profile {slug!r} is not available to you (choose one of: "
        f"{', '.join(p.slug for p in visible)}): it is for {word} {', '.join(profile.groups)} "
        f"and your groups are {', '.join(sorted(groups)) or 'none'}",
    )


def validate_options(
    config: GpuhubConfig, user: str, groups: Iterable[str], raw: Mapping[str, Any] | None
) -> SpawnRequest:
    """Turn untrusted ``user_options`` into a :class:`SpawnRequest` or raise
    :class:`OptionError` naming the offending field.

    Missing values get defaults (default profile, its first image, smallest GPU count,
    first GPU type); ``group`` stays ``None`` when not given, for the quota step to choose.
    """
    groups = list(groups)
    raw = dict(raw or {})
    unknown = sorted(k for k in raw if k not in OPTION_KEYS)
    if unknown:
        raise OptionError(unknown[0], f"unknown option (allowed: {', '.join(OPTION_KEYS)})")
    profiles = visible_profiles(config, groups)
    if not profiles:
        raise OptionError("profile", "no profile is available to your groups; ask an admin")
    if raw.get("profile") in (None, ""):
        profile = default_profile(profiles)
        assert profile is not None
    else:
        _check_profile_groups(config, raw["profile"], profiles, groups)
        slug = _one_of("profile", raw["profile"], [p.slug for p in profiles], "profile")
        profile = next(p for p in profiles if p.slug == slug)

    if raw.get("image") in (None, ""):
        image = default_image(config, profile)
    else:
        image = config.images[_one_of("image", raw["image"], profile.images, "image")]

    gpu_type: str | None = None
    gpus = 0
    if profile.gpu is None:
        if raw.get("gpus") not in (None, "", 0, "0"):
            raise OptionError("gpus", f"profile {profile.slug!r} has no GPUs")
        if raw.get("gpu_type") not in (None, ""):
            raise OptionError("gpu_type", f"profile {profile.slug!r} has no GPUs")
    else:
        gpus = (
            profile.gpu.counts[0]
            if raw.get("gpus") in (None, "")
            else _count(raw["gpus"], profile.gpu.counts)
        )
        gpu_type = (
            profile.gpu.types[0]
            if raw.get("gpu_type") in (None, "")
            else _one_of("gpu_type", raw["gpu_type"], profile.gpu.types, "GPU type")
        )

    group: str | None = None
    if raw.get("group") not in (None, ""):
        allowed = chargeable_groups(config, groups, profile) if gpus else groups
        group = _one_of("group", raw["group"], allowed, "group")
    return SpawnRequest(
        user=user, profile=profile, image=image, gpu_type=gpu_type, gpus=gpus, group=group
    )
