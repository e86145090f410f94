"""GPU-idle culling on Kubernetes, as shipped: the hub and its ``gpuhub-monitor`` service
started from ``helm-values/gpuhub.yaml`` + ``gpu-cluster.yaml`` through z2jh's own
``jupyterhub_config.py`` (:mod:`charthub`), the monitor with the shipped command and config
file (``KubeHoldings``: gpuhub's pods from the cluster watch) under the hub's
ServiceAccount bound by exactly ``helm-values/manifests/rbac.yaml``, reading a replayed
utilisation trace keyed by allocation keys.

alice's idle GPU server is warned, then stopped through the hub; GPUKubeSpawner deletes
its pod and the monitor's cluster view drops the allocation (her GPU is free again).
bob's busy server is kept.  The monitor's history lives in the hub's volume.

Differences from a chart install: those of :data:`charthub.DIFFERENCES`, and the gpuhub
YAML (``hub.extraFiles.gpuhub-yaml``): the shipped one with a small ``gpu`` profile (1 GB,
so both servers fit one process node), ``idle_culling`` on it and ``monitor.source:
replay`` with the trace mounted beside the YAML (no DCGM exporter or Prometheus runs here).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from charthub import ChartHub, chart_values, static_home_volume, user_token
from gpuhub.activeconfig import ActiveConfig
from gpuhub.kube.labels import allocation_marks
from gpuhub.model import Allocation
from gpuhub.monitor.kubeholdings import ClusterUnreadable, KubeHoldings
from testbed import Cluster, ProcessNode, hub_rbac_objects
from testbed.apply import delete
from testbed.kubeconfig import write_kubeconfig
from testbed.rbac import hub_kubeconfig, service_account_token

pytestmark = pytest.mark.cluster

A100 = "NVIDIA-A100-SXM4-80GB"  # gpu_types.a100.node_label of the shipped gpuhub YAML
IMAGE = "pytorch-2.11-cu128"
PASSWORD = secrets.token_hex(12)
ADMIN_PASSWORD = secrets.token_hex(16)  # the shared-password admin's (>= 32 characters)
IDLE = {"threshold_percent": 10, "idle_minutes": 0.5, "warn_minutes": 0.3}
TRACE = [
    {"key": "server:alice/", "t": 0, "util": 0, "memory_mib": 500},
    {"key": "server:bob/", "t": 0, "util": 85, "memory_mib": 30000},
]


def gpuhub_yaml(values: dict[str, Any]) -> str:
    """The shipped gpuhub YAML with GPU-idle culling on its ``gpu`` profile and the replay
    source (``trace.jsonl`` beside it)."""
    cfg = yaml.safe_load(values["hub"]["extraFiles"]["gpuhub-yaml"]["stringData"])
    gpu = next(p for p in cfg["profiles"] if p["slug"] == "gpu")
    gpu.update(cpu=0.5, memory="1G", idle_culling=IDLE)
    cfg["monitor"] = {"source": "replay", "replay_trace": "trace.jsonl", "sample_seconds": 0.5}
    return str(yaml.safe_dump(cfg, sort_keys=False))


def culling_values() -> dict[str, Any]:
    base = chart_values(["gpuhub", "gpu-cluster"], {})
    return chart_values(
        ["gpuhub", "gpu-cluster"],
        {
            "hub": {
                "config": {
                    "JupyterHub": {
                        "authenticator_class": "shared-password",
                        "load_groups": {"vision": {"users": ["alice", "bob"]}},
                    },
                    "SharedPasswordAuthenticator": {
                        "user_password": PASSWORD,
                        "admin_password": ADMIN_PASSWORD,
                    },
                    "Authenticator": {
                        "allowed_users": ["alice", "bob"],
                        "admin_users": ["admin"],
                    },
                    "KubeSpawner": {
                        "extra_container_config": {"command": ["/usr/bin/env"]},
                        "args": ["--ip=$(POD_IP)", "--allow-root"],
                    },
                },
                "extraFiles": {
                    "gpuhub-yaml": {"stringData": gpuhub_yaml(base)},
                    "gpuhub-test-trace": {
                        "mountPath": "/usr/local/etc/gpuhub/trace.jsonl",
                        "stringData": "".join(json.dumps(r) + "\n" for r in TRACE),
                    },
                },
            },
            "cull": {"enabled": False},
        },
    )


@pytest.fixture
def a100_node(k8s_cluster: Cluster) -> Iterator[ProcessNode]:
    """A process node labelled as a two-A100 node with driver 580.65.06, tainted like GPU
    Operator nodes."""
    node = k8s_cluster.add_process_node(
        f"a100-proc-{uuid.uuid4().hex[:6]}",
        gpus=2,
        labels={
            "nvidia.com/gpu.product": A100,
            "nvidia.com/gpu.present": "true",
            "nvidia.com/cuda.driver-version.major": "580",
            "nvidia.com/cuda.driver-version.minor": "65",
            "nvidia.com/cuda.driver-version.revision": "06",
        },
        taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    )
    try:
        yield node
    finally:
        node.stop()
        k8s_cluster.core.delete_node(node.name)


@pytest.fixture
def home_volumes(k8s_cluster: Cluster, namespace: str) -> Iterator[None]:
    """Static PVs that bind ``claim-alice`` and ``claim-bob`` when the hub creates them
    (chart storage: dynamic, ``claim-{user_server}``; no provisioner here)."""
    names = []
    try:
        for user in ("alice", "bob"):
            name = f"pv-{namespace}-{user}"
            k8s_cluster.core.create_persistent_volume(
                static_home_volume(name, namespace, f"claim-{user}", f"/tmp/{name}")
            )
            names.append(name)
        yield
    finally:
        for name in names:
            k8s_cluster.core.delete_persistent_volume(name)


@pytest.fixture
def chart_hub(
    k8s_cluster: Cluster,
    namespace: str,
    a100_node: ProcessNode,
    home_volumes: None,
    tmp_path: Path,
) -> Iterator[ChartHub]:
    kubeconfig = hub_kubeconfig(
        k8s_cluster.api, k8s_cluster.server, k8s_cluster.ca_file, namespace, tmp_path / "kc"
    )
    hub = ChartHub(tmp_path / "hub-pod", culling_values(), namespace, kubeconfig)
    try:
        yield hub.start()
    finally:
        hub.stop()
        lines = [ln for ln in hub.log_since().splitlines() if " 200 GET /hub/api/" not in ln]
        print("\n".join(lines[-150:]))
        for pod in k8s_cluster.core.list_namespaced_pod(namespace).items:
            k8s_cluster.core.delete_namespaced_pod(
                pod.metadata.name, namespace, grace_period_seconds=0
            )
        objs = hub_rbac_objects(namespace)
        delete(k8s_cluster.api, [o for o in objs if o["kind"] == "ClusterRoleBinding"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def wait_for(what: str, check: Callable[[], Any], hub: ChartHub, timeout: float = 300) -> Any:
    """Until ``check()`` returns something true (the hub offers no events to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"{what} not seen in {timeout}s:\n{hub.log_since()[-6000:]}")


