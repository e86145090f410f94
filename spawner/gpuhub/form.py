"""The spawn form: template context from config + live availability, and the mapping
from submitted form fields back to ``user_options``.  Pure apart from template loading."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import jinja2

from .model import GpuhubConfig, Profile
from .profiles import OPTION_KEYS, chargeable_groups, default_profile, visible_profiles
from .startoptions import FORGET, SAVE_KEY, describe


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gpuhub", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _json_for_script(value: Any) -> str:
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_form(
    config: GpuhubConfig,
    groups: list[str],
    avail: Mapping[str, Any],
    previous: Mapping[str, Any] | None = None,
    notice: str = "",
    saved: Mapping[str, Any] | None = None,
) -> str:
    """HTML of the form for a member of ``groups``; ``previous`` pre-selects a profile;
    ``notice`` is shown above the profiles (e.g. why the last server ended); ``saved``
    is the user's saved default for VS Code and API starts, shown with keep / replace / forget."""
    visible = visible_profiles(config, groups)
    by_slug = {p["slug"]: p for p in avail.get("profiles", [])}
    prev_slug = (previous or {}).get("profile")
    chosen = next((p for p in visible if p.slug == prev_slug), None) or default_profile(visible)
    profiles = [_profile_ctx(config, groups, p, by_slug.get(p.slug, {})) for p in visible]
    return (
        _env()
        .get_template("form.html")
        .render(
            profiles=profiles,
            selected=chosen.slug if chosen else "",
            notice=notice,
            save_key=SAVE_KEY,
            forget=FORGET,
            saved=describe(saved) if saved else "",
            data_json=jinja2.utils.markupsafe.Markup(_json_for_script(avail)),
        )
    )


def _profile_ctx(
    config: GpuhubConfig, groups: list[str], p: Profile, avail: Mapping[str, Any]
) -> dict[str, Any]:
    types = list(avail.get("gpu_types", []))
    return {
        "slug": p.slug,
        "display_name": p.display_name,
        "description": p.description,
        "cpu": p.cpu,
        "memory": p.memory,
        "shm": p.shm,
        "gpu": p.gpu is not None,
        "images": [config.images[s] for s in p.images],
        "types": types,
        "charge": chargeable_groups(config, groups, p) if p.gpu else [],
    }


def options_from_form(formdata: Mapping[str, list[str]]) -> dict[str, str]:
    """Map the form's fields (``image--<profile>`` …) to ``user_options``.

    Only the chosen profile's fields are read; a field left empty (the group's "first
    group with room") is left out, never sent as ``""`` (which validation refuses).
    The "Use these options for VS Code and API starts" choice adds
    :data:`~gpuhub.startoptions.SAVE_KEY` ``"on"``, "Forget it" adds ``"forget"``.
    Values are *not* trusted here: the spawner validates them in ``start()``.
    """
    profile = (formdata.get("profile") or [""])[0]
    options = {"profile": profile} if profile else {}
    save = (formdata.get(SAVE_KEY) or [""])[0]
    if profile and save in ("on", FORGET):
        options[SAVE_KEY] = save
    for key in OPTION_KEYS:
        if key == "profile" or not profile:
            continue
        values = formdata.get(f"{key}--{profile}")
        if values and values[0] != "":
            options[key] = values[0]
    return options
