"""A real node: the real kubelet with its own containerd, runc and a CNI bridge, and
optionally ``nvidia.com/gpu`` from a device plugin test double (no GPUs behind it).

Everything lives under the node's folder (containerd's root, state and socket, the CNI
config and address leases, the kubelet's root).  Its bridge has a name and a /24 of its
own.  containerd and the kubelet share a mount namespace of their own, in which the
node's ``device-plugins`` folder is mounted over the kubelet's fixed
``/var/lib/kubelet/device-plugins`` (so nodes on one machine do not share it); their
other mounts stay in that namespace too and go with it.

:meth:`RealNode.stop` deletes the node's pods, stops the device plugin, the kubelet and
containerd by PID, kills what outlived them (processes in the node's cgroups,
containerd's shims), unmounts what is still mounted under the folder and deletes the
bridge, the network namespaces and the cgroups the node made.

The node makes its bridge itself, with the gateway address, before anything starts: its
cluster DNS (CoreDNS, :mod:`testbed.cluster_dns`) listens there, and the kubelet gives
pods that address as their nameserver.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from .binaries import (
    BinariesMissing,
    coredns_binary,
    gpu_device_plugin_binary,
    kube_proxy_binary,
    kubelet_binaries,
)
from .cluster_dns import start_coredns
from .control_plane import SERVICE_CIDR
from .kube_proxy import KubeProxy, start_kube_proxy
from .pki import CertPair, make_serving_cert
from .ports import free_port, wait_until
from .process_node import node_ready
from .processes import Child, pid_alive, spawn
from .real_node_files import (
    CNI_BIN_DIR,
    CNI_PLUGINS,
    DEVICE_PLUGIN_DIR,
    GPU_RESOURCE,
    NodePaths,
    cni_network,
    containerd_config,
    gpu_labels,
    kubelet_config,
    sandbox_image_tar,
)

REAL_NODE_LABEL = "gpuhub.dev/real-node"
NETNS_DIR = Path("/run/netns")
CGROUP_FS = Path("/sys/fs/cgroup")
# The kubelet's links to container logs: a fixed path (the logs themselves: podLogsDir).
CONTAINER_LOG_LINKS = Path("/var/log/containers")


def missing_tools() -> list[str]:
    """What the real node needs and this machine lacks (see tests/cluster/setup.sh)."""
    tools = ("containerd", "runc", "ctr", "ip", "unshare", "nsenter")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    missing += [str(CNI_BIN_DIR / p) for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).exists()]
    if os.geteuid() != 0:
        missing.append("root (containerd, runc and the CNI plugins need it)")
    return missing


def mounts_under(root: Path, pid: int | str = "self") -> list[str]:
    """Mount points at or below ``root`` in the mount namespace of ``pid``, deepest first
    (from /proc/<pid>/mountinfo)."""
    prefix = str(root)
    points = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _mounted_in_any_namespace(point: Path) -> bool:
    """Whether some process's mount namespace has a mount at ``point`` (another real node
    using it as its mount point: removing the folder would detach that mount)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(point) in mounts_under(point, proc.name):
                    return True
    return False


def _netns_names() -> set[str]:
    return {p.name for p in NETNS_DIR.iterdir()} if NETNS_DIR.is_dir() else set()


def _netns_inode(path: Path) -> int | None:
    """The network namespace behind a ``/proc/<pid>/ns/net`` or ``/run/netns`` entry."""
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _pids_with_arg(arg: str) -> list[int]:
    """PIDs whose command line holds ``arg`` as one argument (this node's shims)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if arg.encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


def cgroup_dirs(cgroup_root: str) -> list[Path]:
    """``cgroup_root`` in every cgroup hierarchy mounted under /sys/fs/cgroup."""
    points = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    hierarchies = [p for p in CGROUP_FS.iterdir() if str(p) in points] if CGROUP_FS.is_dir() else []
    if str(CGROUP_FS) in points and not hierarchies:  # cgroup v2 only
        hierarchies = [CGROUP_FS]
    return [h / cgroup_root.strip("/") for h in hierarchies]


def _cgroup_pids(top: Path) -> set[int]:
    """Every process in ``top`` or a cgroup below it."""
    pids: set[int] = set()
    for procs in top.rglob("cgroup.procs") if top.is_dir() else []:
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in procs.read_text().split())
    return pids


def _remove_cgroups(top: Path) -> None:
    """Remove ``top`` and the cgroups below it, deepest first (they are empty by now)."""
    if not top.is_dir():
        return
    for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        top.rmdir()


def containerd_ref(reference: str) -> str:
    """``reference`` as containerd names it (Docker's short form: ``docker.io/`` added)."""
    first = reference.split("/", 1)[0]
    if "/" in reference and ("." in first or ":" in first or first == "localhost"):
        return reference
    return f"docker.io/{reference if '/' in reference else 'library/' + reference}"


def _free_subnet() -> str:
    """A 10.x.y.0/24 that no route of this machine covers."""
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    ).stdout
    for _ in range(100):
        prefix = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"  # noqa: S311
        if f"{prefix}." not in routes:
            return f"{prefix}.0/24"
    raise RuntimeError("no free 10.x.y.0/24 for the real node's bridge")


