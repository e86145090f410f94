"""Pure builders of the notebook pod's gpuhub parts, as KubeSpawner trait values.

Tested by dict equality; the spawner applies them on top of the admin's own KubeSpawner
config (lists are extended, dicts merged) right before KubeSpawner builds the pod.
"""

from __future__ import annotations

from typing import Any

from ..cuda import node_driver_affinity
from ..model import Allocation, GpuhubConfig, SpawnRequest
from ..sizes import to_bytes
from .labels import allocation_marks, label_value

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def k8s_quantity(q: str) -> str:
    """A gpuhub size as an exact Kubernetes quantity (``8G`` → ``8Gi``)."""
    return q if q[-1] == "i" or q[-1].isdigit() else q + "i"


def placement_terms(config: GpuhubConfig, request: SpawnRequest) -> list[dict[str, Any]]:
    """Required node-selector terms: the GPU type, and a driver new enough for the
    image's CUDA (each driver term AND-ed with the product expression)."""
    if not request.gpus or request.gpu_type is None:
        return []
    product = {
        "key": PRODUCT_LABEL,
        "operator": "In",
        "values": [config.gpu_types[request.gpu_type].node_label],
    }
    if not request.image.cuda:
        return [{"matchExpressions": [product]}]
    return [
        {"matchExpressions": [product, *term["matchExpressions"]]}
        for term in node_driver_affinity(request.image.cuda)
    ]


def pod_overrides(
    config: GpuhubConfig, request: SpawnRequest, alloc: Allocation | None
) -> dict[str, Any]:
    """KubeSpawner trait values for this request (the gpuhub part of the pod)."""
    p = request.profile
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {"gpuhub.io/image": request.image.slug}
    if alloc is not None:
        labels, marks = allocation_marks(alloc, p.slug)
        annotations.update(marks)
    else:
        labels = {"gpuhub.io/profile": label_value(p.slug), "gpuhub.io/kind": "notebook"}
        annotations["gpuhub.io/profile"] = p.slug
    if p.kueue_queue:
        labels[KUEUE_QUEUE_LABEL] = p.kueue_queue
    env: dict[str, str] = {"GPUHUB_PROFILE": p.slug, "GPUHUB_IMAGE": request.image.slug}
    if request.gpus:
        env["GPUHUB_GPU_TYPE"] = request.gpu_type or ""
    else:
        # A CPU pod must not see the node's GPUs (device plugin envvar strategy).
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    return {
        "image": request.image.image,
        "cpu_limit": p.cpu,
        "cpu_guarantee": p.cpu,
        "mem_limit": to_bytes(p.memory),
        "mem_guarantee": to_bytes(p.memory),
        "extra_resource_limits": {GPU_RESOURCE: str(request.gpus)} if request.gpus else {},
        "tolerations": [GPU_TOLERATION] if request.gpus else [],
        "node_affinity_required": placement_terms(config, request),
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": k8s_quantity(p.shm)}}
        ],
        "volume_mounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "environment": env,
        "extra_labels": labels,
        "extra_annotations": annotations,
        "priority_class_name": p.priority_class or "",
    }