def token(hub: ChartHub, user: str) -> str:
    return user_token(hub, user, ADMIN_PASSWORD if user == "admin" else PASSWORD)


def user_pods(k8s_cluster: Cluster, namespace: str, user: str) -> list[Any]:
    return [
        p
        for p in k8s_cluster.core.list_namespaced_pod(namespace).items
        if (p.metadata.annotations or {}).get("hub.jupyter.org/username") == user
    ]


def test_idle_gpu_server_is_warned_then_stopped_busy_one_kept_on_kubernetes(
    chart_hub: ChartHub, k8s_cluster: Cluster, namespace: str, a100_node: ProcessNode
):
    hub = chart_hub
    mon = f"{hub.url}/services/gpuhub-monitor"
    tokens = {u: token(hub, u) for u in ("alice", "bob")}
    for user, tok in tokens.items():
        r = requests.post(
            f"{hub.api}/users/{user}/server",
            json={"profile": "gpu", "gpus": 1, "gpu_type": "a100", "image": IMAGE},
            headers=auth(tok),
            timeout=120,
        )
        assert r.status_code in (201, 202), r.text

    def server(user: str) -> dict[str, Any] | None:
        model = requests.get(f"{hub.api}/users/{user}", headers=auth(tokens[user]), timeout=30)
        return dict(model.json()["servers"].get("") or {}) or None

    def view(user: str) -> dict[str, Any]:
        r = requests.get(f"{mon}/api/servers", headers=auth(tokens[user]), timeout=30)
        r.raise_for_status()
        return dict(r.json())

    def mine(user: str) -> dict[str, Any] | None:
        return next((s for s in view(user)["servers"] if s["server"] == ""), None)

    # the hub adds the monitor's proxy route once the service runs
    wait_for(
        "the monitor's route",
        lambda: requests.get(f"{mon}/api/servers", headers=auth(tokens["alice"]), timeout=30).ok,
        hub,
    )

    # alice is warned (in the monitor's API, which the lab shows) before her server goes;
    # only a server the hub calls ready is ever warned
    warned = wait_for("alice's warning", lambda: (mine("alice") or {}).get("warning"), hub)
    assert warned["action"] == "stop"
    assert (server("alice") or {}).get("ready")
    (pod,) = user_pods(k8s_cluster, namespace, "alice")
    assert pod.spec.node_name == a100_node.name

    # stopped through the hub: GPUKubeSpawner deletes the pod, the cluster view drops it
    wait_for("alice's server stopped", lambda: server("alice") is None, hub)
    wait_for("alice's pod gone", lambda: not user_pods(k8s_cluster, namespace, "alice"), hub)
    culled = view("alice")["culled"]
    assert [(c["server"], c["action"], c["gpus"], c["gpu_type"]) for c in culled] == [
        ("", "stop", 1, "a100")
    ]
    # the monitor drops her holding once its own pod watch has seen the deletion
    wait_for("alice's server gone from the monitor", lambda: mine("alice") is None, hub)

    # bob's busy server is kept: measured busy and never warned while the monitor watches
    # it for longer than the idle limit, still running after
    wait_for("bob's server ready", lambda: (server("bob") or {}).get("ready"), hub)
    watched_from, idle_limit = time.monotonic(), IDLE["idle_minutes"] * 60
    while time.monotonic() - watched_from < idle_limit + 5:
        bob = mine("bob")
        assert bob is not None, view("bob")
        assert (bob["gpus"], bob["gpu_type"], bob["group"]) == (1, "a100", "vision")
        assert bob["warning"] is None and bob["idle_seconds"] == 0, bob
        assert bob["utilization"] in (85, None), bob  # None: not sampled yet
        time.sleep(0.5)
    assert mine("bob")["utilization"] == 85  # type: ignore[index]
    assert (server("bob") or {}).get("ready")
    assert len(user_pods(k8s_cluster, namespace, "bob")) == 1

    # /metrics: the cull, and only bob's GPU held now (from the pods)
    admin = token(hub, "admin")

    def metrics() -> str:
        r = requests.get(f"{mon}/metrics", headers=auth(admin), timeout=30)
        assert r.status_code == 200, r.text
        return r.text

    text = wait_for(
        "alice's GPU no longer counted",
        lambda: (
            (t := metrics())
            and 'gpuhub_gpus_allocated{gpu_type="a100",group="vision",kind="notebook"} 1.0' in t
            and t
        ),
        hub,
    )
    assert 'gpuhub_idle_culls_total{action="stop",group="vision"} 1.0' in text
    # the history is in the hub's volume (hub.db.type sqlite-pvc), kept across restarts
    assert (hub.workdir / "gpuhub-monitor" / "state" / "usage.sqlite").is_file()


