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
    allowed = list(dict.fromkeys(allowed))
    if not isinstance(value, str) or value not in allowed:
        shown = value if isinstance(value, str | int) else type(value).__name__
        raise OptionError(
            field,
            f"{what} {shown!r} is not available to you "
            f"(choose one of: {', '.join(allowed) or 'none'})",
        )
    return value


def _count(field: str, value: Any, allowed: Iterable[int]) -> int:
    offered = sorted(set(allowed))
    if isinstance(value, bool):
        n = None
    elif isinstance(value, int):
        n = value
    elif isinstance(value, str) and _COUNT.fullmatch(value):
        n = int(value)
    else:
        n = None
    if n is None or n not in offered:
        raise OptionError(
            field,
            f"GPU count {value!r} is not offered to you "
            f"(choose one of: {', '.join(map(str, offered))})",
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


def given(raw: Mapping[str, Any], key: str, field: str | None = None) -> bool:
    """Whether ``raw`` sets ``key``.  An explicit ``null`` or ``""`` is refused (400 naming
    the field): a client that wants the default leaves the field out."""
    if key not in raw:
        return False
    if raw[key] is None or raw[key] == "":
        raise OptionError(
            field or key, "must not be null or empty; leave the field out to get the default"
        )
    return True


def _offers(p: Profile, gpus: int, cpu_anywhere: bool) -> bool:
    if gpus == 0:
        return p.gpu is None or cpu_anywhere
    return p.gpu is not None and gpus in p.gpu.counts


def _group_ok(
    config: GpuhubConfig, groups: list[str], p: Profile, gpus: int | None, group: str
) -> bool:
    gpu = p.gpu is not None if gpus is None else gpus > 0
    return group in (chargeable_groups(config, groups, p) if gpu else groups)


def resolve_request(
    config: GpuhubConfig,
    user: str,
    groups: Iterable[str],
    raw: Mapping[str, Any],
    *,
    names: Mapping[str, str] | None = None,
    cpu_anywhere: bool = False,
    preferred_image: str | None = None,
) -> SpawnRequest:
    """THE decision of what ``user`` may request, for notebooks and jobs alike.

    ``raw`` holds untrusted values under :data:`OPTION_KEYS` (unknown keys are the
    caller's to refuse).  Without ``profile``, the first visible profile (the default
    first) that offers every value given is chosen.  ``names`` maps a key to the field
    name the client used (``gpus`` → ``gpus_per_worker``); ``cpu_anywhere`` lets a
    0-GPU request use any visible profile's images (CPU job workers);
    ``preferred_image`` is used when ``image`` is not given and a candidate offers it.
    Raises :class:`OptionError` naming the first refused field.
    """
    groups = list(groups)
    names = names or {}

    def name(key: str) -> str:
        return names.get(key, key)

    visible = visible_profiles(config, groups)
    if not visible:
        raise OptionError("profile", "no profile is available to your groups; ask an admin")
    if given(raw, "profile", name("profile")):
        _check_profile_groups(config, raw["profile"], visible, groups)
        slug = _one_of(name("profile"), raw["profile"], [p.slug for p in visible], "profile")
        candidates = [p for p in visible if p.slug == slug]
    else:
        first = default_profile(visible)
        candidates = [p for p in visible if p is first] + [p for p in visible if p is not first]

    gpus: int | None = None
    if given(raw, "gpus", name("gpus")):
        offered = {n for p in candidates if p.gpu for n in p.gpu.counts}
        if any(p.gpu is None or cpu_anywhere for p in candidates):
            offered.add(0)
        gpus = _count(name("gpus"), raw["gpus"], offered)
        candidates = [p for p in candidates if _offers(p, gpus, cpu_anywhere)]

    gpu_type: str | None = None
    if given(raw, "gpu_type", name("gpu_type")):
        with_gpus = [
            p for p in candidates if p.gpu and (gpus is None or (gpus and gpus in p.gpu.counts))
        ]
        if not with_gpus:
            what = f"profile {candidates[0].slug!r} has" if gpus is None else "CPU workers take"
            raise OptionError(name("gpu_type"), f"{what} no GPUs; leave the GPU type out")
        types = [t for p in with_gpus if p.gpu for t in p.gpu.types]
        gpu_type = _one_of(name("gpu_type"), raw["gpu_type"], types, "GPU type")
        candidates = [p for p in with_gpus if p.gpu and gpu_type in p.gpu.types]

    image: str | None = None
    if given(raw, "image", name("image")):
        image = _one_of(
            name("image"), raw["image"], [s for p in candidates for s in p.images], "image"
        )
        candidates = [p for p in candidates if image in p.images]

    group: str | None = None
    if given(raw, "group", name("group")):
        quota_order = [q.group for q in config.quotas.groups]
        allowed = [
            g
            for g in dict.fromkeys([*quota_order, *groups])
            if any(_group_ok(config, groups, p, gpus, g) for p in candidates)
        ]
        group = _one_of(name("group"), raw["group"], allowed, "group")
        candidates = [p for p in candidates if _group_ok(config, groups, p, gpus, group)]

    if image is None and preferred_image is not None:
        preferred = [p for p in candidates if preferred_image in p.images]
        if preferred:
            candidates, image = preferred, preferred_image

    profile = candidates[0]
    if gpus is None:
        gpus = profile.gpu.counts[0] if profile.gpu else 0
    if gpus and gpu_type is None:
        assert profile.gpu is not None
        gpu_type = profile.gpu.types[0]
    return SpawnRequest(
        user=user,
        profile=profile,
        image=config.images[image] if image else default_image(config, profile),
        gpu_type=gpu_type if gpus else None,
        gpus=gpus,
        group=group,
    )


def validate_options(
    config: GpuhubConfig, user: str, groups: Iterable[str], raw: Mapping[str, Any] | None
) -> SpawnRequest:
    """Turn untrusted notebook ``user_options`` into a :class:`SpawnRequest` or raise
    :class:`OptionError` naming the offending field (:func:`resolve_request`).

    Missing values get defaults (default profile, its first image, smallest GPU count,
    first GPU type); ``group`` stays ``None`` when not given, for the quota step to
    choose.  ``null`` or ``""`` is refused.
    """
    groups = list(groups)
    raw = dict(raw or {})
    unknown = sorted(k for k in raw if k not in OPTION_KEYS)
    if unknown:
        raise OptionError(unknown[0], f"unknown option (allowed: {', '.join(OPTION_KEYS)})")
    if not given(raw, "profile"):
        default = default_profile(visible_profiles(config, groups))
        if default is not None:
            raw["profile"] = default.slug
    return resolve_request(config, user, groups, raw)
