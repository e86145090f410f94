"""gpuhub as shipped: the hub with its jobs and monitor services started from
``helm-values/gpuhub.yaml`` + ``gpu-cluster.yaml`` through z2jh's own
``jupyterhub_config.py`` (:mod:`charthub`), with the hub's ServiceAccount bound by exactly
``helm-values/manifests/rbac.yaml`` and z2jh's hub Role, against the test cluster with the
real Kubeflow training operator.

A user of group ``vision`` spawns a one-H100 server (real ``jupyterhub-singleuser`` on a
process node); from that server, through the lab extension's server side (which calls the
server's ``$GPUHUB_JOBS_URL`` with its ``$JUPYTERHUB_API_TOKEN``), she reads the job dialog's
options and submits her notebook as a PyTorchJob, which the operator runs to Succeeded.

Differences from a chart install (nothing else is set that the chart does not set):

- The test overlay (:data:`TEST_OVERLAY`) and the environment: see
  :data:`charthub.DIFFERENCES` (addresses, kubeconfig instead of mounted token files,
  commands from ``PATH``, shared-password login with the provider's groups as
  ``load_groups``, the server's container command, the idle culler off).
- The cluster: two process nodes labelled as H100 nodes with driver 580.65.06 and the GPU
  Operator's taint ``nvidia.com/gpu``; only they can run the CUDA 13.0 image the test picks
  (the KWOK fleet's H100 node has driver 570).  Its ``PATH`` has a ``torchrun`` of the
  test's Python (what the job image ships).  ``claim-alice`` binds to a static PV (the
  cluster's storage; no provisioner here).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client
from kubernetes.client.rest import ApiException

from charthub import ChartHub, chart_values, static_home_volume
from testbed import Cluster, ProcessNode, hub_rbac_objects
from testbed.apply import delete
from testbed.ports import wait_until
from testbed.rbac import hub_kubeconfig
from testbed.training_operator import TrainingOperator

pytestmark = pytest.mark.cluster

H100 = "NVIDIA-H100-80GB-HBM3"  # gpu_types.h100.node_label of the shipped gpuhub YAML
IMAGE = "pytorch-2.11-cu130"  # needs driver >= 580.65.06 (images/matrix.yaml)
PASSWORD = secrets.token_hex(12)
TEST_OVERLAY: dict[str, Any] = {
    "hub": {
        "config": {
            "JupyterHub": {
                "authenticator_class": "shared-password",
                # the identity provider's groups (oidc-keycloak.yaml maps them at login)
                "load_groups": {"vision": {"users": ["alice"]}},
            },
            "SharedPasswordAuthenticator": {"user_password": PASSWORD},
            "Authenticator": {"allowed_users": ["alice"]},
            "KubeSpawner": {
                # no image entrypoint: the process node runs the command from PATH
                "extra_container_config": {"command": ["/usr/bin/env"]},
                "args": ["--ip=$(POD_IP)", "--allow-root"],
            },
        }
    },
    "cull": {"enabled": False},
}
NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "c1",
            "metadata": {},
            "outputs": [],
            "source": "import os\nprint('gpuhub-shipped rank', os.environ.get('RANK'), flush=True)",
        }
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def story(hub: ChartHub, n: int = 80) -> str:
    """The hub's log (its services' included) without the test's own polling requests."""
    lines = [ln for ln in hub.log_since().splitlines() if " 200 GET /hub/api/" not in ln]
    return "\n".join(lines[-n:])


@pytest.fixture(scope="module")
def release_namespace(k8s_cluster: Cluster) -> Iterator[str]:
    core = k8s_cluster.core
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"gpuhub.dev/test": "shipped"}}})
    wait_until(lambda: bool(core.read_namespaced_service_account("default", name)), 60, name)
    try:
        yield name
    finally:
        if os.environ.get("GPUHUB_KEEP_NAMESPACE") != "1":
            try:
                core.delete_namespace(name)
            except ApiException as error:
                if error.status != 404:
                    raise


@pytest.fixture(scope="module")
def shipped_kubeconfig(
    k8s_cluster: Cluster, release_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """ServiceAccount ``hub`` of the release namespace with z2jh's hub Role and exactly
    helm-values/manifests/rbac.yaml (namespace substituted), as a kubeconfig."""
    path = hub_kubeconfig(
        k8s_cluster.api,
        k8s_cluster.server,
        k8s_cluster.ca_file,
        release_namespace,
        tmp_path_factory.mktemp("sa") / "hub.kubeconfig",
    )
    try:
        yield path
    finally:
        objs = hub_rbac_objects(release_namespace)
        delete(k8s_cluster.api, [o for o in objs if o["kind"] == "ClusterRoleBinding"])


@pytest.fixture(scope="module")
def h100_nodes(
    k8s_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ProcessNode]]:
    """Two H100 nodes (2 GPUs, driver 580.65.06, tainted like GPU Operator nodes): one for
    the server, one for the job worker (each pod asks for 64 GB of a node's 64 GiB)."""
    tools = tmp_path_factory.mktemp("image-bin")
    torchrun = tools / "torchrun"
    torchrun.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m torch.distributed.run "$@"\n')
    torchrun.chmod(0o755)
    nodes: list[ProcessNode] = []
    try:
        for _ in range(2):
            nodes.append(
                k8s_cluster.add_process_node(
                    f"h100-proc-{uuid.uuid4().hex[:6]}",
                    gpus=2,
                    labels={
                        "nvidia.com/gpu.product": H100,
                        "nvidia.com/gpu.present": "true",
                        "nvidia.com/cuda.driver-version.major": "580",
                        "nvidia.com/cuda.driver-version.minor": "65",
                        "nvidia.com/cuda.driver-version.revision": "06",
                    },
                    taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
                    env={"PATH": f"{tools}:{os.environ.get('PATH', '')}"},
                )
            )
        yield nodes
    finally:
        for node in nodes:
            node.stop()
            k8s_cluster.core.delete_node(node.name)