@dataclass
class RealNode:
    """A running real node and what it made."""

    name: str
    paths: NodePaths
    bridge: str
    subnet: str
    core: client.CoreV1Api
    labels: dict[str, str]
    cgroup_root: str = ""
    children: list[Child] = field(default_factory=list)
    made_log_links_dir: bool = False
    made_device_plugin_dir: bool = False
    gpu_ids: list[str] = field(default_factory=list)
    device_plugin: Child | None = None
    dns: Child | None = None
    kube_proxy: KubeProxy | None = None

    @property
    def gateway(self) -> str:
        """The bridge's own address on the host: what pods reach the host's services at."""
        return str(ipaddress.ip_network(self.subnet)[1])

    @property
    def containerd(self) -> Child:
        return self.children[0]

    def ctr(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``ctr`` on this node's containerd, namespace ``k8s.io`` (the CRI's)."""
        argv = ["ctr", "--address", str(self.paths.containerd_socket), "-n", "k8s.io", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def import_image(self, tarball: Path) -> None:
        """``ctr images import`` of a ``docker save`` or OCI-layout tarball (unpacked)."""
        self.ctr("images", "import", str(tarball))

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        """What ``container`` of ``pod`` wrote, read from the kubelet's log files."""
        logs = sorted(self.paths.pod_logs.glob(f"{namespace}_{pod}_*/{container}/*.log"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def gpu_allocations(self) -> list[list[str]]:
        """The device IDs the device plugin handed out, one list per container, in order
        (its ``allocate`` log lines)."""
        if self.device_plugin is None:
            return []
        lines = self.device_plugin.log_path.read_text(errors="replace").splitlines()
        marker = " allocate "
        return [line.split(marker, 1)[1].split(",") for line in lines if marker in line]

    def bridge_ports(self) -> list[str]:
        """The interfaces attached to this node's bridge (one veth per running pod)."""
        out = subprocess.run(
            ["ip", "-o", "link", "show", "master", self.bridge],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def stop(self, timeout: float = 60.0) -> None:
        """Delete the node's pods, stop what it started, remove what it made."""
        with contextlib.suppress(Exception):
            if self.children and self.children[-1].running():
                self._delete_pods(timeout)
        if self.device_plugin is not None:
            self.device_plugin.stop(grace=5.0)
        # The sandboxes' network namespaces are mounted in the node's mount namespace only.
        sandboxes: set[str] = set()
        if self.children and self.containerd.running():
            with contextlib.suppress(OSError):
                points = mounts_under(NETNS_DIR, self.containerd.pid)
                sandboxes = {Path(p).name for p in points if Path(p).parent == NETNS_DIR}
        for child in reversed(self.children):
            child.stop(grace=15.0)
        self.children.clear()
        if self.kube_proxy is not None:
            self.kube_proxy.stop()
        if self.dns is not None:
            self.dns.stop(grace=5.0)
        # What outlived them: containers in the node's cgroups, containerd's shims.
        tops = cgroup_dirs(self.cgroup_root) if self.cgroup_root else []
        leftovers = set().union(*(_cgroup_pids(top) for top in tops))
        leftovers |= set(_pids_with_arg(str(self.paths.containerd_socket)))
        netns = set(filter(None, (_netns_inode(Path(f"/proc/{pid}/ns/net")) for pid in leftovers)))
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: not any(pid_alive(pid) for pid in leftovers), 30, "the node's containers gone"
        )
        for point in mounts_under(self.paths.root):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        # Network namespaces the kubelet did not tear down: those of the node's sandboxes.
        for name in _netns_names():
            if name in sandboxes or _netns_inode(NETNS_DIR / name) in netns:
                subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], check=False, capture_output=True)
        for top in tops:
            _remove_cgroups(top)
        if self.made_log_links_dir:
            with contextlib.suppress(OSError):
                CONTAINER_LOG_LINKS.rmdir()  # only when empty
        if self.made_device_plugin_dir and not _mounted_in_any_namespace(DEVICE_PLUGIN_DIR):
            for folder in (DEVICE_PLUGIN_DIR, DEVICE_PLUGIN_DIR.parent):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
        with contextlib.suppress(ApiException):
            self.core.delete_node(self.name)

    def _delete_pods(self, timeout: float) -> None:
        """Delete every pod bound to this node and wait until the kubelet has removed them
        (it stops their sandboxes: CNI DEL, network namespace removed).  Not with grace 0:
        that deletes the object at once, without the kubelet."""
        selector = f"spec.nodeName={self.name}"
        for pod in self.core.list_pod_for_all_namespaces(field_selector=selector).items:
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=1
                )
        wait_until(
            lambda: not self.core.list_pod_for_all_namespaces(field_selector=selector).items,
            timeout,
            f"pods of {self.name} removed",
            interval=0.5,
        )


