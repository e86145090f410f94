"""The high-level summary ``gpuhub-config reload`` prints."""

from __future__ import annotations

import copy
from typing import Any

from gpuhub.confdiff import describe_changes
from gpuhub.config import parse_config


def test_no_changes(raw: dict[str, Any]):
    assert describe_changes(parse_config(raw), parse_config(copy.deepcopy(raw))) == []


def test_groups_quotas_and_profiles(raw: dict[str, Any]):
    old = parse_config(raw)
    raw["groups"]["vision"] = ["alice", "erin"]
    raw["groups"]["ml"] = ["dave"]
    raw["quotas"]["groups"]["vision"]["gpus"] = 3
    raw["quotas"]["per_user_gpus"] = 2
    raw["profiles"][0]["memory"] = "8G"
    raw["auth"] = {"admin_users": ["root"]}
    assert describe_changes(old, parse_config(raw)) == [
        "groups: added ml",
        "groups.vision: +erin -bob",
        "auth.admin_users: none -> root",
        "quotas.per_user_gpus: 4 -> 2",
        "quotas.groups.vision.gpus: 4 -> 3",
        "profiles: changed cpu",
    ]


def test_removed_entries_and_order(raw: dict[str, Any]):
    old = parse_config(raw)
    del raw["quotas"]["groups"]["nlp"]
    raw["profiles"] = [raw["profiles"][1], raw["profiles"][0], raw["profiles"][2]]
    raw["images"]["extra"] = {"display_name": "Extra", "image": "ghcr.io/x/extra:1"}
    raw["local"]["devices"].pop()
    assert describe_changes(old, parse_config(raw)) == [
        "quotas.groups: removed nlp",
        "profiles: order changed",
        "images: added extra",
        "local: inventory or devices changed",
    ]
