"""GPU pods on a real node: ``nvidia.com/gpu`` from the device plugin test double
(testbed/real_node.py, go/gpu-device-plugin), registered with the real kubelet's device
manager; the node carries GPU Feature Discovery labels for the shipped ``a100`` type.

The pods are what gpuhub's pod builder makes for alice (group ``vision``) from the shipped
gpuhub YAML and pod template, as in test_real_node.py: the ``gpu`` profile with one A100
and the default CPU profile.  The real scheduler places them (the builder's node affinity
must match the node's labels, its GPU limit must fit the plugin's devices); the kubelet
allocates the devices and puts the plugin's ``NVIDIA_VISIBLE_DEVICES`` into the container.
The containers run the node's pause binary, tagged under the image references the
builder puts into the pods (the images' contents are not under test here; the CPU image
runs in test_real_node.py), and their environment is read from ``/proc/<pid>/environ``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from test_real_node import _shipped_values, running_real_node
from traitlets.config.loader import PyFileConfigLoader

from gpuhub.config import parse_config
from gpuhub.kube.objects import PodRequest, merge_into_template, pod_parts
from gpuhub.profiles import validate_options
from testbed import Cluster
from testbed.ports import wait_until
from testbed.real_node import REAL_NODE_LABEL, RealNode
from testbed.real_node_files import DEVICE_PLUGIN_DIR, SANDBOX_IMAGE

pytestmark = pytest.mark.cluster

GPUS = 2
GPU_TYPE = "a100"
GPU_IMAGE = "pytorch-2.11-cu128"
CPU_IMAGE = "scipy-cpu"
VISIBLE = "NVIDIA_VISIBLE_DEVICES"


def _config_data() -> dict[str, Any]:
    """The shipped gpuhub YAML, its profiles sized down to fit this machine's CPUs and
    memory (the real node's capacity is the machine's)."""
    hub = _shipped_values()["hub"]["extraFiles"]
    data: dict[str, Any] = yaml.safe_load(hub["gpuhub-yaml"]["stringData"])
    # the hub image ships images/matrix.yaml at that path (images/hub/Dockerfile)
    data["image_matrix"] = str(Path(__file__).resolve().parents[2] / "images" / "matrix.yaml")
    for profile in data["profiles"]:
        profile.update(cpu=0.1, memory="128M")
    return data


@contextlib.contextmanager
def running_gpu_node(cluster: Cluster, workdir: Path, gpus: int) -> Iterator[RealNode]:
    """A real node with ``gpus`` devices, labelled for the shipped ``a100`` type; after it
    stops, nothing it made is left."""
    plugin_dir_existed = DEVICE_PLUGIN_DIR.parent.exists()
    product = _config_data()["gpu_types"][GPU_TYPE]["node_label"]
    with running_real_node(cluster, workdir, gpus=gpus, gpu_product=product) as node:
        yield node
    assert node.device_plugin is not None and not node.device_plugin.running()
    assert DEVICE_PLUGIN_DIR.parent.exists() == plugin_dir_existed


@pytest.fixture(scope="module")
def gpu_node(k8s_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A real node with ``GPUS`` devices (:func:`running_gpu_node`)."""
    with running_gpu_node(k8s_cluster, tmp_path_factory.mktemp("real-gpu-node"), GPUS) as node:
        yield node


def _pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node: RealNode, name: str, raw: dict[str, Any]
) -> dict[str, Any]:
    """gpuhub's pod for alice's ``raw`` options, pinned to ``node``, running pause."""
    hub = _shipped_values()["hub"]["extraFiles"]
    config = parse_config(_config_data())
    request = validate_options(config, "alice", ["vision"], raw)
    (tmp_path / "jobs_config.py").write_text(hub["gpuhub-jobs-config"]["stringData"])
    monkeypatch.setenv("POD_NAMESPACE", "unused")
    jobs = PyFileConfigLoader("jobs_config.py", path=str(tmp_path)).load_config()
    template = merge_into_template(
        jobs.KubeflowJobBackend.pod_template, pod_parts(config, PodRequest(request))
    )
    spec = template["spec"]
    spec["nodeSelector"] = {REAL_NODE_LABEL: node.name}
    spec["restartPolicy"] = "Never"
    container = spec["containers"][0]
    container.pop("args", None)
    container.update({"name": "notebook", "command": ["/pause"]})
    node.ctr("images", "tag", "--force", SANDBOX_IMAGE, container["image"])
    template["metadata"]["name"] = name
    return {"apiVersion": "v1", "kind": "Pod", **template}


