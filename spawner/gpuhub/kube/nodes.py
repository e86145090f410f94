"""GPU capacity from Node objects (pure): which nodes carry which GPU type, how many GPUs
they offer, their driver, and how much is free given the gpuhub pods bound to them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..cuda import driver_supports
from ..model import GpuhubConfig
from .labels import GPUS, allocation_from_pod

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


def capacity(
    config: GpuhubConfig,
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    cuda: str | None = None,
    node_selector: Mapping[str, str] | None = None,
) -> dict[str, tuple[int, int]]:
    """``{gpu_type: (total, free)}`` over schedulable nodes (with a driver that runs
    ``cuda``, when given).  "Free" subtracts the gpuhub pods bound to each node; GPUs
    used by pods gpuhub did not create are not seen here (the ResourceQuota backstop and
    the scheduler still hold them)."""
    used: dict[str, int] = {}
    for pod in pods:
        a = allocation_from_pod(dict(pod))
        node = pod.get("spec", {}).get("nodeName")
        if a is not None and node and GPUS in (pod.get("metadata", {}).get("labels") or {}):
            used[node] = used.get(node, 0) + a.gpus
    by_label = {t.node_label: slug for slug, t in config.gpu_types.items()}
    out = {slug: (0, 0) for slug in config.gpu_types}
    for node in nodes:
        n = node_gpus(node)
        if n is None or not n.schedulable or n.product not in by_label:
            continue
        if not selected(node, node_selector):
            continue
        if cuda and (n.driver is None or not driver_supports(n.driver, cuda)):
            continue
        slug = by_label[n.product]
        total, free = out[slug]
        out[slug] = (total + n.allocatable, free + max(0, n.allocatable - used.get(n.name, 0)))
    return out


def drivers_by_type(
    config: GpuhubConfig,
    nodes: Iterable[Mapping[str, Any]],
    node_selector: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Driver versions seen per GPU type (for "no node can run this image" messages)."""
    by_label = {t.node_label: slug for slug, t in config.gpu_types.items()}
    out: dict[str, list[str]] = {}
    for node in nodes:
        n = node_gpus(node)
        if n and n.product in by_label and n.driver and selected(node, node_selector):
            out.setdefault(by_label[n.product], []).append(n.driver)
    return {k: sorted(set(v)) for k, v in out.items()}