# -- KubeHoldings alone, against the apiserver ----------------------------------------------
def holdings(tmp_path: Path, kubeconfig: Path, namespace: str) -> KubeHoldings:
    values = chart_values(["gpuhub"], {})
    cfg = yaml.safe_load(values["hub"]["extraFiles"]["gpuhub-yaml"]["stringData"])
    cfg["image_matrix"] = str(Path(__file__).resolve().parents[2] / "images" / "matrix.yaml")
    (tmp_path / "gpuhub.yaml").write_text(yaml.safe_dump(cfg))
    return KubeHoldings(
        active=ActiveConfig(tmp_path / "gpuhub.yaml"),
        data_dir=tmp_path,
        kubeconfig=str(kubeconfig),
        watch_namespaces=[namespace],
    )


async def test_monitor_without_pod_access_does_not_start(
    k8s_cluster: Cluster, namespace: str, tmp_path: Path
):
    """An account that may not watch pods (the namespace's default ServiceAccount) is
    refused at start, naming the RBAC file, instead of a monitor that sees nothing."""
    token = service_account_token(k8s_cluster.api, namespace, "default")
    kc = write_kubeconfig(
        tmp_path / "kc",
        k8s_cluster.server,
        k8s_cluster.ca_file,
        token,
        f"system:serviceaccount:{namespace}:default",
    )
    h = holdings(tmp_path, kc, namespace)
    try:
        with pytest.raises(ClusterUnreadable, match="helm-values/manifests/rbac.yaml"):
            await h.start()
    finally:
        await h.stop()


async def test_holdings_follow_the_pods(k8s_cluster: Cluster, namespace: str, tmp_path: Path):
    """With the hub's account: a gpuhub-marked pod (GPUKubeSpawner's marks) is queued while
    Pending, under its server key; once deleted it is gone (the watch, not a re-list)."""
    kc = hub_kubeconfig(
        k8s_cluster.api, k8s_cluster.server, k8s_cluster.ca_file, namespace, tmp_path / "kc"
    )
    alloc = Allocation("server:alice/", "alice", "vision", "a100", 2)
    labels, notes = allocation_marks(alloc, "gpu")
    h = holdings(tmp_path, kc, namespace)
    try:
        await h.start()
        config = h.active.get()
        assert (await h.read(config)).held == ()
        k8s_cluster.core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": "jupyter-alice", "labels": labels, "annotations": notes},
                "spec": {
                    # no node matches: it stays Pending
                    "nodeSelector": {"gpuhub.dev/test-node": "nowhere"},
                    "containers": [{"name": "notebook", "image": "none"}],
                },
            },
        )

        async def until(check: Callable[[Any], bool], what: str) -> Any:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                now = await h.read(config)
                if check(now):
                    return now
                await asyncio.sleep(0.2)
            raise TimeoutError(what)

        seen = await until(lambda x: bool(x.queued), "the pod queued")
        (queued,) = seen.queued
        assert (queued.key, queued.user, queued.gpus, queued.pods) == (
            "server:alice/",
            "alice",
            2,
            (f"{namespace}/jupyter-alice",),
        )
        assert seen.held == ()
        k8s_cluster.core.delete_namespaced_pod("jupyter-alice", namespace, grace_period_seconds=0)
        await until(lambda x: not x.queued and not x.held, "the pod gone")
    finally:
        await h.stop()
        objs = hub_rbac_objects(namespace)
        delete(k8s_cluster.api, [o for o in objs if o["kind"] == "ClusterRoleBinding"])
