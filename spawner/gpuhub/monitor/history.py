"""The GPU-usage history of one machine: a small SQLite file, ``<data>/state/usage.sqlite``
(root-only, like the rest of ``state/``), kept across restarts.

- ``holds``: one row per allocation interval (key and start), closed when the monitor
  sees the allocation gone;
- ``ticks``: one row per sample of a hold (how many of its GPUs were idle, for how long);
- ``hourly``: older ticks and holds rolled up, one row per allocation and hour
  (:mod:`gpuhub.monitor.rollup`), and ``rollup``: up to when ticks are rolled up;
- ``culls``: every server given back for idleness;
- ``totals``: running held/idle GPU-seconds per group (Prometheus counters that survive
  a restart).

Raw samples are kept ``monitor.history_days``; :meth:`HistoryStore.roll_up` turns older
ones into hourly rows (whole hours, a bounded batch per call, each in one transaction)
and drops hourly rows older than ``monitor.history_max_days``.

Every method blocks (SQLite): call them in a thread from a coroutine.  Each opens its
own connection, so the CLI and the service may use the file at the same time (WAL).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..model import Allocation
from .accounting import HOUR, Hold, Report, Rolled, Tick, gpu_hours
from .rollup import HourRow, floor_hour, hour_rows

FILE = "usage.sqlite"
DAY = 86400.0
BATCH_HOURS = 24
"""Hours of samples one :meth:`HistoryStore.roll_up` call turns into hourly rows."""
DROP_BATCH = 50_000
"""Most expired hourly rows one call deletes."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS holds (
    key TEXT NOT NULL, start REAL NOT NULL, user TEXT NOT NULL, grp TEXT NOT NULL,
    gpu_type TEXT NOT NULL, gpus INTEGER NOT NULL, kind TEXT NOT NULL,
    last_seen REAL NOT NULL, ended REAL, PRIMARY KEY (key, start));
