"""GPUKubeSpawner against the real test cluster: a real hub spawns pods that the real
scheduler places and the process node runs; quotas come from the watch cache."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gpuhub.config import parse_config
from gpuhub.kube.messages import explain_failed_scheduling
from gpuhub.kube.objects import pod_overrides
from gpuhub.profiles import validate_options
from kubehub import Hub, auth, cluster_hub
from testbed import Cluster, ProcessNode

pytestmark = pytest.mark.cluster
A100 = "NVIDIA-A100-SXM4-80GB"

CONFIG: dict[str, Any] = {
    "gpu_types": {
        "a100": {"display_name": "A100", "node_label": A100},
        "h100": {"display_name": "H100", "node_label": "NVIDIA-H100-80GB-HBM3"},
    },
    "images": {
        "python": {"display_name": "Python", "image": "ghcr.io/gpuhub/scipy:1"},
        "torch": {
            "display_name": "PyTorch (CUDA 12.8)",
            "image": "ghcr.io/gpuhub/pytorch:cu128",
            "framework": "pytorch",
            "cuda": "12.8",
            "min_driver": "525.60.13",
        },
        "torch13": {
            "display_name": "PyTorch (CUDA 13.0)",
            "image": "ghcr.io/gpuhub/pytorch:cu130",
            "framework": "pytorch",
            "cuda": "13.0",
            "min_driver": "580.65.06",
        },
    },
    "profiles": [
        {
            "slug": "cpu",
            "display_name": "CPU only",
            "images": ["python"],
            "default": True,
            "memory": "1G",
        },
        {
            "slug": "gpu",
            "display_name": "GPU",
            "images": ["torch", "torch13"],
            "memory": "1G",
            "groups": ["vision"],
            "gpu": {"types": ["a100", "h100"], "counts": [1, 2]},
        },
    ],
    "quotas": {"groups": {"vision": {"gpus": 2}}},
    "groups": {"vision": ["alice", "bob", "carol"]},
    "auth": {"admin_users": ["admin"]},
}


@pytest.fixture(scope="module")
def gpu_node(k8s_cluster: Cluster) -> ProcessNode:
    """A process node that looks like an A100 node with driver 580.65.06 (GFD labels)."""
    name = f"gpu-proc-{uuid.uuid4().hex[:6]}"
    return k8s_cluster.add_process_node(
        name,
        gpus=4,
        labels={
            "nvidia.com/gpu.product": A100,
            "nvidia.com/cuda.driver-version.major": "580",
            "nvidia.com/cuda.driver-version.minor": "65",
            "nvidia.com/cuda.driver-version.revision": "06",
            "gpuhub.dev/test-node": name,
        },
    )


@pytest.fixture
def kube_hub(
    k8s_cluster: Cluster,
    namespace: str,
    hub_kubeconfig: Path,
    gpu_node: ProcessNode,
    tmp_path: Path,
) -> Iterator[Hub]:
    hub = cluster_hub(tmp_path / "hub", CONFIG, hub_kubeconfig, namespace, gpu_node.name)
    try:
        yield hub.start()
    finally:
        hub.stop()
        # servers are pods: make sure none is left running on the process node
        for pod in k8s_cluster.core.list_namespaced_pod(namespace).items:
            k8s_cluster.core.delete_namespaced_pod(
                pod.metadata.name, namespace, grace_period_seconds=0
            )


def spawn(hub: Hub, user: str, token: str, options: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{hub.api}/users/{user}/server", json=options, headers=auth(token), timeout=120
    )


def pod_of(k8s_cluster: Cluster, namespace: str, user: str) -> Any:
    pods = [
        p
        for p in k8s_cluster.core.list_namespaced_pod(namespace).items
        if (p.metadata.annotations or {}).get("hub.jupyter.org/username") == user
    ]
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return pods[0]


def form_data(hub: Hub, user: str) -> dict[str, Any]:
    """The availability the hub itself computes (from its watch cache) for the form."""
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=10)
    s.post(
        f"{hub.url}/hub/login",
        timeout=10,
        data={"username": user, "password": hub.password, "_xsrf": s.cookies.get("_xsrf", "")},
    )
    page = s.get(f"{hub.url}/hub/spawn", timeout=30).content.decode()
    m = re.search(r'<script id="gh-data" type="application/json">(.*?)</script>', page, re.S)
    assert m, page[-2000:]
    return dict(json.loads(m.group(1)))


def group_left(data: dict[str, Any], profile: str = "gpu", gpu_type: str = "a100") -> int:
    p = next(p for p in data["profiles"] if p["slug"] == profile)
    t = next(t for t in p["gpu_types"] if t["slug"] == gpu_type)
    return int(t["groups"][0]["left"])


def test_spawn_to_jupyterlab_on_the_process_node(
    kube_hub: Hub, k8s_cluster: Cluster, namespace: str, gpu_node: ProcessNode
):
    alice, bob = kube_hub.token("alice"), kube_hub.token("bob")
    r = spawn(kube_hub, "alice", alice, {"profile": "gpu", "gpus": 1, "image": "torch13"})
    assert r.status_code in (201, 202), r.text
    server = kube_hub.wait_ready("alice", alice, timeout=120)
    lab = requests.get(kube_hub.url + server["url"] + "lab", headers=auth(alice), timeout=30)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    pod = pod_of(k8s_cluster, namespace, "alice")
    assert pod.spec.node_name == gpu_node.name
    c = pod.spec.containers[0]
    assert c.resources.limits["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" in c.resources.requests  # the apiserver defaulted it
    assert any(t.key == "nvidia.com/gpu" for t in pod.spec.tolerations)
    assert pod.metadata.labels["gpuhub.io/gpus"] == "1"
    assert pod.metadata.labels["gpuhub.io/group"] == "vision"
    assert {v.name for v in pod.spec.volumes} >= {"dshm"}
    # the CPU profile's pod has no GPU and cannot see the node's GPUs
    assert spawn(kube_hub, "bob", bob, {"profile": "cpu"}).status_code in (201, 202)
    kube_hub.wait_ready("bob", bob, timeout=120)
    cpu = pod_of(k8s_cluster, namespace, "bob").spec.containers[0]
    assert "nvidia.com/gpu" not in (cpu.resources.limits or {})
    assert {e.name: e.value for e in cpu.env}["NVIDIA_VISIBLE_DEVICES"] == "void"
    # the hub's quota view comes from the watch cache: 1 of 2 left for vision
    assert group_left(form_data(kube_hub, "carol")) == 1
    r = spawn(kube_hub, "carol", kube_hub.token("carol"), {"profile": "gpu", "gpus": 2})
    assert r.status_code == 403
    assert "group vision uses 1 of 2 GPUs: alice 1 (since" in r.json()["message"]


def test_restart_rebuilds_ledger_from_cluster(kube_hub: Hub, k8s_cluster: Cluster, namespace: str):
    alice = kube_hub.token("alice")
    assert spawn(kube_hub, "alice", alice, {"profile": "gpu", "gpus": 2}).status_code in (201, 202)
    kube_hub.wait_ready("alice", alice, timeout=120)
    kube_hub.kill9()
    kube_hub.start()
    # after the restart the hub knows alice's 2 GPUs from the cluster, counted once
    assert group_left(form_data(kube_hub, "bob")) == 0
    r = spawn(kube_hub, "bob", kube_hub.token("bob"), {"profile": "gpu"})
    assert r.status_code == 403 and "alice 2" in r.json()["message"]
    assert kube_hub.wait_ready("alice", alice, timeout=60)
    kube_hub.stop_server("alice", alice, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and group_left(form_data(kube_hub, "bob")) != 2:
        time.sleep(0.5)
    assert group_left(form_data(kube_hub, "bob")) == 2


def _gpu_pod(config: Any, image: str, name: str) -> dict[str, Any]:
    """A pod with exactly the GPU placement GPUKubeSpawner gives a notebook."""
    req = validate_options(config, "alice", ["vision"], {"profile": "gpu", "image": image})
    o = pod_overrides(config, req, None)
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "image": o["image"],
                    "resources": {"limits": o["extra_resource_limits"]},
                }
            ],
            "tolerations": o["tolerations"],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": o["node_affinity_required"]
                    }
                }
            },
        },
    }


def _wait_scheduled(core: Any, namespace: str, name: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.spec.node_name:
            return pod
        time.sleep(0.3)
    return core.read_namespaced_pod(name, namespace)


def test_cuda13_images_only_land_on_drivers_from_580(
    k8s_cluster: Cluster, kwok_fleet: Any, namespace: str
):
    """The real scheduler, the fleet's A100 nodes at drivers 535 and 580 (deprecated and
    current GFD labels), and the node affinity gpuhub writes."""
    core = k8s_cluster.core
    config = parse_config(CONFIG)
    nodes = {n.metadata.name: n.metadata.labels for n in core.list_node().items}

    def driver_major(node: str) -> int:
        labels = nodes[node]
        return int(
            labels.get("nvidia.com/cuda.driver-version.major")
            or labels["nvidia.com/cuda.driver.major"]
        )

    a100 = [
        n
        for n, labels in nodes.items()
        if labels.get("nvidia.com/gpu.product") == A100 and not labels.get("gpuhub.dev/test-node")
    ]
    assert {driver_major(n) >= 580 for n in a100} == {True, False}, "fleet needs both drivers"
    placed = []
    for i in range(3):
        core.create_namespaced_pod(namespace, _gpu_pod(config, "torch13", f"cu13-{i}"))
        placed.append(_wait_scheduled(core, namespace, f"cu13-{i}"))
    for pod in placed:
        if pod.spec.node_name:
            assert driver_major(pod.spec.node_name) >= 580, pod.spec.node_name
    # a CUDA 12.8 image may use the old-driver node too
    core.create_namespaced_pod(namespace, _gpu_pod(config, "torch", "cu12"))
    assert _wait_scheduled(core, namespace, "cu12").spec.node_name
    # fill every node with a new driver: the next CUDA 13 pod stays Pending, and the
    # scheduler's reason reads as a sentence
    new = [
        n
        for n in nodes
        if nodes[n].get("nvidia.com/gpu.product") == A100 and driver_major(n) >= 580
    ]
    big = _gpu_pod(config, "torch13", "cu13-too-big")
    big["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "64"
    core.create_namespaced_pod(namespace, big)
    deadline = time.monotonic() + 60
    message = ""
    while time.monotonic() < deadline and not message:
        events = core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=cu13-too-big"
        ).items
        message = next((e.message for e in events if e.reason == "FailedScheduling"), "")
        time.sleep(0.5)
    assert message, "no FailedScheduling event"
    assert core.read_namespaced_pod("cu13-too-big", namespace).status.phase == "Pending"
    text = explain_failed_scheduling(message, "A100")
    assert text.startswith("No node can take an A100 right now"), (message, text)
    assert "driver too old" in text or "no free GPU" in text, text
    assert new  # the fleet has new-driver A100 nodes the pod was considered for


def hub_exit_log(hub: Hub) -> str:
    """Start ``hub`` expecting it to stop by itself at start; its log."""
    with contextlib.suppress(RuntimeError):  # exited before or after answering
        hub.start()
    assert hub.proc is not None
    assert hub.proc.wait(timeout=90) != 0
    return hub.log_tail(200)


def missing_grants(log: str) -> str:
    """What the hub's stop message says its account may not do."""
    line = next(x for x in log.splitlines() if " may not " in x)
    return line.split(" may not ", 1)[1].split(". GPUKubeSpawner", 1)[0]


