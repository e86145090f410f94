"""Hub API latency with open spawn forms polling, on both backends.

An open spawn form re-reads the form page every 5 s (``templates/form.html``), which
renders live availability.  This measures the hub's REST API (``GET /hub/api/users/<u>``,
a steady probe) at p50/p99 first with no form open, then with ``--forms`` forms polling,
and prints both side by side with the ratio.  Goal: p99 with 200 forms ≤ 1.5 × idle.

- ``cluster``: the real test control plane (tests/cluster, binaries from
  ``tests/cluster/setup.sh``) with ``--nodes`` KWOK GPU nodes and ``--pods`` gpuhub pods
  bound to them in the hub's namespace (all in the watch cache); the hub runs gpuhub's
  Kubernetes config (``GPUKubeSpawner``) with the shipped RBAC.
- ``local``: the embedded hub (``GPULocalSpawner``, declared GPUs) with ``--procs`` extra
  processes in /proc.

    python benchmarks/form_load.py                    # both, cluster first
    python benchmarks/form_load.py --backend cluster --forms 200 --seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "cluster"), str(ROOT / "tests" / "integration")]
import requests  # noqa: E402

from hubproc import Hub, auth  # noqa: E402

A100 = "NVIDIA-A100-SXM4-80GB"
PROBE = "probe"


def config(users: list[str], local: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {
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
                "groups": ["vision"],
                "gpu": {"types": ["a100"], "counts": [1, 2]},
            }
        ],
        "quotas": {"groups": {"vision": {"gpus": 8}}},
        "groups": {"vision": [PROBE, *users]},
        "auth": {"admin_users": ["admin"]},
    }
    if local:
        cfg["local"] = {"devices": [{"index": i, "type": "a100"} for i in range(4)]}
    return cfg


def percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1e3, s[min(len(s) - 1, int(0.99 * len(s)))] * 1e3


def probe(hub: Hub, token: str, seconds: float, rate: float) -> list[float]:
    """Latencies of the hub API at ``rate`` requests per second for ``seconds``."""
    out: list[float] = []
    session = requests.Session()
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        t0 = time.perf_counter()
        r = session.get(f"{hub.api}/users/{PROBE}", headers=auth(token), timeout=30)
        out.append(time.perf_counter() - t0)
        r.raise_for_status()
        n += 1
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
    return out


@contextlib.contextmanager
def forms(hub: Hub, users: list[str], interval: float) -> Iterator[dict[str, int]]:
    """``users`` each with the spawn form open, re-reading it every ``interval`` s on its
    own clock (forms opened at different moments stay spread out, as in real browsers).
    Each form is opened once first (the hub builds each user's spawner on first use)."""
    with ThreadPoolExecutor(8) as pool:
        sessions = list(pool.map(hub.login, users))
        list(pool.map(lambda s: s.get(f"{hub.url}/hub/spawn", timeout=60), sessions))
    stop = threading.Event()
    counts = {"renders": 0, "errors": 0}
    t0 = time.monotonic()

    def poll(i: int, s: requests.Session) -> None:
        first = t0 + interval * i / len(sessions)
        k = 0
        while not stop.wait(max(0.0, first + k * interval - time.monotonic())):
            r = s.get(f"{hub.url}/hub/spawn", timeout=60)
            ok = r.status_code == 200 and "gh-data" in r.text
            counts["renders" if ok else "errors"] += 1
            k = max(k + 1, math.ceil((time.monotonic() - first) / interval))

    threads = [
        threading.Thread(target=poll, args=(i, s), daemon=True) for i, s in enumerate(sessions)
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(interval)  # every form has rendered once more: steady state
        yield counts
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)


_SPAWN_PAGE = re.compile(r" 200 GET /hub/spawn \S+ ([0-9.]+)ms$")


def spawn_page_times(hub: Hub) -> tuple[float, float]:
    """p50/p99 of the hub's own request time for the form page (from its log)."""
    times = [
        float(m.group(1)) / 1e3
        for line in hub.log_path.read_text().splitlines()
        if (m := _SPAWN_PAGE.search(line))
    ]
    return percentiles(times) if times else (0.0, 0.0)


def measure(hub: Hub, users: list[str], args: argparse.Namespace) -> dict[str, Any]:
    token = hub.token(PROBE)
    probe(hub, token, 3, args.rate)  # warm-up
    idle = percentiles(probe(hub, token, args.seconds, args.rate))
    with forms(hub, users, args.interval) as counts:
        loaded = percentiles(probe(hub, token, args.seconds, args.rate))
        renders = dict(counts)
    page = spawn_page_times(hub)
    if args.keep_logs:
        Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
        shutil.copy(hub.log_path, Path(args.keep_logs) / f"{hub.data_dir.name}.log")
    return {"idle": idle, "loaded": loaded, "renders": renders, "page": page}


def cluster_half(args: argparse.Namespace, users: list[str], work: Path) -> dict[str, Any]:
    from kubehub import cluster_hub
    from testbed import A100_80GB, Cluster, Fleet, NodePool
    from testbed.rbac import hub_kubeconfig

    cluster = Cluster(work / "k8s")
    cluster.start()
    hub = None
    try:
        pool = NodePool("gpu", count=args.nodes, gpu=A100_80GB, gpus_per_node=8, driver="580.65.06")
        cluster.add_fleet(Fleet((pool,)))
        ns = "bench"
        cluster.core.create_namespace({"metadata": {"name": ns}})
        nodes = pool.node_names()

        def pod(i: int) -> None:
            cluster.core.create_namespaced_pod(
                ns,
                {
                    "metadata": {
                        "name": f"p{i}",
                        "labels": {
                            "gpuhub.io/gpus": "1",
                            "gpuhub.io/gpu-type": "a100",
                            "gpuhub.io/group": f"team{i % 50}",
                            "gpuhub.io/user": f"u{i}",
                        },
                    },
                    "spec": {
                        "nodeName": nodes[i % len(nodes)],
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": "c", "image": "x"}],
                    },
                },
            )

        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(pod, range(args.pods)))
        print(f"cluster: {args.nodes} GPU nodes, {args.pods} pods in {time.monotonic() - t0:.0f}s")
        kubeconfig = hub_kubeconfig(
            cluster.api, cluster.server, cluster.ca_file, ns, work / "hub.kubeconfig"
        )
        hub = cluster_hub(
            work / "hub",
            config(users, local=False),
            kubeconfig,
            ns,
            "unused",
            GPUHUB_NODE_SELECTOR="{}",
        )
        hub.start(timeout=120)
        return measure(hub, users, args)
    finally:
        if hub is not None:
            hub.stop()
        cluster.stop()