CREATE INDEX IF NOT EXISTS holds_open ON holds (ended);
CREATE TABLE IF NOT EXISTS ticks (
    key TEXT NOT NULL, start REAL NOT NULL, at REAL NOT NULL, seconds REAL NOT NULL,
    idle_gpus INTEGER NOT NULL, util REAL NOT NULL, memory_used INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ticks_at ON ticks (at);
CREATE INDEX IF NOT EXISTS ticks_from ON ticks (at - seconds);
CREATE TABLE IF NOT EXISTS hourly (
    key TEXT NOT NULL, start REAL NOT NULL, hour REAL NOT NULL, user TEXT NOT NULL,
    grp TEXT NOT NULL, gpu_type TEXT NOT NULL, gpus INTEGER NOT NULL, kind TEXT NOT NULL,
    held_gpu_seconds REAL NOT NULL, idle_gpu_seconds REAL NOT NULL,
    measured_seconds REAL NOT NULL, util_mean REAL NOT NULL, PRIMARY KEY (key, start, hour));
CREATE INDEX IF NOT EXISTS hourly_hour ON hourly (hour);
CREATE TABLE IF NOT EXISTS rollup (
    id INTEGER PRIMARY KEY CHECK (id = 1), rolled_until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS culls (
    key TEXT NOT NULL, user TEXT NOT NULL, grp TEXT NOT NULL, gpus INTEGER NOT NULL,
    at REAL NOT NULL, action TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS totals (
    grp TEXT PRIMARY KEY, held_gpu_seconds REAL NOT NULL, idle_gpu_seconds REAL NOT NULL);
"""


@dataclass(frozen=True)
class Window:
    """The history overlapping a period: holds, raw ticks, rolled-up hours, and the
    time up to which samples were rolled up (``None``: never)."""

    holds: list[Hold]
    ticks: list[Tick]
    rolled: list[Rolled]
    rolled_until: float | None

    def report(self, since: float, until: float) -> Report:
        """GPU-hours per group and per user within ``[since, until]``."""
        return gpu_hours(self.holds, self.ticks, since, until, self.rolled, self.rolled_until)


@dataclass(frozen=True)
class Observation:
    """One allocation seen at a sample: ``idle_gpus`` ``None`` when nothing was measured."""

    alloc: Allocation
    idle_gpus: int | None = None
    util: float = 0.0
    memory_used: int = 0


def history_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / "state" / FILE


class HistoryStore:
    """The history file at ``path`` (created, mode 0600, on first use)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            if "counted_from" not in {c[1] for c in db.execute("PRAGMA table_info(holds)")}:
                db.execute("ALTER TABLE holds ADD COLUMN counted_from REAL")  # before roll-ups
            with db:
                yield db
        finally:
            db.close()

    def record(self, now: float, seen: Sequence[Observation], max_gap: float) -> None:
        """The allocations live at ``now`` with their samples; open holds not among them
        end (at ``now``, or ``max_gap`` after they were last seen when the monitor was
        away longer)."""
        keys = {(o.alloc.key, _start(o.alloc, now)) for o in seen}
        with self._db() as db:
            open_ = db.execute(
                "SELECT key, start, last_seen FROM holds WHERE ended IS NULL"
            ).fetchall()
            last = {(k, s): ls for k, s, ls in open_}
            for k, s, ls in open_:
                if (k, s) not in keys:
                    db.execute(
                        "UPDATE holds SET ended = ? WHERE key = ? AND start = ?",
                        (min(now, ls + max_gap), k, s),
                    )
            for o in seen:
                a, start = o.alloc, _start(o.alloc, now)
                prev = last.get((a.key, start), start)
                seconds = max(0.0, min(now - prev, max_gap))
                db.execute(
                    "INSERT OR IGNORE INTO holds (key, start, user, grp, gpu_type, gpus, kind, "
                    "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (a.key, start, a.user, a.group, a.gpu_type, a.gpus, a.kind, now),
                )
                db.execute(
                    "UPDATE holds SET last_seen = ? WHERE key = ? AND start = ?",
                    (now, a.key, start),
                )
                idle = 0 if o.idle_gpus is None else min(o.idle_gpus, a.gpus)
                db.execute(
                    "INSERT INTO totals VALUES (?, ?, ?) ON CONFLICT (grp) DO UPDATE SET "
                    "held_gpu_seconds = held_gpu_seconds + excluded.held_gpu_seconds, "
                    "idle_gpu_seconds = idle_gpu_seconds + excluded.idle_gpu_seconds",
                    (a.group, a.gpus * seconds, idle * seconds),
                )
                if o.idle_gpus is not None:
                    db.execute(
                        "INSERT INTO ticks VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (a.key, start, now, seconds, idle, o.util, o.memory_used),
                    )

    def note_cull(self, alloc: Allocation, at: float, action: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO culls VALUES (?, ?, ?, ?, ?, ?)",
                (alloc.key, alloc.user, alloc.group, alloc.gpus, at, action),
            )

    def window(self, since: float, until: float) -> Window:
        """What overlaps ``[since, until]``, read as one snapshot."""
        with self._db() as db:
            db.execute("BEGIN")  # one snapshot: a roll-up committing meanwhile is not seen half
            holds = [
                Hold(*row)
                for row in db.execute(
                    f"SELECT {_HOLD} FROM holds WHERE start <= ? AND (ended IS NULL OR ended >= ?)",
                    (until, since),
                )
            ]
            ticks = [
                Tick(*row)
                for row in db.execute(
                    "SELECT key, start, at, seconds, idle_gpus, util FROM ticks "
                    "WHERE at >= ? AND at - seconds <= ?",
                    (since, until),
                )
            ]
            rolled = [
                Rolled(*row)
                for row in db.execute(
                    "SELECT user, grp, hour, held_gpu_seconds, idle_gpu_seconds FROM hourly "
                    "WHERE hour < ? AND hour > ?",
                    (until, since - HOUR),
                )
            ]
            rolled_until = _rolled_until(db)
        return Window(holds, ticks, rolled, rolled_until)

    def report(self, since: float, until: float) -> Report:
        """GPU-hours per group and per user within ``[since, until]`` (rolled-up hours
        partly inside it count pro rata)."""
        return self.window(since, until).report(since, until)

    def roll_up(
        self, now: float, keep_days: float, max_days: float, batch_hours: int = BATCH_HOURS
    ) -> bool:
        """Turn samples older than ``keep_days`` (whole hours) into hourly rows, at most
        ``batch_hours`` of them, and drop hourly rows older than ``max_days``: one
        transaction, so a crash in the middle leaves the file as it was and a second run
        never counts anything twice.  ``True`` while older samples are left (call again)."""
        cutoff = floor_hour(now - keep_days * DAY)
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # read and write as one step
            lo = stored = _rolled_until(db)
            if lo is None:
                first = db.execute("SELECT MIN(start) FROM holds").fetchone()[0]
                lo = cutoff if first is None else min(floor_hour(first), cutoff)
            hi = max(lo, min(cutoff, lo + batch_hours * HOUR))
            holds = [
                Hold(*row)
                for row in db.execute(
                    f"SELECT {_HOLD} FROM holds WHERE COALESCE(counted_from, start) < ? "
                    "AND (ended IS NULL OR ended > COALESCE(counted_from, start))",
                    (hi,),
                )
            ]
            ticks = [
                Tick(*row)
                for row in db.execute(
                    "SELECT key, start, at, seconds, idle_gpus, util FROM ticks "
                    "WHERE at - seconds < ?",
                    (hi,),
                )
            ]
            if holds or ticks:
                self._write_rows(db, hour_rows(holds, ticks, lo, hi))
                db.execute("DELETE FROM ticks WHERE at <= ?", (hi,))
                db.execute("DELETE FROM holds WHERE ended IS NOT NULL AND ended <= ?", (hi,))
                db.execute(
                    "UPDATE holds SET counted_from = ? WHERE COALESCE(counted_from, start) < ?",
                    (hi, hi),
                )
            if stored != hi:
                db.execute("INSERT OR REPLACE INTO rollup VALUES (1, ?)", (hi,))
            db.execute(
                "DELETE FROM hourly WHERE rowid IN "
                "(SELECT rowid FROM hourly WHERE hour <= ? LIMIT ?)",
                (now - max_days * DAY - HOUR, DROP_BATCH),
            )
        return hi < cutoff

    @staticmethod
    def _write_rows(db: sqlite3.Connection, rows: Sequence[HourRow]) -> None:
        """Add ``rows`` to the hourly table (to an existing row of the same hour: an
        allocation first seen after its start was rolled up)."""
        db.executemany(
            "INSERT INTO hourly VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key, start, hour) DO UPDATE SET "
            "held_gpu_seconds = held_gpu_seconds + excluded.held_gpu_seconds, "
            "idle_gpu_seconds = idle_gpu_seconds + excluded.idle_gpu_seconds, "
            "util_mean = CASE WHEN measured_seconds + excluded.measured_seconds > 0 THEN "
            "(util_mean * measured_seconds + excluded.util_mean * excluded.measured_seconds)"
            " / (measured_seconds + excluded.measured_seconds) ELSE 0 END, "
            "measured_seconds = measured_seconds + excluded.measured_seconds",
            [
                (
                    r.key,
                    r.start,
                    r.hour,
                    r.user,
                    r.group,
                    r.gpu_type,
                    r.gpus,
                    r.kind,
                    r.held_gpu_seconds,
                    r.idle_gpu_seconds,
                    r.measured_seconds,
                    r.util_mean,
                )
                for r in rows
            ],
        )

    def counters(self) -> tuple[dict[str, tuple[float, float]], dict[tuple[str, str], int]]:
        """All-time ``{group: (held, idle GPU-seconds)}`` and ``{(group, action): culls}``."""
        with self._db() as db:
            totals = {g: (h, i) for g, h, i in db.execute("SELECT * FROM totals")}
            culls = {
                (g, a): n
                for g, a, n in db.execute(
                    "SELECT grp, action, COUNT(*) FROM culls GROUP BY grp, action"
                )
            }
        return totals, culls


_HOLD = "key, user, grp, gpu_type, gpus, kind, start, ended, counted_from"


def _rolled_until(db: sqlite3.Connection) -> float | None:
    row = db.execute("SELECT rolled_until FROM rollup WHERE id = 1").fetchone()
    return None if row is None else float(row[0])


def _start(alloc: Allocation, now: float) -> float:
    return alloc.since.timestamp() if alloc.since is not None else now
