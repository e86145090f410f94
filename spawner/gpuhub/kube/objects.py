"""The one pod builder: everything gpuhub puts into a notebook pod or a job worker pod.

:func:`pod_parts` decides it all (placement, GPU limits and toleration, ``/dev/shm``,
env, gpuhub labels and annotations, the profile's cpu and memory, priority class, Kueue
queue, home claim) as a neutral :class:`PodParts`.  Two thin translations apply it:
:func:`notebook_traits` as KubeSpawner trait values (the spawner puts them on top of the
admin's KubeSpawner config: lists extended, dicts merged) and :func:`merge_into_template`
into the admin's PodTemplateSpec of a job.  Pure; tested by dict equality.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubespawner.slugs import escape_slug, multi_slug, safe_slug

from ..cuda import node_driver_affinity
from ..model import Allocation, GpuhubConfig, Profile, SpawnRequest
from ..sizes import to_bytes
from .groupquota import priority_class
from .labels import allocation_marks, label_value

if TYPE_CHECKING:
    from ..jobs.policy import JobSpec

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
LABEL = "gpuhub.io"

GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

#: KubeSpawner's length limit of each slug in its name templates (``_slug_max_length``)
SLUG_MAX_LENGTH = 48

Obj = dict[str, Any]


# --- quantities and names -------------------------------------------------------------


def byte_quantity(n: int) -> str:
    """Bytes as an exact Kubernetes quantity (``8589934592`` → ``8Gi``)."""
    for suffix, power in (("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)):
        if n and n % 1024**power == 0:
            return f"{n // 1024**power}{suffix}"
    return str(n)


def k8s_quantity(size: str) -> str:
    """A gpuhub size (binary, :mod:`gpuhub.sizes`) as an exact Kubernetes quantity
    (``8G`` → ``8Gi``, ``1.5G`` → ``1536Mi``)."""
    return byte_quantity(to_bytes(size))


def cpu_quantity(cpu: float) -> str:
    """CPUs as a Kubernetes quantity a CRD's int-or-string schema accepts (``0.5`` → ``500m``)."""
    return str(int(cpu)) if cpu == int(cpu) else f"{round(cpu * 1000)}m"


def expand_user_template(template: str, user: str, server: str = "", scheme: str = "safe") -> str:
    """``template`` expanded as KubeSpawner's ``_expand_user_properties`` expands it for
    ``user``'s server ``server`` (``""``: the default server), with kubespawner's own slug
    functions, so a ``pvc_name_template`` names the very claim KubeSpawner gives that
    server.  Fields that need the hub (``userid``, ``pod_name``…) are refused (KeyError)."""
    safe_user = safe_slug(user, max_length=SLUG_MAX_LENGTH)
    safe_server = safe_slug(server, max_length=SLUG_MAX_LENGTH) if server else ""
    if len(safe_user) + len(safe_server) + 2 > SLUG_MAX_LENGTH:
        safe_user_server = multi_slug([user, server], max_length=SLUG_MAX_LENGTH)
    elif server:
        safe_user_server = f"{safe_user}--{safe_server}"
    else:
        safe_user_server = safe_user
    escaped_user, escaped_server = escape_slug(user), escape_slug(server)
    escaped_user_server = f"{escaped_user}--{escaped_server}"
    if scheme == "safe":
        chosen = (safe_user, safe_server, safe_user_server)
    elif scheme == "escape":
        chosen = (escaped_user, escaped_server, escaped_user_server if server else escaped_user)
    else:
        raise ValueError(f"slug scheme must be 'safe' or 'escape', not {scheme!r}")
    rendered = template.format(
        unescaped_username=user,
        unescaped_servername=server,
        username=chosen[0],
        servername=chosen[1],
        user_server=chosen[2],
        safe_username=safe_user,
        safe_servername=safe_server,
        safe_user_server=safe_user_server,
        escaped_username=escaped_user,
        escaped_servername=escaped_server,
        escaped_user_server=escaped_user_server,
    )
    # as KubeSpawner: an empty server name must not leave a trailing delimiter
    return rendered if template.endswith("-") else rendered.rstrip("-")


# --- what goes into a pod -------------------------------------------------------------


@dataclass(frozen=True)
class HomeVolume:
    """A home claim to mount (job workers; KubeSpawner mounts a notebook's own)."""

    claim: str
    mount_path: str


@dataclass(frozen=True)
class PodRequest:
    """One pod to build: a notebook server (``alloc``: its reservation, if it holds
    GPUs) or one worker of ``job``.  ``request.gpus`` is this pod's GPUs."""

    request: SpawnRequest
    group: str | None = None
    alloc: Allocation | None = None
    job: JobSpec | None = None
    home: HomeVolume | None = None
    group_quota_classes: bool = False
    default_queue: str | None = None


@dataclass(frozen=True)
class PodParts:
    """Everything gpuhub decides about one pod, before it is applied."""

    image: str
    cpu: float
    memory: int
    gpu_limits: dict[str, str]
    tolerations: list[Obj]
    node_selector_terms: list[Obj]
    volumes: list[Obj]
    volume_mounts: list[Obj]
    env: dict[str, str]
    labels: dict[str, str]
    annotations: dict[str, str]
    priority_class: str | None


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


def kueue_queue(profile: Profile, default: str | None = None) -> str | None:
    """The Kueue LocalQueue of a pod or job: the profile's, else ``default``."""
    return profile.kueue_queue or default


def job_marks(spec: JobSpec, group: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """``(labels, annotations)`` of a job, its script and each of its worker pods (the
    live quota's input: ``gpus`` per worker, ``workers`` in an annotation)."""
    labels = {
        f"{LABEL}/kind": "job",
        f"{LABEL}/job-id": spec.id,
        f"{LABEL}/user": label_value(spec.user),
        f"{LABEL}/gpus": str(spec.gpus_per_worker),
    }
    if spec.gpus_per_worker and spec.gpu_type:
        labels[f"{LABEL}/gpu-type"] = spec.gpu_type
    if group:
        labels[f"{LABEL}/group"] = label_value(group)
    notes = {
        f"{LABEL}/user": spec.user,
        f"{LABEL}/notebook-path": spec.path,
        f"{LABEL}/image": spec.image.slug,
        f"{LABEL}/workers": str(spec.workers),
    }
    if group:
        notes[f"{LABEL}/group"] = group
    return labels, notes


def pod_marks(pod: PodRequest) -> tuple[dict[str, str], dict[str, str]]:
    """The gpuhub labels and annotations of a pod, notebook or job worker."""
    p = pod.request.profile
    if pod.job is not None:
        labels, notes = job_marks(pod.job, pod.group)
    elif pod.alloc is not None:
        labels, notes = allocation_marks(pod.alloc, p.slug)
        notes = {f"{LABEL}/image": pod.request.image.slug, **notes}
    else:
        labels = {f"{LABEL}/profile": label_value(p.slug), f"{LABEL}/kind": "notebook"}
        notes = {f"{LABEL}/image": pod.request.image.slug, f"{LABEL}/profile": p.slug}
    queue = kueue_queue(p, pod.default_queue)
    if queue:
        labels[KUEUE_QUEUE_LABEL] = queue
    return labels, notes


def pod_parts(config: GpuhubConfig, pod: PodRequest) -> PodParts:
    """Everything gpuhub puts into the pod for ``pod``."""
    request, p = pod.request, pod.request.profile
    env = {"GPUHUB_PROFILE": p.slug, "GPUHUB_IMAGE": request.image.slug}
    if request.gpus:
        env["GPUHUB_GPU_TYPE"] = request.gpu_type or ""
    else:
        # A CPU pod must not see the node's GPUs (device plugin envvar strategy).
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    if pod.home is not None:
        volumes.append({"name": "home", "persistentVolumeClaim": {"claimName": pod.home.claim}})
        mounts.append({"name": "home", "mountPath": pod.home.mount_path})
    volumes.append(
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": k8s_quantity(p.shm)}}
    )
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if pod.group_quota_classes and request.gpus and pod.group:
        # the group's ResourceQuota scope (gpuhub.kube.groupquota): the apiserver caps it
        priority: str | None = priority_class(pod.group)
    else:
        priority = p.priority_class
    labels, notes = pod_marks(pod)
    return PodParts(
        image=request.image.image,
        cpu=p.cpu,
        memory=to_bytes(p.memory),
        gpu_limits={GPU_RESOURCE: str(request.gpus)} if request.gpus else {},
        tolerations=[dict(GPU_TOLERATION)] if request.gpus else [],
        node_selector_terms=placement_terms(config, request),
        volumes=volumes,
        volume_mounts=mounts,
        env=env,
        labels=labels,
        annotations=notes,
        priority_class=priority,
    )


# --- the two translations -------------------------------------------------------------


def notebook_traits(parts: PodParts) -> dict[str, Any]:
    """``parts`` as KubeSpawner trait values."""
    return {
        "image": parts.image,
        "cpu_limit": parts.cpu,
        "cpu_guarantee": parts.cpu,
        "mem_limit": parts.memory,
        "mem_guarantee": parts.memory,
        "extra_resource_limits": dict(parts.gpu_limits),
        "tolerations": list(parts.tolerations),
        "node_affinity_required": list(parts.node_selector_terms),
        "volumes": list(parts.volumes),
        "volume_mounts": list(parts.volume_mounts),
        "environment": dict(parts.env),
        "extra_labels": dict(parts.labels),
        "extra_annotations": dict(parts.annotations),
        "priority_class_name": parts.priority_class or "",
    }


def pod_overrides(
    config: GpuhubConfig,
    request: SpawnRequest,
    alloc: Allocation | None,
    *,
    group_quota_classes: bool = False,
) -> dict[str, Any]:
    """KubeSpawner trait values for a notebook of ``request`` holding ``alloc``."""
    pod = PodRequest(
        request,
        group=alloc.group if alloc is not None else None,
        alloc=alloc,
        group_quota_classes=group_quota_classes,
    )
    return notebook_traits(pod_parts(config, pod))


def merge_list(existing: list[Obj], extra: list[Obj], key: str = "name") -> list[Obj]:
    """``existing`` without the entries ``extra`` replaces (same ``key``), then ``extra``."""
    names = {e.get(key) for e in extra}
    return [e for e in existing if e.get(key) not in names] + extra


def merge_into_template(template: Obj, parts: PodParts) -> Obj:
    """A copy of the admin's PodTemplateSpec with ``parts`` applied to it and its first
    container, the way the spawner applies them to KubeSpawner's traits: lists extended
    (entries of the same name replaced), dicts merged, cpu/memory/image/priority set."""
    tpl = copy.deepcopy(template) or {}
    meta = tpl.setdefault("metadata", {})
    meta["labels"] = {**meta.get("labels", {}), **parts.labels}
    meta["annotations"] = {**meta.get("annotations", {}), **parts.annotations}
    pod = tpl.setdefault("spec", {})
    c = pod.setdefault("containers", [{}])[0]
    c["image"] = parts.image
    c["env"] = merge_list(c.get("env", []), [{"name": k, "value": v} for k, v in parts.env.items()])
    resources = c.setdefault("resources", {})
    size = {"cpu": cpu_quantity(parts.cpu), "memory": byte_quantity(parts.memory)}
    requests = {**resources.get("requests", {}), **size}
    limits = {**resources.get("limits", {}), **size, **parts.gpu_limits}
    if GPU_RESOURCE not in parts.gpu_limits:
        requests.pop(GPU_RESOURCE, None)
        limits.pop(GPU_RESOURCE, None)
    resources["requests"], resources["limits"] = requests, limits
    c["volumeMounts"] = merge_list(c.get("volumeMounts", []), parts.volume_mounts)
    pod["volumes"] = merge_list(pod.get("volumes", []), parts.volumes)
    if parts.tolerations:
        pod["tolerations"] = [*pod.get("tolerations", []), *parts.tolerations]
    if parts.node_selector_terms:
        node = pod.setdefault("affinity", {}).setdefault("nodeAffinity", {})
        required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        required["nodeSelectorTerms"] = [
            *required.get("nodeSelectorTerms", []),
            *parts.node_selector_terms,
        ]
    if parts.priority_class:
        pod["priorityClassName"] = parts.priority_class
    return tpl
