"""The Kubernetes ledger backend: truth is the shared watch cache of gpuhub-marked pods
(notebooks and job workers, Pending ones included); spawns in flight — reserved but whose
pod the cache has not shown yet — are held in memory until it does."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..ledger import Ledger
from ..model import Allocation, GpuhubConfig, Kind, SpawnRequest
from .labels import allocation_from_pod

Pods = Callable[[], Iterable[Mapping[str, Any]]]


class KubeLedgerBackend:
    """``reserve``/``release``/``snapshot`` over a pod cache; all synchronous."""

    def __init__(self, config: GpuhubConfig, pods: Pods) -> None:
        self.config = config
        self._pods = pods
        self._in_flight: dict[str, Allocation] = {}

    def _ledger(self) -> Ledger:
        ledger = Ledger(self.config, devices=None)
        live = {}
        for pod in self._pods():
            a = allocation_from_pod(dict(pod))
            if a is not None:
                live[a.key] = a
        # a reservation is superseded by its pod once the cache shows it
        for key in [k for k in self._in_flight if k in live]:
            del self._in_flight[key]
        ledger.replace([*live.values(), *self._in_flight.values()])
        return ledger

    def reserve(
        self, key: str, request: SpawnRequest, groups: Iterable[str], kind: Kind = "notebook"
    ) -> Allocation | None:
        ledger = self._ledger()
        alloc = ledger.reserve(key, request, groups, kind=kind)
        if alloc is None:
            self._in_flight.pop(key, None)
        else:
            self._in_flight[key] = alloc
        return alloc

    def release(self, key: str) -> None:
        self._in_flight.pop(key, None)

    def snapshot(self) -> Ledger:
        return self._ledger()
