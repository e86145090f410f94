"""The usage ledger: allocations of notebooks and jobs, with atomic check-and-reserve.

:meth:`Ledger.reserve` decides and records in one synchronous call, so two coroutines
can never both pass the check for the last GPU.  The ledger itself holds no truth across
restarts: adapters rebuild it from what is really running with :meth:`Ledger.replace`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import QuotaDenied
from .model import Allocation, GpuhubConfig, Kind, SpawnRequest
from .profiles import chargeable_groups
from .quota import Usage, decide


@dataclass(frozen=True)
class Device:
    """One local GPU.  ``declared`` devices come from the config, not from NVML."""

    index: int
    type: str
    name: str
    uuid: str | None = None
    declared: bool = False
    minor_number: int | None = None

    @property
    def minor(self) -> int:
        """The minor number of its ``/dev/nvidia<N>`` node (NVML's, else the index)."""
        return self.index if self.minor_number is None else self.minor_number


class Ledger:
    """Allocations by key.  ``devices`` is the local inventory, or ``None`` where a
    scheduler (Kubernetes) places GPUs and requests may queue."""

    def __init__(self, config: GpuhubConfig, devices: Sequence[Device] | None = None) -> None:
        self.config = config
        self.devices = tuple(devices) if devices is not None else None
        self.totals = Usage()

    # -- reading --------------------------------------------------------------------
    def usage(self) -> tuple[Allocation, ...]:
        """Every allocation (O(n): for display and checks, not for decisions)."""
        return tuple(self.totals)

    def get(self, key: str) -> Allocation | None:
        return self.totals.get(key)

    def free_devices(self, gpu_type: str) -> list[int] | None:
        """Indices of free local devices of ``gpu_type`` (``None`` without an inventory)."""
        if self.devices is None:
            return None
        taken = {d for a in self.totals for d in a.devices}
        return [d.index for d in self.devices if d.type == gpu_type and d.index not in taken]

    # -- writing (synchronous: no await between check and reserve) --------------------
    def reserve(
        self,
        key: str,
        request: SpawnRequest,
        groups: Iterable[str],
        *,
        kind: Kind = "notebook",
        now: datetime | None = None,
        pending: bool = True,
    ) -> Allocation | None:
        """Check the request against quota and devices and record it under ``key``.

        Returns ``None`` for a CPU-only request (nothing to hold); raises
        :class:`QuotaDenied` with the user-facing explanation when it does not fit.
        An existing allocation under the same key is replaced, never double-counted.
        """
        if not request.gpus or request.gpu_type is None:
            self.totals.pop(key)
            return None
        previous = self.totals.pop(key)  # a re-reservation replaces, never double-counts
        free = self.free_devices(request.gpu_type)
        decision = decide(
            self.config,
            self.totals,
            user=request.user,
            gpus=request.gpus,
            gpu_type=request.gpu_type,
            candidates=chargeable_groups(self.config, groups, request.profile),
            requested_group=request.group,
            free_devices=None if free is None else len(free),
        )
        if not decision.allowed or decision.group is None:
            if previous is not None:
                self.totals.put(previous)
            raise QuotaDenied(decision.explanation)
        alloc = Allocation(
            key=key,
            user=request.user,
            group=decision.group,
            gpu_type=request.gpu_type,
            gpus=request.gpus,
            kind=kind,
            since=now or datetime.now(UTC),
            devices=tuple(free[: request.gpus]) if free is not None else (),
            pending=pending,
        )
        self.totals.put(alloc)
        return alloc

    def release(self, key: str) -> Allocation | None:
        """Forget the allocation under ``key`` (stop, failed start, job end)."""
        return self.totals.pop(key)

    def replace(self, allocations: Iterable[Allocation]) -> None:
        """Rebuild from truth (live processes or the cluster), dropping everything else."""
        self.totals = Usage(allocations)

    def add(self, allocation: Allocation) -> None:
        """Record an allocation observed in the live system (no quota check)."""
        self.totals.put(allocation)
