"""History retention: samples older than ``monitor.history_days`` become hourly rows,
hourly rows older than ``monitor.history_max_days`` are dropped.  A real SQLite file
filled by the store's own ``record`` (integer times, so totals compare exactly)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from gpuhub.model import Allocation
from gpuhub.monitor.accounting import Hold, Tick
from gpuhub.monitor.history import HistoryStore, Observation
from gpuhub.monitor.rollup import hour_rows

DAY, HOUR = 86400, 3600
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()
STEP = 1700  # seconds between samples (off the hour: samples straddle hour boundaries)


def alloc(key: str, user: str, group: str, gpus: int, start: float) -> Allocation:
    return Allocation(
        key=key,
        user=user,
        group=group,
        gpu_type="a100",
        gpus=gpus,
        kind="job" if key.startswith("job:") else "notebook",
        since=datetime.fromtimestamp(start, UTC),
    )


# holds over the last 20 days, starting off the hour (ticks straddle hour boundaries)
ALICE = alloc("server:alice/", "alice", "vision", 2, NOW - 20 * DAY + 1234)  # 3 days
BOB = alloc("job:7", "bob", "vision", 1, NOW - 17 * DAY + 777)  # 10 days, still held
CAROL = alloc("server:carol/", "carol", "nlp", 4, NOW - 16 * DAY - 99)  # still held
LATE = alloc("server:dan/", "dan", "nlp", 1, NOW - 19 * DAY)  # first seen 3 days ago


def live(t: float) -> list[Observation]:
    seen = []
    if ALICE.since.timestamp() <= t < ALICE.since.timestamp() + 3 * DAY:
        seen.append(Observation(ALICE, idle_gpus=int(t // STEP) % 3, util=float(t % 97)))
    # bob's job: the monitor loses sight of it for a day (its hold ends, a new one starts)
    away = NOW - 12 * DAY <= t < NOW - 11 * DAY
    if BOB.since.timestamp() <= t < BOB.since.timestamp() + 10 * DAY and not away:
        seen.append(Observation(BOB, idle_gpus=None if t % 7 == 0 else 1, util=50.0))
    if t >= CAROL.since.timestamp():
        seen.append(Observation(CAROL, idle_gpus=int(t // HOUR) % 5, util=10.0))
    if t >= NOW - 3 * DAY:
        seen.append(Observation(LATE, idle_gpus=0, util=80.0))
    return seen


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 days of samples every ``STEP`` seconds (until ``NOW``)."""
    path = tmp_path_factory.mktemp("history") / "usage.sqlite"
    store = HistoryStore(path)
    t = NOW - 20 * DAY + 1000
    while t <= NOW:
        store.record(t, live(t), max_gap=2 * STEP)
        t += STEP
    return path


@pytest.fixture
def store(filled: Path, tmp_path: Path) -> HistoryStore:
    copy = tmp_path / "usage.sqlite"
    with sqlite3.connect(filled) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    return HistoryStore(copy)


PERIODS = [
    (NOW - 90 * DAY, NOW),
    (NOW - 20 * DAY, NOW - 10 * DAY),
    (NOW - 18 * DAY + 5 * HOUR, NOW - 15 * DAY),
    (NOW - 14 * DAY, NOW - 2 * DAY),
    (NOW - 12 * DAY - 3 * HOUR, NOW - 11 * DAY + HOUR),
    (NOW - 7 * DAY, NOW),
]


def totals(store: HistoryStore) -> list[Any]:
    out = []
    for since, until in PERIODS:
        r = store.report(since, until)
        out.append(
            {
                name: (t.gpu_hours, t.idle_gpu_hours, t.holding)
                for book in (r.groups, r.users)
                for name, t in book.items()
            }
        )
    return out


def dump(path: Path) -> dict[str, list[Any]]:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def roll_all(store: HistoryStore, now: float = NOW, keep: float = 14, max_days: float = 400) -> int:
    batches = 1
    while store.roll_up(now, keep, max_days):
        batches += 1
    return batches


