"""What the real node writes before it starts: containerd's config, the CNI network, the
KubeletConfiguration and the sandbox image (pure, apart from writing the image tarball)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cluster_dns import CLUSTER_DOMAIN

CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback")
SANDBOX_IMAGE = "gpuhub.local/testbed/pause:1"
#: The kubelet's device manager listens here whatever its ``--root-dir`` (pluginapi.KubeletSocket)
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
GPU_RESOURCE = "nvidia.com/gpu"
#: The NVIDIA driver the real node's GPU Feature Discovery labels claim (an R580 release)
GPU_DRIVER = "580.95.05"


@dataclass(frozen=True)
class NodePaths:
    """Everything one real node keeps, under its own folder."""

    root: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def device_plugins(self) -> Path:
        """Mounted over the kubelet's fixed device-plugin folder in the node's mount
        namespace (:data:`DEVICE_PLUGIN_DIR`)."""
        return self.root / "device-plugins"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"


def containerd_config(paths: NodePaths) -> str:
    """containerd 1.6's config: own root, state and socket; the CRI plugin with runc,
    overlayfs, the local sandbox image and this node's CNI folder.

    ``restrict_oom_score_adj``: a negative ``oom_score_adj`` (the sandbox asks for -998)
    is refused on these machines even for root, and runc then fails to start the pod."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{paths.containerd_socket}.ttrpc"

[metrics]
  address = ""

[{cri}]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{paths.cni_conf_dir}"
"""


def cni_network(
    name: str, bridge: str, subnet: str, ipam_dir: Path, service_cidr: str
) -> dict[str, Any]:
    """A ``bridge`` network with ``host-local`` addresses kept under ``ipam_dir``, and a
    route to the Services' ClusterIPs (``service_cidr``) through the gateway, where
    kube-proxy's rules on the host rewrite them (no default route).

    The bridge is the pods' gateway (it holds the subnet's first address on the host), so
    pods reach what the host serves on that address: the hub, its API and cluster DNS, as in
    a cluster where the hub answers on the node network.  No masquerading: nothing is routed
    beyond the host, and the host's IP forwarding is left as it is."""
    return {
        "cniVersion": "0.4.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": service_cidr}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


def kubelet_config(
    paths: NodePaths,
    cgroup_root: str,
    address: str,
    port: int,
    healthz_port: int,
    tls_cert: Path,
    tls_key: Path,
    client_ca: Path,
    cluster_dns: str,
) -> dict[str, Any]:
    """The KubeletConfiguration: cgroupfs (no systemd here) under the node's own cgroup
    ``cgroup_root``, containerd's socket, no eviction or image garbage collection (the
    shared machine's disk is not this node's), its API on ``address`` only (the node's IP),
    its health check on loopback.  Callers of its API authenticate with a certificate from
    ``client_ca`` (the apiserver's kubelet client) or a token, and are authorized by the
    apiserver (Webhook), as kubeadm configures it.  Pods resolve names with the cluster
    DNS at ``cluster_dns``."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(tls_cert),
        "tlsPrivateKeyFile": str(tls_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [cluster_dns],
        "clusterDomain": CLUSTER_DOMAIN,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "failSwapOn": False,
        "enforceNodeAllocatable": [],
        "evictionHard": {},
        "localStorageCapacityIsolation": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "podLogsDir": str(paths.pod_logs),
    }


def _tar_bytes(members: dict[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed tar of ``name -> (content, mode)`` with fixed times and owners."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (content, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _blob(data: bytes, media_type: str) -> tuple[dict[str, Any], str, bytes]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return {"mediaType": media_type, "digest": digest, "size": len(data)}, digest, data


def sandbox_image_tar(pause_binary: Path, tag: str = SANDBOX_IMAGE) -> bytes:
    """An OCI image-layout tarball of ``tag``: one layer with ``/pause`` as entrypoint,
    for ``ctr images import`` (its name from the ``io.containerd.image.name`` note)."""
    layer = _tar_bytes({"pause": (pause_binary.read_bytes(), 0o755)})
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    ).encode()
    config_desc, _, _ = _blob(config, "application/vnd.oci.image.config.v1+json")
    layer_desc, _, _ = _blob(layer, "application/vnd.oci.image.layer.v1.tar")
    manifest = json.dumps(
        {"schemaVersion": 2, "config": config_desc, "layers": [layer_desc]}
    ).encode()
    manifest_desc, _, _ = _blob(manifest, "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    manifest_desc["annotations"] = {
        "io.containerd.image.name": tag,
        "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1],
    }
    index = json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}).encode()
    members = {
        "oci-layout": (b'{"imageLayoutVersion": "1.0.0"}', 0o644),
        "index.json": (index, 0o644),
    }
    for data in (config, layer, manifest):
        members["blobs/sha256/" + hashlib.sha256(data).hexdigest()] = (data, 0o644)
    return _tar_bytes(members)


def gpu_labels(product: str, count: int, driver: str = GPU_DRIVER) -> dict[str, str]:
    """The GPU Feature Discovery labels of a node with ``count`` GPUs of ``product``
    (the ones gpuhub's placement reads: product and driver version)."""
    major, minor, revision = driver.split(".")
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/cuda.driver-version.major": major,
        "nvidia.com/cuda.driver-version.minor": minor,
        "nvidia.com/cuda.driver-version.revision": revision,
        "nvidia.com/cuda.driver-version.full": driver,
    }
