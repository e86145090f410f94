"""Pure Kubernetes pieces: pod overrides, labels, node capacity, messages, kube ledger."""

from __future__ import annotations

import copy

import pytest
from kubespawner.slugs import is_valid_label

from gpuhub.errors import QuotaDenied
from gpuhub.kube.labels import allocation_from_pod, allocation_marks, label_value
from gpuhub.kube.ledger import KubeLedgerBackend
from gpuhub.kube.messages import explain_failed_scheduling, pods_ahead, wait_message
from gpuhub.kube.nodes import CapacityTotals, driver_of
from gpuhub.kube.objects import (
    PodRequest,
    cpu_quantity,
    k8s_quantity,
    merge_into_template,
    pod_overrides,
    pod_parts,
)
from gpuhub.model import Allocation
from gpuhub.profiles import validate_options
from gpuhub.sizes import to_bytes


def req(config, user="alice", groups=("vision",), **opts):
    return validate_options(config, user, list(groups), opts)


def test_gpu_pod_overrides(config):
    r = req(config, profile="gpu", gpus=2, image="torch")
    alloc = Allocation("server:alice/", "alice", "vision", "a100", 2)
    o = pod_overrides(config, r, alloc)
    assert o["extra_resource_limits"] == {"nvidia.com/gpu": "2"}
    assert o["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert o["image"] == "ghcr.io/gpuhub/pytorch:2.11-cu128"
    assert o["mem_limit"] == 2 * 1024**3 and o["cpu_limit"] == 1.0
    assert o["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    assert o["volume_mounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert "NVIDIA_VISIBLE_DEVICES" not in o["environment"]
    assert o["extra_labels"] == {
        "gpuhub.io/user": "alice",
        "gpuhub.io/group": "vision",
        "gpuhub.io/gpus": "2",
        "gpuhub.io/gpu-type": "a100",
        "gpuhub.io/kind": "notebook",
        "gpuhub.io/profile": "gpu",
    }
    assert o["extra_annotations"]["gpuhub.io/key"] == "server:alice/"
    terms = o["node_affinity_required"]
    product = {
        "key": "nvidia.com/gpu.product",
        "operator": "In",
        "values": ["NVIDIA-A100-SXM4-80GB"],
    }
    # every OR-ed driver term also requires the GPU type
    assert terms and all(t["matchExpressions"][0] == product for t in terms)
    keys = {e["key"] for t in terms for e in t["matchExpressions"][1:]}
    assert "nvidia.com/cuda.driver-version.major" in keys
    assert "nvidia.com/cuda.driver.major" in keys  # deprecated label read too


def test_cpu_pod_has_no_gpu(config):
    o = pod_overrides(config, req(config), None)
    assert o["extra_resource_limits"] == {} and o["tolerations"] == []
    assert o["node_affinity_required"] == []
    assert o["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "gpuhub.io/gpus" not in o["extra_labels"]


def test_quantities_are_exact():
    assert k8s_quantity("8G") == k8s_quantity("8Gi") == "8Gi"
    assert k8s_quantity("1.5G") == "1536Mi" and k8s_quantity("1000") == "1000"
    assert cpu_quantity(1.0) == "1" and cpu_quantity(0.5) == "500m"
    assert cpu_quantity(2.25) == "2250m"


def test_priority_class_decided_by_the_builder(raw):
    from gpuhub.config import parse_config

    raw["profiles"][1]["priority_class"] = "research"
    config = parse_config(raw)
    r = req(config, profile="gpu", gpus=2)
    alloc = Allocation("server:alice/", "alice", "vision", "a100", 2)
    assert pod_overrides(config, r, alloc)["priority_class_name"] == "research"
    quota = pod_overrides(config, r, alloc, group_quota_classes=True)
    assert quota["priority_class_name"] == "gpuhub-group-vision"
    # a CPU pod is never in a group's GPU quota scope
    cpu = pod_overrides(config, req(config), None, group_quota_classes=True)
    assert cpu["priority_class_name"] == ""


def test_parts_merge_into_the_admins_template(config):
    """A job's worker: the admin's template keeps its own entries; gpuhub's are added (lists
    extended, same names replaced, dicts merged), cpu/memory/GPUs/priority set."""
    r = req(config, profile="gpu", gpus=1, image="torch")
    parts = pod_parts(config, PodRequest(r, group="vision"))
    admin_term = {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ml"]}]}
    preferred = [{"weight": 1, "preference": admin_term}]
    admin = {
        "metadata": {"labels": {"team": "ml", "gpuhub.io/kind": "admin"}},
        "spec": {
            "priorityClassName": "admin-default",
            "tolerations": [{"key": "pool", "operator": "Exists"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [admin_term]
                    },
                    "preferredDuringSchedulingIgnoredDuringExecution": preferred,
                }
            },
            "volumes": [{"name": "dshm", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
            "containers": [
                {
                    "name": "main",
                    "env": [
                        {"name": "GPUHUB_PROFILE", "value": "forged"},
                        {"name": "HTTP_PROXY", "value": "http://proxy"},
                    ],
                    "resources": {
                        "requests": {"cpu": "8", "ephemeral-storage": "10Gi"},
                        "limits": {"nvidia.com/gpu": "4"},
                    },
                }
            ],
        },
    }
    before = copy.deepcopy(admin)
    assert merge_into_template(admin, parts) == {
        "metadata": {
            "labels": {"team": "ml", "gpuhub.io/kind": "notebook", "gpuhub.io/profile": "gpu"},
            "annotations": {"gpuhub.io/image": "torch", "gpuhub.io/profile": "gpu"},
        },
        "spec": {
            "priorityClassName": "admin-default",
            "tolerations": [
                {"key": "pool", "operator": "Exists"},
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [admin_term, *parts.node_selector_terms]
                    },
                    "preferredDuringSchedulingIgnoredDuringExecution": preferred,
                }
            },
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "ghcr.io/gpuhub/pytorch:2.11-cu128",
                    "env": [
                        {"name": "HTTP_PROXY", "value": "http://proxy"},
                        {"name": "GPUHUB_PROFILE", "value": "gpu"},
                        {"name": "GPUHUB_IMAGE", "value": "torch"},
                        {"name": "GPUHUB_GPU_TYPE", "value": "a100"},
                    ],
                    "resources": {
                        "requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "10Gi"},
                        "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"},
                    },
                    "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                }
            ],
        },
    }
    assert admin == before  # the admin's template is never modified
    assert parts.node_selector_terms  # the GPU type and driver floor


@pytest.mark.parametrize("name", ["alice", "Alice@Example.COM", "ü-ser", "a" * 80, "-x-", "a b"])
def test_label_values_valid_for_any_name(name):
    assert is_valid_label(label_value(name))
    alloc = Allocation("server:" + name + "/", name, "Group With Spaces", "a100", 1)
    labels, ann = allocation_marks(alloc)
    assert all(is_valid_label(v) for v in labels.values())
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "labels": labels,
            "annotations": ann,
            "creationTimestamp": "2026-11-23T09:12:00Z",
        },
        "status": {"phase": "Pending"},
    }
    back = allocation_from_pod(pod)
    assert back is not None
    assert (back.key, back.user, back.group, back.gpus, back.pending) == (
        alloc.key,
        name,
        "Group With Spaces",
        1,
        True,
    )


