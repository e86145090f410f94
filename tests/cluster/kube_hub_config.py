"""JupyterHub config for cluster-tier tests: gpuhub's Kubernetes config (``configure_kube``,
as the Helm values load it) plus what the chart would otherwise provide, pointed at the
test cluster through ``KUBECONFIG``.  Pods run on the test bed's process node."""

import json
import os
from pathlib import Path

from gpuhub.hubconfig import configure_kube, read_or_create_secret

c = get_config()  # type: ignore[name-defined]  # noqa: F821
cfg = configure_kube(c)
data = Path(os.environ["GPUHUB_DATA"])
c.JupyterHub.bind_url = os.environ["GPUHUB_BIND_URL"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_connect_ip = "127.0.0.1"
c.JupyterHub.db_url = f"sqlite:///{data / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
c.JupyterHub.cleanup_servers = False  # as in z2jh: pods outlive the hub
c.ConfigurableHTTPProxy.pid_file = str(data / "proxy.pid")
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = read_or_create_secret(data / "password", 12)[0]
c.SharedPasswordAuthenticator.admin_password = read_or_create_secret(data / "admin-password", 32)[0]
# groups and users from the test YAML (on a real cluster they come from the identity provider)
c.JupyterHub.load_groups = {g: {"users": sorted(users)} for g, users in cfg.groups.items()}
c.Authenticator.admin_users = set(cfg.auth.admin_users)
c.Authenticator.allowed_users = {u for users in cfg.groups.values() for u in users} | set(
    cfg.auth.admin_users
)
c.Authenticator.allow_all = cfg.auth.allow_all

if os.environ.get("GPUHUB_PLAIN_KUBESPAWNER") == "1":
    # Benchmark baseline: JupyterHub's own KubeSpawner with the same pod settings below
    # (traits set on GPUKubeSpawner's parent class apply to both).
    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    c.KubeSpawner.extra_resource_limits = {"nvidia.com/gpu": "1"}
    c.KubeSpawner.extra_labels = {"gpuhub.io/gpus": "1", "gpuhub.io/gpu-type": "a100"}
c.KubeSpawner.namespace = os.environ["GPUHUB_K8S_NAMESPACE"]
if "GPUHUB_WATCH_NAMESPACES" in os.environ:  # else the default: the spawner's namespace
    c.GPUKubeSpawner.watch_namespaces = json.loads(os.environ["GPUHUB_WATCH_NAMESPACES"])
c.GPUKubeSpawner.gpu_wait_timeout = int(os.environ.get("GPUHUB_GPU_WAIT_TIMEOUT", "600"))
c.KubeSpawner.start_timeout = 120
c.KubeSpawner.http_timeout = 60
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
# The process node runs each pod as a local process on its own loopback IP.  KubeSpawner
# puts cmd + args in the container's args (the image's entrypoint runs them); the process
# node has no image, so the entrypoint is `env`, which runs them from PATH.
c.KubeSpawner.args = ["--ip=$(POD_IP)", "--allow-root"]
c.KubeSpawner.extra_container_config = {"command": ["/usr/bin/env"]}
if os.environ.get("GPUHUB_STUB_SERVER") == "1":
    # Storm tests: a tiny HTTP server answers for the notebook server (the hub only needs
    # an HTTP answer to call a server up), so hundreds of spawns fit on two cores.
    c.KubeSpawner.cmd = ["python3", "-m", "http.server"]
    c.KubeSpawner.args = ["--bind", "$(POD_IP)", "8888"]
    c.KubeSpawner.http_timeout = 30
c.KubeSpawner.tolerations = [
    {"key": "gpuhub.dev/process-node", "operator": "Exists", "effect": "NoSchedule"}
]
c.KubeSpawner.storage_pvc_ensure = False
c.KubeSpawner.events_enabled = True
c.KubeSpawner.node_selector = json.loads(os.environ.get("GPUHUB_NODE_SELECTOR", "{}"))
c.KubeSpawner.k8s_api_request_retry_timeout = int(os.environ.get("GPUHUB_K8S_RETRY_TIMEOUT", "30"))
c.GPUKubeSpawner.group_quota_classes = os.environ.get("GPUHUB_GROUP_QUOTA_CLASSES") == "1"
