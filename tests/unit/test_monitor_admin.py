"""The admin's GPU page, pure parts: the view model from held allocations + history rows
+ config, the period selector's allow-list, the mean utilisation over the last hour,
the rendered HTML (escaped), and the hub config that makes only admins see it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from markupsafe import escape

from gpuhub.config import parse_config
from gpuhub.errors import OptionError
from gpuhub.hubconfig import apply_monitor_service, embedded_config
from gpuhub.model import Allocation, IdleCulling
from gpuhub.monitor.accounting import Hold, Tick, gpu_hours, mean_utilization
from gpuhub.monitor.adminhandlers import render_page
from gpuhub.monitor.adminpage import NO_QUEUE, admin_page, parse_period, stamp
from gpuhub.monitor.culling import Verdict
from gpuhub.monitor.history import HistoryStore, Observation
from gpuhub.monitor.report import format_report
from gpuhub.monitor.sources import DeviceSample
from gpuhub.monitor.state import Held, HubServer

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
T0 = NOW - 2 * 3600  # everything started two hours ago
POLICY = IdleCulling(threshold_percent=10, idle_minutes=30, warn_minutes=10)


def alloc(key: str, user: str, group: str, gpu_type: str, devices: tuple[int, ...]) -> Allocation:
    kind = "job" if key.startswith("job:") else "notebook"
    since = datetime.fromtimestamp(T0, UTC)
    return Allocation(key, user, group, gpu_type, len(devices), kind, since, devices)  # type: ignore[arg-type]


def samples(*utils: float) -> tuple[DeviceSample, ...]:
    return tuple(DeviceSample(str(i), u, 100) for i, u in enumerate(utils))


IDLE = Held(
    alloc("server:alice/", "alice", "vision", "a100", (0,)),
    samples(0),
    POLICY,
    Verdict("warn", 25 * 60, NOW + 5 * 60),
    HubServer("alice", "", "gpu", "torch", True),
)
BUSY = Held(
    alloc("server:bob/big", "bob", "vision", "a100", (1, 2)),
    samples(80, 90),
    POLICY,
    Verdict("none"),
    HubServer("bob", "big", "gpu", "torch", True),
)
JOB = Held(alloc("job:0a1b2c", "carol", "nlp", "h100", (4,)), samples(50))
HELD = [JOB, BUSY, IDLE]


def tick(key: str, at: float, seconds: float, util: float, idle: int = 0) -> Tick:
    return Tick(key, T0, at, seconds, idle, util)


def report():
    holds = [
        Hold(
            h.alloc.key,
            h.alloc.user,
            h.alloc.group,
            h.alloc.gpu_type,
            h.alloc.gpus,
            h.alloc.kind,
            T0,
        )
        for h in HELD
    ]
    ticks = [tick("server:alice/", NOW, 2 * 3600, 0, idle=1)]
    return gpu_hours(holds, ticks, NOW - 86400, NOW)


def test_groups_show_used_against_quota_by_type_and_no_queue_on_one_machine(raw):
    raw["quotas"]["groups"]["nlp"]["per_type"] = {"h100": 1}
    page = admin_page(parse_config(raw), HELD, [], report(), "24h", NOW)
    rows = {g.group: g for g in page.groups}
    assert list(rows) == ["vision", "nlp"]  # the YAML's order
    vision, nlp = rows["vision"], rows["nlp"]
    assert (vision.used, vision.quota, vision.queued) == (3, 4, None)
    assert [(t.gpu_type, t.used, t.quota) for t in vision.by_type] == [
        ("a100", 3, None),
        ("h100", 0, 2),
    ]
    assert (nlp.used, nlp.quota) == (1, 2)
    assert [(t.gpu_type, t.used, t.quota) for t in nlp.by_type] == [("h100", 1, 1)]
    assert page.queue_note == NO_QUEUE
    queued = admin_page(parse_config(raw), HELD, [], report(), "24h", NOW, queued={"nlp": 3})
    assert [g.queued for g in queued.groups] == [0, 3] and queued.queue_note == ""


def test_a_server_the_hub_does_not_call_ready_is_starting(config):
    starting = Held(IDLE.alloc, server=HubServer("alice", "", "gpu", "torch", False))
    assert admin_page(config, [starting], [], report(), "24h", NOW).holders[0].starting


def test_a_group_without_quota_that_holds_gpus_is_listed_last(config):
    stray = Held(alloc("server:dave/", "dave", "guests", "a100", (3,)))
    page = admin_page(config, [*HELD, stray], [], report(), "24h", NOW)
    assert [(g.group, g.used, g.quota) for g in page.groups][-1] == ("guests", 1, None)


def test_every_holder_with_where_since_utilisation_idle_and_warning(config):
    last_hour = [
        tick("server:alice/", NOW - 1800, 1800, 0, idle=1),
        tick("server:alice/", NOW, 1800, 10, idle=1),
        tick("server:bob/big", NOW, 3600, 85),
    ]
    page = admin_page(config, HELD, last_hour, report(), "24h", NOW)
    rows = {h.key: h for h in page.holders}
    assert list(rows) == ["job:0a1b2c", "server:alice/", "server:bob/big"]  # group, user
    alice, bob, job = rows["server:alice/"], rows["server:bob/big"], rows["job:0a1b2c"]
    assert (alice.user, alice.kind, alice.name, alice.where) == ("alice", "notebook", "", "GPU 0")
    assert alice.since == T0 and alice.util_now == 0 and alice.util_hour == pytest.approx(5)
    assert alice.idle_minutes == 25 and alice.cull_at == NOW + 300 and alice.cull_action == "stop"
    assert (bob.name, bob.where, bob.gpus, bob.util_now, bob.util_hour) == (
        "big",
        "GPU 1, 2",
        2,
        85,
        85,
    )
    assert bob.idle_minutes == 0 and bob.cull_at is None
    assert not alice.starting and not job.starting
    # jobs are never culled for idleness: no idle clock, no warning; not measured in the
    # last hour: no mean
    assert (job.kind, job.name, job.where, job.util_now) == ("job", "0a1b2c", "GPU 4", 50)
    assert job.idle_minutes is None and job.cull_at is None and job.util_hour is None


def test_gpu_hours_are_the_same_totals_as_gpuhub_config_usage(config, tmp_path: Path):
    """One place computes them: the history's report, as the CLI prints it."""
    store = HistoryStore(tmp_path / "usage.sqlite")
    a = IDLE.alloc
    for k in range(1, 5):  # four samples, 15 min apart, idle: the first hour idle
        store.record(T0 + k * 900, [Observation(a, 1, 0.0, 0)], 1800)
    rep = store.report(NOW - 86400, NOW)
    page = admin_page(config, [IDLE], [], rep, "24h", NOW)
    (user,) = page.user_hours
    (group,) = page.group_hours
    assert (user.name, user.gpu_hours, user.idle_gpu_hours, user.holding) == ("alice", 2.0, 1.0, 1)
    assert (group.name, group.gpu_hours) == ("vision", 2.0)
    assert "  user alice: 2.0000 GPU-hours, 1.0000 idle (holding 1 now)" in format_report(rep)


