"""API requests per spawn: GPUKubeSpawner vs plain KubeSpawner, on the real test cluster.

Starts the test cluster (tests/cluster, binaries from ``tests/cluster/setup.sh``) with one
process node, then for each spawner runs a hub and N spawn + stop cycles of one user's
server (a stub HTTP server stands in for JupyterLab so only API traffic differs).  The
apiserver's own ``apiserver_request_total`` counter is read before and after each run; the
difference, by verb and resource, divided by N is the cost of a spawn + stop.  Background
traffic (scheduler, controller-manager, the process node's status updates) is the same in
both runs and is part of both numbers.

    python benchmarks/kube_api_calls.py --cycles 10
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "cluster"), str(ROOT / "tests" / "integration")]
import requests  # noqa: E402

from hubproc import auth  # noqa: E402
from kubehub import cluster_hub  # noqa: E402
from testbed import Cluster  # noqa: E402
from testbed.rbac import hub_kubeconfig  # noqa: E402

A100 = "NVIDIA-A100-SXM4-80GB"
CONFIG = {
    "gpu_types": {"a100": {"display_name": "A100", "node_label": A100}},
    "images": {
        "torch": {
            "display_name": "PyTorch",
            "image": "ghcr.io/gpuhub/pytorch:cu128",
            "framework": "pytorch",
            "cuda": "12.8",
            "min_driver": "525.60.13",
        }
    },
    "profiles": [
        {
            "slug": "gpu",
            "display_name": "GPU",
            "images": ["torch"],
            "cpu": 0.1,
            "memory": "256M",
            "groups": ["vision"],
            "gpu": {"types": ["a100"], "counts": [1]},
        }
    ],
    "quotas": {"groups": {"vision": {"gpus": 4}}},
    "groups": {"vision": ["alice"]},
    "auth": {"admin_users": ["admin"]},
}
_LINE = re.compile(r"^apiserver_request_total\{(.*)\} ([0-9.e+]+)$")


def request_counts(cluster: Cluster) -> collections.Counter[tuple[str, str]]:
    """(verb, resource) -> requests served so far, from the apiserver's /metrics."""
    text = cluster.api.call_api(
        "/metrics", "GET", _preload_content=False, auth_settings=["BearerToken"]
    )[0].data.decode()
    out: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            resource = labels.get("resource", "?")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            out[(labels.get("verb", "?"), resource)] += int(float(m.group(2)))
    return out


def run(
    cluster: Cluster, ns: str, node: str, plain: bool, cycles: int, tmp: Path
) -> collections.Counter[tuple[str, str]]:
    kubeconfig = hub_kubeconfig(
        cluster.api, cluster.server, cluster.ca_file, ns, tmp / f"{ns}.kubeconfig"
    )
    env = {"GPUHUB_STUB_SERVER": "1"}
    if plain:
        env["GPUHUB_PLAIN_KUBESPAWNER"] = "1"
    hub = cluster_hub(tmp / ("plain" if plain else "gpuhub"), CONFIG, kubeconfig, ns, node, **env)
    hub.start()
    try:
        token = hub.token("alice")
        options = None if plain else {"profile": "gpu"}
        # one warm-up cycle: first-use costs (watch set-up, token) are not per spawn
        for warm in (True, *([False] * cycles)):
            if not warm and "before" not in locals():
                before = request_counts(cluster)
            r = requests.post(
                f"{hub.api}/users/alice/server", json=options, headers=auth(token), timeout=120
            )
            r.raise_for_status()
            hub.wait_ready("alice", token, timeout=120)
            hub.stop_server("alice", token, timeout=120)
            while cluster.core.list_namespaced_pod(ns).items:
                time.sleep(0.2)
        after = request_counts(cluster)
    finally:
        hub.stop()
    return after - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cluster = Cluster(tmp / "k8s").start()
        try:
            node = "bench-node"
            cluster.add_process_node(
                node,
                gpus=8,
                labels={
                    "nvidia.com/gpu.product": A100,
                    "nvidia.com/cuda.driver-version.major": "580",
                    "nvidia.com/cuda.driver-version.minor": "65",
                    "nvidia.com/cuda.driver-version.revision": "06",
                    "gpuhub.dev/test-node": node,
                },
            )
            results = {}
            for plain in (True, False):
                ns = "bench-plain" if plain else "bench-gpuhub"
                cluster.core.create_namespace({"metadata": {"name": ns}})
                time.sleep(2)  # the namespace's default ServiceAccount
                results["plain" if plain else "gpuhub"] = run(
                    cluster, ns, node, plain, args.cycles, tmp
                )
        finally:
            cluster.stop()
    keys = sorted(
        set(results["plain"]) | set(results["gpuhub"]),
        key=lambda k: -(results["plain"][k] + results["gpuhub"][k]),
    )
    print(f"API requests per spawn + stop cycle ({args.cycles} cycles), all clients:")
    print(f"{'verb':<8} {'resource':<24} {'KubeSpawner':>12} {'gpuhub':>10}")
    for k in keys:
        p, g = results["plain"][k] / args.cycles, results["gpuhub"][k] / args.cycles
        if p or g:
            print(f"{k[0]:<8} {k[1]:<24} {p:>12.1f} {g:>10.1f}")
    tp = sum(results["plain"].values()) / args.cycles
    tg = sum(results["gpuhub"].values()) / args.cycles
    lp = sum(v for (verb, _), v in results["plain"].items() if verb == "LIST") / args.cycles
    lg = sum(v for (verb, _), v in results["gpuhub"].items() if verb == "LIST") / args.cycles
    print(f"total per cycle: KubeSpawner {tp:.1f}, gpuhub {tg:.1f}, ratio {tg / tp:.3f}")
    print(f"LIST per cycle: KubeSpawner {lp:.1f}, gpuhub {lg:.1f} (extra LIST: {lg - lp:+.1f})")


if __name__ == "__main__":
    main()
