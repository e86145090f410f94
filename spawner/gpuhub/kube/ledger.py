"""The Kubernetes ledger backend: truth is the shared watch cache of gpuhub-marked pods
(notebooks and job workers, Pending and terminating ones included), applied event by event
so a quota decision never scans the pods.

Every pod counts under its own key (``pod:<namespace>/<name>``), so an old pod that is still
terminating and the new spawn of the same server are both counted.  A spawn in flight —
reserved under its server key, pod not seen yet — is held until its pod shows up, matched
by the reservation's timestamp annotation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..ledger import Ledger
from ..model import Allocation, GpuhubConfig, Kind, SpawnRequest
from .informer import object_key
from .labels import SINCE, allocation_from_pod

POD_PREFIX = "pod:"


class KubeLedgerBackend:
    """``reserve``/``release``/``snapshot`` (synchronous) plus ``observe``/``resync`` fed
    by the pod informers."""

    def __init__(self, config: GpuhubConfig) -> None:
        self.config = config
        self.ledger = Ledger(config, devices=None)
        self._reserved: dict[str, Allocation] = {}  # in flight, pod not seen yet

    # -- fed by the watch ------------------------------------------------------------------
    def observe(self, event: str, pod: dict[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED) of a gpuhub-marked pod."""
        pod_key = POD_PREFIX + object_key(pod)
        self.ledger.release(pod_key)
        alloc = None if event == "DELETED" else allocation_from_pod(pod)
        if alloc is None:
            return
        reserved = self._reserved.get(alloc.key)
        stamp = (pod.get("metadata", {}).get("annotations") or {}).get(SINCE)
        if reserved is not None and reserved.since and stamp == reserved.since.isoformat():
            # the pod of this reservation: truth takes over
            del self._reserved[alloc.key]
            self.ledger.release(alloc.key)
        self.ledger.add(replace(alloc, key=pod_key))

    def resync(self, pods: Iterable[dict[str, Any]], namespace: str | None = None) -> None:
        """Replace what is known of ``namespace`` (all when ``None``) after a (re)LIST."""
        prefix = POD_PREFIX + (f"{namespace}/" if namespace else "")
        for a in self.ledger.usage():
            if a.key.startswith(prefix):
                self.ledger.release(a.key)
        for pod in pods:
            self.observe("ADDED", pod)

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
        """The spawner gave up on ``key`` (stop, failed start).  Its pod, if it exists
        (terminating), keeps counting until the watch reports it gone."""
        self._reserved.pop(key, None)
        self.ledger.release(key)

    def snapshot(self) -> Ledger:
        return self.ledger