def test_mean_utilisation_weights_ticks_by_their_time_inside_the_window():
    ticks = [
        tick("a", NOW - 3000, 1200, 100),  # 600 s of it inside the last hour
        tick("a", NOW, 3000, 0),
        tick("b", NOW - 4000, 600, 90),  # entirely before the window
    ]
    assert mean_utilization(ticks, NOW - 3600, NOW) == {("a", T0): pytest.approx(100 * 600 / 3600)}


@pytest.mark.parametrize("text", ["24h", "7d", "30d", "2026-11-20", None])
def test_the_period_is_one_of_the_choices_or_a_past_date(text):
    period, since = parse_period(text, NOW)
    assert period == (text or "24h") and since < NOW


@pytest.mark.parametrize(
    "text", ["1h", "90m", "2026-11-20T09:00", "7d;drop", "2026-13-01", "2027-01-01", "<b>"]
)
def test_anything_else_is_a_400_naming_since(text):
    with pytest.raises(OptionError) as e:
        parse_period(text, NOW)
    assert e.value.field == "since"


def test_times_are_utc_clock_today_else_dated():
    assert stamp(NOW - 3600, NOW) == "11:00"
    assert stamp(NOW - 86400, NOW) == "2026-11-30 12:00"
    assert stamp(None, NOW) == ""


