"""The Kubeflow backend against the real test cluster.

- With only the training-operator CRDs: the PyTorchJob it builds is accepted, carries the
  gpuhub labels on the job and on its replica pod templates, owns its script ConfigMap,
  and counts against the group quota.
- With the real training operator (``training_operator`` fixture): a 2-replica PyTorchJob
  runs DDP (gloo, CPU) on a process node; its pods carry the gpuhub labels and count in
  the pod-fed quota ledger while they run; the job ends Succeeded with both ranks' logs.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import yaml
from kubernetes import client

from gpuhub.activeconfig import ActiveConfig
from gpuhub.errors import QuotaDenied
from gpuhub.jobs.backends.kubeflow import JobNotCreated, KubeflowJobBackend
from gpuhub.jobs.errors import JobFinished
from gpuhub.jobs.policy import notebook_to_script, validate_job
from gpuhub.kube.labels import allocation_from_pod, label_value
from gpuhub.kube.ledger import KubeLedgerBackend
from gpuhub.model import SpawnRequest
from testbed import Cluster, ProcessNode, install_crds
from testbed.node_identity import PROCESS_NODE_TAINT
from testbed.ports import free_port, wait_until
from testbed.training_operator import TrainingOperator

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


def active(tmp_path: Path) -> ActiveConfig:
    """CONFIG as a file, followed like the jobs service follows the hub's YAML."""
    path = tmp_path / "gpuhub.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return ActiveConfig(path)


HELLO = "print('hello')"


def one_cell_notebook(source: str) -> dict[str, Any]:
    """A one-cell notebook (the job's script is what nbconvert makes of it)."""
    cell = {"id": "c1", "cell_type": "code", "metadata": {}, "source": source, "outputs": []}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}


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
        cfg,
        user,
        ["vision"],
        {**body, "notebook": one_cell_notebook(HELLO)},
        job_id=job_id,
        max_workers=8,
    )


def crds_served(k8s_cluster: Cluster, namespace: str) -> None:
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


async def test_pytorchjob_accepted_and_counted(
    k8s_cluster: Cluster, kwok_fleet: Any, namespace: str, tmp_path: Path
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
    holder = active(tmp_path)
    cfg = holder.config
    backend = KubeflowJobBackend(
        active=holder,
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
        # the same label rule as notebook pods (gpuhub.kube.labels.label_value)
        assert labels["gpuhub.io/user"] == label_value("Bob.Smith@x") == "bob-smith-x---65b8104b"
        assert obj["metadata"]["annotations"]["gpuhub.io/user"] == "Bob.Smith@x"
        for replica in ("Master", "Worker"):
            tpl = obj["spec"]["pytorchReplicaSpecs"][replica]["template"]
            assert tpl["metadata"]["labels"] == labels
            (c,) = tpl["spec"]["containers"]
            # the profile's cpu and memory, as a notebook of it gets (gpuhub.kube.objects)
            size = {"cpu": "1", "memory": "2Gi"}
            assert c["resources"] == {"requests": size, "limits": {**size, "nvidia.com/gpu": "2"}}
        cm = client.CoreV1Api(k8s_cluster.api).read_namespaced_config_map(
            "gpuhub-job-aa01-script", namespace
        )
        assert cm.data == {"script.py": notebook_to_script(one_cell_notebook(HELLO))}
        assert cm.metadata.owner_references[0].uid == obj["metadata"]["uid"]
        # the group's 4 GPUs are taken by 2 workers × 2: the next job is denied with
        # the notebook explanation
        with pytest.raises(QuotaDenied, match=r"group vision uses 4 of 4 GPUs: Bob\.Smith@x 4"):
            await backend.submit(spec(cfg, "alice", "aa02", workers=1), ["vision"])
        held = backend.quota_ledger().get("job:aa01")
        assert held is not None and held.gpus == 4  # no pod yet (no operator): still held
        assert [j.id for j in await backend.list_jobs("Bob.Smith@x")] == ["aa01"]
        assert await backend.list_jobs("alice") == []
        # the dialog's GPU choices: the real fleet's A100s (16 on the KWOK nodes at least)
        total, free = backend.capacity()["a100"]
        assert total >= 16 and free is not None and 0 < free <= total
        cancelled = await backend.cancel(job)
        assert cancelled.state == "Cancelled"
        assert backend.quota_ledger().get("job:aa01") is None
        # the ledger is live and keyed as the hub keys it: a notebook pod shows up
        core = client.CoreV1Api(k8s_cluster.api)
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {
                    "name": "jupyter-alice",
                    "labels": {"gpuhub.io/gpus": "1", "gpuhub.io/gpu-type": "a100"},
                    "annotations": {"gpuhub.io/user": "alice", "gpuhub.io/group": "vision"},
                },
                "spec": {
                    "containers": [{"name": "notebook", "image": "x"}],
                    "nodeSelector": {"gpuhub.dev/none": "none"},  # stays Pending
                },
            },
        )
        await wait_for(
            lambda: _async(backend.quota_ledger().get(f"pod:{namespace}/jupyter-alice")),
            30,
            "the notebook pod in the jobs service's ledger",
        )
    finally:
        await backend.shutdown()