def test_without_gpuhub_rbac_the_hub_stops_at_start_naming_the_grant(
    k8s_cluster: Cluster, namespace: str, gpu_node: ProcessNode, tmp_path: Path
):
    """With only Zero to JupyterHub's own hub Role (no gpuhub ClusterRoles), the hub stops
    at start with the missing permission and the file that grants it."""
    from testbed.apply import apply, load_yaml
    from testbed.kubeconfig import write_kubeconfig
    from testbed.rbac import HUB_RBAC, _retarget, service_account_token

    apply(k8s_cluster.api, [_retarget(d, namespace) for d in load_yaml(HUB_RBAC)])
    token = service_account_token(k8s_cluster.api, namespace)
    kubeconfig = write_kubeconfig(
        tmp_path / "z2jh-only.kubeconfig",
        k8s_cluster.server,
        k8s_cluster.ca_file,
        token,
        "z2jh-hub",
    )
    hub = cluster_hub(tmp_path / "hub", CONFIG, kubeconfig, namespace, gpu_node.name)
    try:
        log = hub_exit_log(hub)
        assert missing_grants(log) == "list nodes cluster-wide; watch nodes cluster-wide", log
        assert f"system:serviceaccount:{namespace}:hub" in log
        assert "helm-values/manifests/rbac.yaml grants that" in log
        assert "pods in namespace" not in log  # the z2jh Role does grant the pods
    finally:
        hub.stop()


