"""Quota arithmetic and the ledger's atomic reserve/release."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gpuhub.errors import QuotaDenied
from gpuhub.ledger import Device, Ledger
from gpuhub.model import Allocation
from gpuhub.profiles import validate_options
from gpuhub.quota import holders

T = datetime(2026, 11, 23, 9, 12, tzinfo=UTC)


def devices(config):
    return [Device(d.index, d.type, "declared", declared=True) for d in config.local.devices]


def req(config, user, groups, **opts):
    return validate_options(config, user, groups, {"profile": "gpu", **opts})


def test_reserve_assigns_distinct_devices_and_release(config):
    led = Ledger(config, devices(config))
    a = led.reserve("server:alice/", req(config, "alice", ["vision"], gpus=2), ["vision"], now=T)
    b = led.reserve("server:bob/", req(config, "bob", ["vision"], gpus=2), ["vision"], now=T)
    assert a.devices == (0, 1) and b.devices == (2, 3)
    assert a.group == "vision"
    with pytest.raises(QuotaDenied) as e:
        led.reserve("server:bob/x", req(config, "bob", ["vision"]), ["vision"], now=T)
    assert str(e.value) == (
        "group vision uses 4 of 4 GPUs: alice 2 (since 09:12), bob 2 (since 09:12)"
        " — you asked for 1 A100 GPU"
    )
    assert e.value.status == 403
    led.release("server:alice/")
    c = led.reserve("server:bob/x", req(config, "bob", ["vision"]), ["vision"], now=T)
    assert c.devices == (0,)


def test_default_group_is_first_with_room(config):
    led = Ledger(config, devices(config))
    led.reserve("s1", req(config, "bob", ["vision"], gpus=4), ["vision"])
    a = led.reserve(
        "s2", req(config, "alice", ["vision", "nlp"], gpus=1, gpu_type="h100"), ["vision", "nlp"]
    )
    assert a.group == "nlp"
    # an explicit choice is honoured and not silently moved
    with pytest.raises(QuotaDenied, match="group vision uses 4 of 4 GPUs"):
        led.reserve(
            "s3",
            req(config, "alice", ["vision", "nlp"], gpu_type="h100", group="vision"),
            ["vision", "nlp"],
        )


def test_per_type_and_per_user_limits(config):
    led = Ledger(config, None)  # scheduler decides devices: no device check
    led.reserve("s1", req(config, "alice", ["vision"], gpus=2, gpu_type="h100"), ["vision"])
    with pytest.raises(QuotaDenied, match="group vision uses 2 of 2 H100 GPUs: alice 2"):
        led.reserve("s2", req(config, "bob", ["vision"], gpu_type="h100"), ["vision"])
    led.reserve("s2", req(config, "alice", ["vision"], gpus=2), ["vision"])
    with pytest.raises(QuotaDenied, match="you already use 4 of your 4-GPU limit"):
        led.reserve("s3", req(config, "alice", ["vision", "nlp"]), ["vision", "nlp"])


def test_no_free_device(config):
    led = Ledger(config, devices(config)[:1])
    led.reserve("s1", req(config, "carol", ["nlp"]), ["nlp"])
    with pytest.raises(QuotaDenied, match="no A100 is free: 0 free on this machine"):
        led.reserve("s2", req(config, "alice", ["vision"]), ["vision"])


def test_no_quota_group(config):
    led = Ledger(config, devices(config))
    with pytest.raises(QuotaDenied, match="none of your groups has a GPU quota"):
        led.reserve("s1", req(config, "x", ["vision"]), ["other"])


def test_same_key_is_replaced_not_double_counted(config):
    led = Ledger(config, devices(config))
    for _ in range(3):
        led.reserve("server:alice/", req(config, "alice", ["vision"], gpus=4), ["vision"])
    assert sum(a.gpus for a in led.usage()) == 4


def test_cpu_request_holds_nothing(config):
    led = Ledger(config, devices(config))
    r = validate_options(config, "alice", ["vision"], {})
    assert led.reserve("server:alice/", r, ["vision"]) is None
    assert led.usage() == ()


def test_replace_rebuilds_from_truth(config):
    led = Ledger(config, devices(config))
    led.reserve("stale", req(config, "alice", ["vision"], gpus=4), ["vision"])
    live = Allocation("server:bob/", "bob", "vision", "a100", 1, devices=(3,))
    led.replace([live])
    assert led.usage() == (live,)
    assert led.free_devices("a100") == [0, 1, 2]


def test_holders_mentions_jobs():
    usage = [
        Allocation("job:1", "bob", "g", "a100", 2, kind="job", since=T),
        Allocation("server:bob/", "bob", "g", "a100", 1),
        Allocation("server:al/", "al", "g", "a100", 4),
    ]
    assert holders(usage, "g") == "al 4, bob 3 (since 09:12), 1 in job"
