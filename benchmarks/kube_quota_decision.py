"""Quota decision time in cluster mode with 10,000 gpuhub pods on 1,000 GPU nodes.

Feeds the real ``KubeLedgerBackend`` (the object ``GPUKubeSpawner`` uses) with watch events
for N pods, then times ``reserve`` (check + reserve, the synchronous step of a spawn) and
``release``, and separately the spawn form's read of the capacity running totals.

    python benchmarks/kube_quota_decision.py --pods 10000 --nodes 1000

Target: decision median ≤ 1 ms.  No API call is involved: the numbers are pure CPU.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from gpuhub.config import parse_config
from gpuhub.kube.ledger import KubeLedgerBackend
from gpuhub.kube.nodes import CapacityTotals
from gpuhub.profiles import validate_options

TYPES = {"a100": "NVIDIA-A100-SXM4-80GB", "h100": "NVIDIA-H100-80GB-HBM3"}
GROUPS = [f"team{i}" for i in range(50)]


def config(groups: list[str]) -> Any:
    return parse_config(
        {
            "gpu_types": {
                t: {"display_name": t.upper(), "node_label": label} for t, label in TYPES.items()
            },
            "images": {
                "torch": {
                    "display_name": "PyTorch",
                    "image": "x/torch:1",
                    "cuda": "12.8",
                    "min_driver": "525.60.13",
                    "framework": "pytorch",
                }
            },
            "profiles": [
                {
                    "slug": "gpu",
                    "display_name": "GPU",
                    "images": ["torch"],
                    "groups": groups,
                    "gpu": {"types": list(TYPES), "counts": [1, 2, 4, 8]},
                }
            ],
            "quotas": {"groups": {g: {"gpus": 100_000} for g in groups}},
        }
    )


def make_nodes(n: int) -> list[dict[str, Any]]:
    nodes = []
    for i in range(n):
        t = "h100" if i % 4 == 0 else "a100"
        nodes.append(
            {
                "metadata": {
                    "name": f"gpu-{i}",
                    "labels": {
                        "nvidia.com/gpu.product": TYPES[t],
                        "nvidia.com/cuda.driver-version.major": "580",
                        "nvidia.com/cuda.driver-version.minor": "65",
                        "nvidia.com/cuda.driver-version.revision": "06",
                    },
                },
                "spec": {},
                "status": {
                    "allocatable": {"nvidia.com/gpu": "8"},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )
    return nodes


def make_pods(n: int, nodes: int) -> list[dict[str, Any]]:
    rnd = random.Random(7)
    pods = []
    for i in range(n):
        t = rnd.choice(list(TYPES))
        g = rnd.choice(GROUPS)
        pods.append(
            {
                "metadata": {
                    "name": f"pod-{i}",
                    "namespace": f"ns{i % 20}",
                    "creationTimestamp": "2026-11-23T09:00:00Z",
                    "labels": {
                        "gpuhub.io/gpus": "1",
                        "gpuhub.io/gpu-type": t,
                        "gpuhub.io/group": g,
                        "gpuhub.io/user": f"user{i % 700}",
                        "gpuhub.io/kind": "job" if i % 3 == 0 else "notebook",
                    },
                    "annotations": {"gpuhub.io/key": f"server:user{i}/"},
                },
                "spec": {"nodeName": f"gpu-{i % nodes}"},
                "status": {"phase": "Running" if i % 10 else "Pending"},
            }
        )
    return pods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=1_000)
    ap.add_argument("--n", type=int, default=2_000, help="decisions to time")
    args = ap.parse_args()
    cfg = config(GROUPS)
    nodes, pods = make_nodes(args.nodes), make_pods(args.pods, args.nodes)
    backend = KubeLedgerBackend(lambda: cfg)
    t0 = time.perf_counter()
    backend.resync(pods)
    load = time.perf_counter() - t0
    request = validate_options(cfg, "alice", ["team3"], {"profile": "gpu", "gpus": "2"})
    samples = []
    for i in range(args.n):
        t0 = time.perf_counter()
        backend.reserve(f"server:bench{i}/", request, ["team3"])
        samples.append(time.perf_counter() - t0)
        backend.release(f"server:bench{i}/")
    samples.sort()
    totals = CapacityTotals()
    totals.resync_nodes(nodes)
    totals.resync_pods(pods)
    cap = []
    for _ in range(200):
        t0 = time.perf_counter()
        totals.totals(cfg)
        cap.append(time.perf_counter() - t0)
    med = statistics.median(samples) * 1e3
    print(f"{args.pods} pods on {args.nodes} GPU nodes; ledger load {load * 1e3:.0f} ms")
    print(
        f"quota decision (check + reserve): median {med:.4f} ms, "
        f"p99 {samples[int(0.99 * len(samples))] * 1e3:.4f} ms over {args.n} decisions "
        f"(target <= 1 ms: {med / 1.0:.3f} of target)"
    )
    print(f"spawn-form capacity (running totals): median {statistics.median(cap) * 1e3:.4f} ms")


if __name__ == "__main__":
    main()
