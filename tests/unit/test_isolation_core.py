"""Pure parts of the embedded default's isolation: account names, unit names, cgroup v1
settings, unit limits, unit liveness, and the out-of-memory sentence."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from gpuhub.accounts import account_name
from gpuhub.cgroups import Limits, own_v1_cgroups, unit_name, v1_mounts, v1_settings
from gpuhub.ledger import Device
from gpuhub.localstate import Unit, is_live, process_start
from gpuhub.model import Allocation, Profile
from gpuhub.spawners.local import oom_notice, unit_limits


def test_account_names_are_valid_and_unique():
    assert account_name("gpuhub-", "alice") == "gpuhub-alice"
    odd = [account_name("gpuhub-", u) for u in ("Alice", "alice@example.org", "a" * 40, "1x")]
    for name in odd:
        assert len(name) <= 32 and name[0].isalpha()
        assert all(c.isalnum() or c in "-_" for c in name) and name == name.lower()
    assert len(set(odd)) == len(odd)
    assert account_name("gpuhub-", "Alice") != account_name("gpuhub-", "alice")


def test_unit_names_are_safe_and_distinct():
    keys = ["server:alice/", "server:alice/gpu", "server:alice_2f", "job:0123abcd"]
    names = [unit_name(k) for k in keys]
    assert len(set(names)) == len(names)
    for n in names:
        assert "/" not in n and ":" not in n and n.startswith("u-")


def test_v1_settings():
    writes = v1_settings(Limits(memory=4 << 30, cpu=1.5, pids=100, denied_gpus=(3, 1, 3)))
    assert writes == [
        ("memory", "memory.limit_in_bytes", str(4 << 30)),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "150000"),
        ("pids", "pids.max", "100"),
        ("devices", "devices.deny", "c 195:1 rwm"),
        ("devices", "devices.deny", "c 195:3 rwm"),
    ]
    assert v1_settings(Limits()) == []


def test_v1_discovery_parsers():
    cg = "12:memory:/a/b\n4:cpu,cpuacct:/c\n1:name=systemd:/\n0::/x\n"
    assert own_v1_cgroups(cg) == {
        "memory": "/a/b",
        "cpu": "/c",
        "cpuacct": "/c",
        "name=systemd": "/",
    }
    mi = (
        "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:10 - cgroup cgroup rw,cpu,cpuacct\n"
        "31 25 0:27 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    assert v1_mounts(mi) == {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "memory": "/sys/fs/cgroup/memory"}


def _profile(memory: str = "4G", cpu: float = 2) -> Profile:
    return Profile("gpu", "GPU", "", cpu, memory, "1G", ("py",), ("*",))


def test_unit_limits_fence_every_other_gpu():
    devices = [Device(i, "a100", "A100") for i in range(4)] + [
        Device(4, "h100", "H100", minor_number=7)
    ]
    alloc = Allocation("server:a/", "a", "g", "a100", 2, devices=(1, 2))
    lim = unit_limits(_profile(), devices, alloc, pids=64)
    assert lim == Limits(memory=4 << 30, cpu=2, pids=64, denied_gpus=(0, 3, 7))
    cpu = unit_limits(_profile("512M", 0.5), devices, None, pids=64, scale=3)
    assert cpu.denied_gpus == (0, 1, 2, 3, 7)
    assert cpu.memory == 3 * 512 << 20 and cpu.cpu == 1.5


def test_unit_liveness():
    me, start = os.getpid(), process_start(os.getpid())
    pending = Unit("server:a/", "notebook", "a", None, me, start)
    assert is_live(pending, set())  # a reservation of a live owner
    dead_owner = Unit("server:a/", "notebook", "a", None, 2**22 + 1, None)
    assert not is_live(dead_owner, set())
    assert is_live(dead_owner, {123})  # anything in the cgroup counts
    started = Unit("server:a/", "notebook", "a", None, me, start, started=True)
    assert not is_live(started, set())  # started, and nothing left in it


def test_oom_notice_names_the_limit():
    text = oom_notice("4G", datetime(2026, 12, 1, 9, 12, tzinfo=UTC))
    assert "09:12" in text and "4 GiB memory limit" in text and "profile with more" in text
