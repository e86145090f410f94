"""The Kubernetes ledger backend: truth is the shared watch cache of gpuhub-marked pods
(notebooks and job workers, Pending and terminating ones included), applied event by event
so a quota decision never scans the pods.

Every pod counts under its own key (``pod:<namespace>/<name>``), so an old pod that is still
terminating and the new spawn of the same server are both counted.  A reservation in flight
is held until its pods show up: a notebook's (``server:…``) until its pod, matched by the
reservation's timestamp annotation; a job's (``job:<id>``, workers × GPUs) shrinks with each
worker pod seen (matched by the ``gpuhub.io/job-id`` label) until all of them are.

The policy is read from the current config at every decision (the YAML is followed by
:mod:`gpuhub.activeconfig`), so a config edit keeps the ledger and its reservations."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ..ledger import Ledger
from ..model import Allocation, GpuhubConfig, Kind, SpawnRequest
from .informer import object_key
from .labels import JOB_ID, KEY, SINCE, allocation_from_pod

POD_PREFIX = "pod:"
JOB_PREFIX = "job:"


def reservation_key(pod: dict[str, Any]) -> str | None:
    """The key of the reservation a pod fulfils: its ``gpuhub.io/key`` annotation, else
    ``job:<id>`` for a job worker."""
    meta = pod.get("metadata", {})
    key = (meta.get("annotations") or {}).get(KEY)
    if key:
        return str(key)
    job = (meta.get("labels") or {}).get(JOB_ID)
    return JOB_PREFIX + job if job else None


class KubeLedgerBackend:
    """``reserve``/``release``/``snapshot`` (synchronous) plus ``observe``/``resync`` fed
    by the pod informers.  ``config`` returns the current gpuhub config."""

    def __init__(self, config: Callable[[], GpuhubConfig]) -> None:
        self.config = config
        self.ledger = Ledger(config(), devices=None)
        self._reserved: dict[str, Allocation] = {}  # in flight, pods not all seen yet
        self._seen: dict[str, set[str]] = {}  # job reservation -> worker pods seen

    def _current(self) -> Ledger:
        self.ledger.config = self.config()
        return self.ledger

    # -- fed by the watch ------------------------------------------------------------------
    def observe(self, event: str, pod: dict[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED) of a gpuhub-marked pod."""
        pod_key = POD_PREFIX + object_key(pod)
        self.ledger.release(pod_key)
        alloc = None if event == "DELETED" else allocation_from_pod(pod)
        if alloc is None:
            return
        self._fulfil(reservation_key(pod), pod_key, pod, alloc)
        self.ledger.add(replace(alloc, key=pod_key))

    def _fulfil(
        self, key: str | None, pod_key: str, pod: dict[str, Any], alloc: Allocation
    ) -> None:
        """Hand over from the reservation ``key`` to the pod that truth now shows."""
        reserved = self._reserved.get(key) if key else None
        if key is None or reserved is None:
            return
        if key.startswith(JOB_PREFIX):
            seen = self._seen.setdefault(key, set())
            if pod_key in seen:
                return
            seen.add(pod_key)
            left = reserved.gpus - alloc.gpus
            if left > 0:
                self._reserved[key] = replace(reserved, gpus=left)
                self.ledger.add(self._reserved[key])
                return
        else:
            stamp = (pod.get("metadata", {}).get("annotations") or {}).get(SINCE)
            if not reserved.since or stamp != reserved.since.isoformat():
                return
        self.release(key)

    def resync(self, pods: Iterable[dict[str, Any]], namespace: str | None = None) -> None:
        """Replace what is known of ``namespace`` (all when ``None``) after a (re)LIST."""
        prefix = POD_PREFIX + (f"{namespace}/" if namespace else "")
        for a in self.ledger.usage():
            if a.key.startswith(prefix):
                self.ledger.release(a.key)
        for pod in pods:
            self.observe("ADDED", pod)

    # -- used by the spawner and the jobs service -----------------------------------------
    def reserve(
        self, key: str, request: SpawnRequest, groups: Iterable[str], kind: Kind = "notebook"
    ) -> Allocation | None:
        """Decide and hold ``request`` under ``key`` in one synchronous step."""
        alloc = self._current().reserve(key, request, groups, kind=kind)
        if alloc is None:
            self._reserved.pop(key, None)
        else:
            self._reserved[key] = alloc
        self._seen.pop(key, None)
        return alloc

    def release(self, key: str) -> None:
        """The reservation ``key`` ends (stop, failed start, job created suspended or
        ended).  Pods already seen keep counting until the watch reports them gone."""
        self._reserved.pop(key, None)
        self._seen.pop(key, None)
        self.ledger.release(key)

    def snapshot(self) -> Ledger:
        """The live ledger (not a copy), with the current config."""
        return self._current()