def test_a_watch_scope_outside_the_shipped_rbac_stops_the_hub_at_start(
    k8s_cluster: Cluster,
    namespace: str,
    hub_kubeconfig: Path,
    gpu_node: ProcessNode,
    tmp_path: Path,
):
    """The shipped rbac.yaml (bound in the hub's namespace only) and a watch scope that
    adds another namespace: the hub stops at start naming verb, resource, namespace and
    the file; no spawn is ever tried."""
    other = f"other-{uuid.uuid4().hex[:6]}"
    hub = cluster_hub(
        tmp_path / "hub",
        CONFIG,
        hub_kubeconfig,
        namespace,
        gpu_node.name,
        GPUHUB_WATCH_NAMESPACES=json.dumps([namespace, other]),
    )
    try:
        log = hub_exit_log(hub)
        assert f"may not list pods in namespace {other}; watch pods in namespace {other}." in log
        assert (
            f"pods in namespace {namespace}" not in log
            and "nodes" not in log.split("may not")[1].split(".")[0]
        )
        assert "helm-values/manifests/rbac.yaml" in log
    finally:
        hub.stop()


def test_unschedulable_spawn_explains_then_gives_up_and_releases(
    k8s_cluster: Cluster,
    namespace: str,
    hub_kubeconfig: Path,
    gpu_node: ProcessNode,
    tmp_path: Path,
):
    """An H100 request when no H100 node exists: progress says why, the spawn fails after
    gpu_wait_timeout with that reason, the pod is gone and the quota is released."""
    hub = cluster_hub(
        tmp_path / "hub",
        CONFIG,
        hub_kubeconfig,
        namespace,
        gpu_node.name,
        GPUHUB_GPU_WAIT_TIMEOUT="12",
    )
    hub.start()
    try:
        alice = hub.token("alice")
        r = spawn(hub, "alice", alice, {"profile": "gpu", "gpu_type": "h100"})
        assert r.status_code == 202, r.text  # slow: the hub keeps waiting
        # the reservation holds while the pod is Pending
        assert group_left(form_data(hub, "bob")) == 1
        events = []
        with requests.get(
            f"{hub.api}/users/alice/server/progress", headers=auth(alice), stream=True, timeout=60
        ) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1].get("failed") or events[-1].get("ready"):
                        break
        messages = [e.get("message", "") for e in events]
        assert any("the cluster has no schedulable H100 node right now" in m for m in messages), (
            messages
        )
        assert any("No node can take an H100 right now" in m for m in messages), messages
        final = events[-1]
        assert final.get("failed"), final
        assert "Gave up after 12s" in final["message"], final
        assert "GPU quota released" in final["message"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and k8s_cluster.core.list_namespaced_pod(namespace).items:
            time.sleep(0.5)
        assert not k8s_cluster.core.list_namespaced_pod(namespace).items
        assert group_left(form_data(hub, "bob")) == 2
    finally:
        hub.stop()
