"""Which GPUs are held, by whom: the :class:`HoldingsSource` the monitor asks at every
sample (``MonitorApp.holdings_class`` names the class, as ``JobsApp.backend_class`` names
the jobs backend), and the one-machine :class:`LocalHoldings` over the machine-wide ledger.
The Kubernetes one is :class:`gpuhub.monitor.kubeholdings.KubeHoldings`."""

from __future__ import annotations

import asyncio
from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets import Instance
from traitlets.config import LoggingConfigurable
from traitlets.traitlets import MetaHasTraits

from ..activeconfig import ActiveConfig
from ..ledger import Device
from ..model import Allocation, GpuhubConfig


@dataclass(frozen=True)
class Holdings:
    """GPU allocations at one moment: ``held`` hold GPUs now (one per server or job),
    ``queued`` wait for theirs (Kubernetes: Pending pods); ``devices`` are the local
    devices by index (empty on Kubernetes)."""

    held: tuple[Allocation, ...]
    queued: tuple[Allocation, ...] = ()
    devices: Mapping[int, Device] = field(default_factory=dict)


class _Meta(MetaHasTraits, ABCMeta):
    """Traitlets' metaclass combined with ``ABCMeta`` (abstract methods enforced)."""


class HoldingsSource(LoggingConfigurable, metaclass=_Meta):
    """Reads the current GPU allocations.  Constructed once by ``gpuhub-monitor`` (before
    its event loop) with ``active`` and ``data_dir``; traitlets config reaches it through
    ``parent``."""

    active = Instance(ActiveConfig, help="The gpuhub configuration, re-read when it changes.")
    data_dir = Instance(Path, help="The monitor's data directory.")

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Called once in the event loop before the first sample; raises
        :class:`~gpuhub.errors.GpuhubError` (naming the fix) when the holdings cannot be
        read, and the monitor does not start."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Called when the monitor stops."""

    @abstractmethod
    async def read(self, config: GpuhubConfig) -> Holdings:
        """The allocations now (never blocks the event loop)."""


class LocalHoldings(HoldingsSource):
    """One machine: servers and jobs from the machine-wide ledger (``state/units.json``),
    devices from the NVML (or declared) inventory."""

    def __init__(self, **kwargs: Any) -> None:
        from ..spawners.local import local_store

        super().__init__(**kwargs)
        self.store = local_store(str(self.data_dir))  # opens the ledger: blocking

    def _read(self, config: GpuhubConfig) -> Holdings:
        from ..spawners.local import inventory

        units = self.store.units()
        held = tuple(u.alloc for u in units.values() if u.alloc is not None and u.alloc.gpus > 0)
        return Holdings(held, devices={d.index: d for d in inventory(config).devices})

    async def read(self, config: GpuhubConfig) -> Holdings:
        return await asyncio.to_thread(self._read, config)
