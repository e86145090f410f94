"""The GPU-usage history (SQLite in ``state/``) and ``gpuhub-config usage --since``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from gpuhub.cli import main
from gpuhub.model import Allocation
from gpuhub.monitor.history import HistoryStore, Observation, history_path
from gpuhub.monitor.report import parse_since

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()


def alloc(key: str, user: str, group: str, gpus: int, start: float) -> Allocation:
    return Allocation(
        key=key,
        user=user,
        group=group,
        gpu_type="a100",
        gpus=gpus,
        since=datetime.fromtimestamp(start, UTC),
        devices=tuple(range(gpus)),
    )


ALICE = alloc("server:alice/", "alice", "vision", 2, T0)
CAROL = alloc("server:carol/", "carol", "nlp", 1, T0 + 60)


def test_history_survives_a_restart_and_closes_ended_holds(tmp_path: Path):
    path = history_path(tmp_path)
    store = HistoryStore(path)
    store.record(T0 + 60, [Observation(ALICE, idle_gpus=2), Observation(CAROL)], max_gap=120)
    store.record(T0 + 120, [Observation(ALICE, idle_gpus=1), Observation(CAROL, 0)], 120)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # a new process (the service restarted) reads and continues the same file
    again = HistoryStore(path)
    again.record(T0 + 180, [Observation(CAROL, idle_gpus=1)], max_gap=120)  # alice gone
    r = again.report(T0, T0 + 3600)
    # alice: 2 GPUs from T0 to T0+180 (seen gone then); idle 2 GPUs x 60 s + 1 x 60 s
    assert r.users["alice"].gpu_hours == pytest.approx(2 * 180 / 3600)
    assert r.users["alice"].idle_gpu_hours == pytest.approx(180 / 3600)
    # carol still holds hers: counted up to the end of the period; idle only measured time
    assert r.users["carol"].gpu_hours == pytest.approx((3600 - 60) / 3600)
    assert r.users["carol"].idle_gpu_hours == pytest.approx(60 / 3600)
    assert set(r.groups) == {"vision", "nlp"}
    totals, culls = again.counters()
    assert totals["vision"] == pytest.approx((2 * 120, 180))
    assert culls == {}
    again.note_cull(CAROL, T0 + 200, "stop")
    assert again.counters()[1] == {("nlp", "stop"): 1}


def test_a_hold_the_monitor_lost_sight_of_ends_a_gap_after_it_was_last_seen(tmp_path: Path):
    store = HistoryStore(tmp_path / "u.sqlite")
    store.record(T0 + 60, [Observation(ALICE, 0)], max_gap=60)
    store.record(T0 + 7200, [], max_gap=60)  # the monitor was down for two hours
    r = store.report(T0, T0 + 7200)
    assert r.users["alice"].gpu_hours == pytest.approx(2 * 120 / 3600)


def test_parse_since():
    assert parse_since("24h", 100_000) == 100_000 - 86400
    assert parse_since("90m", 10_000) == 10_000 - 5400
    assert parse_since("2026-12-01", 0) == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    with pytest.raises(ValueError, match="--since 'yesterday': write a duration"):
        parse_since("yesterday", 0)


def test_usage_prints_gpu_hours_per_group_and_user(tmp_path: Path, raw, capsys, monkeypatch):
    cfg = tmp_path / "gpuhub.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("GPUHUB_DATA", str(tmp_path))
    (tmp_path / "jupyterhub.sqlite").touch()
    assert main(["usage", str(cfg)]) == 0
    assert "no GPU-hours history yet" in capsys.readouterr().out
    assert not history_path(tmp_path).exists()  # looking creates nothing
    now = time.time()
    a = alloc("server:alice/", "alice", "vision", 2, now - 7200)
    store = HistoryStore(history_path(tmp_path))
    store.record(now - 3600, [Observation(a, 2)], max_gap=3600)
    store.record(now - 1800, [], max_gap=3600)
    assert main(["usage", str(cfg), "--since", "3h"]) == 0
    out = capsys.readouterr().out
    assert "  group vision: 3.0000 GPU-hours, 2.0000 idle" in out
    assert "  user alice: 3.0000 GPU-hours, 2.0000 idle" in out
    # a period after the hold ended
    assert main(["usage", str(cfg), "--since", "20m"]) == 0
    assert "no GPUs were held" in capsys.readouterr().out
    assert main(["usage", str(cfg), "--since", "soon"]) == 1
    assert "write a duration such as 24h" in capsys.readouterr().err
    assert os.stat(history_path(tmp_path)).st_mode & 0o077 == 0
