"""A whole test cluster: control plane, optional KWOK fleet, optional process nodes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from .apply import apply
from .binaries import Binaries
from .control_plane import ControlPlane, kubelet_client_binding
from .fleet import Fleet
from .kubeconfig import api_client
from .kwok import KwokFleet, start_kwok
from .ports import wait_until
from .process_node import ProcessNode, node_ready, start_process_node
from .processes import Child, pid_alive, stop_pid_group

STATE_FILE = "testbed-state.json"


@dataclass
class Cluster:
    """One running cluster on free loopback ports; everything it started is stopped by PID."""

    workdir: Path
    detached: bool = False
    binaries: Binaries = field(default_factory=Binaries.locate)
    kwok: Child | None = None
    fleet: Fleet | None = None
    process_nodes: list[ProcessNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.control_plane = ControlPlane(self.workdir, self.binaries, self.detached)
        self._api: client.ApiClient | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> Cluster:
        """Start the control plane, wait for the default namespace's ServiceAccount and
        let the apiserver's kubelet client call the kubelets' API (as kubeadm does)."""
        try:
            self.control_plane.start(timeout)
            wait_until(self._default_service_account, timeout, "ServiceAccount default/default")
            apply(self.api, [kubelet_client_binding()])
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self

    def stop(self) -> None:
        """Stop process nodes, KWOK and the control plane (only processes started here)."""
        for node in reversed(self.process_nodes):
            node.stop()
        self.process_nodes.clear()
        if self.kwok is not None:
            self.kwok.stop()
            self.kwok = None
        self.control_plane.stop()
        if self._api is not None:
            self._api.close()
            self._api = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- access ----------------------------------------------------------------------
    @property
    def server(self) -> str:
        return self.control_plane.server

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (``system:masters``)."""
        return self.control_plane.admin_kubeconfig

    @property
    def ca_file(self) -> Path:
        return self.control_plane.ca.cert

    @property
    def api(self) -> client.ApiClient:
        """An admin ApiClient (shared; do not close)."""
        if self._api is None:
            self._api = api_client(self.server, self.ca_file, self.control_plane.admin.token)
        return self._api

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def _default_service_account(self) -> bool:
        return bool(self.core.read_namespaced_service_account("default", "default"))

    # ---- nodes -----------------------------------------------------------------------
    def add_fleet(self, fleet: Fleet, timeout: float = 120.0) -> KwokFleet:
        """Start KWOK (once) and create ``fleet``'s nodes; waits until all are Ready."""
        if self.kwok is None:
            self.kwok = start_kwok(self.binaries, self.kubeconfig, self.workdir, self.detached)
            self._write_state()
        created = KwokFleet(fleet)
        created.create(self.core)
        self.fleet = fleet
        self.wait_nodes_ready(fleet.node_names(), timeout)
        return created

    def add_process_node(
        self, name: str = "proc-node", gpus: int = 2, **kwargs: Any
    ) -> ProcessNode:
        """Start a process node (see :func:`testbed.process_node.start_process_node`)."""
        node = start_process_node(
            self.core,
            self.kubeconfig,
            self.control_plane.ca,
            self.workdir,
            name=name,
            gpus=gpus,
            detached=self.detached,
            **kwargs,
        )
        self.process_nodes.append(node)
        self._write_state()
        return node

    def wait_nodes_ready(self, names: list[str], timeout: float = 120.0) -> None:
        def all_ready() -> bool:
            nodes = {n.metadata.name: n for n in self.core.list_node().items}
            return all(name in nodes and _is_ready(nodes[name]) for name in names)

        wait_until(all_ready, timeout, f"{len(names)} nodes Ready", interval=0.5)

    # ---- CLI state -------------------------------------------------------------------
    def children(self) -> list[Child]:
        """Every process this cluster started, in start order."""
        return [
            *self.control_plane.children,
            *([self.kwok] if self.kwok else []),
            *(n.child for n in self.process_nodes),
        ]

    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.children()}

    def _write_state(self) -> None:
        processes = {c.name: {"pid": c.pid, "cmdline": " ".join(c.argv)} for c in self.children()}
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "processes": processes,
            "written": time.time(),
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2))


def _is_ready(node: client.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def stop_from_state(workdir: Path) -> list[str]:
    """Stop a detached cluster from its state file: each recorded process group, newest first."""
    state = json.loads((workdir / STATE_FILE).read_text())
    stopped = []
    for name, recorded in reversed(list(state["processes"].items())):
        pid = recorded["pid"]
        # Only the process we started: same PID *and* same command line.
        if pid_alive(pid) and _cmdline(pid) == recorded["cmdline"]:
            stop_pid_group(pid)
            stopped.append(f"{name} ({pid})")
    return stopped


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


__all__ = ["Cluster", "node_ready", "stop_from_state"]