@pytest.fixture(scope="module")
def home_volume(k8s_cluster: Cluster, release_namespace: str) -> Iterator[str]:
    """A static PV that binds ``claim-alice`` when the hub creates it (chart storage:
    dynamic, ``claim-{user_server}``, 50Gi, ReadWriteOnce, the default class)."""
    name = f"pv-{release_namespace}"
    k8s_cluster.core.create_persistent_volume(
        static_home_volume(name, release_namespace, "claim-alice", f"/tmp/{name}")
    )
    try:
        yield "claim-alice"
    finally:
        k8s_cluster.core.delete_persistent_volume(name)


@pytest.fixture(scope="module")
def shipped_hub(
    k8s_cluster: Cluster,
    training_operator: TrainingOperator,
    release_namespace: str,
    shipped_kubeconfig: Path,
    h100_nodes: list[ProcessNode],
    home_volume: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChartHub]:
    values = chart_values(["gpuhub", "gpu-cluster"], TEST_OVERLAY)
    hub = ChartHub(
        tmp_path_factory.mktemp("hub-pod"), values, release_namespace, shipped_kubeconfig
    )
    try:
        yield hub.start()
    finally:
        hub.stop()
        print(story(hub, 200))
        custom = client.CustomObjectsApi(k8s_cluster.api)
        for obj in custom.list_namespaced_custom_object(
            "kubeflow.org", "v1", release_namespace, "pytorchjobs"
        )["items"]:
            custom.delete_namespaced_custom_object(
                "kubeflow.org", "v1", release_namespace, "pytorchjobs", obj["metadata"]["name"]
            )
        for pod in k8s_cluster.core.list_namespaced_pod(release_namespace).items:
            try:
                k8s_cluster.core.delete_namespaced_pod(
                    pod.metadata.name, release_namespace, grace_period_seconds=0
                )
            except ApiException as e:  # gone meanwhile with its deleted job
                if e.status != 404:
                    raise


