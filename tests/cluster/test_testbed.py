"""The test bed itself: real scheduling, quota admission, RBAC, KWOK GPU nodes, process node."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from testbed import Cluster, Fleet, ProcessNode, install_crds
from testbed.fleet import GPU_RESOURCE, GPU_TAINT, node_capacity, node_labels
from testbed.node_identity import PROCESS_NODE_TAINT
from testbed.ports import wait_until
from testbed.processes import pid_alive

pytestmark = pytest.mark.cluster

GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
PROCESS_TOLERATION = {
    "key": PROCESS_NODE_TAINT["key"],
    "operator": "Exists",
    "effect": "NoSchedule",
}


def gpu_pod(name: str, gpus: int, **spec: Any) -> dict[str, Any]:
    """A pod asking for ``gpus`` GPUs (limits, as the device plugin requires)."""
    return {
        "metadata": {"name": name},
        "spec": {
            "tolerations": [GPU_TOLERATION],
            "containers": [
                {
                    "name": "main",
                    "image": "cuda:placeholder",
                    "resources": {"limits": {GPU_RESOURCE: str(gpus)}},
                }
            ],
            **spec,
        },
    }


def process_pod(
    name: str, node: ProcessNode, command: list[str], **container: Any
) -> dict[str, Any]:
    """A pod pinned to the process node running ``command``."""
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node.name},
            "tolerations": [PROCESS_TOLERATION],
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": "python:local", "command": command, **container}
            ],
        },
    }


def wait_pod(
    core: client.CoreV1Api,
    name: str,
    namespace: str,
    predicate: Any,
    what: str,
    timeout: float = 60,
) -> client.V1Pod:
    found: list[client.V1Pod] = []

    def check() -> bool:
        found[:] = [core.read_namespaced_pod(name, namespace)]
        return bool(predicate(found[0]))

    wait_until(check, timeout, f"pod {namespace}/{name} {what}")
    return found[0]


def test_version_is_stamped(k8s_cluster: Cluster) -> None:
    info = client.VersionApi(k8s_cluster.api).get_code()
    assert info.git_version == k8s_cluster.binaries.kubernetes_version
    assert info.major == "1"


def test_fleet_nodes_match_config(k8s_cluster: Cluster, kwok_fleet: Fleet) -> None:
    nodes = {n.metadata.name: n for n in k8s_cluster.core.list_node().items}
    for pool in kwok_fleet.pools:
        for name in pool.node_names():
            node = nodes[name]
            assert node.metadata.labels.items() >= node_labels(pool, name).items()
            assert node.status.capacity == node_capacity(pool)
            assert node.status.allocatable == node_capacity(pool)
            taints = [
                {"key": t.key, "value": t.value, "effect": t.effect} for t in node.spec.taints or []
            ]
            assert taints == ([GPU_TAINT] if pool.gpu else [])
    drivers = {
        nodes[n].metadata.labels.get("nvidia.com/cuda.driver-version.full")
        for n in kwok_fleet.node_names()
    }
    assert {"535.183.01", "580.65.06", "570.133.20"} <= drivers
    a100 = nodes["a100-d535-0"].metadata.labels
    assert a100["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert a100["nvidia.com/cuda.driver.major"] == "535"
    assert a100["nvidia.com/cuda.driver.rev"] == "01"
    assert nodes["h100-d570-0"].status.capacity[GPU_RESOURCE] == "4"


def test_too_many_gpus_stays_pending_with_failed_scheduling(
    k8s_cluster: Cluster, kwok_fleet: Fleet, namespace: str
) -> None:
    core = k8s_cluster.core
    # The scheduler works: 8 GPUs fit on an A100 node at driver 580.
    selector = {"nvidia.com/cuda.driver-version.major": "580"}
    core.create_namespaced_pod(namespace, gpu_pod("fits", 8, nodeSelector=selector))
    placed = wait_pod(core, "fits", namespace, lambda p: p.spec.node_name, "scheduled")
    assert placed.spec.node_name == "a100-d580-0"
    # 16 GPUs fit nowhere: Pending, with the real scheduler's FailedScheduling event.
    core.create_namespaced_pod(namespace, gpu_pod("too-big", 16))
    events: list[client.CoreV1Event] = []

    def failed_scheduling() -> bool:
        selector = "involvedObject.name=too-big,reason=FailedScheduling"
        events[:] = core.list_namespaced_event(namespace, field_selector=selector).items
        return bool(events)

    wait_until(failed_scheduling, 60, "a FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in events[0].message
    assert (events[0].reporting_component or events[0].source.component) == "default-scheduler"
    pod = core.read_namespaced_pod("too-big", namespace)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def test_quota_rejects_third_gpu_at_admission(k8s_cluster: Cluster, namespace: str) -> None:
    core = k8s_cluster.core
    core.create_namespaced_resource_quota(
        namespace,
        {"metadata": {"name": "gpus"}, "spec": {"hard": {f"requests.{GPU_RESOURCE}": "2"}}},
    )
    wait_until(
        lambda: core.read_namespaced_resource_quota("gpus", namespace).status.hard,
        60,
        "the controller-manager to fill in quota status",
    )
    core.create_namespaced_pod(namespace, gpu_pod("two", 2))
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(namespace, gpu_pod("third", 1))
    assert rejected.value.status == 403
    assert "exceeded quota" in json.loads(rejected.value.body)["message"]


def test_process_node_serves_http_on_pod_ip(
    k8s_cluster: Cluster, process_node: ProcessNode, namespace: str
) -> None:
    core = k8s_cluster.core
    command = [sys.executable, "-m", "http.server", "--bind", "$(POD_IP)", "8000"]
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    core.create_namespaced_pod(
        namespace,
        process_pod(
            "web",
            process_node,
            command,
            ports=[{"name": "http", "containerPort": 8000}],
            readinessProbe=probe,
        ),
    )
    pod = wait_pod(
        core,
        "web",
        namespace,
        lambda p: any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []),
        "Ready",
    )
    assert pod.status.phase == "Running"
    assert pod.status.pod_ip.startswith("127.") and pod.status.pod_ip != "127.0.0.1"
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8000/", timeout=5) as resp:
        assert resp.status == 200
    logs = core.read_namespaced_pod_log("web", namespace, container="main")
    assert '"GET / HTTP/1.1" 200' in logs
    pid = process_node.pids(namespace, "web")["main"]
    assert pid_alive(pid)

    core.delete_namespaced_pod("web", namespace, grace_period_seconds=5)
    wait_until(lambda: not _pod_exists(core, "web", namespace), 30, "pod web deleted")
    wait_until(lambda: not pid_alive(pid), 10, f"process {pid} gone")


def test_process_node_env_volumes_and_exit_codes(
    k8s_cluster: Cluster, process_node: ProcessNode, namespace: str
) -> None:
    core = k8s_cluster.core
    script = (
        "import os, pathlib; pathlib.Path('out.txt').write_text('hi'); "
        "print(os.environ['MY_NAME'], os.environ['MY_NS'], os.environ['GREETING'], "
        "os.getcwd()); raise SystemExit(int(os.environ['CODE']))"
    )
    for name, code in (("ok", "0"), ("boom", "3")):
        body = process_pod(
            name,
            process_node,
            [sys.executable, "-c", script],
            workingDir="/home/jovyan",
            volumeMounts=[{"name": "home", "mountPath": "/home/jovyan"}],
            env=[
                {"name": "CODE", "value": code},
                {"name": "GREETING", "value": "hello-$(CODE)"},
                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            ],
        )
        body["spec"]["volumes"] = [{"name": "home", "emptyDir": {}}]
        core.create_namespaced_pod(namespace, body)
    ok = wait_pod(core, "ok", namespace, lambda p: p.status.phase == "Succeeded", "Succeeded")
    boom = wait_pod(core, "boom", namespace, lambda p: p.status.phase == "Failed", "Failed")
    assert boom.status.container_statuses[0].state.terminated.exit_code == 3
    assert ok.status.container_statuses[0].state.terminated.exit_code == 0
    words = process_node.logs(namespace, "ok").split()
    assert words[:3] == ["ok", namespace, "hello-0"]
    home = Path(words[3])
    assert home == process_node.pod_dir(namespace, "ok") / "volumes" / "home"
    assert (home / "out.txt").read_text() == "hi"


def test_process_node_resolves_service_names_in_env(
    k8s_cluster: Cluster, process_node: ProcessNode, namespace: str
) -> None:
    """No cluster DNS: an env value naming a Service becomes the IP of a pod it selects;
    the container waits until such a pod has one."""
    core = k8s_cluster.core
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "peer"},
            "spec": {"clusterIP": "None", "selector": {"app": "peer"}, "ports": [{"port": 80}]},
        },
    )
    script = "import os; print(os.environ['PEER'], os.environ['OTHER'])"
    core.create_namespaced_pod(
        namespace,
        process_pod(
            "client",
            process_node,
            [sys.executable, "-c", script],
            env=[{"name": "PEER", "value": "peer"}, {"name": "OTHER", "value": "not-a-service"}],
        ),
    )
    wait_pod(core, "client", namespace, lambda p: p.status.pod_ip, "has an IP")
    time.sleep(2)
    assert process_node.pids(namespace, "client") == {}  # still waiting for "peer"
    server = process_pod(
        "server", process_node, [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    server["metadata"]["labels"] = {"app": "peer"}
    core.create_namespaced_pod(namespace, server)
    wait_pod(core, "client", namespace, lambda p: p.status.phase == "Succeeded", "Succeeded")
    server_ip = core.read_namespaced_pod("server", namespace).status.pod_ip
    assert process_node.logs(namespace, "client").split() == [server_ip, "not-a-service"]


def test_process_node_waits_for_the_master_service_created_after_the_pod(
    k8s_cluster: Cluster, process_node: ProcessNode, namespace: str
) -> None:
    """The training operator creates the master's Service beside the pods, in no fixed
    order: a container whose ``MASTER_ADDR`` names a Service that does not exist yet waits
    for it (with DNS the name would resolve once it exists), then gets its pod's IP."""
    core = k8s_cluster.core
    script = "import os; print(os.environ['MASTER_ADDR'])"
    core.create_namespaced_pod(
        namespace,
        process_pod(
            "rank1",
            process_node,
            [sys.executable, "-c", script],
            env=[{"name": "MASTER_ADDR", "value": "late-master"}],
        ),
    )
    wait_pod(core, "rank1", namespace, lambda p: p.status.pod_ip, "has an IP")
    master = process_pod(
        "rank0", process_node, [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    master["metadata"]["labels"] = {"app": "late-master"}
    core.create_namespaced_pod(namespace, master)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "late-master"},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": "late-master"},
                "ports": [{"port": 80}],
            },
        },
    )
    wait_pod(core, "rank1", namespace, lambda p: p.status.phase == "Succeeded", "Succeeded")
    master_ip = core.read_namespaced_pod("rank0", namespace).status.pod_ip
    assert process_node.logs(namespace, "rank1").split() == [master_ip]


