"""Cluster DNS for a real node: CoreDNS with its ``kubernetes`` plugin, watching the test
apiserver, answering on the node's gateway address (port 53) for ``cluster.local``.

CoreDNS is who kubeadm's addon makes it: user ``system:coredns`` (a client certificate
signed by the cluster's CA) bound to kubeadm's ``system:coredns`` ClusterRole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from .apply import apply
from .pki import CertPair, make_client_cert
from .ports import free_port, http_ok, wait_until
from .processes import Child, spawn

CLUSTER_DOMAIN = "cluster.local"
DNS_USER = "system:coredns"


def dns_rbac_objects() -> list[dict[str, Any]]:
    """kubeadm's ClusterRole for CoreDNS, bound to the user CoreDNS authenticates as."""
    rbac = "rbac.authorization.k8s.io"
    return [
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": DNS_USER},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": DNS_USER},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": DNS_USER},
            "subjects": [{"apiGroup": rbac, "kind": "User", "name": DNS_USER}],
        },
    ]


def corefile(address: str, ready_port: int, server: str, cert: CertPair, ca_file: Path) -> str:
    """A Corefile like kubeadm's, bound to ``address``: the ``kubernetes`` plugin against
    ``server`` (client certificate ``cert``), other names forwarded to the host's
    resolvers, readiness on loopback ``ready_port``."""
    return f""".:53 {{
    bind {address}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        endpoint {server}
        tls {cert.cert} {cert.key} {ca_file}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    forward . /etc/resolv.conf
    cache 30
}}
"""


def start_coredns(
    api: client.ApiClient,
    binary: Path,
    ca: CertPair,
    address: str,
    folder: Path,
    log: Path,
    timeout: float = 60.0,
) -> Child:
    """Start CoreDNS on ``address``:53 (files under ``folder``) and wait until its
    ``kubernetes`` plugin has synced with the apiserver ``api`` talks to."""
    folder.mkdir(parents=True, exist_ok=True)
    apply(api, dns_rbac_objects())
    cert = make_client_cert(ca, folder, "coredns", DNS_USER)
    ready_port = free_port()
    path = folder / "Corefile"
    path.write_text(corefile(address, ready_port, api.configuration.host, cert, ca.cert))
    child = spawn("coredns", [str(binary), "-conf", str(path)], log, cwd=folder)

    def ready() -> bool:
        if not child.running():
            raise RuntimeError(f"coredns exited:\n{child.log_tail()}")
        return http_ok(f"http://127.0.0.1:{ready_port}/ready")

    try:
        wait_until(ready, timeout, f"CoreDNS on {address}:53 ready")
    except TimeoutError as error:
        child.stop(grace=5.0)
        raise TimeoutError(f"{error}\n{child.log_tail()}") from None
    except BaseException:
        child.stop(grace=5.0)
        raise
    return child


__all__ = ["CLUSTER_DOMAIN", "corefile", "dns_rbac_objects", "start_coredns"]