def test_terminated_and_unmarked_pods_hold_nothing():
    labels = {"gpuhub.io/gpus": "1", "gpuhub.io/gpu-type": "a100"}
    assert (
        allocation_from_pod({"metadata": {"labels": labels}, "status": {"phase": "Succeeded"}})
        is None
    )
    assert allocation_from_pod({"metadata": {"labels": {}}, "status": {}}) is None
    job = allocation_from_pod(
        {
            "metadata": {
                "name": "j-worker-0",
                "namespace": "n",
                "labels": {**labels, "gpuhub.io/kind": "job"},
            },
            "status": {"phase": "Running"},
        }
    )
    assert job is not None and job.kind == "job" and job.key == "pod:n/j-worker-0"


def node(name, product, gpus, driver, ready=True, unschedulable=False, deprecated=False):
    major, minor, rev = driver.split(".")
    prefix = "nvidia.com/cuda.driver." if deprecated else "nvidia.com/cuda.driver-version."
    labels = {
        "nvidia.com/gpu.product": product,
        prefix + "major": major,
        prefix + "minor": minor,
        prefix + ("rev" if deprecated else "revision"): rev,
    }
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": unschedulable},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def gpod(
    name,
    node_name,
    gpus,
    gpu_type="a100",
    phase="Running",
    group="vision",
    user="bob",
    created="2026-11-23T09:00:00Z",
):
    return {
        "metadata": {
            "name": name,
            "namespace": "hub",
            "creationTimestamp": created,
            "labels": {
                "gpuhub.io/gpus": str(gpus),
                "gpuhub.io/gpu-type": gpu_type,
                "gpuhub.io/group": group,
                "gpuhub.io/user": user,
            },
            "annotations": {"gpuhub.io/key": f"server:{name}/"},
        },
        "spec": {"nodeName": node_name},
        "status": {"phase": phase},
    }


