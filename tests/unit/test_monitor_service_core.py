"""The monitor's pure parts: clocks per allocation fed by the hub's servers, what the
history records, the metrics text, and the hub config of the managed service."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from gpuhub.confdiff import describe_changes
from gpuhub.config import parse_config
from gpuhub.hubconfig import MONITOR_SERVICE_SCOPES, embedded_config
from gpuhub.jobs.singleton import hold_lock
from gpuhub.model import Allocation
from gpuhub.monitor.app import LOCK_FILE, MonitorApp
from gpuhub.monitor.metrics import MetricsSnapshot, render
from gpuhub.monitor.sources import DeviceSample
from gpuhub.monitor.state import HubServer, Monitor

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def alloc(user: str, kind: str = "notebook", since: datetime = T0) -> Allocation:
    key = f"server:{user}/" if kind == "notebook" else f"job:{user}"
    return Allocation(key, user, "vision", "a100", 1, kind, since, (0,))  # type: ignore[arg-type]


def cfg(raw):
    raw["profiles"][1]["idle_culling"] = {"idle_minutes": 10, "warn_minutes": 2}
    return parse_config(raw)


IDLE = (DeviceSample("0", 0.0, 5),)


def servers(*users: str, ready: bool = True, profile: str = "gpu") -> dict[str, HubServer]:
    return {f"server:{u}/": HubServer(u, "", profile, "torch", ready) for u in users}


def test_only_ready_servers_of_culling_profiles_are_culled(raw):
    config = cfg(raw)
    m = Monitor()
    allocs = [alloc("alice"), alloc("bob"), alloc("carol"), alloc("j1", "job")]
    samples = {a.key: IDLE for a in allocs}
    hub = {
        **servers("alice"),
        **servers("bob", ready=False),  # still starting
        **servers("carol", profile="secret"),  # a profile without idle_culling
    }
    due = []
    for minute in range(0, 11):
        due = m.tick(config, allocs, samples, hub, minute * 60.0)
    assert [h.alloc.key for h in due] == ["server:alice/"]
    assert m.held["server:alice/"].verdict.action == "cull"
    assert {m.held[k].verdict.action for k in ("server:bob/", "server:carol/", "job:j1")} == {
        "none"
    }
    # the history sees every allocation, with its idle GPUs (jobs included)
    obs = {o.alloc.key: o.idle_gpus for o in m.observations(config)}
    assert obs == {"server:alice/": 1, "server:bob/": 1, "server:carol/": 1, "job:j1": 1}
    assert m.allocated() == {("vision", "a100", "notebook"): 3, ("vision", "a100", "job"): 1}


def test_a_new_allocation_under_the_same_key_starts_a_new_clock(raw):
    config = cfg(raw)
    m = Monitor()
    for minute in range(0, 9):
        m.tick(config, [alloc("alice")], {"server:alice/": IDLE}, servers("alice"), minute * 60.0)
    assert m.held["server:alice/"].verdict.action == "warn"
    again = alloc("alice", since=datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    m.tick(config, [again], {"server:alice/": IDLE}, servers("alice"), 9 * 60.0)
    assert m.held["server:alice/"].verdict.action == "none"


def test_keep_withdraws_the_warning(raw):
    config = cfg(raw)
    m = Monitor()
    for minute in range(0, 9):
        m.tick(config, [alloc("alice")], {"server:alice/": IDLE}, servers("alice"), minute * 60.0)
    kept = m.keep("server:alice/", 8 * 60.0)
    assert kept is not None and kept.verdict.action == "none" and kept.verdict.cull_at == 1080
    assert m.keep("server:nobody/", 0) is None
    m.tick(config, [alloc("alice")], {"server:alice/": IDLE}, servers("alice"), 9 * 60.0)
    assert m.held["server:alice/"].verdict.action == "none"


def test_metrics_text_follows_prometheus_conventions():
    text = render(
        MetricsSnapshot(
            allocated={("vision", "a100", "job"): 2},
            quotas={"vision": 4},
            seconds={"vision": (7200.0, 1800.0)},
            culls={("vision", "restart-on-cpu"): 3},
        )
    ).decode()
    assert 'gpuhub_gpus_allocated{gpu_type="a100",group="vision",kind="job"} 2.0' in text
    assert 'gpuhub_group_quota_gpus{group="vision"} 4.0' in text
    assert "# TYPE gpuhub_gpu_idle_seconds_total counter" in text
    assert 'gpuhub_gpu_held_seconds_total{group="vision"} 7200.0' in text
    assert 'gpuhub_idle_culls_total{action="restart-on-cpu",group="vision"} 3.0' in text
    assert "alice" not in text


def test_embedded_hub_runs_the_monitor_with_least_privilege(raw):
    c = embedded_config(
        parse_config(raw), Path("/d/gpuhub.yaml"), Path("/d"), "http://127.0.0.1:8000", 8011, 8012
    )
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert set(services) == {"gpuhub-jobs", "gpuhub-monitor"}
    mon = services["gpuhub-monitor"]
    assert mon["url"] == "http://127.0.0.1:8012"
    assert mon["command"][1:] == ["-m", "gpuhub.monitor"]
    assert mon["environment"]["GPUHUB_DATA"] == "/d"
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    # and, for the admin's GPU page, cancel jobs (tests/unit/test_monitor_admin.py)
    assert roles["gpuhub-monitor-service"]["scopes"] == [
        *MONITOR_SERVICE_SCOPES,
        "custom:gpuhub-jobs:cancel-any",
    ]
    access = "access:services!service=gpuhub-monitor"
    assert (
        access in roles["user"]["scopes"]
        and "access:services!service=gpuhub-jobs" in (roles["user"]["scopes"])
    )
    assert access in c.Spawner.server_token_scopes
    assert "access:servers!server" in c.Spawner.server_token_scopes
    # servers reach it directly (the lab extension's status bar)
    assert c.Spawner.environment["GPUHUB_MONITOR_URL"] == (
        "http://127.0.0.1:8012/services/gpuhub-monitor/"
    )


def test_reload_says_when_monitoring_or_culling_changed(raw):
    before = parse_config(raw)
    raw["monitor"] = {"sample_seconds": 10}
    raw["profiles"][1]["idle_culling"] = {"idle_minutes": 30}
    assert describe_changes(before, parse_config(raw)) == [
        "profiles: changed gpu",
        "monitor: source or sampling changed (the monitor applies it at once)",
    ]


def test_one_monitor_per_data_directory(tmp_path: Path, raw):
    cfg = tmp_path / "gpuhub.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    held = hold_lock(tmp_path / "state" / LOCK_FILE, 0)  # a monitor already serves it
    try:
        app = MonitorApp(gpuhub_config_file=str(cfg), data_dir=str(tmp_path), instance_wait=0)
        with pytest.raises(SystemExit) as e:
            app.start()
        assert e.value.code == 1
    finally:
        os.close(held)


def test_warning_defaults_to_ten_minutes_or_half_the_limit(raw):
    raw["profiles"][1]["idle_culling"] = {"idle_minutes": 60}
    raw["profiles"][2]["idle_culling"] = {"idle_minutes": 8}
    config = parse_config(raw)
    assert config.profile("gpu").idle_culling.warn_minutes == 10
    assert config.profile("secret").idle_culling.warn_minutes == 4
    assert config.profile("gpu").idle_culling.action == "stop"
