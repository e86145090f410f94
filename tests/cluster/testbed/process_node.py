"""Start a process node (``python -m testbed.process_kubelet``) and inspect its pods."""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client

from .node_identity import PROCESS_NODE_TAINT, format_taint
from .pki import CertPair, make_serving_cert
from .ports import free_port, wait_until
from .processes import Child, spawn

PACKAGE_PARENT = Path(__file__).resolve().parent.parent


@dataclass
class ProcessNode:
    """A running process node: its name, folders and helpers to read pod logs and PIDs."""

    name: str
    root: Path
    child: Child
    gpus: int
    labels: dict[str, str] = field(default_factory=dict)

    def pod_dir(self, namespace: str, pod: str) -> Path:
        return self.root / "pods" / namespace / pod

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's output so far (alphabetically first container when ``None``)."""
        logs = self.pod_dir(namespace, pod) / "logs"
        path = logs / f"{container}.log" if container else min(logs.glob("*.log"))
        return path.read_text(errors="replace")

    def pids(self, namespace: str, pod: str) -> dict[str, int]:
        """Container name -> PID (process-group leader) of the pod's processes."""
        path = self.pod_dir(namespace, pod) / "pids.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def stop(self) -> None:
        self.child.stop(grace=15.0)


def start_process_node(
    core: client.CoreV1Api,
    kubeconfig: Path,
    ca: CertPair,
    workdir: Path,
    name: str = "proc-node",
    gpus: int = 2,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    detached: bool = False,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> ProcessNode:
    """Start the process kubelet for node ``name`` and wait until the node is Ready.

    ``env`` is added to the node's environment, which every container inherits (for
    example a ``PATH`` with the tools an image would have, such as ``torchrun``).
    """
    root = workdir / name
    root.mkdir(parents=True, exist_ok=True)
    cert = make_serving_cert(ca, root, "kubelet", ["127.0.0.1", name])
    labels = labels or {}
    taints = [PROCESS_NODE_TAINT] if taints is None else taints
    argv = [
        sys.executable,
        "-m",
        "testbed.process_kubelet",
        f"--kubeconfig={kubeconfig}",
        f"--node-name={name}",
        f"--root={root}",
        f"--port={free_port()}",
        f"--tls-cert={cert.cert}",
        f"--tls-key={cert.key}",
        f"--gpus={gpus}",
        f"--ip-prefix=127.{random.randint(16, 250)}",  # noqa: S311 - spreads clusters apart
        *[f"--label={k}={v}" for k, v in labels.items()],
        *[f"--taint={format_taint(t)}" for t in taints],
    ]
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(
            [str(PACKAGE_PARENT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    child = spawn(
        f"process-node-{name}", argv, workdir / "logs" / f"{name}.log", env=env, detached=detached
    )
    node = ProcessNode(name, root, child, gpus, labels)

    def ready() -> bool:
        if not child.running():
            raise RuntimeError(f"process node {name} exited:\n{child.log_tail()}")
        return node_ready(core, name)

    wait_until(ready, timeout, f"process node {name} Ready")
    return node


def node_ready(core: client.CoreV1Api, name: str) -> bool:
    node = core.read_node(name)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
