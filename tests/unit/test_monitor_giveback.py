"""Giving the GPUs back (``POST api/give-back``): the CPU profile a GPU server restarts
on, from the profile rules."""

from __future__ import annotations

import pytest

from gpuhub.config import parse_config
from gpuhub.model import IdleCulling
from gpuhub.monitor.giveback import NoCpuProfile, cpu_profile_for


def with_cpu_profiles(raw):
    return parse_config(
        {
            **raw,
            "profiles": [
                *raw["profiles"],
                {
                    "slug": "cpu-big",
                    "display_name": "Big CPU",
                    "images": ["torch"],
                    "groups": ["nlp"],
                },
                {
                    "slug": "cpu-vis",
                    "display_name": "Vision CPU",
                    "images": ["tf"],
                    "groups": ["vision"],
                },
            ],
        }
    )


def test_the_profiles_cpu_profile_first_when_the_user_may_use_it(raw):
    cfg = with_cpu_profiles(raw)
    policy = IdleCulling(action="restart-on-cpu", cpu_profile="cpu-big")
    assert cpu_profile_for(cfg, ["nlp"], policy).slug == "cpu-big"
    # not for a vision member: their default CPU profile instead
    assert cpu_profile_for(cfg, ["vision"], policy).slug == "cpu"


def test_else_the_users_default_cpu_profile_then_the_first(raw):
    assert cpu_profile_for(with_cpu_profiles(raw), ["vision"], None).slug == "cpu"
    raw["profiles"] = [p for p in raw["profiles"] if p["slug"] != "cpu"]
    cfg2 = with_cpu_profiles(raw)
    assert cpu_profile_for(cfg2, ["vision"], IdleCulling()).slug == "cpu-vis"


def test_no_cpu_profile_is_a_400_naming_the_fix(raw):
    raw["profiles"] = [p for p in raw["profiles"] if p["slug"] != "cpu"]
    cfg = parse_config(raw)
    with pytest.raises(NoCpuProfile) as e:
        cpu_profile_for(cfg, ["vision", "nlp"], None)
    assert e.value.status == 400
    assert "your groups (nlp, vision)" in e.value.message
    assert "Fix: an admin adds a profile without 'gpu'" in e.value.message