async def _async(value: Any) -> Any:
    return value


async def test_submit_is_whole_or_nothing(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The script ConfigMap cannot be created (its name is taken): the job is deleted
    again, the error says why, and no GPU stays held."""
    crds_served(k8s_cluster, namespace)
    custom = client.CustomObjectsApi(k8s_cluster.api)
    client.CoreV1Api(k8s_cluster.api).create_namespaced_config_map(
        namespace, {"metadata": {"name": "gpuhub-job-cc01-script"}, "data": {"x": "y"}}
    )
    holder = active(tmp_path)
    cfg = holder.config
    backend = KubeflowJobBackend(
        active=holder,
        data_dir=tmp_path,
        namespace=namespace,
        kubeconfig=str(k8s_cluster.kubeconfig),
    )
    await backend.recover()
    try:
        with pytest.raises(
            JobNotCreated, match="ConfigMap gpuhub-job-cc01-script already exists"
        ) as e:
            await backend.submit(spec(cfg, "alice", "cc01", workers=2), ["vision"])
        assert e.value.status == 409

        async def no_job_left() -> bool:
            # the job is deleted (Foreground: it may still be finishing its deletion)
            items = custom.list_namespaced_custom_object(
                "kubeflow.org", "v1", namespace, "pytorchjobs"
            )["items"]
            return all(i["metadata"].get("deletionTimestamp") for i in items)

        await wait_for(no_job_left, 60, "the half-created job deleted")
        assert backend.quota_ledger().get("job:cc01") is None
        # the group's 4 GPUs are all free again
        job = await backend.submit(spec(cfg, "alice", "cc02", workers=2), ["vision"])
        assert job.id == "cc02"
    finally:
        await backend.shutdown()


async def test_cancel_never_deletes_a_job_that_finished_meanwhile(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The job ends right after cancel read it as running: the delete's resourceVersion
    precondition fails, cancel reports the real final state, and the job and its logs stay."""
    from kubernetes_asyncio import client as aclient

    crds_served(k8s_cluster, namespace)
    custom = client.CustomObjectsApi(k8s_cluster.api)
    holder = active(tmp_path)
    backend = KubeflowJobBackend(
        active=holder,
        data_dir=tmp_path,
        namespace=namespace,
        kubeconfig=str(k8s_cluster.kubeconfig),
    )
    await backend.recover()
    name = "gpuhub-job-dd01"

    def finish() -> None:  # what the training operator writes when the job succeeds
        custom.patch_namespaced_custom_object_status(
            "kubeflow.org",
            "v1",
            namespace,
            "pytorchjobs",
            name,
            {"status": {"conditions": [{"type": "Succeeded", "status": "True", "reason": "X"}]}},
        )

    real_get = aclient.CustomObjectsApi.get_namespaced_custom_object
    reads = []

    async def get_then_finish(self: Any, *args: Any, **kwargs: Any) -> Any:
        obj = await real_get(self, *args, **kwargs)
        reads.append(obj["metadata"]["resourceVersion"])
        if len(reads) == 1:
            await asyncio.to_thread(finish)  # the job ends between cancel's read and delete
        return obj

    try:
        job = await backend.submit(spec(holder.config, "alice", "dd01", workers=1), ["vision"])
        with (
            patch.object(aclient.CustomObjectsApi, "get_namespaced_custom_object", get_then_finish),
            pytest.raises(JobFinished, match=r"already ended \(Succeeded\)"),
        ):
            await backend.cancel(job)
        assert len(reads) == 2 and reads[0] != reads[1]  # decided again on the new state
        obj = custom.get_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "pytorchjobs", name
        )
        assert "deletionTimestamp" not in obj["metadata"]
        assert backend.quota_ledger().get("job:dd01") is None
    finally:
        await backend.shutdown()


# ---- the real training operator --------------------------------------------------------

A100 = "NVIDIA-A100-SXM4-80GB"
JOB_LABEL = "training.kubeflow.org/job-name"

