"""Kubeflow manifests of jobs: pure builders compared as whole dicts."""

from __future__ import annotations

import copy
from dataclasses import replace
from decimal import Decimal

import pytest

from gpuhub.jobs.backends.kubeflow import (
    KubeflowJobBackend,
    job_from_object,
)
from gpuhub.jobs.manifests import (
    KubeJobSettings,
    home_claim,
    job_state,
    make_job,
    make_script_configmap,
    safe_label,
)
from gpuhub.jobs.policy import notebook_to_script, validate_job

ADMIN_TEMPLATE = {
    "spec": {
        "serviceAccountName": "gpuhub-jobs-runner",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
        "containers": [
            {
                "name": "main",
                "resources": {"requests": {"cpu": "2", "memory": "8Gi"}},
                "securityContext": {"allowPrivilegeEscalation": False},
            }
        ],
    }
}
SETTINGS = KubeJobSettings(namespace="team", pod_template=ADMIN_TEMPLATE, kueue_queue=None)


NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {},
    "cells": [
        {"id": "c1", "cell_type": "code", "metadata": {}, "source": "print('hi')", "outputs": []}
    ],
}


def spec(config, user="bob", **body):
    from gpuhub.kube.objects import placement_terms
    from gpuhub.profiles import validate_options

    NOTEBOOK_TERMS[:] = placement_terms(
        config,
        validate_options(
            config, "bob", ["vision"], {"profile": "gpu", "image": "torch", "gpu_type": "a100"}
        ),
    )
    body = {
        "framework": "pytorch",
        "workers": 2,
        "gpus_per_worker": 2,
        "gpu_type": "a100",
        "notebook": NOTEBOOK,
        **body,
    }
    return validate_job(config, user, ["vision"], body, job_id="0a1b2c", max_workers=8)


LABELS = {
    "gpuhub.io/kind": "job",
    "gpuhub.io/job-id": "0a1b2c",
    "gpuhub.io/user": "bob",
    "gpuhub.io/gpus": "2",
    "gpuhub.io/gpu-type": "a100",
    "gpuhub.io/group": "vision",
}
NOTES = {
    "gpuhub.io/user": "bob",
    "gpuhub.io/notebook-path": "notebook.ipynb",
    "gpuhub.io/image": "torch",
    "gpuhub.io/workers": "2",
    "gpuhub.io/group": "vision",
}


#: the node-selector terms GPUKubeSpawner gives a notebook of the job's image and GPU type
#: (filled in by the config fixture's first use in ``spec``)
NOTEBOOK_TERMS: list = []


def expected_template(container: str, command: list[str], labels: dict = LABELS) -> dict:
    return {
        "metadata": {"labels": labels, "annotations": NOTES},
        "spec": {
            "serviceAccountName": "gpuhub-jobs-runner",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
            "containers": [
                {
                    "name": container,
                    "image": "ghcr.io/gpuhub/pytorch:2.11-cu128",
                    "command": command,
                    "workingDir": "/home/jovyan",
                    "env": [
                        {"name": "GPUHUB_PROFILE", "value": "gpu"},
                        {"name": "GPUHUB_IMAGE", "value": "torch"},
                        {"name": "GPUHUB_GPU_TYPE", "value": "a100"},
                        {"name": "PYTHONUNBUFFERED", "value": "1"},
                        {"name": "GPUHUB_JOB_ID", "value": "0a1b2c"},
                        {"name": "GPUHUB_DIST_BACKEND", "value": "nccl"},
                    ],
                    # the profile's cpu and memory (as a notebook's), not the template's
                    "resources": {
                        "requests": {"cpu": "1", "memory": "2Gi"},
                        "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "2"},
                    },
                    "securityContext": {"allowPrivilegeEscalation": False},
                    "volumeMounts": [
                        {"name": "home", "mountPath": "/home/jovyan"},
                        {"name": "dshm", "mountPath": "/dev/shm"},
                        {"name": "gpuhub-script", "mountPath": "/opt/gpuhub/job", "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {"name": "home", "persistentVolumeClaim": {"claimName": "claim-bob"}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
                {"name": "gpuhub-script", "configMap": {"name": "gpuhub-job-0a1b2c-script"}},
            ],
            "restartPolicy": "Never",
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            # exactly a notebook's placement for this image (GPU type + driver floor)
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": NOTEBOOK_TERMS
                    }
                }
            },
        },
    }