def test_totals_over_whole_hours_are_exactly_the_same_after_the_roll_up(store):
    before = totals(store)
    assert before[0]["vision"][0] > 0 and before[0]["dan"][0] > 0
    with sqlite3.connect(store.path) as db:
        recent = db.execute("SELECT COUNT(*) FROM ticks WHERE at > ?", (NOW - 14 * DAY,))
        kept = recent.fetchone()[0]
    assert kept < count(store.path, "ticks")
    batches = roll_all(store)
    assert batches > 1  # bounded: a day of samples at a time
    assert totals(store) == before  # exact, not approximately
    # what is older than 14 days is in hourly rows, the rest is raw
    with sqlite3.connect(store.path) as db:
        oldest = db.execute("SELECT MIN(at - seconds) FROM ticks").fetchone()[0]
        held = db.execute("SELECT SUM(held_gpu_seconds) FROM hourly").fetchone()[0]
        hours = db.execute("SELECT COUNT(DISTINCT hour) FROM hourly").fetchone()[0]
    assert oldest >= NOW - 14 * DAY - STEP
    assert count(store.path, "ticks") == kept
    assert held > 0 and hours == 6 * 24  # days 20..14 before NOW, by the hour
    # alice's hold ended before the roll-up's end: only her hourly rows are left
    assert count(store.path, "holds") < 6


def test_a_second_roll_up_changes_nothing_and_a_later_one_keeps_the_totals(store):
    roll_all(store)
    once = dump(store.path)
    assert not store.roll_up(NOW, 14, 400)
    assert dump(store.path) == once
    before = totals(store)
    # a day later: one more day is rolled up; totals of the periods above do not move
    # (ticks and holds after NOW are not in them)
    roll_all(store, now=NOW + DAY)
    assert totals(store) == before


def test_a_crash_inside_the_roll_up_leaves_the_file_unchanged(store):
    before = dump(store.path)
    real = HistoryStore._write_rows

    def write_then_crash(db: sqlite3.Connection, rows: Any) -> None:
        real(db, rows)  # the hourly rows are written ...
        raise RuntimeError("power cut")  # ... and the process dies before the commit

    with (
        patch.object(HistoryStore, "_write_rows", staticmethod(write_then_crash)),
        pytest.raises(RuntimeError, match="power cut"),
    ):
        store.roll_up(NOW, 14, 400)
    assert dump(store.path) == before
    # and the next run does the whole batch once
    tallies = totals(store)
    roll_all(store)
    assert totals(store) == tallies


def test_hourly_rows_older_than_the_maximum_are_dropped(store):
    roll_all(store, keep=2, max_days=10)
    with sqlite3.connect(store.path) as db:
        oldest = db.execute("SELECT MIN(hour) FROM hourly").fetchone()[0]
    assert oldest == NOW - 10 * DAY
    r = store.report(NOW - 90 * DAY, NOW - 10 * DAY)
    assert all(t.gpu_hours == 0 for t in r.groups.values())


def test_hour_rows_split_a_hold_and_its_ticks_by_the_hour():
    hold = Hold("server:a/", "a", "g", "a100", 2, "notebook", start=1800.0, end=9000.0)
    ticks = [Tick("server:a/", 1800.0, 5400.0, 3600.0, idle_gpus=1, util=20.0)]
    rows = hour_rows([hold], ticks, lo=0.0, hi=7200.0)
    assert [(r.hour, r.held_gpu_seconds, r.idle_gpu_seconds, r.util_mean) for r in rows] == [
        (0.0, 2 * 1800.0, 1800.0, 20.0),
        (3600.0, 2 * 3600.0, 1800.0, 20.0),
    ]


def test_an_old_history_file_gains_the_roll_up_columns(tmp_path: Path):
    path = tmp_path / "usage.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE holds (key TEXT NOT NULL, start REAL NOT NULL, user TEXT NOT NULL, "
            "grp TEXT NOT NULL, gpu_type TEXT NOT NULL, gpus INTEGER NOT NULL, "
            "kind TEXT NOT NULL, last_seen REAL NOT NULL, ended REAL, PRIMARY KEY (key, start))"
        )
        db.execute(
            "INSERT INTO holds VALUES ('job:1', ?, 'bob', 'vision', 'a100', 1, 'job', ?, ?)",
            (NOW - 30 * DAY, NOW - 29 * DAY, NOW - 29 * DAY),
        )
    store = HistoryStore(path)
    assert store.report(NOW - 31 * DAY, NOW).users["bob"].gpu_hours == 24
    roll_all(store)
    assert store.report(NOW - 31 * DAY, NOW).users["bob"].gpu_hours == 24
    assert count(path, "holds") == 0
