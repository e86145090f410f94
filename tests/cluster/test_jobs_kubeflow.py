"""The Kubeflow backend against the real test cluster (apiserver + training-operator CRDs):
the PyTorchJob it builds is accepted, carries the gpuhub labels on the job and on its
replica pod templates, owns its script ConfigMap, and counts against the group quota."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from gpuhub.config import parse_config
from gpuhub.errors import QuotaDenied
from gpuhub.jobs.backends.kubeflow import KubeflowJobBackend
from gpuhub.jobs.policy import validate_job
from testbed import Cluster, install_crds
from testbed.ports import wait_until

pytestmark = pytest.mark.cluster

CONFIG = {
    "gpu_types": {"a100": {"display_name": "A100", "node_label": "NVIDIA-A100-SXM4-80GB"}},
    "images": {
        "torch": {
            "display_name": "PyTorch",
            "image": "ghcr.io/gpuhub/pytorch:2.11-cu128",
            "framework": "pytorch",
            "cuda": "12.8",
        }
    },
    "profiles": [
        {
            "slug": "gpu",
            "display_name": "GPU",
            "images": ["torch"],
            "groups": ["vision"],
            "gpu": {"types": ["a100"], "counts": [1, 2]},
        }
    ],
    "quotas": {"groups": {"vision": {"gpus": 4}}},
    "groups": {"vision": ["alice", "Bob.Smith@x"]},
}


def spec(cfg, user: str, job_id: str, workers: int):
    body = {
        "framework": "pytorch",
        "workers": workers,
        "gpus_per_worker": 2,
        "gpu_type": "a100",
        "group": "vision",
        "path": "exp/train.ipynb",
    }
    return validate_job(
        cfg, user, ["vision"], body, job_id=job_id, max_workers=8, script="print('hello')\n"
    )


async def test_pytorchjob_accepted_and_counted(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    assert {"pytorchjobs.kubeflow.org", "tfjobs.kubeflow.org"} <= set(install_crds(k8s_cluster))
    custom = client.CustomObjectsApi(k8s_cluster.api)

    def served() -> bool:  # a new CRD's storage answers 429 for a moment
        try:
            custom.list_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs")
            custom.list_namespaced_custom_object("kubeflow.org", "v1", namespace, "tfjobs")
        except client.ApiException as e:
            if e.status != 429:
                raise
            return False
        return True

    wait_until(served, 30, "pytorchjobs/tfjobs served")
    cfg = parse_config(CONFIG)
    backend = KubeflowJobBackend(
        gpuhub=cfg,
        data_dir=tmp_path,
        namespace=namespace,
        kubeconfig=str(k8s_cluster.kubeconfig),
        pod_template={"spec": {"securityContext": {"runAsNonRoot": True}}},
    )
    await backend.recover()
    try:
        job = await backend.submit(spec(cfg, "Bob.Smith@x", "aa01", workers=2), ["vision"])
        assert (job.id, job.user, job.state, job.workers) == ("aa01", "Bob.Smith@x", "Queued", 2)
        obj = custom.get_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "pytorchjobs", "gpuhub-job-aa01"
        )
        labels = obj["metadata"]["labels"]
        assert labels["gpuhub.io/kind"] == "job" and labels["gpuhub.io/gpus"] == "2"
        assert labels["gpuhub.io/user"].startswith("bob.smith-x---")
        assert obj["metadata"]["annotations"]["gpuhub.io/user"] == "Bob.Smith@x"
        for replica in ("Master", "Worker"):
            tpl = obj["spec"]["pytorchReplicaSpecs"][replica]["template"]
            assert tpl["metadata"]["labels"] == labels
            (c,) = tpl["spec"]["containers"]
            assert c["resources"]["limits"] == {"nvidia.com/gpu": 2}
        cm = client.CoreV1Api(k8s_cluster.api).read_namespaced_config_map(
            "gpuhub-job-aa01-script", namespace
        )
        assert cm.data == {"script.py": "print('hello')\n"}
        assert cm.metadata.owner_references[0].uid == obj["metadata"]["uid"]
        # the group's 4 GPUs are taken by 2 workers × 2: the next job is denied with
        # the notebook explanation
        with pytest.raises(QuotaDenied, match=r"group vision uses 4 of 4 GPUs: Bob\.Smith@x 4"):
            await backend.submit(spec(cfg, "alice", "aa02", workers=1), ["vision"])
        assert [j.id for j in await backend.list_jobs("Bob.Smith@x")] == ["aa01"]
        assert await backend.list_jobs("alice") == []
        cancelled = await backend.cancel(job)
        assert cancelled.state == "Cancelled"
    finally:
        await backend.shutdown()