def capacity(config, nodes, pods, cuda=None, node_selector=None):
    totals = CapacityTotals(node_selector)
    totals.resync_nodes(nodes)
    totals.resync_pods(pods)
    return totals.totals(config, cuda)


def test_capacity_and_driver_filter(config):
    nodes = [
        node("a1", "NVIDIA-A100-SXM4-80GB", 8, "535.104.05"),
        node("a2", "NVIDIA-A100-SXM4-80GB", 8, "580.65.06", deprecated=True),
        node("a3", "NVIDIA-A100-SXM4-80GB", 8, "580.95.05", unschedulable=True),
        node("h1", "NVIDIA-H100-80GB-HBM3", 4, "570.124.06", ready=False),
    ]
    pods = [gpod("p1", "a1", 3), gpod("p2", "a2", 8), gpod("p3", None, 2, phase="Pending")]
    assert capacity(config, nodes, pods) == {"a100": (16, 5), "h100": (0, 0)}
    assert capacity(config, nodes, pods, cuda="13.0") == {"a100": (8, 0), "h100": (0, 0)}
    assert capacity(config, nodes, pods, cuda="12.8") == {"a100": (16, 5), "h100": (0, 0)}
    assert driver_of(nodes[1]["metadata"]["labels"]) == "580.65.6"
    # a spawner's node_selector limits what counts (e.g. a pool of its own)
    nodes[0]["metadata"]["labels"]["pool"] = "team"
    assert capacity(config, nodes, pods, node_selector={"pool": "team"}) == {
        "a100": (8, 5),
        "h100": (0, 0),
    }


def test_kube_ledger_counts_pending_pods_and_in_flight(config):
    backend = KubeLedgerBackend(lambda: config)
    bob = gpod("bob", None, 2, phase="Pending")
    backend.resync([bob])
    r = req(config, "alice", profile="gpu", gpus=2)
    alloc = backend.reserve("server:alice/", r, ["vision"])
    assert alloc is not None and alloc.pending
    # a third request is denied: bob's Pending pod + alice's in-flight reservation
    with pytest.raises(QuotaDenied, match="group vision uses 4 of 4 GPUs: alice 2"):
        backend.reserve("server:carol/", req(config, "carol", profile="gpu"), ["vision"])
    # alice's pod shows up (with the reservation's stamp): it replaces the reservation
    labels, ann = allocation_marks(alloc, "gpu")
    pod = {
        "metadata": {
            "name": "jupyter-alice",
            "namespace": "hub",
            "labels": labels,
            "annotations": ann,
        },
        "spec": {},
        "status": {"phase": "Pending"},
    }
    backend.observe("ADDED", pod)
    usage = backend.snapshot().usage()
    assert sorted(a.key for a in usage) == ["pod:hub/bob", "pod:hub/jupyter-alice"]
    assert sorted(a.user for a in usage) == ["alice", "bob"]
    assert sum(a.gpus for a in usage) == 4
    # stopping alice: her terminating pod still counts until the watch says it is gone
    backend.release("server:alice/")
    assert backend.snapshot().totals.used(group="vision") == 4
    backend.observe("DELETED", pod)
    assert backend.snapshot().totals.used(group="vision") == 2
    # a finished pod frees its GPUs; a re-list replaces everything
    bob["status"]["phase"] = "Failed"
    backend.observe("MODIFIED", bob)
    assert backend.snapshot().totals.used(group="vision") == 0
    backend.resync([gpod("x", "a1", 1), gpod("y", "a1", 1, user="y")])
    assert backend.snapshot().totals.used(group="vision") == 2


def test_old_pod_and_new_spawn_of_one_server_both_count(config):
    """Restarting a server while its old pod terminates: both hold GPUs until the old pod is
    gone (no overcommit), and the old pod's DELETED event keeps the new reservation."""
    backend = KubeLedgerBackend(lambda: config)
    old = gpod("alice", "a1", 1, user="alice")
    old["metadata"]["annotations"]["gpuhub.io/key"] = "server:alice/"
    old["metadata"]["deletionTimestamp"] = "2026-11-23T09:10:00Z"
    backend.resync([old])
    backend.reserve("server:alice/", req(config, "alice", profile="gpu", gpus=2), ["vision"])
    assert backend.snapshot().totals.used(group="vision") == 3
    with pytest.raises(QuotaDenied):
        backend.reserve("server:bob/", req(config, "bob", profile="gpu", gpus=2), ["vision"])
    backend.observe("DELETED", old)
    assert backend.snapshot().totals.used(group="vision") == 2


