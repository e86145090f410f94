"""kube-proxy for a real node (iptables mode), so that a pod reaches a Service's ClusterIP.

It runs in the host's network namespace: the bridge is the pods' gateway, so their
traffic to a ClusterIP is routed by the host, and only the host's rules can rewrite it.
kube-proxy's chains have fixed names (``KUBE-SERVICES``, ``KUBE-SVC-…``), so one
kube-proxy at a time may run on a machine: :func:`start_kube_proxy` takes a lock file in
the test bed's cache first.  :meth:`KubeProxy.stop` stops it and runs ``kube-proxy
--cleanup``, which removes its chains and the jumps to them, except its canary chains and
``KUBE-MARK-MASQ``: those it deletes itself when they were not there before kube-proxy
started (IPv4 and IPv6).  It changes no sysctl: no
NodePorts on loopback (``route_localnet``), conntrack limits and timeouts left as they are.

kube-proxy is ``system:kube-proxy`` (a client certificate signed by the cluster's CA),
the user the apiserver's bootstrap policy binds to ``system:node-proxier``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .binaries import cache_dir
from .kubeconfig import write_cert_kubeconfig
from .pki import CertPair, make_client_cert
from .ports import free_port, http_ok, wait_until
from .processes import Child, spawn

PROXY_USER = "system:kube-proxy"
_TOOLS = ("iptables", "ip6tables")
#: (table, chain) that ``kube-proxy --cleanup`` (v1.33) leaves behind
_LEFT_BY_CLEANUP = (
    ("mangle", "KUBE-PROXY-CANARY"),
    ("nat", "KUBE-PROXY-CANARY"),
    ("filter", "KUBE-PROXY-CANARY"),
    ("nat", "KUBE-MARK-MASQ"),
)


def lock_path() -> Path:
    """The machine-wide lock: held while a test bed's kube-proxy runs."""
    return cache_dir() / "kube-proxy.lock"


def kube_proxy_config(
    node: str, cluster_cidr: str, kubeconfig: Path, healthz_port: int, metrics_port: int
) -> dict[str, Any]:
    """A KubeProxyConfiguration for ``node``: iptables mode; pod traffic from
    ``cluster_cidr`` is not masqueraded; NodePorts only on the node IP; no sysctl set."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node,
        "mode": "iptables",
        "clusterCIDR": cluster_cidr,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": ["primary"],
        "iptables": {"localhostNodePorts": False},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "oomScoreAdj": 0,
    }


@dataclass
class KubeProxy:
    """A running kube-proxy and the machine-wide lock it holds."""

    child: Child
    binary: Path
    config: Path
    lock_fd: int
    preexisting: set[tuple[str, str, str]]

    def stop(self) -> None:
        """Stop kube-proxy, remove its rules (``--cleanup``, output to its log), release
        the lock."""
        try:
            self.child.stop(grace=10.0)
            argv = [str(self.binary), "--cleanup", f"--config={self.config}"]
            with self.child.log_path.open("ab") as log:
                subprocess.run(argv, stdout=log, stderr=log, timeout=60, check=False)
            for tool, table, chain in _left_chains() - self.preexisting:
                for flag in ("-F", "-X"):
                    subprocess.run([tool, "-t", table, flag, chain], check=True)
        finally:
            os.close(self.lock_fd)


def _left_chains() -> set[tuple[str, str, str]]:
    """Which of the chains ``--cleanup`` leaves exist now: ``(tool, table, chain)``."""
    found = set()
    for tool in _TOOLS:
        for table, chain in _LEFT_BY_CLEANUP:
            argv = [f"{tool}-save", "-t", table]
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            if f":{chain} " in out:
                found.add((tool, table, chain))
    return found


def _locked(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def start_kube_proxy(
    binary: Path,
    ca: CertPair,
    server: str,
    node: str,
    cluster_cidr: str,
    folder: Path,
    log: Path,
    timeout: float = 120.0,
    lock_timeout: float = 900.0,
) -> KubeProxy:
    """Start kube-proxy for ``node`` (files under ``folder``), once this machine's lock is
    ours (another test session's kube-proxy may hold it for as long as its tests run), and
    wait until its first sync of the rules is done (``/healthz``)."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = os.open(lock_path(), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        wait_until(lambda: _locked(lock), lock_timeout, f"{lock_path()} (held by a kube-proxy)")
        preexisting = _left_chains()
        cert = make_client_cert(ca, folder, "kube-proxy", PROXY_USER)
        kubeconfig = write_cert_kubeconfig(folder / "kube-proxy.kubeconfig", server, ca.cert, cert)
        healthz = free_port()
        config = folder / "kube-proxy.yaml"
        settings = kube_proxy_config(node, cluster_cidr, kubeconfig, healthz, free_port())
        config.write_text(yaml.safe_dump(settings, sort_keys=False))
        child = spawn(f"kube-proxy-{node}", [str(binary), f"--config={config}", "--v=2"], log)
    except BaseException:
        os.close(lock)
        raise
    proxy = KubeProxy(child, binary, config, lock, preexisting)

    def healthy() -> bool:
        if not child.running():
            raise RuntimeError(f"kube-proxy exited:\n{child.log_tail()}")
        return http_ok(f"http://127.0.0.1:{healthz}/healthz")

    try:
        wait_until(healthy, timeout, f"kube-proxy of {node} healthy")
    except TimeoutError as error:
        proxy.stop()
        raise TimeoutError(f"{error}\n{child.log_tail()}") from None
    except BaseException:
        proxy.stop()
        raise
    return proxy


__all__ = ["KubeProxy", "kube_proxy_config", "lock_path", "start_kube_proxy"]