def start_real_node(
    core: client.CoreV1Api,
    kubeconfig: Path,
    ca: CertPair,
    workdir: Path,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    timeout: float = 120.0,
    gpus: int = 0,
    gpu_product: str = "NVIDIA-A100-SXM4-80GB",
    kube_proxy: bool = False,
) -> RealNode:
    """Start containerd and the kubelet for a new node and wait until it is Ready; with
    ``gpus``, also the device plugin with that many ``GPU-<uuid>`` devices, the node
    labelled like GPU Feature Discovery labels a node of ``gpu_product``, and wait until
    the node's allocatable ``nvidia.com/gpu`` is ``gpus``.  With ``kube_proxy``, also
    kube-proxy (:mod:`testbed.kube_proxy`: one per machine at a time), so that pods reach
    ClusterIP Services.

    :class:`BinariesMissing` when the kubelet or a tool is missing (run setup.sh)."""
    kubelet, pause = kubelet_binaries()
    coredns = coredns_binary()
    plugin = gpu_device_plugin_binary() if gpus else None
    proxy = kube_proxy_binary() if kube_proxy else None
    missing = missing_tools()
    if missing:
        raise BinariesMissing(f"the real node needs: {', '.join(missing)}")
    suffix = secrets.token_hex(4)
    name = name or f"real-node-{suffix}"
    paths = NodePaths(workdir / name)
    for folder in (
        paths.containerd_root,
        paths.containerd_state,
        paths.cni_conf_dir,
        paths.device_plugins,
    ):
        folder.mkdir(parents=True, exist_ok=True)
    node_labels = {REAL_NODE_LABEL: name, **(gpu_labels(gpu_product, gpus) if gpus else {})}
    node_labels.update(labels or {})
    node = RealNode(
        name,
        paths,
        f"ghrn{suffix}",
        _free_subnet(),
        core,
        node_labels,
        cgroup_root=f"/gpuhub-{name}",
        made_log_links_dir=not CONTAINER_LOG_LINKS.exists(),
        made_device_plugin_dir=not DEVICE_PLUGIN_DIR.parent.exists(),
    )
    logs = workdir / "logs"
    try:
        _make_bridge(node)
        node.dns = start_coredns(
            core.api_client,
            coredns,
            ca,
            node.gateway,
            paths.root / "dns",
            logs / f"{name}-coredns.log",
        )
        _start_containerd(node, logs / f"{name}-containerd.log")
        tarball = paths.root / "sandbox-image.tar"
        tarball.write_bytes(sandbox_image_tar(pause))
        node.import_image(tarball)
        _start_kubelet(node, kubelet, kubeconfig, ca, logs / f"{name}-kubelet.log")

        def ready() -> bool:
            if not node.children[-1].running():
                raise RuntimeError(f"kubelet of {name} exited:\n{node.children[-1].log_tail()}")
            try:
                return node_ready(core, name)
            except ApiException as error:
                if error.status == 404:
                    return False
                raise

        wait_until(ready, timeout, f"real node {name} Ready", interval=0.5)
        if proxy is not None:
            node.kube_proxy = start_kube_proxy(
                proxy,
                ca,
                core.api_client.configuration.host,
                name,
                node.subnet,
                paths.root / "kube-proxy",
                logs / f"{name}-kube-proxy.log",
            )
        if plugin is not None:
            _start_device_plugin(node, plugin, gpus, logs / f"{name}-gpu-device-plugin.log")
            wait_until(
                lambda: _allocatable_gpus(core, name) == gpus,
                timeout,
                f"{GPU_RESOURCE} {gpus} allocatable on {name}",
                interval=0.5,
            )
    except BaseException:
        node.stop()
        raise
    return node


