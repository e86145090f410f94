"""The hub's ServiceAccount, RBAC (manifests/hub-rbac.yaml) and a kubeconfig with its token."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import client

from .apply import apply, load_yaml
from .control_plane import SERVICE_ACCOUNT_ISSUER
from .kubeconfig import write_kubeconfig

HUB_RBAC = Path(__file__).resolve().parent.parent / "manifests" / "hub-rbac.yaml"
#: gpuhub's extra RBAC, exactly as shipped to admins
HELM_RBAC = Path(__file__).resolve().parents[3] / "helm-values" / "manifests" / "rbac.yaml"
TEMPLATE_NAMESPACE = "gpuhub"
_PER_NAMESPACE = ("gpuhub.dev/bind-in", "workload-namespaces")


def hub_rbac_objects(
    namespace: str, workload_namespaces: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """hub-rbac.yaml + helm-values/manifests/rbac.yaml for hub namespace ``namespace``."""
    objects = []
    for template in [*load_yaml(HUB_RBAC), *load_yaml(HELM_RBAC)]:
        doc = _retarget(copy.deepcopy(template), namespace)
        objects.append(doc)
        labels = doc["metadata"].get("labels", {})
        if labels.get(_PER_NAMESPACE[0]) == _PER_NAMESPACE[1]:
            for extra in workload_namespaces:
                copy_ = copy.deepcopy(doc)
                copy_["metadata"]["namespace"] = extra
                objects.append(copy_)
    return objects


def _retarget(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    if doc["metadata"].get("namespace") == TEMPLATE_NAMESPACE:
        doc["metadata"]["namespace"] = namespace
    for subject in doc.get("subjects", []):
        if subject.get("namespace") == TEMPLATE_NAMESPACE:
            subject["namespace"] = namespace
    if doc["kind"] == "ClusterRoleBinding":
        doc["metadata"]["name"] = f"{doc['metadata']['name']}-{namespace}"
    return doc


def service_account_token(
    api: client.ApiClient, namespace: str, name: str = "hub", seconds: int = 86400
) -> str:
    """A bound token for ``namespace/name`` from the TokenRequest API."""
    body = {"spec": {"audiences": [SERVICE_ACCOUNT_ISSUER], "expirationSeconds": seconds}}
    result = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, body)
    return str(result.status.token)


def hub_kubeconfig(
    api: client.ApiClient,
    server: str,
    ca_file: Path,
    namespace: str,
    path: Path,
    workload_namespaces: Sequence[str] = (),
) -> Path:
    """Apply the hub RBAC in ``namespace``; write a kubeconfig for its ``hub`` ServiceAccount."""
    apply(api, hub_rbac_objects(namespace, workload_namespaces))
    token = service_account_token(api, namespace)
    return write_kubeconfig(path, server, ca_file, token, f"system:serviceaccount:{namespace}:hub")
