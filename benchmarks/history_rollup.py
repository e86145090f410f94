"""Size of the GPU-usage history (``state/usage.sqlite``) for 30 users over 30 days,
before and after the roll-up of samples older than ``monitor.history_days``.

    python benchmarks/history_rollup.py --users 30 --days 30 --sample-seconds 30

The simulated month (stated here, seeded): every user holds one GPU server for
``--hours-per-day`` hours each day (1 or 2 GPUs, starting at a random minute between 07:00
and 11:00 UTC), sampled every ``--sample-seconds`` as the monitor does, idle in about a
third of the samples.  Holds and ticks are written in bulk in the store's own schema (the
monitor's ``record`` would take as long as the month); the roll-up is the store's own
``roll_up``, called until it is done, as the monitor calls it once per sample.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gpuhub.monitor.history import HistoryStore

DAY, HOUR = 86400, 3600


def fill(store: HistoryStore, users: int, days: int, step: int, hours: float, end: float) -> int:
    """Write the simulated month; the number of ticks."""
    rng = random.Random(16)
    holds, ticks = [], []
    for u in range(users):
        gpus = 1 + u % 2
        group = ("vision", "nlp", "speech")[u % 3]
        for d in range(days, 0, -1):
            start = end - d * DAY + 7 * HOUR + rng.randrange(0, 4 * HOUR, 60)
            stop = start + hours * HOUR
            key = f"server:user{u}/"
            holds.append((key, start, f"user{u}", group, "a100", gpus, "notebook", stop, stop))
            t = start + step
            while t <= stop:
                idle = gpus if rng.random() < 0.33 else 0
                util = 0.0 if idle else rng.uniform(20, 100)
                ticks.append((key, start, t, step, idle, util, 30000))
                t += step
    with store._db() as db:
        db.executemany(
            "INSERT INTO holds (key, start, user, grp, gpu_type, gpus, kind, last_seen, ended) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            holds,
        )
        db.executemany("INSERT INTO ticks VALUES (?, ?, ?, ?, ?, ?, ?)", ticks)
    return len(ticks)


def size(path: Path) -> int:
    """Bytes of the database: the file plus its write-ahead log."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def checkpoint(path: Path, vacuum: bool = False) -> None:
    with sqlite3.connect(path) as db:
        if vacuum:
            db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--sample-seconds", type=int, default=30)
    ap.add_argument("--hours-per-day", type=float, default=8.0)
    ap.add_argument("--history-days", type=float, default=14.0)
    args = ap.parse_args()
    end = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "usage.sqlite"
        store = HistoryStore(path)
        n = fill(store, args.users, args.days, args.sample_seconds, args.hours_per_day, end)
        checkpoint(path)
        before = size(path)
        period = (end - args.days * DAY - DAY, end)
        totals = store.report(*period)
        t0, batches = time.perf_counter(), 1
        while store.roll_up(end, args.history_days, 400):
            batches += 1
        took = time.perf_counter() - t0
        checkpoint(path)
        after = size(path)
        checkpoint(path, vacuum=True)
        vacuumed = size(path)
        again = store.report(*period)
        same = {name: (t.gpu_hours, t.idle_gpu_hours) for name, t in totals.groups.items()} == {
            name: (t.gpu_hours, t.idle_gpu_hours) for name, t in again.groups.items()
        }
        held = sum(t.gpu_hours for t in totals.groups.values())
    print(
        f"{args.users} users x {args.days} days, a sample every {args.sample_seconds} s, "
        f"{args.hours_per_day:g} h a day: {n} samples, {held:.1f} GPU-hours"
    )
    print(f"before roll-up: {mib(before)}")
    print(
        f"after roll-up (raw {args.history_days:g} days, hourly before): {mib(after)} on disk, "
        f"{mib(vacuumed)} after VACUUM; {batches} batches in {took:.1f} s "
        f"({os.cpu_count()} cores)"
    )
    print(f"GPU-hours per group identical before and after: {same}")


if __name__ == "__main__":
    main()
