"""A pod from gpuhub's CPU single-user image on a real node: the real kubelet, containerd,
runc and a CNI bridge (testbed/real_node.py), scheduled by the real scheduler.

The pod is what gpuhub's pod builder makes (``gpuhub.kube.objects``: ``pod_parts`` of a
notebook request validated against the shipped gpuhub YAML, merged into the shipped
pod template with the user pods' security context).  The image is built by
images/build.py (cached; its daemon's lock makes a concurrent build wait), saved with
``docker save`` and imported into the node's containerd under the image reference the
builder puts into the pod.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from traitlets.config.loader import PyFileConfigLoader

from gpuhub.config import parse_config
from gpuhub.kube.objects import PodRequest, merge_into_template, pod_parts
from gpuhub.profiles import validate_options
from testbed import BinariesMissing, Cluster
from testbed.ports import wait_until
from testbed.real_node import (
    REAL_NODE_LABEL,
    RealNode,
    cgroup_dirs,
    containerd_ref,
    mounts_under,
    start_real_node,
)

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "images"))
from imagekit import build  # noqa: E402  (images/build.py, as the images tier loads it)

IMAGE_ID = "scipy-cpu"
PROBE = (
    'echo "probe uid=$(id -u) singleuser=$(command -v jupyterhub-singleuser)"; exec sleep infinity'
)


def _required() -> bool:
    return os.environ.get("GPUHUB_CLUSTER_REQUIRED") == "1"


def _missing(reason: str) -> None:
    if _required():
        pytest.fail(reason)
    pytest.skip(reason)


def _state() -> dict[str, set[str]]:
    """Network namespaces and links of this machine."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    netns = subprocess.run(["ip", "netns"], capture_output=True, text=True, check=True)
    return {
        "links": {line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()},
        "netns": {line.split()[0] for line in netns.stdout.splitlines() if line.strip()},
    }


def assert_nothing_left(node: Any, before: dict[str, Any]) -> None:
    """After ``node.stop()``: none of its mounts, its bridge, its sandboxes' network
    namespaces (``before``: :func:`_state` before it started) or its cgroups remain."""
    after = _state()
    assert mounts_under(node.paths.root) == []
    assert node.bridge not in after["links"]
    assert after["netns"] - before["netns"] == set()
    assert [d for d in cgroup_dirs(node.cgroup_root) if d.exists()] == []


@contextlib.contextmanager
def running_real_node(cluster: Cluster, workdir: Path, **options: Any) -> Iterator[RealNode]:
    """A real node joined to ``cluster`` (``options`` go to :func:`start_real_node`); after
    it stops, nothing it made is left."""
    before = _state()
    try:
        node = start_real_node(
            cluster.core, cluster.kubeconfig, cluster.control_plane.ca, workdir, **options
        )
    except BinariesMissing as error:
        _missing(str(error))
    try:
        yield node
    finally:
        node.stop()
    assert_nothing_left(node, before)


@pytest.fixture(scope="module")
def real_node(k8s_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A real node joined to the test cluster (:func:`running_real_node`)."""
    with running_real_node(k8s_cluster, tmp_path_factory.mktemp("real-node")) as node:
        yield node


def _image_tarball(dest: Path) -> str:
    """The CPU single-user image from images/build.py's daemon, ``docker save``d."""
    for tool in ("debootstrap", "dockerd"):
        if shutil.which(tool) is None:
            _missing(f"{tool} is not installed (apt-get install docker.io debootstrap)")
    paths = build.Paths(build.default_cache())
    matrix = build.load_matrix(build.MATRIX)
    builds = build.plan(matrix, [IMAGE_ID], build.chp_version())
    build.make_rootfs_tar(paths)
    with build.Dockerd(paths) as docker:
        docker.import_base(paths)
        for b in builds:
            docker.build(b)
        tag = str(builds[-1].tag)
        docker.docker("save", "-o", str(dest), tag)
    return tag


def _shipped_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((ROOT / "helm-values" / "gpuhub.yaml").read_text())
    return values


def _notebook_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node_name: str) -> Any:
    """gpuhub's notebook pod for alice's default (CPU) profile and the CPU image."""
    hub = _shipped_values()["hub"]["extraFiles"]
    data = yaml.safe_load(hub["gpuhub-yaml"]["stringData"])
    # the hub image ships images/matrix.yaml at that path (images/hub/Dockerfile)
    data["image_matrix"] = str(ROOT / "images" / "matrix.yaml")
    config = parse_config(data)
    request = validate_options(config, "alice", ["vision"], {"image": IMAGE_ID})
    (tmp_path / "jobs_config.py").write_text(hub["gpuhub-jobs-config"]["stringData"])
    monkeypatch.setenv("POD_NAMESPACE", "unused")
    jobs = PyFileConfigLoader("jobs_config.py", path=str(tmp_path)).load_config()
    template = merge_into_template(
        jobs.KubeflowJobBackend.pod_template, pod_parts(config, PodRequest(request))
    )
    spec = template["spec"]
    spec["nodeSelector"] = {REAL_NODE_LABEL: node_name}
    spec["restartPolicy"] = "Never"
    container = spec["containers"][0]
    container.update({"name": "notebook", "command": ["sh", "-c", PROBE]})
    return {"apiVersion": "v1", "kind": "Pod", **template}


def _container_log(node: RealNode, namespace: str, pod: str) -> str:
    logs = sorted(node.paths.pod_logs.glob(f"{namespace}_{pod}_*/notebook/*.log"))
    return "".join(p.read_text(errors="replace") for p in logs)


def test_notebook_pod_runs_on_the_real_node(
    real_node: RealNode,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = real_node
    built = _image_tarball(tmp_path / "image.tar")
    node.import_image(tmp_path / "image.tar")
    (tmp_path / "image.tar").unlink()  # about 1.2 GB
    pod = _notebook_pod(tmp_path, monkeypatch, node.name)
    reference = pod["spec"]["containers"][0]["image"]
    # the builder's image reference names the image built here (as a pre-puller would)
    node.ctr("images", "tag", "--force", containerd_ref(built), reference)
    security = pod["spec"]["securityContext"]
    assert security["runAsUser"] == 1000
    pod["metadata"]["name"] = "alice-notebook"
    core.create_namespaced_pod(namespace, pod)

    def running() -> bool:
        status = core.read_namespaced_pod("alice-notebook", namespace).status
        printed = "probe uid=" in _container_log(node, namespace, "alice-notebook")
        return bool(status.phase == "Running" and printed)

    try:
        wait_until(running, 300, "the notebook pod Running on the real node", interval=0.5)
    except TimeoutError as error:
        status = core.read_namespaced_pod("alice-notebook", namespace).status
        pytest.fail(f"{error}\n{status}\n{node.children[-1].log_tail(40)}")
    got = core.read_namespaced_pod("alice-notebook", namespace)
    assert got.spec.node_name == node.name
    line = next(
        text
        for text in _container_log(node, namespace, "alice-notebook").splitlines()
        if "probe uid=" in text
    )
    fields = dict(part.split("=", 1) for part in line.split("probe ", 1)[1].split())
    assert fields["uid"] == "1000"
    assert fields["singleuser"].endswith("/jupyterhub-singleuser")
    assert ipaddress.ip_address(got.status.pod_ip) in ipaddress.ip_network(node.subnet)
    assert len(node.bridge_ports()) == 1
    print(json.dumps({"node": node.name, "pod_ip": got.status.pod_ip, "probe": fields}))
