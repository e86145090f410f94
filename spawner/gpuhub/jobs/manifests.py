"""Pure builders of Kubernetes objects for jobs (kubespawner ``objects.py`` style):
plain dicts in, plain dicts out, tested by dict equality.

The pod template is the admin's (:class:`KubeJobSettings.pod_template`); what gpuhub puts
into each worker pod is decided by the same builder as a notebook pod's
(:func:`gpuhub.kube.objects.pod_parts`: placement, GPUs, shm, env, labels, the profile's
resources, priority class, queue, home claim).  Only the job's own parts are added here:
command, script ConfigMap, working directory, restart policy, and the time limit
(``runPolicy.activeDeadlineSeconds``: Kubernetes ends the job, gpuhub keeps no timer).
Every job, script and worker pod carries the gpuhub labels, so worker pods count in the
live quota exactly like notebook pods.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..kube.labels import label_value
from ..kube.objects import (
    KUEUE_QUEUE_LABEL,
    HomeVolume,
    PodRequest,
    expand_user_template,
    job_marks,
    kueue_queue,
    merge_into_template,
    merge_list,
    pod_parts,
)
from ..kube.objects import LABEL as LABEL  # re-exported for the backend
from ..model import GpuhubConfig, SpawnRequest
from .policy import JobSpec, time_limit_reason

KUBEFLOW_V1 = "kubeflow.org/v1"
SCRIPT_KEY = "script.py"
_VALID_LABEL = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")

Obj = dict[str, Any]


@dataclass(frozen=True)
class KubeJobSettings:
    """What the admin decides about every job (never the user)."""

    namespace: str
    pod_template: Obj = field(default_factory=dict)
    home_claim_template: str = "claim-{user_server}"
    slug_scheme: str = "safe"
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


def home_claim(settings: KubeJobSettings, user: str, server: str = "") -> str:
    """The home PVC of ``user``'s server ``server``, named exactly as KubeSpawner names
    it from the same ``pvc_name_template`` and ``slug_scheme``.  Jobs mount the default
    server's (``""``): the jobs API names no server."""
    return expand_user_template(settings.home_claim_template, user, server, settings.slug_scheme)


def job_name(spec: JobSpec) -> str:
    return f"gpuhub-job-{spec.id}"


def job_labels(spec: JobSpec, group: str | None) -> dict[str, str]:
    """The gpuhub labels of a job and of each of its pods (the live quota's input)."""
    return job_marks(spec, group)[0]


def job_annotations(spec: JobSpec, group: str | None) -> dict[str, str]:
    """Raw values the labels may have had to escape, plus what the API reports."""
    return job_marks(spec, group)[1]


def job_queue(spec: JobSpec, settings: KubeJobSettings) -> str | None:
    """The Kueue LocalQueue of the job and its pods: the profile's, else the backend's."""
    return kueue_queue(spec.profile, settings.kueue_queue)


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


def worker_request(spec: JobSpec) -> SpawnRequest:
    """The request of one worker pod: the job's, with one worker's GPUs."""
    gpus = spec.gpus_per_worker
    return dataclasses.replace(
        spec.ledger_request(), gpus=gpus, gpu_type=spec.gpu_type if gpus else None
    )


def worker_pod(spec: JobSpec, settings: KubeJobSettings, group: str | None) -> PodRequest:
    """What the pod builder needs to know about one worker of ``spec``."""
    return PodRequest(
        worker_request(spec),
        group=group,
        job=spec,
        home=HomeVolume(home_claim(settings, spec.user), settings.home_mount_path),
        group_quota_classes=settings.group_quota_classes,
        default_queue=settings.kueue_queue,
    )


def make_pod_template(
    config: GpuhubConfig,
    spec: JobSpec,
    settings: KubeJobSettings,
    group: str | None,
    *,
    container: str,
    command: list[str],
) -> Obj:
    """One replica's PodTemplateSpec: the admin's template with a worker's pod parts
    (:func:`gpuhub.kube.objects.pod_parts`) and the job's command and script."""
    parts = pod_parts(config, worker_pod(spec, settings, group))
    tpl = merge_into_template(settings.pod_template, parts)
    pod = tpl["spec"]
    c = pod["containers"][0]
    c["name"] = container
    c["command"] = command
    c.pop("args", None)
    c["workingDir"] = settings.home_mount_path
    c["env"] = merge_list(
        c["env"],
        [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "GPUHUB_JOB_ID", "value": spec.id},
            {"name": "GPUHUB_DIST_BACKEND", "value": "nccl" if spec.gpus_per_worker else "gloo"},
        ],
    )
    script = {"name": "gpuhub-script", "mountPath": settings.script_mount_path, "readOnly": True}
    c["volumeMounts"] = merge_list(c["volumeMounts"], [script])
    pod["volumes"] = merge_list(
        pod["volumes"],
        [{"name": "gpuhub-script", "configMap": {"name": f"{job_name(spec)}-script"}}],
    )
    pod.setdefault("restartPolicy", "Never")
    if spec.time_limit_minutes is not None:
        # the kubelet fails a worker pod past it: the operator, reconciling that pod's
        # change, then ends the whole job at runPolicy.activeDeadlineSeconds (it does not
        # wake up by itself at the deadline, kubeflow/trainer#3358)
        pod["activeDeadlineSeconds"] = deadline_seconds(spec.time_limit_minutes)
    return tpl


def _job_meta(spec: JobSpec, settings: KubeJobSettings, group: str | None) -> Obj:
    labels = job_labels(spec, group)
    queue = job_queue(spec, settings)
    if queue:
        labels[KUEUE_QUEUE_LABEL] = queue
    return {
        "name": job_name(spec),
        "namespace": settings.namespace,
        "labels": labels,
        "annotations": job_annotations(spec, group),
    }


def deadline_seconds(minutes: float) -> int:
    """``runPolicy.activeDeadlineSeconds`` of a time limit: whole seconds, at least 1."""
    return max(1, math.ceil(minutes * 60))


def _run_policy(spec: JobSpec, settings: KubeJobSettings) -> Obj:
    policy: Obj = {
        "cleanPodPolicy": settings.clean_pod_policy,
        "backoffLimit": settings.backoff_limit,
    }
    if settings.ttl_seconds_after_finished is not None:
        policy["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
    if spec.time_limit_minutes is not None:
        # the operator ends the job (Failed) this long after it started: never a timer of ours
        policy["activeDeadlineSeconds"] = deadline_seconds(spec.time_limit_minutes)
    if job_queue(spec, settings):
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
            "runPolicy": _run_policy(spec, settings),
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
            "runPolicy": _run_policy(spec, settings),
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
    message = str(latest.get("message", ""))
    if state == "Failed" and _past_deadline(obj, latest):
        # the operator words it "reached the specified backoff limit" (the pod the
        # kubelet failed at its deadline) or "active longer than specified deadline"
        deadline = int(obj["spec"]["runPolicy"]["activeDeadlineSeconds"])
        message = time_limit_reason(deadline / 60)
    return state, message


def _past_deadline(obj: Obj, failed: Obj) -> bool:
    """Whether the job failed when it had run its ``activeDeadlineSeconds`` (from
    ``status.startTime`` to the failure, as Kubernetes timed them)."""
    deadline = ((obj.get("spec") or {}).get("runPolicy") or {}).get("activeDeadlineSeconds")
    status = obj.get("status") or {}
    start = _time(status.get("startTime"))
    end = _time(failed.get("lastTransitionTime") or status.get("completionTime"))
    if not deadline or start is None or end is None:
        return False
    return end - start >= float(deadline)


def _time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
