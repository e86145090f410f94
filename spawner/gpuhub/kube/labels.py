"""The labels and annotations that mark a pod as holding GPUs for gpuhub, and the pure
inverse: the :class:`~gpuhub.model.Allocation` a pod represents.

Notebook pods and training-job worker pods carry the same marks, so the live quota counts
both.  Label values must be valid for any user or group name, so they hold a safe slug;
the exact names live in annotations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubespawner.slugs import is_valid_label, safe_slug

from ..model import Allocation

PREFIX = "gpuhub.io/"
USER = PREFIX + "user"
GROUP = PREFIX + "group"
GPUS = PREFIX + "gpus"
GPU_TYPE = PREFIX + "gpu-type"
KIND = PREFIX + "kind"
PROFILE = PREFIX + "profile"
KEY = PREFIX + "key"
JOB_ID = PREFIX + "job-id"
SINCE = PREFIX + "reserved-at"

#: Label selector of every pod that holds gpuhub GPUs (the watch cache's filter).
GPU_POD_SELECTOR = GPUS

TERMINAL_PHASES = ("Succeeded", "Failed")


def label_value(name: str) -> str:
    """A valid label value for any name: the name itself when valid, else a safe slug
    with a hash (``Alice@Corp`` → ``alice-corp---6a1f3c2d``)."""
    return name if is_valid_label(name) else safe_slug(name, is_valid=is_valid_label, max_length=63)


def allocation_marks(
    alloc: Allocation, profile: str | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """``(labels, annotations)`` for a pod holding ``alloc``."""
    labels = {
        USER: label_value(alloc.user),
        GROUP: label_value(alloc.group),
        GPUS: str(alloc.gpus),
        GPU_TYPE: alloc.gpu_type,
        KIND: alloc.kind,
    }
    annotations = {USER: alloc.user, GROUP: alloc.group, KEY: alloc.key}
    if alloc.since is not None:
        annotations[SINCE] = alloc.since.isoformat()
    if profile:
        labels[PROFILE] = label_value(profile)
        annotations[PROFILE] = profile
    return labels, annotations


def is_terminated(pod: dict[str, Any]) -> bool:
    """A pod whose containers are done no longer holds its GPUs."""
    return pod.get("status", {}).get("phase") in TERMINAL_PHASES


def allocation_from_pod(pod: dict[str, Any]) -> Allocation | None:
    """The allocation a gpuhub-marked pod holds, or ``None`` (unmarked or terminated).
    Pending and terminating pods still count: they hold (or will hold) their GPUs.  Its
    ``pods`` is the pod itself, its ``nodes`` the pod's node once scheduled."""
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    if GPUS not in labels or is_terminated(pod):
        return None
    try:
        gpus = int(labels[GPUS])
    except ValueError:
        return None
    created = meta.get("creationTimestamp")
    since = datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None
    kind = labels.get(KIND, "notebook")
    pod_name = f"{meta.get('namespace')}/{meta.get('name')}"
    node = (pod.get("spec") or {}).get("nodeName")
    return Allocation(
        key=ann.get(KEY) or f"pod:{pod_name}",
        user=ann.get(USER) or labels.get(USER, "?"),
        group=ann.get(GROUP) or labels.get(GROUP, "?"),
        gpu_type=labels.get(GPU_TYPE, "?"),
        gpus=gpus,
        kind="job" if kind == "job" else "notebook",
        since=since,
        pending=pod.get("status", {}).get("phase", "Pending") == "Pending",
        pods=(pod_name,),
        nodes=(node,) if node else (),
    )
