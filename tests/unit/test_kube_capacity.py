"""Capacity as running totals: after any sequence of node and pod watch events (and
re-lists) of the slimmed objects the cache keeps, the totals equal a from-scratch
computation over the full objects."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from gpuhub.cuda import driver_supports
from gpuhub.kube.informer import object_key, slim_node, slim_pod
from gpuhub.kube.labels import allocation_from_pod
from gpuhub.kube.nodes import CapacityTotals, node_gpus, selected
from gpuhub.model import GpuhubConfig

PRODUCTS = ("NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3", "Tesla-T4")
DRIVERS = ("535.183.01", "570.133.20", "580.65.06")


def oracle(
    config: GpuhubConfig,
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    cuda: str | None = None,
    node_selector: Mapping[str, str] | None = None,
) -> dict[str, tuple[int, int]]:
    """The former ``gpuhub.kube.nodes.capacity``: everything recomputed from scratch."""
    used: dict[str, int] = {}
    for pod in pods:
        a = allocation_from_pod(dict(pod))
        node = pod.get("spec", {}).get("nodeName")
        if a is not None and node:
            used[node] = used.get(node, 0) + a.gpus
    by_label = {t.node_label: slug for slug, t in config.gpu_types.items()}
    out = {slug: (0, 0) for slug in config.gpu_types}
    for node in nodes:
        n = node_gpus(node)
        if n is None or not n.schedulable or n.product not in by_label:
            continue
        if not selected(node, node_selector):
            continue
        if cuda and (n.driver is None or not driver_supports(n.driver, cuda)):
            continue
        slug = by_label[n.product]
        total, free = out[slug]
        out[slug] = (total + n.allocatable, free + max(0, n.allocatable - used.get(n.name, 0)))
    return out


def oracle_drivers(config, nodes, node_selector=None) -> dict[str, list[str]]:
    by_label = {t.node_label: slug for slug, t in config.gpu_types.items()}
    out: dict[str, set[str]] = {}
    for node in nodes:
        n = node_gpus(node)
        if n and n.product in by_label and n.driver and selected(node, node_selector):
            out.setdefault(by_label[n.product], set()).add(n.driver)
    return {k: sorted(v) for k, v in out.items()}


def random_node(rng: random.Random, name: str) -> dict[str, Any]:
    labels = {"pool": rng.choice(["team", "shared"])}
    if rng.random() < 0.9:
        labels["nvidia.com/gpu.product"] = rng.choice(PRODUCTS)
    if rng.random() < 0.9:
        major, minor, rev = rng.choice(DRIVERS).split(".")
        labels |= {
            "nvidia.com/cuda.driver-version.major": major,
            "nvidia.com/cuda.driver-version.minor": minor,
            "nvidia.com/cuda.driver-version.revision": rev,
        }
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": rng.choice(["True", "True", "False"])}]
    }
    if rng.random() < 0.95:
        status["allocatable"] = {"nvidia.com/gpu": str(rng.choice([0, 2, 4, 8]))}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": rng.random() < 0.1},
        "status": status,
    }


def random_pod(rng: random.Random, ns: str, name: str, nodes: list[str]) -> dict[str, Any]:
    labels = {"gpuhub.io/gpu-type": "a100", "gpuhub.io/group": "vision"}
    if rng.random() < 0.95:
        labels["gpuhub.io/gpus"] = str(rng.choice([0, 1, 2, 4]))
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": rng.choice([*nodes, None])},
        "status": {"phase": rng.choice(["Pending", "Running", "Running", "Succeeded", "Failed"])},
    }


@pytest.mark.parametrize("seed", range(20))
def test_running_totals_equal_a_full_recount(config: GpuhubConfig, seed: int) -> None:
    rng = random.Random(seed)
    selector = rng.choice([None, {"pool": "team"}])
    totals = CapacityTotals(selector)
    nodes: dict[str, dict[str, Any]] = {}
    pods: dict[str, dict[str, Any]] = {}
    node_names = [f"n{i}" for i in range(12)]
    for step in range(400):
        r = rng.random()
        if r < 0.3:
            name = rng.choice(node_names)
            if name in nodes and rng.random() < 0.3:
                totals.observe_node("DELETED", slim_node(nodes.pop(name)))
            else:
                event = "MODIFIED" if name in nodes else "ADDED"
                nodes[name] = random_node(rng, name)
                totals.observe_node(event, slim_node(nodes[name]))
        elif r < 0.9:
            ns, name = rng.choice(["a", "b"]), f"p{rng.randrange(40)}"
            key = f"{ns}/{name}"
            if key in pods and rng.random() < 0.3:
                totals.observe_pod("DELETED", slim_pod(pods.pop(key)))
            else:
                event = "MODIFIED" if key in pods else "ADDED"
                pods[key] = random_pod(rng, ns, name, node_names)
                totals.observe_pod(event, slim_pod(pods[key]))
                assert allocation_from_pod(slim_pod(pods[key])) == allocation_from_pod(pods[key])
        elif r < 0.95:  # a re-list of one namespace's pods
            ns = rng.choice(["a", "b"])
            for key in [k for k in pods if k.startswith(f"{ns}/")]:
                if rng.random() < 0.3:
                    del pods[key]
            totals.resync_pods([slim_pod(p) for k, p in pods.items() if k.startswith(f"{ns}/")], ns)
        else:  # a re-list of the nodes
            totals.resync_nodes([slim_node(n) for n in nodes.values()])
        cuda = rng.choice([None, "12.2", "12.8", "13.0"])
        assert totals.totals(config, cuda) == oracle(
            config, nodes.values(), pods.values(), cuda, selector
        ), f"seed {seed} step {step}"
        assert totals.drivers(config) == oracle_drivers(config, nodes.values(), selector)
    assert all(object_key(p) in pods for p in pods.values())


def test_reading_is_independent_of_the_cluster_size(config: GpuhubConfig) -> None:
    """1,000 GPU nodes and 10,000 gpuhub pods: a form render reads a few buckets."""
    totals = CapacityTotals()
    totals.resync_nodes(
        {
            "metadata": {
                "name": f"a{i}",
                "labels": {
                    "nvidia.com/gpu.product": PRODUCTS[i % 2],
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
        for i in range(1000)
    )
    totals.resync_pods(
        {
            "metadata": {"name": f"p{i}", "namespace": "hub", "labels": {"gpuhub.io/gpus": "1"}},
            "spec": {"nodeName": f"a{i % 1000}"},
            "status": {"phase": "Running"},
        }
        for i in range(10_000)
    )
    assert totals.totals(config) == {"a100": (4000, 0), "h100": (4000, 0)}
    assert len(totals._buckets) == 2  # all a render iterates over: (product, driver) pairs
