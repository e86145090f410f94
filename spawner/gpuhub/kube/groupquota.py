"""Per-group GPU quotas enforced by the Kubernetes apiserver itself (pure manifests).

The hub decides quickly from its watch cache and explains denials, but the hub and the jobs
service are separate processes: a notebook and a job submitted in the same instant could both
pass their own check.  With these objects the apiserver's ResourceQuota admission — atomic
across every client — has the last word: each group gets a PriorityClass that all of its
GPU pods (notebooks and job workers) carry, and a ResourceQuota scoped to that class that
caps ``requests.nvidia.com/gpu`` at the group's quota, in every namespace gpuhub uses.

The classes all have value 0 and never preempt, so scheduling order is unchanged.  Per-type
limits (``per_type``) stay with the hub's check: a quota scope cannot select a GPU type.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubespawner.slugs import is_valid_object_name, safe_slug

from ..model import GpuhubConfig

GPU_REQUESTS = "requests.nvidia.com/gpu"


def priority_class(group: str) -> str:
    """``gpuhub-group-<slug>``: a valid object name for any group name."""
    return "gpuhub-group-" + str(safe_slug(group, is_valid=is_valid_object_name, max_length=48))


def group_quota_manifests(config: GpuhubConfig, namespaces: Iterable[str]) -> list[dict[str, Any]]:
    """One PriorityClass per quota group, and one scoped ResourceQuota per group and
    namespace, capping the group's GPU requests at its quota."""
    objects: list[dict[str, Any]] = []
    for q in config.quotas.groups:
        name = priority_class(q.group)
        objects.append(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {
                    "name": name,
                    "labels": {"app.kubernetes.io/part-of": "gpuhub"},
                    "annotations": {"gpuhub.io/group": q.group},
                },
                "value": 0,
                "globalDefault": False,
                "preemptionPolicy": "Never",
                "description": f"GPU pods charged to group {q.group} (gpuhub quota scope)",
            }
        )
        for ns in namespaces:
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "ResourceQuota",
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "labels": {"app.kubernetes.io/part-of": "gpuhub"},
                        "annotations": {"gpuhub.io/group": q.group},
                    },
                    "spec": {
                        "hard": {GPU_REQUESTS: str(q.gpus)},
                        "scopeSelector": {
                            "matchExpressions": [
                                {"scopeName": "PriorityClass", "operator": "In", "values": [name]}
                            ]
                        },
                    },
                }
            )
    return objects


def is_quota_rejection(status: int, body: str) -> bool:
    """Whether an apiserver answer is a ResourceQuota admission refusal."""
    return status == 403 and "exceeded quota" in body