def test_pytorchjob(config):
    s = spec(config, group="vision", args=["--epochs", "2"])
    tpl = expected_template("pytorch", ["torchrun", "/opt/gpuhub/job/script.py", "--epochs", "2"])
    assert make_job(config, s, SETTINGS, "vision") == {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": "gpuhub-job-0a1b2c",
            "namespace": "team",
            "labels": LABELS,
            "annotations": NOTES,
        },
        "spec": {
            "nprocPerNode": "2",
            "runPolicy": {
                "cleanPodPolicy": "Running",
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": 86400,
            },
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "Never", "template": tpl},
                "Worker": {"replicas": 1, "restartPolicy": "Never", "template": tpl},
            },
        },
    }
    # the admin's template is never modified
    assert ADMIN_TEMPLATE["spec"]["containers"][0]["name"] == "main"


def test_tfjob_with_kueue(config):
    s = spec(config, framework="tensorflow", group="vision")
    settings = KubeJobSettings(
        namespace="team", pod_template=ADMIN_TEMPLATE, kueue_queue="vision-queue"
    )
    tpl = expected_template(
        "tensorflow",
        ["python", "/opt/gpuhub/job/script.py"],
        {**LABELS, "kueue.x-k8s.io/queue-name": "vision-queue"},
    )
    assert make_job(config, s, settings, "vision") == {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": {
            "name": "gpuhub-job-0a1b2c",
            "namespace": "team",
            "labels": {**LABELS, "kueue.x-k8s.io/queue-name": "vision-queue"},
            "annotations": NOTES,
        },
        "spec": {
            "runPolicy": {
                "cleanPodPolicy": "Running",
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": 86400,
                "suspend": True,
            },
            "tfReplicaSpecs": {
                "Worker": {"replicas": 2, "restartPolicy": "Never", "template": tpl}
            },
        },
    }


def test_cpu_job_has_no_gpu_placement(config):
    s = spec(config, gpus_per_worker=0, gpu_type=None, workers=1)
    job = make_job(config, s, KubeJobSettings(namespace="n"), None)
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "Worker" not in job["spec"]["pytorchReplicaSpecs"]
    size = {"cpu": "1", "memory": "2Gi"}
    assert pod["containers"][0]["resources"] == {"requests": size, "limits": size}
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and "GPUHUB_GPU_TYPE" not in env
    assert "tolerations" not in pod and "affinity" not in pod
    assert job["metadata"]["labels"]["gpuhub.io/gpus"] == "0"
    assert "gpuhub.io/gpu-type" not in job["metadata"]["labels"]


