"""Networking of the real node (testbed/real_node.py): cluster DNS from CoreDNS on the
node's gateway address, ``kubectl logs``/``exec`` through the apiserver, which calls the
real kubelet with its kubelet client certificate, and ClusterIP Services through
kube-proxy, whose host rules are gone once the node has stopped.

The pods run gpuhub's CPU single-user image (built by images/build.py, imported once for
the module), which has ``python3``.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.stream import stream
from test_real_node import _image_tarball, running_real_node

from testbed import Cluster
from testbed.cluster_dns import CLUSTER_DOMAIN
from testbed.ports import wait_until
from testbed.real_node import REAL_NODE_LABEL, RealNode, containerd_ref

pytestmark = pytest.mark.cluster

PORT = 7000
ROUTE_LOCALNET = Path("/proc/sys/net/ipv4/conf/all/route_localnet")
#: Accepts connections on PORT and answers each with the pod's name.
SERVER = f"""
import socket
server = socket.create_server(("", {PORT}))
while True:
    conn, _ = server.accept()
    conn.sendall(socket.gethostname().encode() + b"\\n")
    conn.close()
"""
#: For each name in NAMES: resolves it to EXPECT and connects to it over TCP, retrying
#: until both work (CoreDNS and kube-proxy see a change a moment after the test does).
CLIENT = f"""
import os, socket, sys, time
want = os.environ["EXPECT"]
deadline = time.monotonic() + 60
print(open("/etc/resolv.conf").read(), flush=True)
for name in os.environ["NAMES"].split():
    while True:
        try:
            got = sorted({{a[4][0] for a in socket.getaddrinfo(name, {PORT}, socket.AF_INET)}})
            if got != [want]:
                raise OSError(f"resolved to {{got}}")
            with socket.create_connection((name, {PORT}), timeout=5) as conn:
                answer = conn.recv(100).decode().strip()
            break
        except OSError as error:
            if time.monotonic() > deadline:
                sys.exit(f"{{name}}: {{error}} (expected {{want}})")
        time.sleep(0.2)
    print(f"resolved {{name}} {{want}} answered {{answer}}", flush=True)
"""


@pytest.fixture(scope="module")
def net_node(k8s_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A real node with its CoreDNS and kube-proxy; after it stops, nothing it made is
    left: no kube-proxy rule, and ``route_localnet`` as it was."""
    rules, localnet = _proxy_rules(), ROUTE_LOCALNET.read_text()
    workdir = tmp_path_factory.mktemp("real-node-net")
    with running_real_node(k8s_cluster, workdir, kube_proxy=True) as node:
        yield node
    assert node.dns is not None and not node.dns.running()
    assert _proxy_rules() - rules == set()
    assert ROUTE_LOCALNET.read_text() == localnet


def _proxy_rules() -> set[str]:
    """The host's iptables lines (IPv4 and IPv6, all tables) that name a ``KUBE-`` chain."""
    lines: set[str] = set()
    for tool in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([tool], capture_output=True, text=True, check=True).stdout
        lines |= {line for line in out.splitlines() if "KUBE-" in line}
    return lines