#: The job's script (what the notebook converts to): DDP over gloo on CPU, one step, then
#: it holds its GPUs until the test drops ``release-<job id>`` into the home folder.
DDP_SCRIPT = """\
import os, time
from pathlib import Path
import torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
total = torch.tensor([rank + 1.0])
dist.all_reduce(total)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
torch.manual_seed(rank)
x, y = torch.randn(8, 4), torch.randn(8, 1)
loss = torch.nn.functional.mse_loss(model(x), y)
loss.backward()
torch.optim.SGD(model.parameters(), lr=0.1).step()
print(f"gpuhub-ddp rank={rank} world={world} allreduce={total.item():.0f} "
      f"loss={loss.item():.4f} master={os.environ['MASTER_ADDR']}", flush=True)
release = Path.cwd() / f"release-{os.environ['GPUHUB_JOB_ID']}"
deadline = time.monotonic() + 180
while not release.exists():
    if time.monotonic() > deadline:
        raise SystemExit(f"rank {rank}: {release} never appeared")
    time.sleep(0.2)
dist.barrier()
dist.destroy_process_group()
print(f"gpuhub-ddp rank={rank} done", flush=True)
"""


@pytest.fixture(scope="module")
def job_node(
    k8s_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessNode]:
    """A process node that looks like an A100 node with 2 GPUs.  Its ``PATH`` starts with
    a ``torchrun`` of this Python environment (what the job image would ship).  Stopped
    and its Node deleted after this module, so later tests see the fleet they expect."""
    tools = tmp_path_factory.mktemp("image-bin")
    torchrun = tools / "torchrun"
    torchrun.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m torch.distributed.run "$@"\n')
    torchrun.chmod(0o755)
    name = f"train-proc-{uuid.uuid4().hex[:6]}"
    node = k8s_cluster.add_process_node(
        name,
        gpus=2,
        labels={
            "nvidia.com/gpu.product": A100,
            "nvidia.com/cuda.driver-version.major": "580",
            "nvidia.com/cuda.driver-version.minor": "65",
            "nvidia.com/cuda.driver-version.revision": "06",
            "gpuhub.dev/test-node": name,
        },
        env={"PATH": f"{tools}:{os.environ.get('PATH', '')}"},
    )
    try:
        yield node
    finally:
        node.stop()
        k8s_cluster.core.delete_node(name)


@pytest.fixture
def home_claim(k8s_cluster: Cluster, namespace: str) -> Iterator[str]:
    """``claim-alice``, bound to a static PersistentVolume (the process node maps it to
    a local folder); the PV is deleted afterwards."""
    core = k8s_cluster.core
    pv = f"pv-{namespace}"
    core.create_persistent_volume(
        {
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "hostPath": {"path": f"/tmp/{pv}"},
                "claimRef": {"namespace": namespace, "name": "claim-alice"},
            },
        }
    )
    try:
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "metadata": {"name": "claim-alice"},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        wait_until(
            lambda: (
                core.read_namespaced_persistent_volume_claim("claim-alice", namespace).status.phase
                == "Bound"
            ),
            60,
            "claim-alice Bound",
        )
        yield "claim-alice"
    finally:
        core.delete_persistent_volume(pv)


def admin_pod_template(node: ProcessNode, port: int) -> dict[str, Any]:
    """The admin's job pod template for this cluster: onto the process node (its taint
    tolerated, the node selected) and a free rendezvous port."""
    return {
        "spec": {
            "nodeSelector": {"gpuhub.dev/test-node": node.name},
            "tolerations": [{**PROCESS_NODE_TAINT, "operator": "Equal"}],
            "containers": [{"ports": [{"name": "pytorchjob-port", "containerPort": port}]}],
        }
    }


