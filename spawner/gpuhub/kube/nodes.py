"""GPU capacity from Node objects: which nodes carry which GPU type, how many GPUs they
offer, their driver, and how much is free given the gpuhub pods bound to them (kept as
running totals fed by the watches)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..cuda import driver_supports
from ..model import GpuhubConfig
from .informer import object_key
from .labels import allocation_from_pod

PRODUCT = "nvidia.com/gpu.product"
DRIVER_LABELS = (
    (
        "nvidia.com/cuda.driver-version.major",
        "nvidia.com/cuda.driver-version.minor",
        "nvidia.com/cuda.driver-version.revision",
    ),
    ("nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor", "nvidia.com/cuda.driver.rev"),
)


@dataclass(frozen=True)
class NodeGpus:
    name: str
    product: str
    allocatable: int
    driver: str | None
    schedulable: bool


def driver_of(labels: Mapping[str, str]) -> str | None:
    """``"580.65.06"`` from the current GFD labels, else the deprecated ones."""
    for major, minor, rev in DRIVER_LABELS:
        if major in labels:
            parts = [labels[major], labels.get(minor, "0"), labels.get(rev, "0")]
            return ".".join(str(int(p)) if p.isdigit() else p for p in parts)
    return None


def node_gpus(node: Mapping[str, Any]) -> NodeGpus | None:
    meta, spec, status = node.get("metadata", {}), node.get("spec", {}), node.get("status", {})
    labels = meta.get("labels") or {}
    alloc = (status.get("allocatable") or {}).get("nvidia.com/gpu")
    if PRODUCT not in labels or alloc is None:
        return None
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )
    return NodeGpus(
        name=meta.get("name", ""),
        product=labels[PRODUCT],
        allocatable=int(alloc),
        driver=driver_of(labels),
        schedulable=ready and not spec.get("unschedulable", False),
    )


def selected(node: Mapping[str, Any], node_selector: Mapping[str, str] | None) -> bool:
    """Whether the spawner's ``node_selector`` lets a pod land on ``node``."""
    labels = node.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in (node_selector or {}).items())


class CapacityTotals:
    """GPU capacity as running totals: ``(total, free)`` per GPU type, fed by node and
    pod watch events, so reading it is O(types × drivers), never a scan of the cluster.

    Counts schedulable nodes that ``node_selector`` selects; "free" subtracts the gpuhub
    pods bound to each node.  GPUs used by pods gpuhub did not create are not seen here
    (the ResourceQuota backstop and the scheduler still hold them).
    """

    def __init__(self, node_selector: Mapping[str, str] | None = None) -> None:
        self.node_selector = dict(node_selector or {})
        self._nodes: dict[str, NodeGpus] = {}  # selected GPU nodes by name
        self._used: dict[str, int] = {}  # node name -> GPUs held by gpuhub pods bound to it
        self._pods: dict[str, tuple[str, int]] = {}  # pod key -> (node name, GPUs)
        # (product, driver) -> [total, free, nodes]; total/free over schedulable nodes,
        # nodes counts every selected node (the drivers a wait message names)
        self._buckets: dict[tuple[str, str | None], list[int]] = {}

    # -- fed by the watches ------------------------------------------------------------
    def observe_node(self, event: str, node: Mapping[str, Any]) -> None:
        name = node.get("metadata", {}).get("name", "")
        self._count(name, -1)
        n = None if event == "DELETED" else node_gpus(node)
        if n is not None and selected(node, self.node_selector):
            self._nodes[name] = n
        else:
            self._nodes.pop(name, None)
        self._count(name, +1)

    def observe_pod(self, event: str, pod: Mapping[str, Any]) -> None:
        key = object_key(dict(pod))
        old = self._pods.pop(key, None)
        new = None if event == "DELETED" else _bound_gpus(pod)
        if old == new:
            if new is not None:
                self._pods[key] = new
            return
        for change, sign in ((old, -1), (new, +1)):
            if change is not None:
                node, gpus = change
                self._count(node, -1)
                self._used[node] = self._used.get(node, 0) + sign * gpus
                if not self._used[node]:
                    del self._used[node]
                self._count(node, +1)
        if new is not None:
            self._pods[key] = new

    def resync_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        """Replace every node after a (re)LIST."""
        for name in list(self._nodes):
            self._count(name, -1)
        self._nodes.clear()
        for node in nodes:
            self.observe_node("ADDED", node)

    def resync_pods(self, pods: Iterable[Mapping[str, Any]], namespace: str | None = None) -> None:
        """Replace the pods of ``namespace`` (all when ``None``) after a (re)LIST."""
        prefix = f"{namespace}/" if namespace else ""
        for key in [k for k in self._pods if k.startswith(prefix)]:
            self.observe_pod("DELETED", {"metadata": _meta_of(key)})
        for pod in pods:
            self.observe_pod("ADDED", pod)

    def _count(self, name: str, sign: int) -> None:
        n = self._nodes.get(name)
        if n is None:
            return
        bucket = self._buckets.setdefault((n.product, n.driver), [0, 0, 0])
        bucket[2] += sign
        if n.schedulable:
            bucket[0] += sign * n.allocatable
            bucket[1] += sign * max(0, n.allocatable - self._used.get(name, 0))
        if bucket == [0, 0, 0]:
            del self._buckets[(n.product, n.driver)]

    # -- read by the form and the wait message --------------------------------------------
    def totals(self, config: GpuhubConfig, cuda: str | None = None) -> dict[str, tuple[int, int]]:
        """``{gpu_type: (total, free)}``, on nodes with a driver that runs ``cuda`` when
        given."""
        by_label = {t.node_label: slug for slug, t in config.gpu_types.items()}
        out = {slug: (0, 0) for slug in config.gpu_types}
        for (product, driver), (total, free, _) in self._buckets.items():
            slug = by_label.get(product)
            if slug is None:
                continue
            if cuda and (driver is None or not driver_supports(driver, cuda)):
                continue
            t, f = out[slug]
            out[slug] = (t + total, f + free)
        return out

    def drivers(self, config: GpuhubConfig) -> dict[str, list[str]]:
        """Driver versions seen per GPU type (for "no node can run this image")."""
        by_label = {t.node_label: slug for slug, t in config.gpu_types.items()}
        out: dict[str, set[str]] = {}
        for product, driver in self._buckets:
            if product in by_label and driver:
                out.setdefault(by_label[product], set()).add(driver)
        return {k: sorted(v) for k, v in out.items()}


def _bound_gpus(pod: Mapping[str, Any]) -> tuple[str, int] | None:
    """``(node, GPUs)`` of a gpuhub pod bound to a node that holds GPUs, else ``None``."""
    node = pod.get("spec", {}).get("nodeName")
    a = allocation_from_pod(dict(pod))
    if a is None or not node or not a.gpus:
        return None
    return str(node), a.gpus


def _meta_of(key: str) -> dict[str, str]:
    ns, _, name = key.rpartition("/")
    return {"namespace": ns, "name": name} if ns else {"name": name}