@pytest.fixture(scope="module")
def image(net_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CPU single-user image, imported into the node's containerd."""
    tarball = tmp_path_factory.mktemp("image") / "image.tar"
    built = _image_tarball(tarball)
    net_node.import_image(tarball)
    tarball.unlink()  # about 1.2 GB
    return containerd_ref(built)


def _pod(node: RealNode, image: str, name: str, script: str, **extra: Any) -> dict[str, Any]:
    """A one-container pod on ``node`` that runs ``script`` with python3."""
    container = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", script],
        **extra.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": extra.pop("labels", {})},
        "spec": {
            "nodeSelector": {REAL_NODE_LABEL: node.name},
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }


def _wait_phase(
    core: client.CoreV1Api, node: RealNode, namespace: str, name: str, phases: set[str]
) -> client.V1Pod:
    """Wait until pod ``name`` is in one of ``phases``; fail with its log otherwise."""
    try:
        wait_until(
            lambda: core.read_namespaced_pod(name, namespace).status.phase in phases,
            180,
            f"pod {name} {'/'.join(sorted(phases))}",
            interval=0.5,
        )
    except TimeoutError as error:
        status = core.read_namespaced_pod(name, namespace).status
        pytest.fail(f"{error}\n{status}\n{node.container_log(namespace, name, 'main')}")
    pod: client.V1Pod = core.read_namespaced_pod(name, namespace)
    return pod


def _ready_addresses(k8s_cluster: Cluster, namespace: str, service: str) -> list[str]:
    """The ready endpoint addresses of ``service`` (its EndpointSlices)."""
    slices = client.DiscoveryV1Api(k8s_cluster.api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return [
        address
        for item in slices.items
        for endpoint in item.endpoints or []
        if endpoint.conditions and endpoint.conditions.ready
        for address in endpoint.addresses
    ]


def _serve(
    k8s_cluster: Cluster,
    core: client.CoreV1Api,
    node: RealNode,
    image: str,
    namespace: str,
    service: str,
    cluster_ip: str | None = None,
) -> str:
    """Pod ``<service>-0`` serving :data:`SERVER` and Service ``service`` selecting it
    (headless with ``cluster_ip="None"``); waits until the Service's EndpointSlice has the
    pod, ready, and returns the pod's IP."""
    server = _pod(
        node,
        image,
        f"{service}-0",
        SERVER,
        labels={"app": service},
        container={"readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 1}},
    )
    core.create_namespaced_pod(namespace, server)
    spec: dict[str, Any] = {"selector": {"app": service}, "ports": [{"port": PORT}]}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    core.create_namespaced_service(namespace, {"metadata": {"name": service}, "spec": spec})
    pod_ip: str = _wait_phase(core, node, namespace, f"{service}-0", {"Running"}).status.pod_ip
    wait_until(
        lambda: _ready_addresses(k8s_cluster, namespace, service) == [pod_ip],
        120,
        f"{service}'s EndpointSlice with the ready pod",
        interval=0.5,
    )
    return pod_ip


def _client(
    core: client.CoreV1Api, node: RealNode, image: str, namespace: str, want: str, names: str
) -> str:
    """Run :data:`CLIENT` for ``names`` in pod ``client``; its output once it succeeded."""
    env = [{"name": "EXPECT", "value": want}, {"name": "NAMES", "value": names}]
    core.create_namespaced_pod(
        namespace, _pod(node, image, "client", CLIENT, container={"env": env})
    )
    done = _wait_phase(core, node, namespace, "client", {"Succeeded", "Failed"})
    log = node.container_log(namespace, "client", "main")
    assert done.status.phase == "Succeeded", log
    return log


def test_pod_resolves_a_headless_service_and_connects(
    net_node: RealNode, image: str, k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    """A headless Service's name (short and fully qualified) resolves, in another pod on the
    node, to the backing pod's IP through CoreDNS, and that pod answers on it over TCP:
    how a PyTorchJob worker finds ``<job>-master-0``."""
    pod_ip = _serve(k8s_cluster, core, net_node, image, namespace, "backend", "None")
    fqdn = f"backend.{namespace}.svc.{CLUSTER_DOMAIN}"
    log = _client(core, net_node, image, namespace, pod_ip, f"backend {fqdn}")
    assert f"nameserver {net_node.gateway}" in log
    assert f"search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN}" in log
    for name in ("backend", fqdn):
        assert f"resolved {name} {pod_ip} answered backend-0" in log


def test_logs_and_exec_through_the_apiserver(
    net_node: RealNode, image: str, core: client.CoreV1Api, namespace: str
) -> None:
    """``read_namespaced_pod_log`` and ``exec`` of a container on the real node: the
    apiserver calls the kubelet with its client certificate, the kubelet authorizes that
    user with a SubjectAccessReview."""
    marker = f"marker-{uuid.uuid4().hex}"
    script = f"import time\nprint({marker!r}, flush=True)\ntime.sleep(3600)"
    core.create_namespaced_pod(namespace, _pod(net_node, image, "talker", script))
    _wait_phase(core, net_node, namespace, "talker", {"Running"})
    wait_until(
        lambda: marker in net_node.container_log(namespace, "talker", "main"),
        60,
        "the container's output in its log file",
    )
    log = core.read_namespaced_pod_log("talker", namespace, container="main")
    assert log.strip() == marker
    out = stream(
        core.connect_get_namespaced_pod_exec,
        "talker",
        namespace,
        container="main",
        command=["sh", "-c", "echo exec-$((6 * 7)) $(hostname)"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    assert out.strip() == "exec-42 talker"


def test_pod_reaches_a_cluster_ip_service_through_kube_proxy(
    net_node: RealNode, image: str, k8s_cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    """A ClusterIP Service, by its IP and by its name, reaches the backing pod from another
    pod on the node: kube-proxy's rules on the host rewrite the ClusterIP to the pod's IP."""
    _serve(k8s_cluster, core, net_node, image, namespace, "web")
    cluster_ip = core.read_namespaced_service("web", namespace).spec.cluster_ip
    log = _client(core, net_node, image, namespace, cluster_ip, f"web {cluster_ip}")
    for name in ("web", cluster_ip):
        assert f"resolved {name} {cluster_ip} answered web-0" in log
    assert any(f"{namespace}/web" in line for line in _proxy_rules())
