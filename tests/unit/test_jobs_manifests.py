"""Kubeflow manifests of jobs: pure builders compared as whole dicts."""

from __future__ import annotations

from gpuhub.jobs.backends.kubeflow import job_from_object
from gpuhub.jobs.manifests import (
    KubeJobSettings,
    job_state,
    make_job,
    make_script_configmap,
    safe_label,
)
from gpuhub.jobs.policy import validate_job

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


def spec(config, user="bob", **body):
    from gpuhub.kube.objects import placement_terms
    from gpuhub.profiles import validate_options

    NOTEBOOK_TERMS[:] = placement_terms(
        config,
        validate_options(
            config, "bob", ["vision"], {"profile": "gpu", "image": "torch", "gpu_type": "a100"}
        ),
    )
    body = {"framework": "pytorch", "workers": 2, "gpus_per_worker": 2, "gpu_type": "a100", **body}
    return validate_job(
        config, user, ["vision"], body, job_id="0a1b2c", max_workers=8, script="print('hi')\n"
    )


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


def expected_template(container: str, command: list[str]) -> dict:
    return {
        "metadata": {"labels": LABELS, "annotations": NOTES},
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
                        {"name": "PYTHONUNBUFFERED", "value": "1"},
                        {"name": "GPUHUB_JOB_ID", "value": "0a1b2c"},
                        {"name": "GPUHUB_DIST_BACKEND", "value": "nccl"},
                    ],
                    "resources": {
                        "requests": {"cpu": "2", "memory": "8Gi"},
                        "limits": {"nvidia.com/gpu": 2},
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
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8G"}},
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
    tpl = expected_template("tensorflow", ["python", "/opt/gpuhub/job/script.py"])
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
    assert pod["containers"][0]["resources"] == {"limits": {}}
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
        "data": {"script.py": "print('hi')\n"},
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


def test_job_mounts_the_same_home_claim_as_the_notebook(config):
    """KubeSpawner expands ``{username}`` in ``pvc_name_template`` with its safe slug; the
    job must mount that very claim, for any username."""
    from kubespawner.slugs import safe_slug

    for user in ("bob", "Ann.Lee@example.org", "x--y", "ü" * 60):
        job = make_job(config, spec(config, user=user), SETTINGS, "vision")
        for replica in job["spec"]["pytorchReplicaSpecs"].values():
            (home,) = [v for v in replica["template"]["spec"]["volumes"] if v["name"] == "home"]
            claim = home["persistentVolumeClaim"]["claimName"]
            assert claim == "claim-" + safe_slug(user, max_length=48), (user, claim)


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
    from dataclasses import replace

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
