"""The Kubernetes ledger backend: truth is the shared watch cache of gpuhub-marked pods
(notebooks and job workers, Pending ones included), applied event by event so a quota
decision never scans the pods.  Spawns in flight — reserved, pod not seen yet — are held
until their pod shows up (matched by the reservation's timestamp annotation)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..ledger import Ledger
from ..model import Allocation, GpuhubConfig, Kind, SpawnRequest
from .informer import object_key
from .labels import SINCE, allocation_from_pod


class KubeLedgerBackend:
    """``reserve``/``release``/``snapshot`` (synchronous) plus ``observe``/``resync`` fed
    by the pod informers."""

    def __init__(self, config: GpuhubConfig) -> None:
        self.config = config
        self.ledger = Ledger(config, devices=None)
        self._by_pod: dict[str, str] = {}  # "ns/name" -> allocation key
        self._pod_of: dict[str, str] = {}  # allocation key -> "ns/name"
        self._reserved: dict[str, Allocation] = {}  # in flight, pod not seen yet

    # -- fed by the watch ------------------------------------------------------------------
    def observe(self, event: str, pod: dict[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED) of a gpuhub-marked pod."""
        ref = object_key(pod)
        old = self._by_pod.pop(ref, None)
        if old is not None:
            self._pod_of.pop(old, None)
            self._forget(old)
        alloc = None if event == "DELETED" else allocation_from_pod(pod)
        if alloc is None:
            return
        reserved = self._reserved.get(alloc.key)
        stamp = (pod.get("metadata", {}).get("annotations") or {}).get(SINCE)
        if reserved is not None and reserved.since and stamp == reserved.since.isoformat():
            del self._reserved[alloc.key]  # the pod of this reservation: truth takes over
        self._by_pod[ref] = alloc.key
        self._pod_of[alloc.key] = ref
        self.ledger.add(alloc)

    def resync(self, pods: Iterable[dict[str, Any]], namespace: str | None = None) -> None:
        """Replace what is known of ``namespace`` (all when ``None``) after a (re)LIST."""
        for ref, key in list(self._by_pod.items()):
            if namespace is None or ref.startswith(namespace + "/"):
                del self._by_pod[ref]
                self._pod_of.pop(key, None)
                self._forget(key)
        for pod in pods:
            self.observe("ADDED", pod)

    def _forget(self, key: str) -> None:
        """A pod stopped holding ``key``: fall back to its reservation, if one is in flight."""
        if key in self._reserved:
            self.ledger.add(self._reserved[key])
        else:
            self.ledger.release(key)

    # -- used by the spawner ------------------------------------------------------------------
    def reserve(
        self, key: str, request: SpawnRequest, groups: Iterable[str], kind: Kind = "notebook"
    ) -> Allocation | None:
        alloc = self.ledger.reserve(key, request, groups, kind=kind)
        if alloc is None:
            self._reserved.pop(key, None)
        else:
            self._reserved[key] = alloc
        return alloc

    def release(self, key: str) -> None:
        """The spawner gave up on ``key`` (stop, failed start).  A pod that still exists
        (terminating) keeps counting until the watch reports it gone."""
        self._reserved.pop(key, None)
        if key not in self._pod_of:
            self.ledger.release(key)

    def snapshot(self) -> Ledger:
        return self.ledger