def _run(core: client.CoreV1Api, namespace: str, node: RealNode, pod: dict[str, Any]) -> Any:
    """Create ``pod`` and wait until its container runs; the pod as read then."""
    name = pod["metadata"]["name"]
    core.create_namespaced_pod(namespace, pod)

    def running() -> bool:
        status = core.read_namespaced_pod(name, namespace).status
        return bool(status.phase == "Running" and status.container_statuses)

    try:
        wait_until(running, 120, f"{name} Running on the real node", interval=0.5)
    except TimeoutError as error:
        status = core.read_namespaced_pod(name, namespace).status
        pytest.fail(f"{error}\n{status}\n{node.children[-1].log_tail(40)}")
    return core.read_namespaced_pod(name, namespace)


def _environ(node: RealNode, pod: Any) -> dict[str, str]:
    """The environment of the pod's container process, as the container sees it."""
    container_id = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    tasks = node.ctr("tasks", "ls").stdout.splitlines()[1:]
    pid = next(int(line.split()[1]) for line in tasks if line.split()[0] == container_id)
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _kubelet_devices(node: RealNode, pod_uid: str) -> list[str]:
    """The ``nvidia.com/gpu`` device IDs the kubelet's device manager assigned to the pod
    (its checkpoint in the device-plugin folder)."""
    checkpoint = json.loads((node.paths.device_plugins / "kubelet_internal_checkpoint").read_text())
    return [
        device
        for entry in checkpoint["Data"]["PodDeviceEntries"]
        if entry["PodUID"] == pod_uid and entry["ResourceName"] == "nvidia.com/gpu"
        for devices in entry["DeviceIDs"].values()
        for device in devices
    ]


def test_gpu_pods_get_the_devices_the_kubelet_allocated(
    gpu_node: RealNode,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = gpu_node
    assert len(node.gpu_ids) == GPUS and all(i.startswith("GPU-") for i in node.gpu_ids)
    allocatable = core.read_node(node.name).status.allocatable
    assert allocatable["nvidia.com/gpu"] == str(GPUS)
    gpu_raw = {"profile": "gpu", "gpu_type": GPU_TYPE, "gpus": "1", "image": GPU_IMAGE}
    seen: list[str] = []
    for name in ("alice-gpu-a", "alice-gpu-b"):
        pod = _pod(tmp_path, monkeypatch, node, name, gpu_raw)
        spec = pod["spec"]
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        products = {
            value
            for term in terms["nodeSelectorTerms"]
            for expr in term["matchExpressions"]
            if expr["key"] == "nvidia.com/gpu.product"
            for value in expr["values"]
        }
        assert products == {node.labels["nvidia.com/gpu.product"]}
        got = _run(core, namespace, node, pod)
        assert got.spec.node_name == node.name
        allocated = _kubelet_devices(node, got.metadata.uid)
        assert len(allocated) == 1 and allocated[0] in node.gpu_ids
        env = _environ(node, got)
        assert env[VISIBLE] == allocated[0]
        assert allocated in node.gpu_allocations()
        seen.append(allocated[0])
    assert sorted(seen) == sorted(node.gpu_ids)  # two pods, two different devices

    cpu = _run(
        core, namespace, node, _pod(tmp_path, monkeypatch, node, "alice-cpu", {"image": CPU_IMAGE})
    )
    assert _kubelet_devices(node, cpu.metadata.uid) == []
    env = _environ(node, cpu)
    assert env[VISIBLE] == "void"
    assert not any(gpu in value for value in env.values() for gpu in node.gpu_ids)

    # both devices are taken: a third GPU pod is refused by the scheduler
    core.create_namespaced_pod(namespace, _pod(tmp_path, monkeypatch, node, "alice-gpu-c", gpu_raw))

    def unschedulable() -> str:
        conditions = core.read_namespaced_pod("alice-gpu-c", namespace).status.conditions or []
        return next(
            (
                c.message or ""
                for c in conditions
                if c.type == "PodScheduled" and c.reason == "Unschedulable"
            ),
            "",
        )

    wait_until(lambda: bool(unschedulable()), 60, "alice-gpu-c unschedulable", interval=0.5)
    assert "Insufficient nvidia.com/gpu" in unschedulable()
    print(
        json.dumps(
            {"node": node.name, "gpu_ids": node.gpu_ids, "allocations": node.gpu_allocations()}
        )
    )
