"""Kubeconfig files and API clients for the test cluster."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import client

from .pki import CertPair


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, user: str) -> Path:
    """Write a single-context kubeconfig that authenticates with a bearer ``token``."""
    return _write(path, server, ca_file, user, {"token": token})


def write_cert_kubeconfig(path: Path, server: str, ca_file: Path, cert: CertPair) -> Path:
    """Write a single-context kubeconfig that authenticates with a client certificate."""
    entry = {"client-certificate": str(cert.cert), "client-key": str(cert.key)}
    return _write(path, server, ca_file, "client", entry)


def _write(path: Path, server: str, ca_file: Path, user: str, credentials: dict[str, str]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testbed",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
        "current-context": "testbed",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def api_client(server: str, ca_file: Path, token: str) -> client.ApiClient:
    """A ``kubernetes`` ApiClient for ``server`` (no global configuration is touched)."""
    configuration = client.Configuration()
    configuration.host = server
    configuration.ssl_ca_cert = str(ca_file)
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(configuration)
