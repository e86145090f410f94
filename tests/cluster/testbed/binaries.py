"""Where tests/cluster/setup.sh put the built binaries (versions must match that script)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

SETUP_SCRIPT = Path(__file__).resolve().parent.parent / "setup.sh"


class BinariesMissing(RuntimeError):
    """The test-bed binaries are not built yet (run tests/cluster/setup.sh)."""


def _default_version(variable: str) -> str:
    """The version setup.sh builds by default, read from the script itself."""
    pattern = rf'{variable}="\$\{{GPUHUB_{variable}:-([^}}]+)\}}"'
    match = re.search(pattern, SETUP_SCRIPT.read_text())
    if not match:
        raise RuntimeError(f"{variable} not found in {SETUP_SCRIPT}")
    return os.environ.get(f"GPUHUB_{variable}", match.group(1))


def cache_dir() -> Path:
    """``$GPUHUB_CACHE/k8s`` (default ``~/.cache/gpuhub/k8s``)."""
    base = os.environ.get("GPUHUB_CACHE") or str(Path.home() / ".cache" / "gpuhub")
    return Path(base) / "k8s"


@dataclass(frozen=True)
class Binaries:
    """Paths of the test-bed executables and the KWOK stage YAMLs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kwok_stages: Path
    kubernetes_version: str

    @classmethod
    def locate(cls) -> Binaries:
        """Find the cached binaries; :class:`BinariesMissing` if setup.sh has not run."""
        root = cache_dir()
        k8s_version = _default_version("K8S_VERSION")
        k8s = root / f"kubernetes-{k8s_version}" / "bin"
        kwok = root / f"kwok-{_default_version('KWOK_VERSION')}"
        found = cls(
            etcd=root / f"etcd-{_default_version('ETCD_VERSION')}" / "bin" / "etcd",
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kube_scheduler=k8s / "kube-scheduler",
            kwok=kwok / "bin" / "kwok",
            kwok_stages=kwok / "stages",
            kubernetes_version=k8s_version,
        )
        missing = [str(p) for p in found.executables() if not p.exists()]
        if missing:
            raise BinariesMissing(f"run {SETUP_SCRIPT} first; missing: {', '.join(missing)}")
        return found

    def executables(self) -> list[Path]:
        return [
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kwok,
        ]


def training_operator_binary() -> Path:
    """The Kubeflow training operator v1 that setup.sh builds (optional: only the tests
    that run real training jobs need it); :class:`BinariesMissing` when absent."""
    version = _default_version("TRAINING_OPERATOR_VERSION")
    path = cache_dir() / f"training-operator-{version}" / "bin" / "training-operator"
    if not path.exists():
        raise BinariesMissing(f"run {SETUP_SCRIPT} first; missing: {path}")
    return path


def training_operator_version() -> str:
    return _default_version("TRAINING_OPERATOR_VERSION")


def kubelet_binaries() -> tuple[Path, Path]:
    """``(kubelet, pause)`` that setup.sh builds for the real node; :class:`BinariesMissing`
    when absent."""
    bin_dir = cache_dir() / f"kubelet-{_default_version('K8S_VERSION')}" / "bin"
    found = (bin_dir / "kubelet", bin_dir / "pause")
    missing = [str(p) for p in found if not p.exists()]
    if missing:
        raise BinariesMissing(f"run {SETUP_SCRIPT} first; missing: {', '.join(missing)}")
    return found


def kube_proxy_binary() -> Path:
    """The real node's kube-proxy (built with the kubelet); :class:`BinariesMissing` when
    absent."""
    path = cache_dir() / f"kubelet-{_default_version('K8S_VERSION')}" / "bin" / "kube-proxy"
    if not path.exists():
        raise BinariesMissing(f"run {SETUP_SCRIPT} first; missing: {path}")
    return path


def gpu_device_plugin_binary() -> Path:
    """The real node's ``nvidia.com/gpu`` device plugin that setup.sh builds;
    :class:`BinariesMissing` when absent."""
    version = "v0." + _default_version("K8S_VERSION").removeprefix("v1.")
    path = cache_dir() / f"gpu-device-plugin-{version}" / "bin" / "gpu-device-plugin"
    if not path.exists():
        raise BinariesMissing(f"run {SETUP_SCRIPT} first; missing: {path}")
    return path


def helm_binary() -> Path:
    """helm v3 that setup.sh builds (renders the Zero to JupyterHub chart);
    :class:`BinariesMissing` when absent."""
    path = cache_dir() / f"helm-{_default_version('HELM_VERSION')}" / "bin" / "helm"
    if not path.exists():
        raise BinariesMissing(f"run {SETUP_SCRIPT} first; missing: {path}")
    return path


def kubernetes_version() -> str:
    """The Kubernetes release of the test cluster (``v1.33.13`` by default)."""
    return _default_version("K8S_VERSION")


def coredns_binary() -> Path:
    """CoreDNS that setup.sh builds (the real node's cluster DNS); :class:`BinariesMissing`
    when absent."""
    path = cache_dir() / f"coredns-{_default_version('COREDNS_VERSION')}" / "bin" / "coredns"
    if not path.exists():
        raise BinariesMissing(f"run {SETUP_SCRIPT} first; missing: {path}")
    return path