def test_process_node_logs_follow_until_exit(
    k8s_cluster: Cluster, process_node: ProcessNode, namespace: str
) -> None:
    core = k8s_cluster.core
    script = "import time\nfor i in range(3):\n    print('line', i, flush=True); time.sleep(0.5)"
    core.create_namespaced_pod(
        namespace, process_pod("talk", process_node, [sys.executable, "-c", script])
    )
    wait_pod(
        core, "talk", namespace, lambda p: p.status.phase in ("Running", "Succeeded"), "started"
    )
    stream = core.read_namespaced_pod_log("talk", namespace, follow=True, _preload_content=False)
    assert stream.data.decode().splitlines() == ["line 0", "line 1", "line 2"]
    assert core.read_namespaced_pod_log("talk", namespace, tail_lines=1) == "line 2\n"


def test_hub_service_account_rbac(
    k8s_cluster: Cluster, namespace: str, hub_kubeconfig: Path
) -> None:
    hub = client.CoreV1Api(config.new_client_from_config(str(hub_kubeconfig)))
    assert hub.list_namespaced_pod(namespace).items == []
    hub.list_node()  # allowed cluster-wide (raises 403 otherwise)
    hub.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"a": "b"}})
    for forbidden in (
        lambda: hub.list_namespaced_secret("default"),
        lambda: hub.delete_node("nope"),
        lambda: hub.create_namespace({"metadata": {"name": "nope"}}),
    ):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403


def test_install_training_operator_crds(
    k8s_cluster: Cluster, namespace: str, hub_kubeconfig: Path
) -> None:
    names = install_crds(k8s_cluster)
    assert {"pytorchjobs.kubeflow.org", "tfjobs.kubeflow.org"} <= set(names)
    hub = client.CustomObjectsApi(config.new_client_from_config(str(hub_kubeconfig)))
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "ddp"},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {
                    "replicas": 1,
                    "template": {
                        "spec": {"containers": [{"name": "pytorch", "image": "torch:placeholder"}]}
                    },
                }
            }
        },
    }
    hub.create_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs", job)
    listed = hub.list_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs")
    assert [j["metadata"]["name"] for j in listed["items"]] == ["ddp"]
    with pytest.raises(ApiException) as denied:
        hub.list_namespaced_custom_object("kubeflow.org", "v1", namespace, "mpijobs")
    assert denied.value.status == 403


def _pod_exists(core: client.CoreV1Api, name: str, namespace: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
        return True
    except ApiException as error:
        if error.status == 404:
            return False
        raise
