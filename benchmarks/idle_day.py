"""A simulated day of 30 GPU notebook users: activity-only culling vs GPU-idle culling.

    python benchmarks/idle_day.py [--users 30] [--seed 1] [--idle-minutes 30] [--trace PATH]

One 24-hour day (08:00 to 08:00) is generated per user, written as a utilisation trace in
the replay format (:mod:`gpuhub.monitor.sources`), and replayed minute by minute through
gpuhub's own :class:`~gpuhub.monitor.sources.ReplaySource` under two policies:

(a) **activity-only culling, as jupyterhub-idle-culler does it** with Zero to JupyterHub's
    defaults (``cull.timeout: 3600``, ``cull.every: 600``): every 10 minutes, a server
    whose last activity (browser or kernel) is an hour old or more is stopped;
(b) **gpuhub's GPU-idle culling** (:func:`gpuhub.monitor.culling.step`): every GPU below
    5 % for ``--idle-minutes`` (default 30; warning 10 minutes ahead) gives the server
    back.  Nobody presses "keep it" in the simulation.

The day of each user (seeded; every range is uniform unless said otherwise):

- arrives 08:30–10:30 and starts a server with 1 GPU (2 GPUs for one user in five);
- works until leaving at 17:00–19:30, alternating GPU **runs** (utilisation 60–95 %,
  length log-normal, median 25 min, 5–120 min) and **think gaps** while editing or reading
  (utilisation 0–2 %, log-normal, median 12 min, 2–45 min), with the browser open;
- has lunch at 12:00–13:30 for 45–75 minutes and one or two meetings of 30–60 minutes
  in the afternoon, the JupyterLab tab left open (the GPU idle; the open tab keeps
  reporting activity, as JupyterLab's polling does);
- on leaving: 35 % leave the tab open overnight (activity goes on, the GPU idles), 45 %
  close it, 20 % start an **overnight training run** of 2–7 h (utilisation 90 %, a cell
  printing nothing) and close the tab — a kernel busy without output looks idle to (a).

A user who finds their server stopped when they want the GPU (the next run, or the
overnight run they start when leaving) starts it again; a stopped overnight run is lost.
Counted per policy: GPU-hours held, held idle (below 5 %, by part of the day), of work
done (at or above 5 %), of work lost to a cull, servers culled while their GPU was busy,
and culls the user came back to (a restart during the day).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gpuhub.model import Allocation, IdleCulling
from gpuhub.monitor.culling import IdleClock, step
from gpuhub.monitor.sources import ReplaySource

DAY = 24 * 60
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
THRESHOLD = 5.0
IDLE_CULLER_TIMEOUT, IDLE_CULLER_EVERY = 60, 10  # minutes (z2jh: 3600 s, every 600 s)


@dataclass(frozen=True)
class Segment:
    start: int  # minutes after 08:00
    end: int
    util: float
    active: bool  # the hub sees browser or kernel activity
    kind: str  # run, think, lunch, meeting, night-open, night-closed, overnight-run


@dataclass
class User:
    name: str
    gpus: int
    arrive: int
    segments: list[Segment]

    def at(self, minute: int) -> Segment | None:
        for s in self.segments:
            if s.start <= minute < s.end:
                return s
        return None


def _lognormal(rng: random.Random, median: float, lo: float, hi: float) -> int:
    return int(min(hi, max(lo, rng.lognormvariate(math.log(median), 0.6))))


def make_user(i: int, rng: random.Random) -> User:
    """One user's day (see the module's docstring for the model)."""
    hm = lambda h, m=0: (h - 8) * 60 + m  # noqa: E731 (minutes after 08:00)
    arrive = rng.randint(hm(8, 30), hm(10, 30))
    leave = rng.randint(hm(17), hm(19, 30))
    lunch0 = rng.randint(hm(12), hm(13, 30))
    breaks = [(lunch0, lunch0 + rng.randint(45, 75), "lunch")]
    for _ in range(rng.choice((1, 2))):
        m0 = rng.randint(hm(14), hm(16, 30))
        if all(m0 >= e or m0 + 60 <= s for s, e, _k in breaks):
            breaks.append((m0, m0 + rng.randint(30, 60), "meeting"))
    breaks.sort()
    segs: list[Segment] = []
    t, running = arrive, rng.random() < 0.5
    while t < leave:
        brk = next(((s, e, k) for s, e, k in breaks if s <= t < e), None)
        if brk:
            segs.append(Segment(t, brk[1], rng.uniform(0, 2), True, brk[2]))
            t = brk[1]
            continue
        nxt = min([s for s, _e, _k in breaks if s > t] + [leave])
        if running:
            end = min(nxt, t + _lognormal(rng, 25, 5, 120))
            segs.append(Segment(t, end, rng.uniform(60, 95), True, "run"))
        else:
            end = min(nxt, t + _lognormal(rng, 12, 2, 45))
            segs.append(Segment(t, end, rng.uniform(0, 2), True, "think"))
        t, running = end, not running
    u = rng.random()
    if u < 0.35:
        segs.append(Segment(leave, DAY, rng.uniform(0, 2), True, "night-open"))
    elif u < 0.80:
        segs.append(Segment(leave, DAY, rng.uniform(0, 2), False, "night-closed"))
    else:
        run_end = min(DAY, leave + rng.randint(120, 420))
        segs.append(Segment(leave, run_end, 90.0, False, "overnight-run"))
        if run_end < DAY:
            segs.append(Segment(run_end, DAY, 0.0, False, "night-closed"))
    return User(f"user{i:02d}", 2 if rng.random() < 0.2 else 1, arrive, segs)


def write_trace(users: list[User], path: Path) -> None:
    """The day as a replay trace: one row per segment, ``t`` in seconds after 08:00."""
    with path.open("w") as f:
        f.write("# benchmarks/idle_day.py: one simulated day, t = seconds after 08:00\n")
        for u in users:
            for s in u.segments:
                row = {"key": f"server:{u.name}/", "t": s.start * 60, "util": round(s.util, 1)}
                f.write(json.dumps(row) + "\n")


@dataclass
class Result:
    held: float = 0.0
    idle: float = 0.0
    work: float = 0.0
    lost: float = 0.0
    culls: int = 0
    busy_culls: int = 0
    came_back: int = 0
    culled_users: set[str] = field(default_factory=set)
    idle_by_kind: dict[str, float] = field(default_factory=dict)


Culler = Callable[[User, int, float, IdleClock, int], tuple[IdleClock, bool]]
"""``(user, minute, util, clock, last_activity) -> (clock, cull now)``."""


def activity_culler(
    user: User, minute: int, util: float, clock: IdleClock, last: int
) -> tuple[IdleClock, bool]:
    """jupyterhub-idle-culler: checks every ``cull.every``, culls on stale activity."""
    due = minute % IDLE_CULLER_EVERY == 0 and minute - last >= IDLE_CULLER_TIMEOUT
    return clock, due


def gpu_culler(policy: IdleCulling, source: ReplaySource) -> Culler:
    def cull(
        user: User, minute: int, util: float, clock: IdleClock, last: int
    ) -> tuple[IdleClock, bool]:
        alloc = Allocation(f"server:{user.name}/", user.name, "g", "a100", user.gpus, since=T0)
        samples = source.read(alloc, (), T0.timestamp() + minute * 60)
        clock, verdict = step(policy, alloc, clock, samples, minute * 60.0)
        return clock, verdict.action == "cull"

    return cull


def simulate(users: list[User], source: ReplaySource, culler: Culler) -> Result:
    r = Result()
    for u in users:
        running, clock, last, culled_at = False, IdleClock(), 0, None
        for minute in range(u.arrive, DAY):
            seg = u.at(minute)
            if seg is None:
                continue
            wants = seg.kind == "run" or (seg.kind == "overnight-run" and minute == seg.start)
            if not running and (minute == u.arrive or wants):
                running, clock, last = True, IdleClock(), minute  # (re)started by the user
                if culled_at is not None:
                    r.came_back += 1
                    culled_at = None
            alloc = Allocation(f"server:{u.name}/", u.name, "g", "a100", u.gpus, since=T0)
            util = source.read(alloc, (), T0.timestamp() + minute * 60)[0].utilization
            if not running:
                if util >= THRESHOLD:
                    r.lost += u.gpus / 60
                continue
            r.held += u.gpus / 60
            if util < THRESHOLD:
                r.idle += u.gpus / 60
                r.idle_by_kind[seg.kind] = r.idle_by_kind.get(seg.kind, 0) + u.gpus / 60
            else:
                r.work += u.gpus / 60
            if seg.active:
                last = minute
            clock, cull = culler(u, minute, util, clock, last)
            if cull:
                running, culled_at = False, minute
                r.culls += 1
                r.culled_users.add(u.name)
                r.busy_culls += util >= THRESHOLD
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--idle-minutes", type=float, default=30)
    ap.add_argument("--warn-minutes", type=float, default=10)
    ap.add_argument("--trace", type=Path, help="keep the generated trace here")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    users = [make_user(i, rng) for i in range(args.users)]
    with tempfile.TemporaryDirectory() as tmp:
        path = args.trace or Path(tmp) / "idle_day.jsonl"
        write_trace(users, path)
        source = ReplaySource.from_file(path)
    policy = IdleCulling(THRESHOLD, args.idle_minutes, args.warn_minutes, "stop")
    a = simulate(users, source, activity_culler)
    b = simulate(users, source, gpu_culler(policy, source))
    print(
        f"{args.users} users, one day (08:00-08:00), seed {args.seed}; (b) idle after "
        f"{args.idle_minutes:g} min below {THRESHOLD:g} %, warned {args.warn_minutes:g} min ahead"
    )
    print("| | (a) activity-only (idle-culler) | (b) GPU-idle (gpuhub) |")
    print("|---|---|---|")
    rows = [("GPU-hours held", a.held, b.held), ("GPU-hours held idle (< 5 %)", a.idle, b.idle)]
    for kind in ("think", "lunch", "meeting", "night-open", "night-closed"):
        rows.append(
            (f"… idle during {kind}", a.idle_by_kind.get(kind, 0), b.idle_by_kind.get(kind, 0))
        )
    rows += [
        ("GPU-hours of work done", a.work, b.work),
        ("GPU-hours of work lost to a cull", a.lost, b.lost),
    ]
    for label, x, y in rows:
        print(f"| {label} | {x:.1f} | {y:.1f} |")
    print(f"| servers culled | {a.culls} | {b.culls} |")
    print(f"| busy servers culled | {a.busy_culls} | {b.busy_culls} |")
    print(f"| culls the user came back to (restarted that day) | {a.came_back} | {b.came_back} |")
    ratio = b.idle / a.idle if a.idle else float("nan")
    verdict = "met" if ratio <= 0.10 and b.busy_culls == 0 else "NOT met"
    print(
        f"idle GPU-hours (b)/(a) = {ratio:.3f}; busy servers culled by (b): {b.busy_culls} "
        f"(goal <= 0.10 and 0: {verdict})"
    )


if __name__ == "__main__":
    main()
