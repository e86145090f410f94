"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes."""

from __future__ import annotations

import secrets
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .binaries import Binaries
from .kubeconfig import write_kubeconfig
from .pki import CertPair, make_ca, make_client_cert, make_serving_cert, make_signing_key
from .ports import free_ports, http_ok, wait_until
from .processes import Child, spawn

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_APISERVER_HOSTS = [
    "127.0.0.1",
    "10.96.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
]
#: Who the apiserver is to the kubelets it calls (logs, exec, port-forward), as kubeadm names it
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"


def kubelet_client_binding() -> dict[str, object]:
    """kubeadm's ClusterRoleBinding of the apiserver's kubelet client user to the
    bootstrap ClusterRole ``system:kubelet-api-admin`` (what a kubelet's Webhook
    authorization asks the apiserver about)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": KUBELET_CLIENT_USER},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:kubelet-api-admin",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBELET_CLIENT_USER}
        ],
    }


@dataclass(frozen=True)
class Identity:
    """A token-file user: who a component is to the apiserver."""

    user: str
    token: str
    groups: tuple[str, ...] = ()

    def csv_line(self) -> str:
        groups = ",".join(self.groups)
        return f'{self.token},{self.user},{self.user},"{groups}"'


def _identity(user: str, *groups: str) -> Identity:
    return Identity(user, secrets.token_hex(24), groups)


@dataclass
class ControlPlane:
    """One cluster's control plane: files under ``workdir``, processes on free loopback ports."""

    workdir: Path
    binaries: Binaries
    detached: bool = False
    children: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pki_dir = self.workdir / "pki"
        self.logs_dir = self.workdir / "logs"
        (
            self.etcd_port,
            self.etcd_peer_port,
            self.apiserver_port,
            self.kcm_port,
            self.scheduler_port,
        ) = free_ports(5)
        self.admin = _identity("gpuhub-admin", "system:masters")
        self.kcm_identity = _identity("system:kube-controller-manager")
        self.scheduler_identity = _identity("system:kube-scheduler")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def ca(self) -> CertPair:
        return CertPair(self.pki_dir / "ca.crt", self.pki_dir / "ca.key")

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def start(self, timeout: float = 120.0) -> None:
        """Start all four components and wait until each is healthy."""
        self._write_files()
        self._start("etcd", self._etcd_args())
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{self.etcd_port}/health"), timeout, "etcd /health"
        )
        self._start("kube-apiserver", self._apiserver_args())
        self._wait_healthy("kube-apiserver", f"{self.server}/readyz", timeout, verify=True)
        self._start("kube-controller-manager", self._controller_manager_args())
        self._start("kube-scheduler", self._scheduler_args())
        self._wait_healthy(
            "kube-controller-manager", f"https://127.0.0.1:{self.kcm_port}/healthz", timeout
        )
        self._wait_healthy(
            "kube-scheduler", f"https://127.0.0.1:{self.scheduler_port}/healthz", timeout
        )

    def stop(self) -> None:
        """Stop the components in reverse order of start."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def _write_files(self) -> None:
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        ca = make_ca(self.pki_dir)
        make_serving_cert(ca, self.pki_dir, "apiserver", _APISERVER_HOSTS)
        make_client_cert(ca, self.pki_dir, "apiserver-kubelet-client", KUBELET_CLIENT_USER)
        make_signing_key(self.pki_dir, "sa")
        identities = [self.admin, self.kcm_identity, self.scheduler_identity]
        tokens = self.pki_dir / "tokens.csv"
        tokens.write_text("".join(i.csv_line() + "\n" for i in identities))
        tokens.chmod(0o600)
        write_kubeconfig(
            self.admin_kubeconfig, self.server, ca.cert, self.admin.token, self.admin.user
        )
        for name, who in [("kcm", self.kcm_identity), ("scheduler", self.scheduler_identity)]:
            write_kubeconfig(
                self.workdir / f"{name}.kubeconfig", self.server, ca.cert, who.token, who.user
            )

    def _start(self, name: str, args: list[str]) -> None:
        binary = {
            "etcd": self.binaries.etcd,
            "kube-apiserver": self.binaries.kube_apiserver,
            "kube-controller-manager": self.binaries.kube_controller_manager,
            "kube-scheduler": self.binaries.kube_scheduler,
        }[name]
        self.children.append(
            spawn(
                name,
                [str(binary), *args],
                self.logs_dir / f"{name}.log",
                cwd=self.workdir,
                detached=self.detached,
            )
        )

    def _child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def _wait_healthy(self, name: str, url: str, timeout: float, verify: bool = False) -> None:
        context = ssl.create_default_context(cafile=str(self.ca.cert))
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        headers = {"Authorization": f"Bearer {self.admin.token}"}
        request = urllib.request.Request(url, headers=headers)
        child = self._child(name)

        def healthy() -> bool:
            if not child.running():
                raise RuntimeError(f"{name} exited:\n{child.log_tail()}")
            return http_ok(request, context=context)

        try:
            wait_until(healthy, timeout, f"{name} at {url}")
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{child.log_tail()}") from None

    def _etcd_args(self) -> list[str]:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        return [
            "--name=testbed",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=testbed={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        ]

    def _apiserver_args(self) -> list[str]:
        pki = self.pki_dir
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--enable-admission-plugins=ResourceQuota",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
        ]

    def _component_auth_args(self, kubeconfig: Path, port: int) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _controller_manager_args(self) -> list[str]:
        pki = self.pki_dir
        return [
            *self._component_auth_args(self.workdir / "kcm.kubeconfig", self.kcm_port),
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true",
            "--controllers=*,-nodeipam",
        ]

    def _scheduler_args(self) -> list[str]:
        return self._component_auth_args(self.workdir / "scheduler.kubeconfig", self.scheduler_port)
