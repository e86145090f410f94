"""The shipped hub (:mod:`charthub`) spawning servers from the built CPU single-user image
on a real node (testbed/real_node.py): what test_real_node_spawn.py and
benchmarks/kube_spawn_time.py share.

- The values: ``helm-values/gpuhub.yaml`` + ``gpu-cluster.yaml`` and :func:`overlay`: the
  shipped gpuhub YAML with its profiles shrunk to this 2-CPU machine (as in
  test_real_node_gpu.py, but 0.5 CPU and 1G: JupyterLab took 52 to 59 s to start at 0.1
  CPU, and it and a kernel need more than 128M) and
  the GPU profile offering the CPU image (the CUDA images are not built here), user pods
  pinned to the node with ``singleuser.nodeSelector``, shared-password login with the
  identity provider's groups as ``load_groups``, the idle culler off.
- The hub's address: servers reach it at the node's bridge address
  (``ChartHub.hub_address``), where a cluster's pods would reach the hub Service.
- The image: images/build.py's ``scipy-cpu``, imported into the node's containerd under the
  reference the shipped values name (as a pre-puller would have pulled it).
- Homes: no storage provisioner runs here, so a static hostPath PersistentVolume per user
  (:func:`home_volumes`), owned by the image's uid 1000, binds the claim the hub makes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from test_real_node import _image_tarball
from test_real_node_gpu import _config_data

from charthub import ChartHub, static_home_volume
from testbed.ports import wait_until
from testbed.real_node import REAL_NODE_LABEL, RealNode, containerd_ref

IMAGE = "scipy-cpu"
SHIPPED_MATRIX = "/usr/local/share/gpuhub/matrix.yaml"  # images/hub/Dockerfile
JOVYAN = (1000, 100)  # the image's user and z2jh's singleuser.uid / fsGid
GPU_OPTIONS = {"profile": "gpu", "gpu_type": "a100", "gpus": 1, "image": IMAGE}
CPU_OPTIONS = {"profile": "cpu", "image": IMAGE}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def gpuhub_yaml() -> dict[str, Any]:
    """The shipped gpuhub YAML, shrunk to this machine, the GPU profile offering ``IMAGE``."""
    data = _config_data()
    data["image_matrix"] = SHIPPED_MATRIX
    for profile in data["profiles"]:
        profile.update(cpu=0.5, memory="1G")
        if profile["slug"] == "gpu":
            profile["images"] = [*profile["images"], IMAGE]
    return data


def overlay(node: RealNode, password: str, groups: dict[str, list[str]]) -> dict[str, Any]:
    """The test's values on top of the shipped files (see the module docstring)."""
    users = sorted({u for members in groups.values() for u in members})
    return {
        "hub": {
            "config": {
                "JupyterHub": {
                    "authenticator_class": "shared-password",
                    "load_groups": {g: {"users": members} for g, members in groups.items()},
                },
                "SharedPasswordAuthenticator": {"user_password": password},
                "Authenticator": {"allowed_users": users},
            },
            "extraFiles": {"gpuhub-yaml": {"stringData": yaml.safe_dump(gpuhub_yaml())}},
        },
        "singleuser": {"nodeSelector": {REAL_NODE_LABEL: node.name}},
        "cull": {"enabled": False},
    }


def import_image(node: RealNode, workdir: Path) -> str:
    """Build (cached) and import ``IMAGE`` into the node; tag it as the shipped values
    name it.  The reference."""
    tarball = workdir / "image.tar"
    built = _image_tarball(tarball)
    node.import_image(tarball)
    tarball.unlink()  # about 1.2 GB
    with (Path(__file__).resolve().parents[2] / "helm-values" / "gpuhub.yaml").open() as f:
        image = yaml.safe_load(f)["singleuser"]["image"]
    reference = f"{image['name']}:{image['tag']}"
    if containerd_ref(built) != containerd_ref(reference):
        node.ctr("images", "tag", "--force", containerd_ref(built), containerd_ref(reference))
    return reference


@contextlib.contextmanager
def home_volumes(
    core: client.CoreV1Api, namespace: str, users: list[str], root: Path
) -> Iterator[dict[str, Path]]:
    """One static hostPath PV per user, bound to ``claim-<user>``; the folders (owned by
    uid 1000, as an admin prepares them) by user.  PVs and folders are removed after."""
    homes: dict[str, Path] = {}
    made: list[str] = []
    try:
        for user in users:
            home = root / f"home-{user}"
            home.mkdir(parents=True)
            os.chown(home, *JOVYAN)
            homes[user] = home
            name = f"{namespace}-home-{user}"
            core.create_persistent_volume(
                static_home_volume(name, namespace, f"claim-{user}", str(home))
            )
            made.append(name)
        yield homes
    finally:
        for name in made:
            with contextlib.suppress(ApiException):
                core.delete_persistent_volume(name)
        for home in homes.values():
            shutil.rmtree(home, ignore_errors=True)


def start_server(
    hub: ChartHub,
    user: str,
    token: str,
    options: dict[str, Any] | None,
    timeout: float = 300,
    interval: float = 0.2,
) -> dict[str, Any]:
    """``POST /users/<user>/server`` and wait (asking every ``interval``) until the hub
    calls the server ready; its model.  ``AssertionError`` with the hub's log when the
    spawn fails."""
    r = requests.post(
        f"{hub.api}/users/{user}/server", json=options, headers=auth(token), timeout=120
    )
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + timeout
    server: dict[str, Any] = {"pending": "spawn"}
    while time.monotonic() < deadline:
        model = requests.get(f"{hub.api}/users/{user}", headers=auth(token), timeout=10).json()
        server = model["servers"].get("", {})
        if not server or server.get("ready"):
            break  # ready, or the spawn failed
        time.sleep(interval)
    assert server.get("ready"), f"{user}: {server}\n{hub.log_since()[-6000:]}"
    return server


def server_pod(core: client.CoreV1Api, namespace: str, user: str) -> Any:
    """The pod of ``user``'s default server."""
    (pod,) = [
        p
        for p in core.list_namespaced_pod(namespace).items
        if (p.metadata.annotations or {}).get("hub.jupyter.org/username") == user
    ]
    return pod


def stop_server(
    hub: ChartHub, core: client.CoreV1Api, namespace: str, user: str, token: str
) -> None:
    """Stop ``user``'s server and wait until the hub says so and its pod is gone."""
    r = requests.delete(f"{hub.api}/users/{user}/server", headers=auth(token), timeout=120)
    assert r.status_code in (202, 204), r.text

    def stopped() -> bool:
        model = requests.get(f"{hub.api}/users/{user}", headers=auth(token), timeout=10).json()
        pods = core.list_namespaced_pod(namespace).items
        mine = [
            p
            for p in pods
            if (p.metadata.annotations or {}).get("hub.jupyter.org/username") == user
        ]
        return "" not in model["servers"] and not mine

    wait_until(stopped, 120, f"{user}'s server stopped", interval=0.2)


def remove_pods(core: client.CoreV1Api, namespace: str, timeout: float = 120) -> None:
    """Delete the namespace's pods through the kubelet (grace 1, not 0: grace 0 removes
    the object without the kubelet tearing the pod down) and wait until they are gone."""
    for pod in core.list_namespaced_pod(namespace).items:
        with contextlib.suppress(ApiException):
            core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=1)
    wait_until(
        lambda: not core.list_namespaced_pod(namespace).items,
        timeout,
        f"pods of {namespace} gone",
        interval=0.5,
    )
