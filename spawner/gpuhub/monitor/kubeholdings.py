"""The monitor's holdings on Kubernetes: gpuhub's pods from the process's live cluster
view (:mod:`gpuhub.kube.clusterview`, the watch the hub's ``GPUKubeSpawner`` and the jobs
service's Kubeflow backend read), each mapped to its allocation by the one shared mapping
(:func:`gpuhub.kube.labels.allocation_from_pod`) and keyed as on one machine
(``server:<user>/<name>``, ``job:<id>``: :func:`gpuhub.kube.ledger.reservation_key`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from traitlets import List, Unicode, default

from ..errors import GpuhubError
from ..kube.access import RBAC_FILE, default_namespace, load_client_configuration, missing_access
from ..kube.clusterview import ClusterView, cluster_view
from ..kube.labels import allocation_from_pod
from ..kube.ledger import reservation_key
from ..model import Allocation, GpuhubConfig
from .holdings import Holdings, HoldingsSource

READY_TIMEOUT = 60.0
"""Seconds the first LIST of gpuhub's pods may take at start."""


class ClusterUnreadable(GpuhubError):
    """The monitor's account may not watch gpuhub's pods, or the cluster does not answer."""


def merge(allocs: Iterable[Allocation]) -> Allocation:
    """One allocation from the pods of one server or job (a job's workers): their GPUs
    added up, the earliest start, every pod and node."""
    first, *rest = allocs
    out = first
    for a in rest:
        since = min((s for s in (out.since, a.since) if s is not None), default=None)
        out = replace(
            out,
            gpus=out.gpus + a.gpus,
            since=since,
            pods=(*out.pods, *a.pods),
            nodes=tuple(dict.fromkeys((*out.nodes, *a.nodes))),
        )
    return out


def holdings_from_pods(pods: Iterable[dict[str, Any]]) -> Holdings:
    """Pure: the running pods' allocations (``held``) and the Pending ones' (``queued``),
    one per server or job, in a stable order."""
    groups: dict[tuple[bool, str], list[Allocation]] = {}
    for pod in pods:
        alloc = allocation_from_pod(pod)
        if alloc is None or alloc.gpus <= 0:
            continue
        key = reservation_key(pod) or alloc.key
        groups.setdefault((alloc.pending, key), []).append(replace(alloc, key=key))
    merged = {k: merge(sorted(v, key=lambda a: a.pods)) for k, v in sorted(groups.items())}
    return Holdings(
        held=tuple(a for (pending, _), a in merged.items() if not pending),
        queued=tuple(a for (pending, _), a in merged.items() if pending),
    )


class KubeHoldings(HoldingsSource):
    """Servers and jobs from gpuhub's pods in :attr:`watch_namespaces` (the live cluster
    view; the account needs list/watch of pods there, which the hub's has)."""

    watch_namespaces = List(
        Unicode(),
        config=True,
        help="""Namespaces whose gpuhub pods (notebooks and job workers) the monitor
        follows: the hub's ``GPUKubeSpawner.watch_namespaces``.  Defaults to the pod's own
        namespace (``default`` outside a pod).

        .. versionadded:: 0.1
        """,
    )

    @default("watch_namespaces")
    def _default_watch_namespaces(self) -> list[str]:
        return [default_namespace()]

    kubeconfig = Unicode(
        "",
        config=True,
        help="""Kubeconfig file to use; empty: the in-cluster service account, else
        ``$KUBECONFIG`` / ``~/.kube/config``.

        .. versionadded:: 0.1
        """,
    )

    _api: Any = None
    _view: ClusterView | None = None

    async def start(self) -> None:
        """Check the account may list and watch pods in every watched namespace, then
        wait for the first LIST of each."""
        from kubernetes_asyncio import client

        self._api = api = client.ApiClient(await load_client_configuration(self.kubeconfig))
        missing = await missing_access(api, self.watch_namespaces, nodes=False)
        if missing:
            where = ", ".join(sorted({str(ns) for _, _, ns in missing}))
            raise ClusterUnreadable(
                f"gpuhub-monitor may not list and watch pods in namespace {where}; "
                f"{RBAC_FILE} grants that to the hub's ServiceAccount (run the monitor in "
                "the hub pod, or bind its RoleBinding gpuhub-hub-workloads there), or narrow "
                "KubeHoldings.watch_namespaces"
            )
        view = cluster_view(self.watch_namespaces, lambda: client.CoreV1Api(api), self.active.get)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await asyncio.gather(*(i.wait_ready() for i in view.pod_informers))
        except TimeoutError as e:
            problems = "; ".join(view.problems()) or "no answer"
            raise ClusterUnreadable(f"gpuhub's pods could not be listed: {problems}") from e
        self._view = view

    async def stop(self) -> None:
        if self._view is not None:
            await self._view.stop()
            self._view = None
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def read(self, config: GpuhubConfig) -> Holdings:
        """From the watch cache, in memory (on the event loop, where the watch writes)."""
        if self._view is None:
            raise ClusterUnreadable("KubeHoldings.start() first")
        return holdings_from_pods(self._view.pods())