@pytest.fixture(scope="module")
def alice_server(shipped_hub: ChartHub) -> dict[str, Any]:
    """alice's token and her running one-H100 server (``url``: its public URL)."""
    hub = shipped_hub
    r = requests.post(
        f"{hub.api}/users/alice/tokens",
        json={"auth": {"username": "alice", "password": PASSWORD}, "note": "test"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    token = r.json()["token"]
    r = requests.post(
        f"{hub.api}/users/alice/server",
        json={"profile": "gpu", "gpus": 1, "gpu_type": "h100", "image": IMAGE},
        headers=auth(token),
        timeout=120,
    )
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + 300
    server: dict[str, Any] = {}
    while time.monotonic() < deadline and not server.get("ready"):
        user = requests.get(f"{hub.api}/users/alice", headers=auth(token), timeout=10).json()
        server = user["servers"].get("", {})
        if not server:
            break  # the spawn failed
        time.sleep(0.5)
    assert server.get("ready"), f"{json.dumps(server)}\n{story(hub)}"
    return {"token": token, "url": hub.url + server["url"]}


def server_pod(k8s_cluster: Cluster, namespace: str) -> Any:
    (pod,) = [
        p
        for p in k8s_cluster.core.list_namespaced_pod(namespace).items
        if (p.metadata.annotations or {}).get("hub.jupyter.org/username") == "alice"
    ]
    return pod


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_server_gets_the_jobs_url_of_the_shipped_service(
    shipped_hub: ChartHub,
    alice_server: dict[str, Any],
    k8s_cluster: Cluster,
    release_namespace: str,
    h100_nodes: list[ProcessNode],
):
    pod = server_pod(k8s_cluster, release_namespace)
    (node,) = [n for n in h100_nodes if n.name == pod.spec.node_name]
    (pid,) = node.pids(release_namespace, pod.metadata.name).values()
    env = process_env(pid)
    # the chart's service url (hub:8011, here its loopback stand-in) + the service prefix
    assert env["GPUHUB_JOBS_URL"] == (
        f"http://127.0.0.1:{shipped_hub.jobs_port}/services/gpuhub-jobs/"
    )
    assert env["JUPYTERHUB_API_TOKEN"]
    # exactly what the lab extension sends: the server's own token
    r = requests.get(
        env["GPUHUB_JOBS_URL"] + "api/options",
        headers=auth(env["JUPYTERHUB_API_TOKEN"]),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert "pytorch" in r.json()["frameworks"]


def test_notebook_runs_as_a_pytorchjob_from_the_server(
    shipped_hub: ChartHub,
    alice_server: dict[str, Any],
    k8s_cluster: Cluster,
    release_namespace: str,
    h100_nodes: list[ProcessNode],
):
    token, base = alice_server["token"], alice_server["url"]
    r = requests.put(
        f"{base}api/contents/train.ipynb",
        headers=auth(token),
        timeout=30,
        json={"type": "notebook", "format": "json", "content": NOTEBOOK},
    )
    assert r.status_code in (200, 201), r.text
    ext = f"{base}gpuhub"
    r = requests.post(
        f"{ext}/jobs",
        headers=auth(token),
        timeout=60,
        json={
            "path": "train.ipynb",
            "framework": "pytorch",
            "workers": 1,
            "gpus_per_worker": 1,
            "gpu_type": "h100",
            "group": "vision",
            "image": IMAGE,
        },
    )
    assert r.status_code == 201, f"{r.text}\n{story(shipped_hub)}"
    job = r.json()
    # the Kubeflow backend, in the release namespace, with the shipped pod template
    custom = client.CustomObjectsApi(k8s_cluster.api)
    (obj,) = custom.list_namespaced_custom_object(
        "kubeflow.org", "v1", release_namespace, "pytorchjobs"
    )["items"]
    spec = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {"runAsUser": 1000, "fsGroup": 100}
    deadline = time.monotonic() + 240
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = requests.get(f"{ext}/jobs/{job['id']}", headers=auth(token), timeout=30).json()
        if state.get("state") in ("Succeeded", "Failed", "Cancelled"):
            break
        time.sleep(1)
    assert state.get("state") == "Succeeded", f"{json.dumps(state)}\n{story(shipped_hub)}"
    r = requests.get(
        f"{ext}/jobs/{job['id']}/logs",
        params={"worker": 0, "tail": 50},
        headers=auth(token),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert any("gpuhub-shipped rank 0" in line for line in r.json()["lines"]), r.json()
    pods = k8s_cluster.core.list_namespaced_pod(
        release_namespace,
        label_selector=f"training.kubeflow.org/job-name={obj['metadata']['name']}",
    ).items
    assert {p.spec.node_name for p in pods} <= {n.name for n in h100_nodes}


def test_job_dialog_shows_the_clusters_free_gpus(alice_server: dict[str, Any]):
    token, base = alice_server["token"], alice_server["url"]
    r = requests.get(f"{base}gpuhub/options", headers=auth(token), timeout=30)
    assert r.status_code == 200, r.text
    types = {t["slug"]: t for t in r.json()["gpu_types"]}
    # 2 H100 nodes × 2 GPUs (the KWOK fleet's H100 node may add 4 more); alice's server
    # holds one of them
    assert types["h100"]["total"] in (4, 8)
    assert types["h100"]["free"] == types["h100"]["total"] - 1


def test_shipped_monitor_sees_the_gpu_server_from_its_pod(
    shipped_hub: ChartHub,
    alice_server: dict[str, Any],
    k8s_cluster: Cluster,
    release_namespace: str,
    h100_nodes: list[ProcessNode],
):
    """``gpuhub-monitor`` as shipped (its command, config file and role, the hub's account):
    alice's server holds one H100, read from its pod, and the server's own token may ask
    (the lab's server side).  Nothing measures utilisation here (no Prometheus is named in
    the shipped YAML)."""
    pod = server_pod(k8s_cluster, release_namespace)
    (node,) = [n for n in h100_nodes if n.name == pod.spec.node_name]
    (pid,) = node.pids(release_namespace, pod.metadata.name).values()
    server_token = process_env(pid)["JUPYTERHUB_API_TOKEN"]
    base = f"{shipped_hub.url}/services/gpuhub-monitor"

    def mine() -> dict[str, Any] | None:
        r = requests.get(f"{base}/api/servers", headers=auth(server_token), timeout=30)
        if r.status_code == 404:  # the proxy route: added once the service runs
            return None
        assert r.status_code == 200, r.text
        return next((s for s in r.json()["servers"] if s["server"] == ""), None)

    deadline = time.monotonic() + 120
    seen = mine()
    while seen is None and time.monotonic() < deadline:
        time.sleep(0.5)
        seen = mine()
    assert seen is not None, story(shipped_hub)
    assert (seen["gpus"], seen["gpu_type"], seen["group"]) == (1, "h100", "vision")
    assert seen["utilization"] is None and seen["warning"] is None
    assert (shipped_hub.workdir / "gpuhub-monitor" / "state" / "usage.sqlite").is_file()