def _allocatable_gpus(core: client.CoreV1Api, name: str) -> int:
    allocatable = core.read_node(name).status.allocatable or {}
    return int(allocatable.get(GPU_RESOURCE, "0"))


def _make_bridge(node: RealNode) -> None:
    """The node's bridge, up with its gateway address before anything of the node starts
    (the CNI ``bridge`` plugin finds and keeps it): cluster DNS binds there, and the host's
    services answer at :attr:`RealNode.gateway` from the start, as a hub Service does
    before the first server (the hub's proxy routes to it there)."""
    prefix = ipaddress.ip_network(node.subnet).prefixlen
    for argv in (
        ["ip", "link", "add", "name", node.bridge, "type", "bridge"],
        ["ip", "addr", "add", f"{node.gateway}/{prefix}", "dev", node.bridge],
        ["ip", "link", "set", node.bridge, "up"],
    ):
        subprocess.run(argv, check=True, capture_output=True)


def _start_containerd(node: RealNode, log: Path) -> None:
    """containerd in a new mount namespace (private propagation) that has the node's
    ``device-plugins`` folder mounted over :data:`DEVICE_PLUGIN_DIR`."""
    paths = node.paths
    paths.containerd_config.write_text(containerd_config(paths))
    network = cni_network(
        f"gpuhub-{node.name}", node.bridge, node.subnet, paths.cni_ipam_dir, SERVICE_CIDR
    )
    (paths.cni_conf_dir / "10-gpuhub.conflist").write_text(json.dumps(network, indent=2))
    DEVICE_PLUGIN_DIR.mkdir(parents=True, exist_ok=True)  # the mount point
    argv = [
        "unshare",
        "--mount",
        "--propagation=private",
        "sh",
        "-c",
        'mount --bind "$0" "$1" && exec containerd --config "$2"',
        str(paths.device_plugins),
        str(DEVICE_PLUGIN_DIR),
        str(paths.containerd_config),
    ]
    child = spawn(f"containerd-{node.name}", argv, log)
    node.children.append(child)

    def answers() -> bool:
        if not child.running():
            raise RuntimeError(f"containerd exited:\n{child.log_tail()}")
        argv = ["ctr", "--address", str(paths.containerd_socket), "version"]
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    wait_until(answers, 60, f"containerd of {node.name}", interval=0.2)


def _start_kubelet(
    node: RealNode, kubelet: Path, kubeconfig: Path, ca: CertPair, log: Path
) -> None:
    paths = node.paths
    paths.kubelet_root.mkdir(parents=True, exist_ok=True)
    cert = make_serving_cert(ca, paths.root, "kubelet", [node.gateway, node.name])
    for folder in cgroup_dirs(node.cgroup_root):
        folder.mkdir(exist_ok=True)
    config = kubelet_config(
        paths,
        node.cgroup_root,
        node.gateway,
        free_port(node.gateway),
        free_port(),
        cert.cert,
        cert.key,
        client_ca=ca.cert,
        cluster_dns=node.gateway,
    )
    paths.kubelet_config.write_text(yaml.safe_dump(config, sort_keys=False))
    # in containerd's mount namespace: both see the pods' volumes the kubelet mounts
    argv = [
        "nsenter",
        f"--mount=/proc/{node.containerd.pid}/ns/mnt",
        "--",
        str(kubelet),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.root / 'kubelet-pki'}",
        f"--hostname-override={node.name}",
        # the kubelet refuses a loopback node IP (then the node has no address, and the
        # apiserver cannot reach its API): the bridge's address is the node's
        f"--node-ip={node.gateway}",
        "--node-labels=" + ",".join(f"{k}={v}" for k, v in node.labels.items()),
        "--v=2",
    ]
    node.children.append(spawn(f"kubelet-{node.name}", argv, log))


def _start_device_plugin(node: RealNode, plugin: Path, gpus: int, log: Path) -> None:
    """The device plugin on the node's ``device-plugins`` folder (the same folder the
    kubelet sees at :data:`DEVICE_PLUGIN_DIR`), ``gpus`` devices named like NVIDIA's
    plugin names them by default (``GPU-<uuid>``)."""
    node.gpu_ids = [f"GPU-{uuid.uuid4()}" for _ in range(gpus)]
    argv = [
        str(plugin),
        f"-device-plugin-dir={node.paths.device_plugins}",
        f"-device-ids={','.join(node.gpu_ids)}",
        f"-resource-name={GPU_RESOURCE}",
    ]
    node.device_plugin = spawn(f"gpu-device-plugin-{node.name}", argv, log)


__all__ = ["REAL_NODE_LABEL", "RealNode", "missing_tools", "start_real_node"]
