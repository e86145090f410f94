"""A hub started the way the Zero to JupyterHub 4.4.0 chart starts it, from ``helm-values/``.

What runs is z2jh's own ``jupyterhub_config.py`` (and ``z2jh.py``) from the chart, reading a
values file merged as helm merges: the chart's ``values.yaml``, the shipped files, then a
small test overlay.  The hub pod's filesystem is a temporary root: the chart's files and the
values' ``hub.extraFiles`` are written under it where the chart mounts them, and every pod
path in them (``/usr/local/etc/...``, ``/usr/local/share/gpuhub``, ``/srv/jupyterhub``) is
rewritten to lie under the root.  The hub's environment is the chart's hub container's
(``POD_NAMESPACE``, ``HELM_RELEASE_NAME``, ``CONFIGPROXY_AUTH_TOKEN``, ``hub.extraEnv``) plus
the ``*_SERVICE_HOST``/``*_SERVICE_PORT`` variables Kubernetes sets for the chart's Services.
configurable-http-proxy runs beside it as the chart's proxy pod would.

Where a test machine cannot be the chart's cluster, :data:`DIFFERENCES` says what differs.
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from hubproc import PortTaken, ancestry, free_port, kill_session, wait_for_own_hub  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT.parent / "shared" / "data" / "z2jh-4.4.0-chart" / "jupyterhub"
VALUES = ROOT / "helm-values"
POD_PATHS = (
    "/usr/local/etc/jupyterhub",
    "/usr/local/etc/gpuhub",
    "/usr/local/share/gpuhub",
    "/srv/jupyterhub",
)
"""Paths of the hub pod (the chart's mounts, the hub image's files) moved under the root."""
NAMES = ("hub", "proxy-api", "proxy-public", "proxy-http", "singleuser", "user-scheduler")
"""z2jh resource names (``config/<name>`` in the hub pod); ``fullnameOverride: ""`` keeps
them as they are."""
CURL_CLIENT = 'AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient")'

DIFFERENCES = """\
- Addresses: no cluster DNS and no pod IPs.  The hub listens on a free loopback port
  (``--JupyterHub.hub_bind_url``/``hub_connect_url`` on the command line, which win over
  z2jh's ``http://:8081`` and ``http://hub:$HUB_SERVICE_PORT``); with ``hub_address`` (a
  real node's bridge address, where its pods reach the host) it listens on every
  interface, as z2jh's ``http://:8081`` does, and servers connect to it at that address
  instead of the hub Service's.  The proxy's API address is
  given the same way, and the ``gpuhub-jobs`` and ``gpuhub-monitor`` services'
  ``url``/``--bind-url`` (``hub:8011``/``0.0.0.0:8011``, ``hub:8012``/``0.0.0.0:8012``)
  become free loopback ports.  Nothing else in the
  values changes.
- Cluster credentials: a kubeconfig (``$KUBECONFIG``) holding a token of the ServiceAccount
  ``hub``, bound by exactly helm-values/manifests/rbac.yaml and z2jh's hub Role, instead of
  the token files Kubernetes mounts into the pod.
- Images: the process node runs each container's command from ``PATH``; the hub, its
  service and servers run from the test's Python environment (``PYTHONPATH`` included),
  and tornado's default HTTP client replaces the curl one (pycurl, which the hub image
  installs, is not in the test environment).
- Login: the shipped base has no authenticator and its overlays need an identity provider:
  JupyterHub's shared-password authenticator, with the provider's groups as ``load_groups``.
- Servers: no container runtime to run the image's entrypoint: the container's command is
  ``/usr/bin/env`` and the server listens on its pod IP as root
  (``KubeSpawner.extra_container_config``/``args``).
- The idle culler is off: z2jh hard-wires its hub URL to ``localhost:8081``.
"""


def helm_merge(base: Any, overlay: Any) -> Any:
    """How helm combines values: maps merge key by key, anything else is replaced, and
    ``null`` deletes the key."""
    if not (isinstance(base, dict) and isinstance(overlay, dict)):
        return copy.deepcopy(overlay)
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def chart_values(files: list[str], overlay: dict[str, Any]) -> dict[str, Any]:
    """The chart's defaults, then ``helm-values/<file>.yaml`` in order, then ``overlay``."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name in files:
        values = helm_merge(values, yaml.safe_load((VALUES / f"{name}.yaml").read_text()))
    return dict(helm_merge(values, overlay))


