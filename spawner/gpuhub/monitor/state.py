"""What the monitor knows between samples: one idle clock per GPU allocation and the
last view of each (samples, policy, verdict).  Pure: the service feeds it the ledger's
allocations, the source's samples and the hub's servers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..model import Allocation, GpuhubConfig, IdleCulling
from .culling import NOTHING, IdleClock, Verdict, keep, step
from .history import Observation
from .sources import DeviceSample


@dataclass(frozen=True)
class HubServer:
    """A server as the hub describes it: its profile slug, image slug and readiness."""

    user: str
    name: str
    profile: str | None
    image: str | None
    ready: bool


def server_key(user: str, name: str) -> str:
    """The ledger key of ``user``'s server ``name`` (``""``: the default server)."""
    return f"server:{user}/{name}"


@dataclass(frozen=True)
class Held:
    """One GPU allocation at the last sample."""

    alloc: Allocation
    samples: tuple[DeviceSample, ...] = ()
    policy: IdleCulling | None = None
    verdict: Verdict = NOTHING
    server: HubServer | None = None

    @property
    def utilization(self) -> float | None:
        """Mean utilisation of its GPUs in percent (``None``: not measured)."""
        if not self.samples:
            return None
        return sum(s.utilization for s in self.samples) / len(self.samples)

    def idle_gpus(self, default_threshold: float) -> int | None:
        if not self.samples:
            return None
        threshold = self.policy.threshold_percent if self.policy else default_threshold
        return sum(1 for s in self.samples if s.utilization < threshold)


class Monitor:
    """Idle clocks by allocation key (a clock belongs to one allocation: a new one under
    the same key starts afresh)."""

    def __init__(self) -> None:
        self.clocks: dict[str, tuple[float | None, IdleClock]] = {}
        self.held: dict[str, Held] = {}

    def tick(
        self,
        config: GpuhubConfig,
        allocs: Sequence[Allocation],
        samples: Mapping[str, tuple[DeviceSample, ...]],
        servers: Mapping[str, HubServer],
        now: float,
    ) -> list[Held]:
        """Advance every clock to ``now``; the allocations whose time is up."""
        clocks: dict[str, tuple[float | None, IdleClock]] = {}
        held: dict[str, Held] = {}
        for a in allocs:
            since = a.since.timestamp() if a.since else None
            prev_since, clock = self.clocks.get(a.key, (since, IdleClock()))
            if prev_since != since:
                clock = IdleClock()
            server = servers.get(a.key) if a.kind == "notebook" else None
            profile = config.profile(server.profile) if server and server.profile else None
            policy = profile.idle_culling if profile is not None and server else None
            # only a server the hub calls ready is culled (never one still starting)
            active = policy if server is not None and server.ready else None
            own = samples.get(a.key, ())
            clock, verdict = step(active, a, clock, own, now)
            clocks[a.key] = (since, clock)
            held[a.key] = Held(a, own, policy, verdict, server)
        self.clocks, self.held = clocks, held
        return [h for h in held.values() if h.verdict.action == "cull"]

    def keep(self, key: str, now: float) -> Held | None:
        """Keep it for ``key``: its idle clock restarts now; the updated view."""
        h = self.held.get(key)
        if h is None:
            return None
        since, clock = self.clocks[key]
        clock = keep(clock, now)
        self.clocks[key] = (since, clock)
        verdict = NOTHING
        if h.policy is not None and clock.idle_since is not None:
            verdict = Verdict("none", 0.0, now + h.policy.idle_minutes * 60)
        self.held[key] = replace(h, verdict=verdict)
        return self.held[key]

    def observations(self, config: GpuhubConfig) -> list[Observation]:
        """What the history records of this sample."""
        threshold = config.monitor.idle_threshold_percent
        out = []
        for h in self.held.values():
            mem = sum(s.memory_used for s in h.samples)
            util = h.utilization
            out.append(Observation(h.alloc, h.idle_gpus(threshold), util or 0.0, mem))
        return out

    def allocated(self) -> Counter[tuple[str, str, str]]:
        """GPUs held by ``(group, gpu_type, kind)``."""
        out: Counter[tuple[str, str, str]] = Counter()
        for h in self.held.values():
            out[(h.alloc.group, h.alloc.gpu_type, h.alloc.kind)] += h.alloc.gpus
        return out
