"""One live view of the cluster per process and watch scope, shared by the hub's
``GPUKubeSpawner`` and the jobs service's ``KubeflowJobBackend``.

A view holds the watch caches (gpuhub-marked pods in each watched namespace, and nodes),
the quota ledger fed by the pod events (:class:`~gpuhub.kube.ledger.KubeLedgerBackend`)
and GPU capacity as running totals fed by node and pod events
(:class:`~gpuhub.kube.nodes.CapacityTotals`), one per node selector.  Built once, it
follows config edits (the ledger reads the current config) instead of being rebuilt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from ..model import GpuhubConfig
from .informer import Informer, slim_node, slim_pod
from .labels import GPU_POD_SELECTOR
from .ledger import KubeLedgerBackend
from .nodes import CapacityTotals


def _resync(
    resync: Callable[[Iterable[dict[str, Any]], str | None], None],
    namespace: str | None,
    objects: Iterable[dict[str, Any]],
) -> None:
    """A relist listener: ``resync(objects, namespace)``."""
    resync(objects, namespace)


class ClusterView:
    """Pod and node watches over ``namespaces`` (empty: every namespace) through the
    ``kubernetes_asyncio`` ``core`` API (a ``CoreV1Api``)."""

    def __init__(
        self, core: Any, namespaces: Sequence[str], config: Callable[[], GpuhubConfig]
    ) -> None:
        self.namespaces = tuple(namespaces)
        self.loop = asyncio.get_running_loop()
        if self.namespaces:
            self.pod_informers = [
                Informer(
                    core.list_namespaced_pod,
                    f"pods in {ns}",
                    slim_pod,
                    namespace=ns,
                    label_selector=GPU_POD_SELECTOR,
                )
                for ns in self.namespaces
            ]
        else:
            self.pod_informers = [
                Informer(
                    core.list_pod_for_all_namespaces,
                    "pods",
                    slim_pod,
                    label_selector=GPU_POD_SELECTOR,
                )
            ]
        self.node_informer = Informer(core.list_node, "nodes", slim_node)
        self.ledger = KubeLedgerBackend(config)
        self._capacity: dict[tuple[tuple[str, str], ...], CapacityTotals] = {}
        for inf, ns in self._scoped():
            inf.listeners.append(self.ledger.observe)
            inf.relist_listeners.append(partial(_resync, self.ledger.resync, ns))

    def _scoped(self) -> list[tuple[Informer, str | None]]:
        return list(zip(self.pod_informers, self.namespaces or [None], strict=True))

    @property
    def informers(self) -> list[Informer]:
        return [*self.pod_informers, self.node_informer]

    def pods(self) -> Iterable[dict[str, Any]]:
        """Every cached gpuhub pod (O(pods): for messages, not for each render)."""
        return (p for inf in self.pod_informers for p in inf.objects.values())

    def capacity(self, node_selector: Mapping[str, str] | None = None) -> CapacityTotals:
        """The running capacity totals for pods placed with ``node_selector``."""
        key = tuple(sorted((node_selector or {}).items()))
        totals = self._capacity.get(key)
        if totals is None:
            totals = self._capacity[key] = CapacityTotals(node_selector)
            self.node_informer.listeners.append(totals.observe_node)
            self.node_informer.relist_listeners.append(totals.resync_nodes)
            totals.resync_nodes(self.node_informer.objects.values())
            for inf, ns in self._scoped():
                inf.listeners.append(totals.observe_pod)
                inf.relist_listeners.append(partial(_resync, totals.resync_pods, ns))
                totals.resync_pods(inf.objects.values(), ns)
        return totals

    def start(self) -> None:
        for inf in self.informers:
            inf.start()

    async def wait_ready(self) -> None:
        """Start the watches and wait for their first LIST (callers bound it with
        ``asyncio.timeout``)."""
        await asyncio.gather(*(i.wait_ready() for i in self.informers))

    def problems(self) -> list[str]:
        """The last error of each watch that has one (e.g. a 403 naming the RBAC file)."""
        return sorted({i.last_error for i in self.informers if i.last_error})

    async def stop(self) -> None:
        await asyncio.gather(*(i.stop() for i in self.informers))
        if _views.get(self.namespaces) is self:
            del _views[self.namespaces]


_views: dict[tuple[str, ...], ClusterView] = {}


def cluster_view(
    namespaces: Sequence[str], core: Callable[[], Any], config: Callable[[], GpuhubConfig]
) -> ClusterView:
    """The process's view of ``namespaces``, created (with ``core()`` as its API and
    ``config`` as the policy's source) on first use in the running event loop."""
    key = tuple(namespaces)
    view = _views.get(key)
    if view is None or view.loop is not asyncio.get_running_loop():
        view = _views[key] = ClusterView(core(), key, config)
    return view