def relocate(obj: Any, root: Path) -> Any:
    """``obj`` with every hub-pod path in its strings moved under ``root``."""
    if isinstance(obj, dict):
        return {k: relocate(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relocate(v, root) for v in obj]
    if isinstance(obj, str):
        for path in POD_PATHS:
            obj = obj.replace(path, f"{root}{path}")
    return obj


def user_token(hub: ChartHub, user: str, password: str) -> str:
    """A token of ``user``, asked for with the user's password."""
    r = requests.post(
        f"{hub.api}/users/{user}/tokens",
        json={"auth": {"username": user, "password": password}, "note": "test"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["token"])


def static_home_volume(name: str, namespace: str, claim: str, host_path: str) -> dict[str, Any]:
    """A PersistentVolume bound to ``claim`` when the hub creates it: what a cluster admin
    provides where no storage provisioner runs (the chart's storage is dynamic,
    ``claim-{user_server}``, 50Gi, ReadWriteOnce, the default class)."""
    return {
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "50Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": namespace, "name": claim},
            "hostPath": {"path": host_path},
        },
    }


SERVICE_PORTS = {"gpuhub-jobs": 8011, "gpuhub-monitor": 8012}
"""The services' ports on the hub Service (``hub.service.extraPorts``)."""


def localize_service(values: dict[str, Any], name: str, port: int) -> None:
    """A service's Service address (``hub:<its port>``, bound on ``0.0.0.0``) as a free
    loopback port: the one address in the values a test machine cannot have."""
    service, shipped = values["hub"]["services"][name], SERVICE_PORTS[name]
    service["url"] = service["url"].replace(f"http://hub:{shipped}", f"http://127.0.0.1:{port}")
    service["command"] = [
        a.replace(f"0.0.0.0:{shipped}", f"127.0.0.1:{port}") for a in service["command"]
    ]


