"""Simulated node fleets: GPU models, driver versions, and the Node manifests KWOK manages.

Everything here is pure (dicts in, dicts out), so a benchmark can ask for 1,000 GPU nodes
with ``Fleet([NodePool("a100", count=1000, gpu=A100_80GB, driver="580.65.06")])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
POOL_LABEL = "gpuhub.dev/pool"

# Highest CUDA version each driver branch supports (what GFD reports as cuda.runtime-version).
_CUDA_FOR_DRIVER = {
    535: (12, 2),
    550: (12, 4),
    560: (12, 6),
    570: (12, 8),
    575: (12, 9),
    580: (13, 0),
}


@dataclass(frozen=True)
class GPUModel:
    """What GPU Feature Discovery reports for one GPU model."""

    product: str
    memory_mib: int
    compute: tuple[int, int]
    family: str


A100_80GB = GPUModel("NVIDIA-A100-SXM4-80GB", 81920, (8, 0), "ampere")
H100_80GB = GPUModel("NVIDIA-H100-80GB-HBM3", 81559, (9, 0), "hopper")
L4 = GPUModel("NVIDIA-L4", 23034, (8, 9), "ada-lovelace")


@dataclass(frozen=True)
class NodePool:
    """``count`` identical nodes named ``<name>-<i>``; ``gpu=None`` makes CPU-only nodes."""

    name: str
    count: int = 1
    gpu: GPUModel | None = None
    gpus_per_node: int = 0
    driver: str | None = None
    cpu: str = "64"
    memory: str = "512Gi"
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)

    def node_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.count)]


@dataclass(frozen=True)
class Fleet:
    """A list of node pools; the KWOK-simulated part of a test cluster."""

    pools: tuple[NodePool, ...]

    def node_names(self) -> list[str]:
        return [name for pool in self.pools for name in pool.node_names()]

    def manifests(self) -> list[dict[str, Any]]:
        return [node_manifest(pool, name) for pool in self.pools for name in pool.node_names()]

    def pool_of(self, node_name: str) -> NodePool:
        return next(p for p in self.pools if node_name in p.node_names())


def default_fleet() -> Fleet:
    """2 A100 nodes x 8 (drivers 535 and 580), 1 H100 node x 4 (driver 570), 2 CPU nodes."""
    return Fleet(
        (
            NodePool("a100-d535", gpu=A100_80GB, gpus_per_node=8, driver="535.183.01"),
            NodePool("a100-d580", gpu=A100_80GB, gpus_per_node=8, driver="580.65.06"),
            NodePool("h100-d570", gpu=H100_80GB, gpus_per_node=4, driver="570.133.20"),
            NodePool("cpu", count=2, cpu="32", memory="128Gi"),
        )
    )


def gfd_labels(gpu: GPUModel, count: int, driver: str) -> dict[str, str]:
    """GPU Feature Discovery labels, including the deprecated ``cuda.driver.*`` ones."""
    major, minor, revision = (driver.split(".") + ["0", "0"])[:3]
    cuda_major, cuda_minor = _CUDA_FOR_DRIVER.get(int(major), (12, 0))
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": gpu.product,
        "nvidia.com/gpu.memory": str(gpu.memory_mib),
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.family": gpu.family,
        "nvidia.com/gpu.compute.major": str(gpu.compute[0]),
        "nvidia.com/gpu.compute.minor": str(gpu.compute[1]),
        "nvidia.com/cuda.driver-version.major": major,
        "nvidia.com/cuda.driver-version.minor": minor,
        "nvidia.com/cuda.driver-version.revision": revision,
        "nvidia.com/cuda.driver-version.full": driver,
        "nvidia.com/cuda.driver.major": major,
        "nvidia.com/cuda.driver.minor": minor,
        "nvidia.com/cuda.driver.rev": revision,
        "nvidia.com/cuda.runtime-version.major": str(cuda_major),
        "nvidia.com/cuda.runtime-version.minor": str(cuda_minor),
        "nvidia.com/cuda.runtime-version.full": f"{cuda_major}.{cuda_minor}",
    }


def node_labels(pool: NodePool, name: str) -> dict[str, str]:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        POOL_LABEL: pool.name,
    }
    if pool.gpu is not None:
        labels.update(gfd_labels(pool.gpu, pool.gpus_per_node, pool.driver or "580.65.06"))
    labels.update(pool.labels)
    return labels


def node_capacity(pool: NodePool) -> dict[str, str]:
    capacity = {
        "cpu": pool.cpu,
        "memory": pool.memory,
        "pods": str(pool.pods),
        "ephemeral-storage": "1Ti",
    }
    if pool.gpu is not None:
        capacity[GPU_RESOURCE] = str(pool.gpus_per_node)
    return capacity


def node_manifest(pool: NodePool, name: str) -> dict[str, Any]:
    """The Node object for one KWOK node of ``pool``."""
    capacity = node_capacity(pool)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels(pool, name),
            "annotations": {
                KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1],
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"taints": [dict(GPU_TAINT)] if pool.gpu is not None else []},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }
