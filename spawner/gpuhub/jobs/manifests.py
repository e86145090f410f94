"""Pure builders of Kubernetes objects for jobs (kubespawner ``objects.py`` style):
plain dicts in, plain dicts out, tested by dict equality.

The pod template is the admin's (:class:`KubeJobSettings.pod_template`); from the user's
request only validated values go in: the catalog image, GPU counts, the script (as a
ConfigMap) and its arguments.  Every job and replica pod template carries the gpuhub
labels, so worker pods count in the live quota exactly like notebook pods.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from kubespawner.slugs import safe_slug

from ..kube.groupquota import priority_class
from ..kube.labels import label_value
from ..kube.objects import GPU_RESOURCE, GPU_TOLERATION, placement_terms
from ..model import GpuhubConfig
from .policy import JobSpec

LABEL = "gpuhub.io"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUBEFLOW_V1 = "kubeflow.org/v1"
SCRIPT_KEY = "script.py"
_VALID_LABEL = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")

Obj = dict[str, Any]


@dataclass(frozen=True)
class KubeJobSettings:
    """What the admin decides about every job (never the user)."""

    namespace: str
    pod_template: Obj = field(default_factory=dict)
    home_claim_template: str = "claim-{username}"
    home_mount_path: str = "/home/jovyan"
    script_mount_path: str = "/opt/gpuhub/job"
    clean_pod_policy: str = "Running"
    ttl_seconds_after_finished: int | None = 86400
    backoff_limit: int = 0
    kueue_queue: str | None = None
    group_quota_classes: bool = False


def safe_label(value: str) -> str:
    """A label value valid for any name: the same rule notebook pods use
    (:func:`gpuhub.kube.labels.label_value`); the raw value goes into an annotation."""
    return label_value(value)


def home_claim(settings: KubeJobSettings, user: str) -> str:
    """The user's home PVC, named exactly as KubeSpawner names it: ``{username}`` in
    ``pvc_name_template`` expands to kubespawner's safe slug (``slug_scheme="safe"``)."""
    return settings.home_claim_template.format(username=safe_slug(user, max_length=48))


def job_name(spec: JobSpec) -> str:
    return f"gpuhub-job-{spec.id}"


def job_labels(spec: JobSpec, group: str | None) -> dict[str, str]:
    """The gpuhub labels of a job and of each of its pods (the live quota's input)."""
    labels = {
        f"{LABEL}/kind": "job",
        f"{LABEL}/job-id": spec.id,
        f"{LABEL}/user": safe_label(spec.user),
        f"{LABEL}/gpus": str(spec.gpus_per_worker),
    }
    if spec.gpus_per_worker and spec.gpu_type:
        labels[f"{LABEL}/gpu-type"] = spec.gpu_type
    if group:
        labels[f"{LABEL}/group"] = safe_label(group)
    return labels


def job_annotations(spec: JobSpec, group: str | None) -> dict[str, str]:
    """Raw values the labels may have had to escape, plus what the API reports."""
    notes = {
        f"{LABEL}/user": spec.user,
        f"{LABEL}/notebook-path": spec.path,
        f"{LABEL}/image": spec.image.slug,
        f"{LABEL}/workers": str(spec.workers),
    }
    if group:
        notes[f"{LABEL}/group"] = group
    return notes


def owner_reference(obj: Obj) -> Obj:
    """An ownerReference to ``obj`` (a created object, with its uid)."""
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def make_script_configmap(
    spec: JobSpec, settings: KubeJobSettings, group: str | None, owner: Obj | None = None
) -> Obj:
    """The ConfigMap delivering the converted script; owned by the job when ``owner``
    is given, so it is deleted with it."""
    meta: Obj = {
        "name": f"{job_name(spec)}-script",
        "namespace": settings.namespace,
        "labels": job_labels(spec, group),
        "annotations": job_annotations(spec, group),
    }
    if owner is not None:
        meta["ownerReferences"] = [owner_reference(owner)]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {SCRIPT_KEY: spec.script},
    }


def _merge_list(existing: list[Obj], extra: list[Obj], key: str = "name") -> list[Obj]:
    names = {e.get(key) for e in extra}
    return [e for e in existing if e.get(key) not in names] + extra


def make_pod_template(
    config: GpuhubConfig,
    spec: JobSpec,
    settings: KubeJobSettings,
    group: str | None,
    *,
    container: str,
    command: list[str],
) -> Obj:
    """One replica's PodTemplateSpec: the admin's template with the job's image,
    command, GPUs, volumes, labels and GPU placement filled in."""
    tpl = copy.deepcopy(settings.pod_template) or {}
    meta = tpl.setdefault("metadata", {})
    meta["labels"] = {**meta.get("labels", {}), **job_labels(spec, group)}
    meta["annotations"] = {**meta.get("annotations", {}), **job_annotations(spec, group)}
    pod = tpl.setdefault("spec", {})
    containers = pod.setdefault("containers", [{}])
    c = containers[0]
    c["name"] = container
    c["image"] = spec.image.image
    c["command"] = command
    c.pop("args", None)
    c["workingDir"] = settings.home_mount_path
    c["env"] = _merge_list(
        c.get("env", []),
        [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "GPUHUB_JOB_ID", "value": spec.id},
            {"name": "GPUHUB_DIST_BACKEND", "value": "nccl" if spec.gpus_per_worker else "gloo"},
        ],
    )
    resources = c.setdefault("resources", {})
    limits = resources.setdefault("limits", {})
    if spec.gpus_per_worker:
        limits[GPU_RESOURCE] = spec.gpus_per_worker
    else:
        limits.pop(GPU_RESOURCE, None)
        resources.get("requests", {}).pop(GPU_RESOURCE, None)
    c["volumeMounts"] = _merge_list(
        c.get("volumeMounts", []),
        [
            {"name": "home", "mountPath": settings.home_mount_path},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "gpuhub-script", "mountPath": settings.script_mount_path, "readOnly": True},
        ],
    )
    pod["volumes"] = _merge_list(
        pod.get("volumes", []),
        [
            {
                "name": "home",
                "persistentVolumeClaim": {"claimName": home_claim(settings, spec.user)},
            },
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.profile.shm}},
            {"name": "gpuhub-script", "configMap": {"name": f"{job_name(spec)}-script"}},
        ],
    )
    pod.setdefault("restartPolicy", "Never")
    if settings.group_quota_classes and spec.gpus_per_worker and group:
        # the group's ResourceQuota scope (gpuhub.kube.groupquota): the apiserver caps it
        pod["priorityClassName"] = priority_class(group)
    if spec.gpus_per_worker and spec.gpu_type:
        # the same placement as a notebook of this image: GPU type and a driver new
        # enough for the image's CUDA (gpuhub.kube.objects decides for both)
        pod["tolerations"] = [*pod.get("tolerations", []), GPU_TOLERATION]
        pod.setdefault("affinity", {})["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": placement_terms(config, spec.ledger_request())
            }
        }
    return tpl


def _job_meta(spec: JobSpec, settings: KubeJobSettings, group: str | None) -> Obj:
    labels = job_labels(spec, group)
    if settings.kueue_queue:
        labels[KUEUE_QUEUE_LABEL] = settings.kueue_queue
    return {
        "name": job_name(spec),
        "namespace": settings.namespace,
        "labels": labels,
        "annotations": job_annotations(spec, group),
    }


def _run_policy(settings: KubeJobSettings) -> Obj:
    policy: Obj = {
        "cleanPodPolicy": settings.clean_pod_policy,
        "backoffLimit": settings.backoff_limit,
    }
    if settings.ttl_seconds_after_finished is not None:
        policy["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
    if settings.kueue_queue:
        policy["suspend"] = True  # Kueue admits the job by unsuspending it
    return policy


def make_pytorchjob(
    config: GpuhubConfig, spec: JobSpec, settings: KubeJobSettings, group: str | None
) -> Obj:
    """A ``PyTorchJob``: one Master and ``workers - 1`` Workers, each running
    ``torchrun`` with ``gpus_per_worker`` processes (the operator sets ``PET_*``)."""
    script = f"{settings.script_mount_path}/{SCRIPT_KEY}"
    command = ["torchrun", script, *spec.args]
    tpl = make_pod_template(config, spec, settings, group, container="pytorch", command=command)
    replicas: Obj = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": tpl}}
    if spec.workers > 1:
        replicas["Worker"] = {
            "replicas": spec.workers - 1,
            "restartPolicy": "Never",
            "template": copy.deepcopy(tpl),
        }
    return {
        "apiVersion": KUBEFLOW_V1,
        "kind": "PyTorchJob",
        "metadata": _job_meta(spec, settings, group),
        "spec": {
            "nprocPerNode": str(spec.gpus_per_worker or 1),
            "runPolicy": _run_policy(settings),
            "pytorchReplicaSpecs": replicas,
        },
    }


def make_tfjob(
    config: GpuhubConfig, spec: JobSpec, settings: KubeJobSettings, group: str | None
) -> Obj:
    """A ``TFJob`` of ``workers`` Workers (the operator sets ``TF_CONFIG``)."""
    script = f"{settings.script_mount_path}/{SCRIPT_KEY}"
    command = ["python", script, *spec.args]
    tpl = make_pod_template(config, spec, settings, group, container="tensorflow", command=command)
    return {
        "apiVersion": KUBEFLOW_V1,
        "kind": "TFJob",
        "metadata": _job_meta(spec, settings, group),
        "spec": {
            "runPolicy": _run_policy(settings),
            "tfReplicaSpecs": {
                "Worker": {"replicas": spec.workers, "restartPolicy": "Never", "template": tpl}
            },
        },
    }


def make_job(
    config: GpuhubConfig, spec: JobSpec, settings: KubeJobSettings, group: str | None
) -> Obj:
    """The training job for the spec's framework."""
    build = make_pytorchjob if spec.framework == "pytorch" else make_tfjob
    return build(config, spec, settings, group)


def job_state(obj: Obj) -> tuple[str, str]:
    """``(state, message)`` of a Kubeflow v1 job from its status conditions."""
    status = obj.get("status") or {}
    latest: dict[str, Any] = {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True":
            latest = cond
    kind = latest.get("type", "")
    state = {
        "Succeeded": "Succeeded",
        "Failed": "Failed",
        "Running": "Running",
        "Restarting": "Running",
    }.get(kind, "Queued")
    if (obj.get("spec") or {}).get("runPolicy", {}).get("suspend"):
        state = "Queued"
    return state, str(latest.get("message", ""))