def test_messages():
    assert wait_message("A100", 16, 0, 3) == "waiting for an A100: 0 of 16 free, 3 pods ahead"
    assert wait_message("H100", 4, 1, 0) == "waiting for an H100: 1 of 4 free, next in line"
    msg = (
        "0/5 nodes are available: 2 Insufficient nvidia.com/gpu, 2 node(s) didn't match "
        "Pod's node affinity/selector, 1 node(s) had untolerated taint "
        "{nvidia.com/gpu: present}. preemption: 0/5 nodes are available."
    )
    assert explain_failed_scheduling(msg, "A100") == (
        "No node can take an A100 right now (5 nodes: 2 nodes with no free GPU; 2 nodes with "
        "another GPU type or a driver too old for this image; 1 node reserved for other "
        "work). Waiting."
    )
    pods = [
        gpod("x", None, 1, phase="Pending", created="2026-11-23T09:00:00Z"),
        gpod("y", None, 1, phase="Pending", created="2026-11-23T09:05:00Z"),
        gpod("z", None, 1, phase="Pending", created="2026-11-23T09:09:00Z"),
    ]
    assert pods_ahead(pods, "server:z/", "a100") == 2


def test_to_bytes():
    assert to_bytes("4G") == to_bytes("4Gi") == 4 * 1024**3
    assert to_bytes("512M") == 512 * 1024**2 and to_bytes("1000") == 1000


def test_group_quota_manifests(config):
    from gpuhub.kube.groupquota import group_quota_manifests, is_quota_rejection, priority_class

    objs = group_quota_manifests(config, ["hub", "jobs"])
    assert [(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objs] == [
        ("PriorityClass", "gpuhub-group-vision", None),
        ("ResourceQuota", "gpuhub-group-vision", "hub"),
        ("ResourceQuota", "gpuhub-group-vision", "jobs"),
        ("PriorityClass", "gpuhub-group-nlp", None),
        ("ResourceQuota", "gpuhub-group-nlp", "hub"),
        ("ResourceQuota", "gpuhub-group-nlp", "jobs"),
    ]
    assert objs[0]["value"] == 0 and objs[0]["preemptionPolicy"] == "Never"
    assert objs[1]["spec"] == {
        "hard": {"requests.nvidia.com/gpu": "4"},
        "scopeSelector": {
            "matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In", "values": ["gpuhub-group-vision"]}
            ]
        },
    }
    # any group name gives a valid object name, and distinct names stay distinct
    from kubespawner.slugs import is_valid_object_name

    for g in ("Vision Team", "ml@corp", "x" * 90):
        assert is_valid_object_name(priority_class(g))
    assert priority_class("Vision Team") != priority_class("vision-team")
    assert is_quota_rejection(403, 'pods "x" is forbidden: exceeded quota: gpuhub-group-vision')
    assert not is_quota_rejection(403, "forbidden: User cannot create pods")


def test_job_reservation_holds_until_all_its_worker_pods_are_seen(config):
    """A 2-worker × 2-GPU job holds 4 GPUs from submit until both worker pods are seen,
    whatever the order; pods already seen keep counting under their own keys."""
    backend = KubeLedgerBackend(lambda: config)
    r = req(config, "alice", profile="gpu", gpus=4)
    backend.reserve("job:aa01", r, ["vision"], kind="job")

    def worker(name):
        pod = gpod(name, "a1", 2, user="alice")
        pod["metadata"]["annotations"] = {}
        pod["metadata"]["labels"] |= {"gpuhub.io/kind": "job", "gpuhub.io/job-id": "aa01"}
        return pod

    used = lambda: backend.snapshot().totals.used(group="vision")  # noqa: E731
    master = worker("gpuhub-job-aa01-master-0")
    backend.observe("ADDED", master)
    backend.observe("MODIFIED", master)  # the same pod again is no second worker
    assert used() == 4
    with pytest.raises(QuotaDenied):
        backend.reserve("server:bob/", req(config, "bob", profile="gpu"), ["vision"])
    backend.observe("ADDED", worker("gpuhub-job-aa01-worker-0"))
    assert used() == 4
    assert sorted(a.key for a in backend.snapshot().usage()) == [
        "pod:hub/gpuhub-job-aa01-master-0",
        "pod:hub/gpuhub-job-aa01-worker-0",
    ]
    # a job that ends (or whose creation fails) before its pods appear holds nothing
    carol = req(config, "carol", groups=("nlp",), profile="gpu", gpus=1)
    backend.reserve("job:bb02", carol, ["nlp"], kind="job")
    assert backend.snapshot().totals.used(group="nlp") == 1
    backend.release("job:bb02")
    assert backend.snapshot().totals.used(group="nlp") == 0
    assert used() == 4
