"""The GPU-usage history of one machine: a small SQLite file, ``<data>/state/usage.sqlite``
(root-only, like the rest of ``state/``), kept across restarts.

- ``holds``: one row per allocation interval (key and start), closed when the monitor
  sees the allocation gone;
- ``ticks``: one row per sample of a hold (how many of its GPUs were idle, for how long);
- ``culls``: every server given back for idleness;
- ``totals``: running held/idle GPU-seconds per group (Prometheus counters that survive
  a restart).

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
from .accounting import Hold, Report, Tick, gpu_hours

FILE = "usage.sqlite"

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
CREATE TABLE IF NOT EXISTS culls (
    key TEXT NOT NULL, user TEXT NOT NULL, grp TEXT NOT NULL, gpus INTEGER NOT NULL,
    at REAL NOT NULL, action TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS totals (
    grp TEXT PRIMARY KEY, held_gpu_seconds REAL NOT NULL, idle_gpu_seconds REAL NOT NULL);
"""


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
                    "INSERT OR IGNORE INTO holds VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
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

    def window(self, since: float, until: float) -> tuple[list[Hold], list[Tick]]:
        """The holds and the ticks that overlap ``[since, until]``."""
        with self._db() as db:
            holds = [
                Hold(*row)
                for row in db.execute(
                    "SELECT key, user, grp, gpu_type, gpus, kind, start, ended FROM holds "
                    "WHERE start <= ? AND (ended IS NULL OR ended >= ?)",
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
        return holds, ticks

    def report(self, since: float, until: float) -> Report:
        """GPU-hours per group and per user within ``[since, until]``."""
        return gpu_hours(*self.window(since, until), since, until)

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


def _start(alloc: Allocation, now: float) -> float:
    return alloc.since.timestamp() if alloc.since is not None else now