@dataclass
class ChartHub:
    """The hub pod (hub + its managed services) and the proxy pod of one release."""

    root: Path
    values: dict[str, Any]
    namespace: str
    kubeconfig: Path
    release: str = "gpuhub"
    port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    jobs_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    hub_address: str = "127.0.0.1"
    """Where servers reach the hub (the stand-in for the hub Service's address)."""
    hub: subprocess.Popen[bytes] | None = None
    proxy: subprocess.Popen[bytes] | None = None
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/hub/api"

    @property
    def etc(self) -> Path:
        return self.root / "usr/local/etc/jupyterhub"

    @property
    def workdir(self) -> Path:
        return self.root / "srv/jupyterhub"

    @property
    def log_path(self) -> Path:
        return self.root / "hub.log"

    # -- the chart's objects, written where the hub pod mounts them -----------------------
    def install(self) -> None:
        """The hub ConfigMap (z2jh's files, resource names), the hub Secret (values and
        generated secrets), ``hub.extraFiles``, and the hub image's matrix."""
        if not self.secrets:
            self.secrets = {
                "hub.config.ConfigurableHTTPProxy.auth_token": secrets.token_hex(32),
                "hub.config.JupyterHub.cookie_secret": secrets.token_hex(32),
                "hub.config.CryptKeeper.keys": secrets.token_hex(32),
                **{
                    f"hub.services.{k}.apiToken": secrets.token_hex(32)
                    for k in self.values["hub"].get("services", {})
                },
            }
        values = copy.deepcopy(self.values)
        localize_service(values, "gpuhub-jobs", self.jobs_port)
        localize_service(values, "gpuhub-monitor", self.monitor_port)
        values["Chart"] = {"Name": "jupyterhub", "Version": "4.4.0"}
        values["Release"] = {"Name": self.release, "Namespace": self.namespace}
        values = relocate(values, self.root)
        for sub in ("config", "secret"):
            (self.etc / sub).mkdir(parents=True, exist_ok=True)
        for name in ("jupyterhub_config.py", "z2jh.py"):
            text = relocate((CHART / "files" / "hub" / name).read_text(), self.root)
            if name == "jupyterhub_config.py":
                assert CURL_CLIENT in text
                text = text.replace(CURL_CLIENT, "pass  # gpuhub test: no pycurl (charthub.py)")
            (self.etc / name).write_text(text)
        for name in NAMES:
            (self.etc / "config" / name).write_text(name)
        (self.etc / "secret" / "values.yaml").write_text(yaml.safe_dump(values))
        for key, value in self.secrets.items():
            (self.etc / "secret" / key).write_text(value)
        for f in values["hub"].get("extraFiles", {}).values():
            path = Path(f["mountPath"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f["stringData"])
        matrix = self.root / "usr/local/share/gpuhub/matrix.yaml"  # images/hub/Dockerfile
        matrix.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "images" / "matrix.yaml", matrix)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        """The hub container's environment as the chart renders it, plus the Services'
        variables Kubernetes adds, plus the test environment's PATH/PYTHONPATH/KUBECONFIG."""
        env = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME", "LANG") if k in os.environ}
        env.update(
            PYTHONUNBUFFERED="1",
            HELM_RELEASE_NAME=self.release,
            POD_NAMESPACE=self.namespace,
            CONFIGPROXY_AUTH_TOKEN=self.secrets["hub.config.ConfigurableHTTPProxy.auth_token"],
            KUBECONFIG=str(self.kubeconfig),
        )
        extra = relocate(self.values["hub"].get("extraEnv", {}), self.root)
        env.update({k: str(v) for k, v in extra.items()})
        for name, port in (
            ("HUB", self.hub_port),
            ("PROXY_API", self.proxy_api_port),
            ("PROXY_PUBLIC", self.port),
        ):
            env[f"{name}_SERVICE_HOST"] = "127.0.0.1"
            env[f"{name}_SERVICE_PORT"] = str(port)
        env["HUB_SERVICE_HOST"] = self.hub_address
        return env

    # -- processes ----------------------------------------------------------------------
    def start(self, timeout: float = 90, attempts: int = 3) -> ChartHub:
        """Install, start the proxy and the hub, and wait until this hub answers through
        this proxy; on a port taken by someone else, start again on fresh ports."""
        for attempt in range(attempts):
            if attempt:
                self.stop()
                self.port, self.hub_port, self.proxy_api_port = (free_port() for _ in range(3))
                self.jobs_port, self.monitor_port = free_port(), free_port()
            self.install()
            try:
                return self._start_once(timeout)
            except PortTaken as e:
                if attempt == attempts - 1:
                    raise RuntimeError(f"no free ports after {attempts} tries: {e}") from e
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> ChartHub:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        env = self.env()
        hub_url = f"http://127.0.0.1:{self.hub_port}"
        loopback = self.hub_address == "127.0.0.1"
        bind_url = hub_url if loopback else f"http://:{self.hub_port}"
        connect_url = f"http://{self.hub_address}:{self.hub_port}"
        self.proxy = subprocess.Popen(
            [
                "configurable-http-proxy",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                "--api-ip=127.0.0.1",
                f"--api-port={self.proxy_api_port}",
                f"--default-target={hub_url}",
                f"--error-target={hub_url}/hub/error",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.hub = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterhub",
                "--config",
                str(self.etc / "jupyterhub_config.py"),
                f"--JupyterHub.hub_bind_url={bind_url}",
                f"--JupyterHub.hub_connect_url={connect_url}",
                f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{self.proxy_api_port}",
            ],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_own_hub(
            self.hub,
            self.api,
            {
                self.port: "proxy",
                self.hub_port: "hub",
                self.jobs_port: "jobs service",
                self.monitor_port: "monitor service",
            },
            lambda: self.log_since(offset),
            timeout,
            self.owns,
        )
        return self

    def owns(self, pid: int) -> bool:
        started = {p.pid for p in (self.hub, self.proxy) if p is not None}
        return bool(ancestry(pid) & started)

    def log_since(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the hub (it stops its services; servers are pods and stay), then the
        proxy; SIGKILL what is left of either."""
        for proc in (self.hub, self.proxy):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_session(proc.pid)
                proc.wait()
            with contextlib.suppress(ProcessLookupError):
                kill_session(proc.pid)