def test_the_page_escapes_every_name_and_carries_the_xsrf_token(config):
    evil = Held(
        alloc("server:alice/<script>x</script>", "alice", "vision", "a100", (0,)),
        samples(0),
        None,
        Verdict("none"),
        HubServer("alice", "<script>x</script>", "gpu", "torch", True),
    )
    page = admin_page(config, [evil, JOB], [], report(), "7d", NOW)
    html = render_page(page, user="admin", prefix="/services/gpuhub-monitor/", xsrf="X1", notice="")
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert html.count('name="_xsrf" value="X1"') == 2  # one form per holder
    assert 'action="/services/gpuhub-monitor/admin/stop"' in html
    assert 'action="/services/gpuhub-monitor/admin/cancel"' in html
    assert '<option value="7d" selected>' in html
    assert str(escape(NO_QUEUE)) in html


def test_only_admins_get_the_page_scope_and_the_monitor_may_cancel_any_job(raw):
    raw["auth"] = {"admin_users": ["root1", "root2"]}
    c = embedded_config(
        parse_config(raw), Path("/d/gpuhub.yaml"), Path("/d"), "http://127.0.0.1:8000", 8011, 8012
    )
    assert set(c.JupyterHub.custom_scopes) == {
        "custom:gpuhub-monitor:admin",
        "custom:gpuhub-jobs:cancel-any",
    }
    assert all(s["description"] for s in c.JupyterHub.custom_scopes.values())
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["gpuhub-monitor-admin"] == {
        "name": "gpuhub-monitor-admin",
        "description": "the GPU page of gpuhub-monitor (the hub's admins)",
        "scopes": ["custom:gpuhub-monitor:admin"],
        "users": ["root1", "root2"],
    }
    # nobody else holds either scope
    others = [r for name, r in roles.items() if name != "gpuhub-monitor-admin"]
    assert not any("custom:gpuhub-monitor:admin" in r["scopes"] for r in others)
    assert [n for n, r in roles.items() if "custom:gpuhub-jobs:cancel-any" in r["scopes"]] == [
        "gpuhub-monitor-service"
    ]
    services = {s["name"]: s for s in c.JupyterHub.services}
    mon = services["gpuhub-monitor"]
    assert mon["oauth_client_allowed_scopes"] == ["custom:gpuhub-monitor:admin"]
    assert mon["oauth_no_confirm"] is True
    assert mon["environment"]["GPUHUB_JOBS_URL"] == "http://127.0.0.1:8011/services/gpuhub-jobs/"


def test_without_a_jobs_service_the_monitor_cancels_nothing():
    from traitlets.config import Config

    c = Config()
    apply_monitor_service(c, Path("/d/gpuhub.yaml"), Path("/d"), 8012, ["admin"])
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert "custom:gpuhub-jobs:cancel-any" not in roles["gpuhub-monitor-service"]["scopes"]
    assert set(c.JupyterHub.custom_scopes) == {"custom:gpuhub-monitor:admin"}
    assert "GPUHUB_JOBS_URL" not in c.JupyterHub.services[0]["environment"]


def test_an_admin_added_at_reload_gets_the_page_role():
    """``gpuhub-config reload`` makes new admins admins, and gives them the GPU page too
    (the hub database as the hub has it: roles loaded, custom scopes defined)."""
    from jupyterhub import orm, roles, scopes

    from gpuhub.auth import sync_users
    from gpuhub.scopes import DEFINITIONS, MONITOR_ADMIN, MONITOR_ADMIN_ROLE

    db = orm.new_session_factory("sqlite://")()
    for role in roles.get_default_roles():
        roles.create_role(db, role)
    sync_users(db, {"alice": ["vision"]}, ["alice"])  # no monitor configured: no such role
    assert {r.name for r in orm.User.find(db, "alice").roles} == {"user", "admin"}
    scopes.define_custom_scopes(DEFINITIONS)
    roles.create_role(db, {"name": MONITOR_ADMIN_ROLE, "scopes": [MONITOR_ADMIN]})
    sync_users(db, {"alice": ["vision"], "bob": ["vision"], "root2": []}, ["alice", "root2"])
    db.commit()
    holders = {u.name for u in orm.Role.find(db, MONITOR_ADMIN_ROLE).users}
    assert holders == {"alice", "root2"}
