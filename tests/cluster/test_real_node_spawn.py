"""GPUKubeSpawner servers from the built single-user image on a real node.

The hub is the shipped one, started the way the Zero to JupyterHub chart starts it
(:mod:`charthub`: ``helm-values/gpuhub.yaml`` + ``gpu-cluster.yaml``, the hub's
ServiceAccount bound by exactly ``helm-values/manifests/rbac.yaml`` and z2jh's hub Role).
Its servers run on a real node (the real kubelet, containerd, runc, a CNI bridge) with one
``nvidia.com/gpu`` from the device-plugin test double and the GFD labels of the shipped
``a100`` type, from images/build.py's ``scipy-cpu`` image.  The servers reach the hub at
the node's bridge address (the hub listens on every interface, as z2jh's
``http://:8081``).  What the test changes in the shipped values, and why, is in
:mod:`realhub`: the profiles shrunk to this 2-CPU machine (0.5 CPU, 1G), the GPU profile
offering the CPU image, user pods pinned to the node, shared-password login.

Storage: this cluster runs no storage provisioner, so each user's home is a static
hostPath PersistentVolume (owned by uid 1000) that binds the claim the hub creates, as a
cluster admin would provide it.

Through the hub's proxy, with each user's token: alice (group ``vision``) starts a one-GPU
server; JupyterLab and VS Code in the browser answer; her kernel runs as uid 1000, sees
exactly the device the kubelet's device manager allocated in ``NVIDIA_VISIBLE_DEVICES``,
and writes a file to her home that lies in the volume's folder and is still there after a
server restart.  bob's
CPU server sees ``NVIDIA_VISIBLE_DEVICES=void`` and none of the node's device IDs.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client
from test_real_node_gpu import _kubelet_devices, running_gpu_node

from charthub import ChartHub, chart_values, user_token
from kernelrun import Kernel
from realhub import (
    CPU_OPTIONS,
    GPU_OPTIONS,
    JOVYAN,
    auth,
    home_volumes,
    import_image,
    overlay,
    remove_pods,
    server_pod,
    start_server,
    stop_server,
)
from testbed import Cluster
from testbed.real_node import RealNode

pytestmark = pytest.mark.cluster

PASSWORD = secrets.token_hex(12)
GROUPS = {"vision": ["alice"], "staff": ["bob"]}
VISIBLE = "NVIDIA_VISIBLE_DEVICES"
MARK = secrets.token_hex(8)
FILE = "gpuhub-real-node.txt"
FACTS = f"""
import json, os, pathlib
home = pathlib.Path.home()
(home / {FILE!r}).write_text({MARK!r})
print(json.dumps({{"uid": os.getuid(), "home": str(home), "env": dict(os.environ)}}))
"""


@pytest.fixture(scope="module")
def node(k8s_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A real node with one simulated GPU; after it stops, nothing it made is left."""
    with running_gpu_node(k8s_cluster, tmp_path_factory.mktemp("spawn-node"), 1) as real:
        yield real


@pytest.fixture
def hub(
    node: RealNode,
    core: client.CoreV1Api,
    namespace: str,
    hub_kubeconfig: Path,
    tmp_path: Path,
) -> Iterator[tuple[ChartHub, dict[str, Path]]]:
    """The shipped hub for ``namespace``, servers on ``node``; the users' home folders."""
    import_image(node, tmp_path)
    values = chart_values(["gpuhub", "gpu-cluster"], overlay(node, PASSWORD, GROUPS))
    chart = ChartHub(
        tmp_path / "hub-pod", values, namespace, hub_kubeconfig, hub_address=node.gateway
    )
    users = sorted(u for members in GROUPS.values() for u in members)
    with home_volumes(core, namespace, users, tmp_path / "volumes") as homes:
        try:
            yield chart.start(), homes
        finally:
            chart.stop()
            remove_pods(core, namespace)
            print(chart.log_since()[-4000:])


def kernel_facts(chart: ChartHub, user: str, token: str) -> dict[str, Any]:
    """uid, home and environment of a new kernel of ``user``'s server (REST + websocket
    through the proxy); the kernel also writes ``MARK`` to ``~/FILE``."""
    kernel = Kernel(chart.url, user, token)
    try:
        result = kernel.run(FACTS)
    finally:
        kernel.close()
    assert result.status == "ok", result
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_gpu_and_cpu_servers_from_the_built_image(
    hub: tuple[ChartHub, dict[str, Path]],
    node: RealNode,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    chart, homes = hub
    alice, bob = (user_token(chart, u, PASSWORD) for u in ("alice", "bob"))
    start_server(chart, "alice", alice, GPU_OPTIONS)
    status = requests.get(f"{chart.url}/user/alice/api/status", headers=auth(alice), timeout=30)
    assert status.status_code == 200 and "started" in status.json(), status.text
    lab = requests.get(f"{chart.url}/user/alice/lab", headers=auth(alice), timeout=30)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    # VS Code in the browser from the same image: jupyter-vscode-proxy starts code-server in
    # the pod on its Unix socket (code-server's redirects followed, as a browser does)
    vscode = requests.get(f"{chart.url}/user/alice/vscode/", headers=auth(alice), timeout=300)
    assert vscode.status_code == 200 and "vscode-workbench" in vscode.text, vscode.text[:300]
    pod = server_pod(core, namespace, "alice")
    assert pod.spec.node_name == node.name
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    allocated = _kubelet_devices(node, pod.metadata.uid)
    assert len(allocated) == 1 and allocated[0] in node.gpu_ids
    assert allocated in node.gpu_allocations()

    facts = kernel_facts(chart, "alice", alice)
    assert facts["uid"] == JOVYAN[0]
    assert facts["env"][VISIBLE] == allocated[0]
    # the server reached the hub at the node's bridge address
    assert facts["env"]["JUPYTERHUB_API_URL"].startswith(f"http://{node.gateway}:")
    written = homes["alice"] / FILE
    assert written.read_text() == MARK and written.stat().st_uid == JOVYAN[0]

    # the home outlives the server: a new pod mounts the same volume
    stop_server(chart, core, namespace, "alice", alice)
    start_server(chart, "alice", alice, GPU_OPTIONS)
    r = requests.get(f"{chart.url}/user/alice/api/contents/{FILE}", headers=auth(alice), timeout=30)
    assert r.status_code == 200 and r.json()["content"] == MARK, r.text

    start_server(chart, "bob", bob, CPU_OPTIONS)
    cpu = server_pod(core, namespace, "bob")
    assert cpu.spec.node_name == node.name
    assert _kubelet_devices(node, cpu.metadata.uid) == []
    facts = kernel_facts(chart, "bob", bob)
    assert facts["uid"] == JOVYAN[0]
    assert facts["env"][VISIBLE] == "void"
    assert not any(gpu in value for value in facts["env"].values() for gpu in node.gpu_ids)
    assert (homes["bob"] / FILE).read_text() == MARK
