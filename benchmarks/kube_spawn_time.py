"""Time-to-ready on a real node: gpuhub's GPUKubeSpawner vs plain ``kubespawner.KubeSpawner``.

Starts the test cluster (tests/cluster, binaries from ``tests/cluster/setup.sh``) and a
real node (the real kubelet, containerd, runc, a CNI bridge) with one simulated GPU,
imports images/build.py's ``scipy-cpu`` image into it, then runs two shipped hubs side by
side (``tests/cluster/realhub.py``: the chart's own config from ``helm-values/``, each in
its own namespace with its own home volumes), spawns alternating between them so both
see the same machine load.  Both servers are the same image on the same node with one
GPU and the gpu profile's CPU and memory (shrunk to this machine by realhub.py):

- gpuhub: GPUKubeSpawner, alice's ``gpu`` profile (1 A100, the CPU image): options
  validated against her groups, the quota reserved from the watch cache, node affinity
  for the GPU type, the profile's ``/dev/shm``;
- plain: the same values with ``c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"``
  (``hub.extraConfig``, after gpuhub's ``jupyterhub_config.d`` file) and the same
  resources from the chart's ``singleuser.cpu``/``memory``/``extraResource`` and GPU
  toleration; no options.

Time-to-ready: from ``POST /users/alice/server`` until the hub's user model says
``ready`` (asked every 50 ms); the server is stopped and its pod gone between runs.

    python benchmarks/kube_spawn_time.py --rounds 5

Prints each round, both medians and the ratio gpuhub/plain (target <= 1.05).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "cluster"), str(ROOT / "tests" / "integration")]
from test_real_node_gpu import running_gpu_node  # noqa: E402

from charthub import ChartHub, chart_values, helm_merge, user_token  # noqa: E402
from realhub import (  # noqa: E402
    GPU_OPTIONS,
    gpuhub_yaml,
    home_volumes,
    import_image,
    overlay,
    remove_pods,
    start_server,
    stop_server,
)
from testbed import Cluster, hub_rbac_objects  # noqa: E402
from testbed.apply import delete  # noqa: E402
from testbed.ports import wait_until  # noqa: E402
from testbed.rbac import hub_kubeconfig  # noqa: E402
from testbed.real_node import RealNode  # noqa: E402

PASSWORD = secrets.token_hex(12)
GROUPS = {"vision": ["alice"]}


def plain_values() -> dict[str, Any]:
    """The baseline's values: JupyterHub's KubeSpawner, with the chart's own settings for
    what GPUKubeSpawner puts into the gpu profile's pod (its cpu and memory, one GPU, the
    GPU taint's toleration)."""
    gpu = next(p for p in gpuhub_yaml()["profiles"] if p["slug"] == "gpu")
    return {
        "hub": {
            "extraConfig": {
                "zz-plain-kubespawner": 'c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"'
            }
        },
        "singleuser": {
            "cpu": {"limit": gpu["cpu"], "guarantee": gpu["cpu"]},
            "memory": {"limit": gpu["memory"], "guarantee": gpu["memory"]},
            "extraResource": {"limits": {"nvidia.com/gpu": "1"}},
            "extraTolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    }


@contextlib.contextmanager
def release(
    cluster: Cluster, node: RealNode, name: str, tmp: Path, plain: bool
) -> Iterator[tuple[ChartHub, str]]:
    """A namespace, the hub's account, home volumes and the started hub; its token."""
    core = cluster.core
    namespace = f"bench-{name}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        wait_until(
            lambda: bool(core.read_namespaced_service_account("default", namespace)),
            60,
            f"ServiceAccount {namespace}/default",
        )
        kubeconfig = hub_kubeconfig(
            cluster.api, cluster.server, cluster.ca_file, namespace, tmp / f"{name}.kubeconfig"
        )
        values = overlay(node, PASSWORD, GROUPS)
        if plain:
            values = helm_merge(values, plain_values())
        values = chart_values(["gpuhub", "gpu-cluster"], values)
        hub = ChartHub(tmp / name, values, namespace, kubeconfig, hub_address=node.gateway)
        with home_volumes(core, namespace, ["alice"], tmp / f"{name}-volumes"):
            try:
                hub.start()
                yield hub, user_token(hub, "alice", PASSWORD)
            finally:
                hub.stop()
                remove_pods(core, namespace)
    finally:
        objs = hub_rbac_objects(namespace)
        delete(cluster.api, [o for o in objs if o["kind"] == "ClusterRoleBinding"])
        core.delete_namespace(namespace)


def time_to_ready(cluster: Cluster, hub: ChartHub, token: str, options: Any) -> float:
    """Seconds from the start request until ``ready``; the server is stopped after."""
    t0 = time.perf_counter()
    start_server(hub, "alice", token, options, interval=0.05)
    took = time.perf_counter() - t0
    stop_server(hub, cluster.core, hub.namespace, "alice", token)
    return took


def report(ready: dict[str, list[float]]) -> None:
    mg, mp = statistics.median(ready["gpuhub"]), statistics.median(ready["plain"])
    print(
        f"median time-to-ready: gpuhub GPUKubeSpawner (gpu profile, 1 GPU) {mg:.3f}s, "
        f"plain KubeSpawner {mp:.3f}s, ratio gpuhub/plain {mg / mp:.3f} (target <= 1.05)",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ready: dict[str, list[float]] = {"gpuhub": [], "plain": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cluster = Cluster(tmp / "k8s").start()
        try:
            with (
                running_gpu_node(cluster, tmp / "node", 1) as node,
                release(cluster, node, "gpuhub", tmp, plain=False) as (gpuhub, gtoken),
                release(cluster, node, "plain", tmp, plain=True) as (plain, ptoken),
            ):
                import_image(node, tmp)
                runs = {"gpuhub": (gpuhub, gtoken, GPU_OPTIONS), "plain": (plain, ptoken, None)}
                # one warm-up spawn each (the image's files into the page cache, the PVC bound)
                for hub, token, options in runs.values():
                    time_to_ready(cluster, hub, token, options)
                for i in range(args.rounds):
                    order = ("gpuhub", "plain") if i % 2 == 0 else ("plain", "gpuhub")
                    for name in order:
                        ready[name].append(time_to_ready(cluster, *runs[name]))
                    print(
                        f"round {i + 1:2d}: ready gpuhub {ready['gpuhub'][-1]:.3f}s "
                        f"plain {ready['plain'][-1]:.3f}s",
                        flush=True,
                    )
                report(ready)  # before the clean-up, whose checks may fail
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