def local_half(args: argparse.Namespace, users: list[str], work: Path) -> dict[str, Any]:
    procs = [subprocess.Popen(["sleep", "3600"]) for _ in range(args.procs)]
    hub = Hub(work / "local-hub", config(users, local=True))
    try:
        hub.start(timeout=120)
        return measure(hub, users, args)
    finally:
        hub.stop()
        for p in procs:
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backend", choices=["both", "cluster", "local"], default="both")
    ap.add_argument("--forms", type=int, default=200)
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between form reads")
    ap.add_argument("--seconds", type=float, default=60.0, help="probe time per phase")
    ap.add_argument("--rate", type=float, default=5.0, help="probe requests per second")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--procs", type=int, default=300)
    ap.add_argument("--keep-logs", default="", help="copy each hub's log into this folder")
    args = ap.parse_args()
    users = [f"f{i:03d}-{uuid.uuid4().hex[:4]}" for i in range(args.forms)]
    halves = ["cluster", "local"] if args.backend == "both" else [args.backend]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="gpuhub-form-load-") as tmp:
        os.chmod(tmp, 0o711)  # the embedded hub's users pass through to their homes
        for half in halves:
            run = cluster_half if half == "cluster" else local_half
            rows[half] = run(args, users, Path(tmp))
    print(f"\nhub API GET /hub/api/users/<u> at {args.rate:g}/s for {args.seconds:g}s per phase")
    print(
        f"{'backend':8} {'idle p50':>9} {'idle p99':>9} {'forms p50':>10} {'forms p99':>10} ratio"
    )
    for half, r in rows.items():
        (i50, i99), (l50, l99) = r["idle"], r["loaded"]
        print(
            f"{half:8} {i50:8.1f}ms {i99:8.1f}ms {l50:9.1f}ms {l99:9.1f}ms "
            f"{l99 / i99:5.2f}x  ({args.forms} forms: {r['renders']}; form page in the "
            f"hub p50 {r['page'][0]:.1f}ms p99 {r['page'][1]:.1f}ms)"
        )


if __name__ == "__main__":
    main()