def test_script_configmap_owned_by_the_job(config):
    s = spec(config)
    owner = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "gpuhub-job-0a1b2c", "uid": "u-1"},
    }
    cm = make_script_configmap(s, SETTINGS, "vision", owner=owner)
    assert cm == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "gpuhub-job-0a1b2c-script",
            "namespace": "team",
            "labels": LABELS,
            "annotations": NOTES,
            "ownerReferences": [
                {
                    "apiVersion": "kubeflow.org/v1",
                    "kind": "PyTorchJob",
                    "name": "gpuhub-job-0a1b2c",
                    "uid": "u-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"script.py": notebook_to_script(NOTEBOOK)},
    }


def test_label_values_are_safe_for_any_name(config):
    import re

    from kubespawner.slugs import is_valid_label

    assert safe_label("bob") == "bob" and safe_label("Alice") == "Alice"  # already valid
    odd = ["a@b.com", "-x-", "ü" * 70, "a" * 64, "a b"]
    for name in odd:
        value = safe_label(name)
        assert is_valid_label(value) and len(value) <= 63 and value != name, value
        assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", value), value
    assert len({safe_label(n) for n in odd}) == len(odd)  # distinct names stay distinct
    s = spec(config, user="Ann.Lee@example.org")
    job = make_job(config, s, SETTINGS, "vision")
    assert job["metadata"]["labels"]["gpuhub.io/user"] == safe_label("Ann.Lee@example.org")
    assert job["metadata"]["annotations"]["gpuhub.io/user"] == "Ann.Lee@example.org"


#: user names KubeSpawner must escape: upper case, dots, ``@``, ``--``, non-ASCII, long
ODD_USERS = ["bob", "Ann.Lee@example.org", "BOB", "x--y", "ü" * 60, "a" * 47, "first.last" * 6]


@pytest.fixture
def kubespawner_pvc_name(monkeypatch):
    """KubeSpawner's own ``pvc_name`` for a server: a real KubeSpawner of a transient
    JupyterHub user and server (its API client is made but never used: no cluster)."""
    import kubespawner.spawner
    from jupyterhub import orm
    from kubespawner import KubeSpawner

    monkeypatch.setattr(kubespawner.spawner, "load_config", lambda **_: None)

    def pvc_name(user, server="", template="claim-{user_server}", scheme="safe"):
        return KubeSpawner(
            user=orm.User(name=user, id=1),
            orm_spawner=orm.Spawner(name=server),
            pvc_name_template=template,
            slug_scheme=scheme,
        ).pvc_name

    return pvc_name


async def test_job_mounts_the_claim_kubespawner_gives_the_server(config, kubespawner_pvc_name):
    """With the shipped settings (the chart's ``claim-{user_server}``), a job mounts
    exactly the PVC KubeSpawner names for the user's default server, for any name."""
    settings = replace(SETTINGS, home_claim_template=KubeflowJobBackend().home_claim_template)
    for user in ODD_USERS:
        job = make_job(config, spec(config, user=user), settings, "vision")
        for replica in job["spec"]["pytorchReplicaSpecs"].values():
            (home,) = [v for v in replica["template"]["spec"]["volumes"] if v["name"] == "home"]
            claim = home["persistentVolumeClaim"]["claimName"]
            assert claim == kubespawner_pvc_name(user), (user, claim)
    assert settings.home_claim_template == "claim-{user_server}"


@pytest.mark.parametrize(
    "template",
    ["claim-{user_server}", "claim-{username}--{servername}", "home-{username}", "{safe_username}"],
)
@pytest.mark.parametrize("scheme", ["safe", "escape"])
async def test_home_claim_expands_as_kubespawner(kubespawner_pvc_name, template, scheme):
    """Any server, template and slug scheme: the same name as KubeSpawner's expansion."""
    settings = replace(SETTINGS, home_claim_template=template, slug_scheme=scheme)
    for user in ODD_USERS:
        for server in ("", "gpu", "My Server.2", "s" * 40):
            expected = kubespawner_pvc_name(user, server, template, scheme)
            assert home_claim(settings, user, server) == expected, (user, server)


def test_home_claim_template_refuses_fields_a_job_cannot_know():
    from traitlets import TraitError

    with pytest.raises(TraitError, match="userid"):
        KubeflowJobBackend(home_claim_template="claim-{userid}")


def test_state_from_cluster(config):
    job = make_job(config, spec(config), SETTINGS, "vision")
    job["metadata"]["creationTimestamp"] = "2026-11-23T09:12:00Z"
    assert job_state(job) == ("Queued", "")
    job["status"] = {
        "conditions": [
            {"type": "Created", "status": "True"},
            {"type": "Running", "status": "True", "message": "running"},
        ]
    }
    assert job_state(job) == ("Running", "running")
    api = job_from_object(job)
    assert (api.id, api.user, api.workers, api.gpus_per_worker, api.state) == (
        "0a1b2c",
        "bob",
        2,
        2,
        "Running",
    )


def test_group_quota_class_on_gpu_workers_only(config):
    settings = replace(SETTINGS, group_quota_classes=True)
    job = make_job(config, spec(config, group="vision"), settings, "vision")
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        assert replica["template"]["spec"]["priorityClassName"] == "gpuhub-group-vision"
    cpu = make_job(config, spec(config, gpus_per_worker=0, gpu_type=None), settings, None)
    for replica in cpu["spec"]["pytorchReplicaSpecs"].values():
        assert "priorityClassName" not in replica["template"]["spec"]
    # off by default: the admin template's own class (if any) is left alone
    plain = make_job(config, spec(config, group="vision"), SETTINGS, "vision")
    for replica in plain["spec"]["pytorchReplicaSpecs"].values():
        assert "priorityClassName" not in replica["template"]["spec"]


def test_gpu_job_needs_a_driver_for_its_cuda(config):
    job = make_job(config, spec(config, group="vision"), SETTINGS, "vision")
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        terms = replica["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        keys = [{e["key"] for e in t["matchExpressions"]} for t in terms]
        assert all("nvidia.com/gpu.product" in k for k in keys)
        assert any("nvidia.com/cuda.driver-version.major" in k for k in keys)
        assert any("nvidia.com/cuda.driver.major" in k for k in keys)


# --- one pod builder: a notebook and a job worker of one request agree ----------------

#: env only a job worker has (the job's own parts, gpuhub.jobs.manifests)
JOB_ONLY_ENV = {"PYTHONUNBUFFERED", "GPUHUB_JOB_ID", "GPUHUB_DIST_BACKEND"}


def notebook_pod(traits: dict) -> dict:
    """The pod KubeSpawner's own ``make_pod`` builds from the notebook's trait values
    (on an admin config that sets none of them), as the apiserver receives it."""
    from kubernetes.client import ApiClient
    from kubespawner.objects import make_pod

    pod = make_pod(
        name="jupyter-bob",
        cmd=["jupyterhub-singleuser"],
        port=8888,
        image=traits["image"],
        env=traits["environment"],
        labels=traits["extra_labels"],
        annotations=traits["extra_annotations"],
        cpu_limit=traits["cpu_limit"],
        cpu_guarantee=traits["cpu_guarantee"],
        mem_limit=traits["mem_limit"],
        mem_guarantee=traits["mem_guarantee"],
        extra_resource_limits=traits["extra_resource_limits"],
        tolerations=traits["tolerations"],
        node_affinity_required=traits["node_affinity_required"],
        volumes=traits["volumes"],
        volume_mounts=traits["volume_mounts"],
        priority_class_name=traits["priority_class_name"],
    )
    with ApiClient() as api:
        return api.sanitize_for_serialization(pod)


def shared_parts(pod: dict) -> dict:
    """What a notebook pod and a job worker pod of the same request must agree on
    (quantities compared by value: KubeSpawner sends numbers, a CRD needs strings)."""
    from kubernetes.utils import parse_quantity

    spec, c = pod["spec"], pod["spec"]["containers"][0]
    return {
        "image": c["image"],
        "resources": {
            kind: {name: parse_quantity(q) for name, q in values.items()}
            for kind, values in c["resources"].items()
        },
        "gpu_limit": c["resources"].get("limits", {}).get("nvidia.com/gpu"),
        "env": {e["name"]: e["value"] for e in c["env"] if e["name"] not in JOB_ONLY_ENV},
        "shm": [v for v in spec["volumes"] if v["name"] == "dshm"],
        "shm_mount": [m for m in c["volumeMounts"] if m["name"] == "dshm"],
        "tolerations": spec.get("tolerations") or [],
        "affinity": spec.get("affinity") or {},
        "priority_class": spec.get("priorityClassName"),
        "queue": pod["metadata"]["labels"].get("kueue.x-k8s.io/queue-name"),
    }


def _with_profile_settings(raw):
    from gpuhub.config import parse_config

    for p in raw["profiles"]:
        if p["slug"] == "gpu":
            p.update(cpu=4, memory="16G", priority_class="research", kueue_queue="vision-q")
        if p["slug"] == "cpu":
            p.update(cpu=0.5, memory="1536M", priority_class="batch", kueue_queue="cpu-q")
    return parse_config(raw)


GPU_CASE = {"gpus_per_worker": 2, "gpu_type": "a100", "group": "vision", "image": "torch"}
CPU_CASE = {"gpus_per_worker": 0, "gpu_type": None, "image": "torch"}


@pytest.mark.parametrize(
    ("body", "quota_classes"),
    [(GPU_CASE, False), (CPU_CASE, False), (GPU_CASE, True), (CPU_CASE, True)],
    ids=["gpu", "cpu", "gpu-quota-classes", "cpu-quota-classes"],
)
def test_notebook_and_job_worker_pods_agree(raw, body, quota_classes):
    """The same request gives a notebook pod and a job worker pod the same GPU limits,
    shm (8Gi), tolerations, placement, env (void for CPU), cpu/memory, priority class and
    Kueue queue: one builder decides them for both."""
    from gpuhub.kube.objects import pod_overrides
    from gpuhub.model import Allocation
    from gpuhub.profiles import validate_options

    config = _with_profile_settings(raw)
    s = spec(config, **body)
    gpus = s.gpus_per_worker
    options = {"profile": s.profile.slug, "image": s.image.slug}
    if gpus:
        options |= {"gpus": gpus, "gpu_type": s.gpu_type, "group": "vision"}
    request = validate_options(config, "bob", ["vision"], options)
    alloc = Allocation("server:bob/", "bob", "vision", "a100", gpus) if gpus else None
    kwargs = {"group_quota_classes": True} if quota_classes else {}
    notebook = notebook_pod(pod_overrides(config, request, alloc, **kwargs))

    settings = replace(SETTINGS, group_quota_classes=quota_classes)
    job = make_job(config, s, settings, "vision" if gpus else None)
    (worker, *_) = job["spec"]["pytorchReplicaSpecs"].values()

    assert shared_parts(worker["template"]) == shared_parts(notebook)
    # and what they agree on is what the profile and the request say
    parts = shared_parts(notebook)
    assert parts["shm"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi" if gpus else "1Gi"}}
    ]
    if gpus:
        assert parts["gpu_limit"] == "2"
        assert parts["env"]["GPUHUB_GPU_TYPE"] == "a100"
        assert parts["priority_class"] == ("gpuhub-group-vision" if quota_classes else "research")
        assert parts["queue"] == "vision-q"
        assert parts["resources"]["limits"]["cpu"] == 4
        assert parts["affinity"]["nodeAffinity"]  # GPU type and driver floor
    else:
        assert parts["env"]["NVIDIA_VISIBLE_DEVICES"] == "void"
        assert parts["tolerations"] == [] and parts["affinity"] == {}
        assert parts["priority_class"] == "batch" and parts["queue"] == "cpu-q"
        assert parts["resources"]["requests"]["cpu"] == Decimal("0.5")
        assert parts["resources"]["limits"]["memory"] == 1536 * 1024**2


def test_profile_queue_suspends_the_job(raw, config):
    """A profile's Kueue queue labels the job (Kueue admits jobs) and its workers, and
    the job is created suspended; the backend's ``kueue_queue`` is only the fallback."""
    queued = _with_profile_settings(copy.deepcopy(raw))
    job = make_job(queued, spec(queued, group="vision"), SETTINGS, "vision")
    (worker, *_) = job["spec"]["pytorchReplicaSpecs"].values()
    for meta in (job["metadata"], worker["template"]["metadata"]):
        assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "vision-q"
    assert job["spec"]["runPolicy"]["suspend"] is True

    plain = make_job(config, spec(config, group="vision"), SETTINGS, "vision")
    assert "suspend" not in plain["spec"]["runPolicy"]
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]
    fallback = make_job(
        config, spec(config, group="vision"), replace(SETTINGS, kueue_queue="team-q"), "vision"
    )
    (worker, *_) = fallback["spec"]["pytorchReplicaSpecs"].values()
    for meta in (fallback["metadata"], worker["template"]["metadata"]):
        assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-q"
