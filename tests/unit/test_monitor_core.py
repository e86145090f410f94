"""The pure core of GPU efficiency: YAML keys, the replay source, NVML's refusal, the
GPU-idle culling state machine and GPU-hours accounting."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gpuhub.config import parse_config
from gpuhub.errors import ConfigError
from gpuhub.ledger import Device
from gpuhub.model import Allocation, IdleCulling
from gpuhub.monitor.accounting import Hold, Tick, gpu_hours
from gpuhub.monitor.culling import IdleClock, is_idle, keep, step
from gpuhub.monitor.sources import (
    DeviceSample,
    ReplaySource,
    SourceUnavailable,
    TraceError,
    parse_trace,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
POLICY = IdleCulling(threshold_percent=5, idle_minutes=60, warn_minutes=10)


def alloc(key: str = "server:alice/", kind: str = "notebook", gpus: int = 1) -> Allocation:
    return Allocation(
        key=key,
        user="alice",
        group="vision",
        gpu_type="a100",
        gpus=gpus,
        kind=kind,  # type: ignore[arg-type]
        since=T0,
        devices=tuple(range(2, 2 + gpus)),
    )


def util(*values: float) -> tuple[DeviceSample, ...]:
    return tuple(DeviceSample(str(i), v, 0) for i, v in enumerate(values))


# --- YAML keys ------------------------------------------------------------------------


def test_idle_culling_and_monitor_keys_parse(raw: dict[str, Any], tmp_path: Path):
    raw["profiles"][1]["idle_culling"] = {
        "threshold_percent": 10,
        "idle_minutes": 30,
        "warn_minutes": 5,
        "action": "restart-on-cpu",
        "cpu_profile": "cpu",
    }
    (tmp_path / "trace.jsonl").write_text('{"key": "*", "t": 0, "util": 0}\n')
    raw["monitor"] = {"source": "replay", "replay_trace": "trace.jsonl", "sample_seconds": 5}
    cfg = parse_config(raw, base_dir=tmp_path)
    assert cfg.profile("gpu").idle_culling == IdleCulling(10, 30, 5, "restart-on-cpu", "cpu")
    assert cfg.profile("secret").idle_culling is None
    assert cfg.monitor.source == "replay" and cfg.monitor.sample_seconds == 5
    assert cfg.monitor.replay_trace == str((tmp_path / "trace.jsonl").resolve())


def test_monitor_defaults(config):
    assert config.monitor.source == "auto" and config.monitor.sample_seconds == 30


@pytest.mark.parametrize(
    ("culling", "expected"),
    [
        ({"idle_minutes": 0}, "profiles[1].idle_culling.idle_minutes: 0 is less than or equal"),
        ({"idle_minutes": 5, "threshold_percent": 101}, "idle_culling.threshold_percent"),
        ({"idle_minutes": 5, "action": "pause"}, "profiles[1].idle_culling.action: 'pause'"),
        ({"idle_minutes": 5, "idle": 3}, "profiles[1].idle_culling: Additional properties"),
        ({"warn_minutes": 3}, "profiles[1].idle_culling: 'idle_minutes' is a required"),
        (
            {"idle_minutes": 5, "warn_minutes": 5},
            "profiles[1].idle_culling.warn_minutes: the warning (5 min) must come before",
        ),
        (
            {"idle_minutes": 5, "action": "restart-on-cpu"},
            (
                "profiles[1].idle_culling.cpu_profile: action restart-on-cpu needs the slug "
                "of a CPU profile, got None (CPU profiles: cpu)"
            ),
        ),
        (
            {"idle_minutes": 5, "action": "restart-on-cpu", "cpu_profile": "secret"},
            "got 'secret'",
        ),
        (
            {"idle_minutes": 5, "cpu_profile": "cpu"},
            "cpu_profile: cpu_profile is only used with action: restart-on-cpu",
        ),
    ],
)
def test_bad_idle_culling_names_the_field(raw, culling, expected):
    raw["profiles"][1]["idle_culling"] = culling
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert expected in str(e.value)


def test_idle_culling_on_a_cpu_profile_is_refused(raw):
    raw["profiles"][0]["idle_culling"] = {"idle_minutes": 5}
    with pytest.raises(ConfigError, match=r"profiles\[0\]\.idle_culling: profile 'cpu' has no gpu"):
        parse_config(raw)


@pytest.mark.parametrize(
    ("monitor", "expected"),
    [
        ({"source": "dcgm"}, "gpuhub.yaml: monitor.source: 'dcgm' is not one of"),
        ({"sample_seconds": 0}, "gpuhub.yaml: monitor.sample_seconds"),
        ({"source": "replay"}, "gpuhub.yaml: monitor.replay_trace: monitor.source is replay"),
        (
            {"source": "replay", "replay_trace": "missing.jsonl"},
            "gpuhub.yaml: monitor.replay_trace: missing.jsonl does not exist",
        ),
    ],
)
def test_bad_monitor_names_the_field(raw, monitor, expected):
    raw["monitor"] = monitor
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert expected in str(e.value)


# --- sources ----------------------------------------------------------------------------


TRACE = """\
# alice idles, then trains on her second GPU
{"key": "server:alice/", "t": 0, "util": 0, "memory_mib": 100}
{"key": "server:alice/", "t": 600, "util": 90, "memory_mib": 2048, "gpu": 1}
{"key": "*", "t": 30, "util": 55}
"""


def test_replay_source_steps_through_the_trace():
    src = ReplaySource(parse_trace(TRACE.splitlines()))
    a = alloc(gpus=2)
    t0 = T0.timestamp()
    assert src.read(a, (), t0 + 10) == (
        DeviceSample("2", 0, 100 << 20),
        DeviceSample("3", 0, 100 << 20),
    )
    later = src.read(a, (), t0 + 700)
    assert [s.utilization for s in later] == [0, 90] and later[1].memory_used == 2048 << 20
    # another allocation falls back to '*'; before its first row nothing is known
    other = alloc("server:bob/")
    assert src.read(other, (), t0 + 10) == ()
    assert src.read(other, (), t0 + 31) == (DeviceSample("2", 55, 0),)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json", "trace:1: not JSON"),
        ('{"key": "x", "t": -1, "util": 0}', "trace:1: t must be a number >= 0"),
        ('{"key": "x", "t": 0, "util": 101}', "trace:1: util must be a number 0..100"),
        ('{"t": 0, "util": 1}', "trace:1: key must be"),
        ('{"key": "x", "t": 0, "util": 1, "gpu": -1}', "trace:1: gpu must be"),
    ],
)
def test_bad_trace_names_the_line(line, expected):
    with pytest.raises(TraceError, match=expected):
        parse_trace([line])


def test_missing_nvml_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were absent
    from gpuhub.monitor.nvml import NvmlSource

    with pytest.raises(SourceUnavailable, match="NVML is not available.*monitor.source"):
        NvmlSource()


def test_nvml_source_reads_devices_by_uuid(monkeypatch):
    """Against pynvml's own API surface (no GPU here): UUID first, index otherwise; a
    device NVML cannot read is left out (unknown, never idle)."""
    import types

    calls: list[tuple[str, object]] = []

    class NVMLError(Exception):
        pass

    def by_uuid(u: str) -> str:
        calls.append(("uuid", u))
        if u == "GPU-bad":
            raise NVMLError("gone")
        return u

    def by_index(i: int) -> str:
        calls.append(("index", i))
        return f"idx{i}"

    fake = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByUUID=by_uuid,
        nvmlDeviceGetHandleByIndex=by_index,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=42),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=7),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    from gpuhub.monitor.nvml import NvmlSource

    devices = (
        Device(index=2, type="a100", name="A100", uuid="GPU-aaa"),
        Device(index=3, type="a100", name="A100", uuid="GPU-bad"),
        Device(index=4, type="a100", name="A100"),
    )
    out = NvmlSource().read(alloc(gpus=3), devices, 0)
    assert out == (DeviceSample("GPU-aaa", 42.0, 7), DeviceSample("4", 42.0, 7))
    assert calls == [("uuid", "GPU-aaa"), ("uuid", "GPU-bad"), ("index", 4)]


# --- culling ----------------------------------------------------------------------------


def run(policy, a, samples_by_minute, clock=None):
    """Advance the clock minute by minute; the verdicts by minute."""
    clock = clock or IdleClock()
    out = {}
    for minute, samples in samples_by_minute:
        clock, verdict = step(policy, a, clock, samples, minute * 60.0)
        out[minute] = verdict
    return clock, out


def test_idle_past_the_limit_is_warned_then_culled():
    _, v = run(POLICY, alloc(), [(m, util(1.0)) for m in range(0, 62)])
    assert v[49].action == "none" and v[49].cull_at == 3600
    assert v[50].action == "warn" and v[50].cull_at == 3600 and v[50].idle_seconds == 3000
    assert v[59].action == "warn"
    assert v[60].action == "cull"


def test_any_busy_gpu_keeps_the_server_and_restarts_the_clock():
    series = [(m, util(1, 2)) for m in range(0, 55)] + [(55, util(0, 80))]
    series += [(m, util(1, 2)) for m in range(56, 120)]
    _, v = run(POLICY, alloc(gpus=2), series)
    assert v[54].action == "warn" and v[55].action == "none"
    # idle again from minute 56: warned at 106, culled at 116
    assert v[116].action == "cull" and v[115].action == "warn" and v[106].action == "warn"
    assert v[105].action == "none"


def test_threshold_is_strict():
    assert is_idle(util(4.99), 5) is True and is_idle(util(5.0), 5) is False
    assert is_idle((), 5) is None


def test_no_samples_never_culls():
    _, v = run(POLICY, alloc(), [(m, ()) for m in range(0, 200)])
    assert {x.action for x in v.values()} == {"none"}


def test_keep_it_postpones_a_full_period():
    clock, v = run(POLICY, alloc(), [(m, util(0)) for m in range(0, 55)])
    assert v[54].action == "warn"
    clock = keep(clock, 54 * 60.0)
    _, v = run(POLICY, alloc(), [(m, util(0)) for m in range(55, 120)], clock)
    assert v[103].action == "none" and v[104].action == "warn"
    assert v[113].action == "warn" and v[114].action == "cull"


def test_a_warning_is_never_skipped():
    """Samples far apart (the service was busy): the first sample past the limit warns,
    the cull comes warn_minutes later."""
    _, v = run(POLICY, alloc(), [(0, util(0)), (90, util(0)), (95, util(0)), (100, util(0))])
    assert v[90].action == "warn" and v[90].cull_at == 100 * 60
    assert v[95].action == "warn" and v[100].action == "cull"


def test_jobs_and_profiles_without_culling_are_never_culled():
    _, v = run(POLICY, alloc("job:abc", kind="job"), [(m, util(0)) for m in range(0, 300)])
    assert {x.action for x in v.values()} == {"none"}
    _, v = run(None, alloc(), [(m, util(0)) for m in range(0, 300)])
    assert {x.action for x in v.values()} == {"none"}


# --- accounting ---------------------------------------------------------------------------


def test_gpu_hours_per_group_and_user_over_a_period():
    holds = [
        Hold("server:alice/", "alice", "vision", "a100", 2, "notebook", 0, 7200),
        Hold("job:1", "bob", "vision", "a100", 1, "job", 3600, None),
        Hold("server:carol/", "carol", "nlp", "h100", 1, "notebook", -3600, 1800),
    ]
    ticks = [
        # alice: both GPUs idle for the second hour, one idle in the first half hour
        Tick("server:alice/", 0, 1800, 1800, 1),
        Tick("server:alice/", 0, 7200, 3600, 2),
        # a tick of an unknown hold is ignored; a tick reaching before its hold is clipped
        Tick("server:zed/", 0, 100, 100, 1),
        Tick("job:1", 3600, 3700, 200, 1),
    ]
    r = gpu_hours(holds, ticks, since=0, until=10800)
    assert r.users["alice"].gpu_hours == 4 and r.users["alice"].idle_gpu_hours == 2.5
    assert r.users["alice"].busy_gpu_hours == 1.5
    bob = r.users["bob"]
    assert bob.gpu_hours == 2 and bob.idle_gpu_hours == pytest.approx(100 / 3600)
    assert r.users["carol"].gpu_hours == 0.5  # only the part inside the period
    assert r.groups["vision"].gpu_hours == 6 and r.groups["nlp"].gpu_hours == 0.5
    assert r.groups["vision"].idle_gpu_hours == pytest.approx(2.5 + 100 / 3600)
    assert "zed" not in r.users
    assert (r.users["bob"].holding, r.users["alice"].holding, r.groups["vision"].holding) == (
        1,
        0,
        1,
    )


def test_the_source_is_chosen_by_config(monkeypatch, tmp_path: Path):
    from gpuhub.model import MonitorConfig
    from gpuhub.monitor.service import open_source

    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML on this machine
    assert open_source(MonitorConfig(source="auto")) is None  # unmeasured, never culled
    with pytest.raises(SourceUnavailable, match="NVML is not available"):
        open_source(MonitorConfig(source="nvml"))
    trace = tmp_path / "t.jsonl"
    trace.write_text(TRACE)
    src = open_source(MonitorConfig(source="replay", replay_trace=str(trace)))
    assert isinstance(src, ReplaySource) and "server:alice/" in src.trace
    trace.unlink()
    with pytest.raises(SourceUnavailable, match="cannot read the replay trace"):
        open_source(MonitorConfig(source="replay", replay_trace=str(trace)))