async def wait_for(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def test_pytorchjob_runs_ddp_on_the_process_node(
    k8s_cluster: Cluster,
    training_operator: TrainingOperator,
    job_node: ProcessNode,
    namespace: str,
    home_claim: str,
    hub_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    assert "pytorchjobs.kubeflow.org" in training_operator.crds
    core = k8s_cluster.core
    custom = client.CustomObjectsApi(k8s_cluster.api)
    holder = active(tmp_path)
    cfg = holder.config
    backend = KubeflowJobBackend(
        active=holder,
        data_dir=tmp_path,
        namespace=namespace,
        kubeconfig=str(hub_kubeconfig),  # the hub's ServiceAccount with the shipped RBAC
        pod_template=admin_pod_template(job_node, free_port()),
        # With the default "Running", the operator deletes the worker pod (and its log)
        # when the master succeeds first while the worker is still reported Running.
        clean_pod_policy="None",
    )
    await backend.recover()
    job_id = uuid.uuid4().hex[:8]
    name = f"gpuhub-job-{job_id}"
    body = {
        "framework": "pytorch",
        "workers": 2,
        "gpus_per_worker": 1,
        "gpu_type": "a100",
        "group": "vision",
        "path": "exp/ddp.ipynb",
    }
    try:
        spec = validate_job(
            cfg,
            "alice",
            ["vision"],
            {**body, "notebook": one_cell_notebook(DDP_SCRIPT)},
            job_id=job_id,
            max_workers=8,
        )
        job = await backend.submit(spec, ["vision"])
        selector = f"{JOB_LABEL}={name}"

        # the operator creates the master and the worker pod, with the gpuhub labels
        def pods() -> list[client.V1Pod]:
            return core.list_namespaced_pod(namespace, label_selector=selector).items

        wait_until(lambda: len(pods()) == 2, 60, f"2 pods of {name}")
        by_name = {p.metadata.name: p for p in pods()}
        assert set(by_name) == {f"{name}-master-0", f"{name}-worker-0"}
        for pod in by_name.values():
            labels = pod.metadata.labels
            assert labels["gpuhub.io/kind"] == "job" and labels["gpuhub.io/job-id"] == job_id
            assert (labels["gpuhub.io/user"], labels["gpuhub.io/group"]) == ("alice", "vision")
            assert labels["gpuhub.io/gpus"] == "1" and labels["gpuhub.io/gpu-type"] == "a100"
            (container,) = pod.spec.containers
            assert container.command[0] == "torchrun"
            limits = {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}
            assert container.resources.limits == limits

        # both run on the process node and find the master: rank lines in their logs
        def running() -> bool:
            current = pods()
            return len(current) == 2 and all(
                p.spec.node_name == job_node.name and p.status.phase == "Running" for p in current
            )

        wait_until(running, 90, f"{name} pods Running on {job_node.name}")
        master_ip = core.read_namespaced_pod(f"{name}-master-0", namespace).status.pod_ip
        worker_pod = core.read_namespaced_pod(f"{name}-worker-0", namespace)
        assert [c.name for c in worker_pod.spec.init_containers] == ["init-pytorch"]

        async def ranks_printed() -> bool:
            lines = [*(await backend.logs(job, 0, 200))[0], *(await backend.logs(job, 1, 200))[0]]
            return all(
                any(f"gpuhub-ddp rank={r} world=2 allreduce=3" in line for line in lines)
                for r in (0, 1)
            )

        try:
            await wait_for(ranks_printed, 300, "both ranks' DDP step")
        except TimeoutError:
            for pod in pods():
                print(pod.metadata.name, job_node.logs(namespace, pod.metadata.name, "pytorch"))
            raise

        # while they run, the pods are what GPUKubeSpawner's quota sees: 2 GPUs of vision
        pod_dicts = [
            k8s_cluster.api.sanitize_for_serialization(p)
            for p in core.list_namespaced_pod(namespace, label_selector="gpuhub.io/gpus").items
        ]
        allocs = [allocation_from_pod(p) for p in pod_dicts]
        assert (
            sorted((a.user, a.group, a.gpus, a.kind, a.pending) for a in allocs if a)
            == [("alice", "vision", 1, "job", False)] * 2
        )
        kube_ledger = KubeLedgerBackend(lambda: cfg)
        kube_ledger.resync(pod_dicts, namespace)
        assert sum(a.gpus for a in kube_ledger.snapshot().usage() if a.group == "vision") == 2
        notebook = SpawnRequest(
            user="bob",
            profile=cfg.profiles[0],
            image=cfg.images["torch"],
            gpu_type="a100",
            gpus=3,
            group="vision",
        )
        with pytest.raises(QuotaDenied, match=r"group vision uses 2 of 4 GPUs: alice 2"):
            kube_ledger.reserve("bob-notebook", notebook, ["vision"])
        # the jobs service's own quota view agrees
        with pytest.raises(QuotaDenied, match=r"group vision uses 2 of 4 GPUs: alice 2"):
            await backend.submit(
                validate_job(
                    cfg,
                    "bob",
                    ["vision"],
                    {**body, "workers": 3, "notebook": one_cell_notebook("print(1)")},
                    job_id="zz01",
                    max_workers=8,
                ),
                ["vision"],
            )

        # release the ranks: the job ends Succeeded and both ranks' logs stay readable
        (job_node.root / "pvcs" / namespace / home_claim / f"release-{job_id}").touch()

        async def finished() -> Any:
            current = await backend.get(job_id)
            return current if current and current.state in ("Succeeded", "Failed") else None

        done = await wait_for(finished, 300, f"{name} finished")
        assert done.state == "Succeeded", done.message
        for worker in (0, 1):
            lines, workers = await backend.logs(done, worker, 200)
            assert workers == 2
            assert any(f"gpuhub-ddp rank={worker} world=2 allreduce=3" in ln for ln in lines), (
                worker,
                lines,
                [(p.metadata.name, p.status.phase) for p in pods()],
            )
            assert f"gpuhub-ddp rank={worker} done" in lines
            # MASTER_ADDR named the master's Service; the process node gave its pod IP
            assert any(f"master={master_ip}" in ln for ln in lines), (master_ip, lines)
        # the job is Succeeded once the master is; the worker's torchrun exits a moment later
        wait_until(
            lambda: [p.status.phase for p in pods()] == ["Succeeded"] * 2,
            30,
            f"both pods of {name} Succeeded",
        )
        kube_ledger.resync(
            [k8s_cluster.api.sanitize_for_serialization(p) for p in pods()], namespace
        )
        assert [a for a in kube_ledger.snapshot().usage() if a.group == "vision"] == []
    finally:
        for plural in ("pytorchjobs",):
            for obj in custom.list_namespaced_custom_object(
                "kubeflow.org", "v1", namespace, plural
            )["items"]:
                custom.delete_namespaced_custom_object(
                    "kubeflow.org",
                    "v1",
                    namespace,
                    plural,
                    obj["metadata"]["name"],
                    propagation_policy="Foreground",
                )
        wait_until(
            lambda: (
                not core.list_namespaced_pod(namespace, label_selector="gpuhub.io/kind=job").items
            ),
            60,
            "job pods deleted",
        )
        await backend.shutdown()


async def test_the_operator_ends_a_job_at_its_time_limit(
    k8s_cluster: Cluster,
    training_operator: TrainingOperator,
    job_node: ProcessNode,
    namespace: str,
    home_claim: str,
    hub_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """A job under ``jobs.time_limit_minutes``: Kubernetes ends it, gpuhub keeps no timer.
    The kubelet (here the process node, as the kubelet does) fails the worker pod at its
    ``activeDeadlineSeconds``; the training operator, reconciling that, marks the job
    Failed at ``runPolicy.activeDeadlineSeconds``.  Its GPU is then free in the quota."""
    core = k8s_cluster.core
    custom = client.CustomObjectsApi(k8s_cluster.api)
    path = tmp_path / "gpuhub.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "jobs": {"time_limit_minutes": 0.5}}))
    holder = ActiveConfig(path)
    backend = KubeflowJobBackend(
        active=holder,
        data_dir=tmp_path,
        namespace=namespace,
        kubeconfig=str(hub_kubeconfig),
        pod_template=admin_pod_template(job_node, free_port()),
    )
    await backend.recover()
    job_id = uuid.uuid4().hex[:8]
    name = f"gpuhub-job-{job_id}"
    try:
        body = {"workers": 1, "gpus_per_worker": 1, "gpu_type": "a100", "group": "vision"}
        spec = validate_job(
            holder.config,
            "alice",
            ["vision"],
            {**body, "notebook": one_cell_notebook("import time\ntime.sleep(3600)")},
            job_id=job_id,
            max_workers=8,
        )
        job = await backend.submit(spec, ["vision"])
        assert job.time_limit_minutes == 0.5
        obj = custom.get_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "pytorchjobs", name
        )
        assert obj["spec"]["runPolicy"]["activeDeadlineSeconds"] == 30
        master = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        assert master["activeDeadlineSeconds"] == 30

        async def failed() -> Any:
            current = await backend.get(job_id)
            return current if current and current.done else None

        done = await wait_for(failed, 300, f"{name} ended by its deadline")
        assert (done.state, done.message) == ("Failed", "time limit (0.5 min) reached")
        assert done.time_limit_minutes == 0.5
        # nothing of it runs or waits any more (the operator deletes or keeps the failed pod)
        pods = core.list_namespaced_pod(namespace, label_selector=f"{JOB_LABEL}={name}").items
        assert all(p.status.phase in ("Failed", "Succeeded") for p in pods), pods
        wait_until(
            lambda: backend.quota_ledger().get(f"job:{job_id}") is None,
            60,
            f"{name} gone from the quota",
        )
    finally:
        for obj in custom.list_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "pytorchjobs"
        )["items"]:
            custom.delete_namespaced_custom_object(
                "kubeflow.org",
                "v1",
                namespace,
                "pytorchjobs",
                obj["metadata"]["name"],
                propagation_policy="Foreground",
            )
        await backend.shutdown()
