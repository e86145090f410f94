"""A randomized spawn/stop storm against one group's quota, with the hub killed and
restarted in the middle: the cluster never holds more GPUs for the group than its quota,
and afterwards the hub's ledger equals what runs and no pod is leaked."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client
from kubernetes.client.rest import ApiException
from test_kube_spawner import A100, form_data, group_left

from gpuhub.config import parse_config
from gpuhub.kube.groupquota import group_quota_manifests, priority_class
from kubehub import auth, cluster_hub
from testbed import Cluster

pytestmark = pytest.mark.cluster
QUOTA = 4
USERS = [f"u{i}" for i in range(16)]
# reads the spawn form's availability; never spawns, so /hub/spawn always shows the form
# (a user with a running server is redirected to it instead)
WATCHER = "watcher"
OPS = 200

CONFIG: dict[str, Any] = {
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
            "memory": "256M",
            "cpu": 0.1,
            "groups": ["vision"],
            "gpu": {"types": ["a100"], "counts": [1, 2]},
        }
    ],
    "quotas": {"groups": {"vision": {"gpus": QUOTA}}},
    "groups": {"vision": [*USERS, WATCHER]},
    "auth": {"admin_users": ["admin"]},
}


def group_gpus_in_cluster(core: Any, namespace: str) -> int:
    """GPUs the cluster holds for the group: every non-terminated pod, Pending included."""
    total = 0
    for pod in core.list_namespaced_pod(namespace, label_selector="gpuhub.io/gpus").items:
        if pod.status.phase in ("Succeeded", "Failed"):
            continue
        total += int(pod.spec.containers[0].resources.limits.get("nvidia.com/gpu", "0"))
    return total


def job_pod(name: str, node: str) -> dict[str, Any]:
    """A worker pod as the training operator creates it for a job charged to vision: the
    gpuhub job labels, one GPU, the group's quota PriorityClass; runs a few seconds."""
    return {
        "metadata": {
            "name": name,
            "labels": {
                "gpuhub.io/gpus": "1",
                "gpuhub.io/gpu-type": "a100",
                "gpuhub.io/group": "vision",
                "gpuhub.io/user": "jobs",
                "gpuhub.io/kind": "job",
            },
        },
        "spec": {
            "priorityClassName": priority_class("vision"),
            "nodeSelector": {"gpuhub.dev/test-node": node},
            "tolerations": [
                {"key": "gpuhub.dev/process-node", "operator": "Exists"},
                {"key": "nvidia.com/gpu", "operator": "Exists"},
            ],
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "worker",
                    "image": "ghcr.io/gpuhub/pytorch:cu128",
                    "command": ["python3", "-c", "import time; time.sleep(3)"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


@pytest.mark.parametrize("with_jobs", [False, True], ids=["notebooks", "notebooks+jobs"])
def test_storm_never_overcommits_and_restart_keeps_truth(
    k8s_cluster: Cluster, namespace: str, hub_kubeconfig: Path, tmp_path: Path, with_jobs: bool
):
    """With jobs, worker pods created by another process (as the training operator would)
    compete for the same group quota; the per-group ResourceQuota scoped by PriorityClass
    (gpuhub.kube.groupquota) makes the apiserver the last word for both."""
    core = k8s_cluster.core
    node = f"storm-{uuid.uuid4().hex[:6]}"
    k8s_cluster.add_process_node(
        node,
        gpus=64,
        labels={
            "nvidia.com/gpu.product": A100,
            "nvidia.com/cuda.driver-version.major": "580",
            "nvidia.com/cuda.driver-version.minor": "65",
            "nvidia.com/cuda.driver-version.revision": "06",
            "gpuhub.dev/test-node": node,
        },
    )
    quota_objects = group_quota_manifests(parse_config(CONFIG), [namespace]) if with_jobs else []
    if with_jobs:
        sched = client.SchedulingV1Api(k8s_cluster.api)
        for obj in quota_objects:
            if obj["kind"] == "PriorityClass":
                with contextlib.suppress(ApiException):
                    sched.create_priority_class(obj)
            else:
                core.create_namespaced_resource_quota(namespace, obj)
        # admission needs the controller-manager to have filled the quota's status
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rq = core.read_namespaced_resource_quota(priority_class("vision"), namespace)
            if rq.status and rq.status.hard:
                break
            time.sleep(0.3)
    hub = cluster_hub(
        tmp_path / "hub",
        CONFIG,
        hub_kubeconfig,
        namespace,
        node,
        GPUHUB_STUB_SERVER="1",
        GPUHUB_GROUP_QUOTA_CLASSES="1" if with_jobs else "0",
    )
    hub.start()
    stop_sampling = threading.Event()
    peak = {"gpus": 0, "samples": 0}

    def sample() -> None:
        while not stop_sampling.is_set():
            n = group_gpus_in_cluster(core, namespace)
            peak["gpus"] = max(peak["gpus"], n)
            peak["samples"] += 1
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        tokens = {u: hub.token(u) for u in USERS}
        rnd = random.Random(20261123)
        lock = threading.Lock()
        outcome: dict[str, int] = {}
        errors: list[str] = []
        done = {"ops": 0, "restarted": False}

        def one_op() -> None:
            with lock:
                user = rnd.choice(USERS)
                op = rnd.choice(["spawn", "spawn", "stop"])
                gpus = rnd.choice([1, 2])
                restart = done["ops"] >= OPS // 2 and not done["restarted"]
                if restart:
                    done["restarted"] = True
            if restart:
                hub.kill9()  # mid-storm: pods keep running, in-flight spawns die
                hub.start()
            try:
                if op == "spawn":
                    r = requests.post(
                        f"{hub.api}/users/{user}/server",
                        headers=auth(tokens[user]),
                        json={"profile": "gpu", "gpus": gpus},
                        timeout=60,
                    )
                else:
                    r = requests.delete(
                        f"{hub.api}/users/{user}/server", headers=auth(tokens[user]), timeout=60
                    )
            except requests.RequestException:
                time.sleep(0.5)  # the hub is restarting: not an operation
                return
            if r.status_code >= 400 and "json" not in r.headers.get("content-type", ""):
                time.sleep(0.5)  # the proxy answered (no hub route yet): not an operation
                return
            if r.status_code == 500:
                errors.append(r.json().get("message", r.text))
            with lock:
                outcome[f"{op} {r.status_code}"] = outcome.get(f"{op} {r.status_code}", 0) + 1
                done["ops"] += 1

        def worker() -> None:
            deadline = time.monotonic() + 600
            while done["ops"] < OPS and time.monotonic() < deadline:
                one_op()

        jobs = {"created": 0, "refused": 0}

        def job_creator() -> None:
            i = 0
            while done["ops"] < OPS:
                i += 1
                try:
                    core.create_namespaced_pod(namespace, job_pod(f"job-{i}-worker-0", node))
                    jobs["created"] += 1
                except ApiException as e:
                    assert e.status == 403 and "exceeded quota" in str(e.body), e
                    jobs["refused"] += 1
                time.sleep(0.3)

        with ThreadPoolExecutor(max_workers=9) as pool:
            futures = [pool.submit(worker) for _ in range(8)]
            if with_jobs:
                futures.append(pool.submit(job_creator))
            for f in futures:
                f.result()
        if with_jobs:
            assert jobs["created"] > 0 and jobs["refused"] > 0, jobs
        assert done["restarted"]
        assert sum(outcome.values()) >= OPS, outcome
        assert outcome.get("spawn 403", 0) > 0, outcome  # the quota really bit
        assert any(k.startswith("spawn 20") for k in outcome), outcome
        # let pending spawns settle, then compare the hub's ledger with the cluster
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pending = [
                u
                for u in USERS
                if (s := hub.user_model(u, tokens[u])["servers"].get("")) and s["pending"]
            ]
            if not pending:
                break
            time.sleep(0.5)
        # the hub's ledger follows the cluster through its watch: equal once events land
        deadline = time.monotonic() + 30
        while True:
            truth = group_gpus_in_cluster(core, namespace)
            seen = QUOTA - group_left(form_data(hub, WATCHER), gpu_type="a100")
            if seen == truth or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert seen == truth, f"hub ledger {seen} GPUs, cluster {truth} GPUs; {outcome}"
        # no leaked pods: every gpuhub pod belongs to a server the hub knows is running
        running = {u for u in USERS if hub.user_model(u, tokens[u])["servers"].get("")}
        pods = core.list_namespaced_pod(namespace, label_selector="gpuhub.io/gpus").items
        owners = {
            p.metadata.annotations["hub.jupyter.org/username"]
            for p in pods
            if p.status.phase not in ("Succeeded", "Failed")
            and not p.metadata.deletion_timestamp
            and p.metadata.labels.get("gpuhub.io/kind") != "job"
        }
        assert owners <= running, (owners, running)
        print(f"500 answers: {errors}")
        if with_jobs:
            print(f"job pods: {jobs}")
        print(f"storm outcome: {outcome}; peak {peak['gpus']} GPUs over {peak['samples']} samples")
    finally:
        stop_sampling.set()
        sampler.join(timeout=5)
        hub.stop()
        for pod in core.list_namespaced_pod(namespace).items:
            core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
        for obj in quota_objects:
            if obj["kind"] == "PriorityClass":
                with contextlib.suppress(ApiException):
                    client.SchedulingV1Api(k8s_cluster.api).delete_priority_class(
                        obj["metadata"]["name"]
                    )
    assert peak["samples"] > 10
    assert peak["gpus"] <= QUOTA, f"overcommit: {peak['gpus']} GPUs held, quota {QUOTA}"
