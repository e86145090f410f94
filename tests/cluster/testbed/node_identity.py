"""The process node's Node object: labels, taints, capacity, addresses, conditions (pure)."""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

PROCESS_NODE_LABEL = "gpuhub.dev/node-kind"
PROCESS_NODE_TAINT = {"key": "gpuhub.dev/process-node", "value": "true", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeIdentity:
    """What the process node declares about itself."""

    name: str
    kubelet_port: int
    host_ip: str = "127.0.0.1"
    gpus: int = 0
    cpu: str = "16"
    memory: str = "64Gi"
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = (PROCESS_NODE_TAINT,)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NodeIdentity:
        labels = dict(item.split("=", 1) for item in args.label)
        taints = tuple(parse_taint(t) for t in args.taint)
        return cls(
            args.node_name,
            args.port,
            gpus=args.gpus,
            cpu=args.cpu,
            memory=args.memory,
            labels=labels,
            taints=taints,
        )


def parse_taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` (or ``key:Effect``) -> a taint dict."""
    key_value, effect = text.rsplit(":", 1)
    key, _, value = key_value.partition("=")
    return (
        {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}
    )


def format_taint(taint: dict[str, str]) -> str:
    value = f"={taint['value']}" if taint.get("value") else ""
    return f"{taint['key']}{value}:{taint['effect']}"


def node_body(node: NodeIdentity) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        PROCESS_NODE_LABEL: "process",
        **node.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": {"taints": [dict(t) for t in node.taints]},
        "status": node_status(node),
    }


def node_status(node: NodeIdentity) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    capacity = {"cpu": node.cpu, "memory": node.memory, "pods": "250", "ephemeral-storage": "100Gi"}
    if node.gpus:
        capacity["nvidia.com/gpu"] = str(node.gpus)

    def condition(kind: str, status: str, reason: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": reason,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "addresses": [
            {"type": "InternalIP", "address": node.host_ip},
            {"type": "Hostname", "address": node.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": node.kubelet_port}},
        "nodeInfo": {
            "kubeletVersion": "v1.33.0+gpuhub-process-node",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "containerRuntimeVersion": "process://local",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": "",
            "osImage": "",
            "kubeProxyVersion": "",
        },
        "conditions": [
            condition("Ready", "True", "KubeletReady"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
    }
