"""Pure helpers that turn a Pod (as a camelCase dict) into what a local process needs.

Environment variables (value, fieldRef, configMap/secret refs, ``$(VAR)`` expansion), volume
folders and the rewriting of in-container paths (mountPath, workingDir) to local folders.

There is no cluster DNS: an env value that is exactly the name of a Service (with a
selector) in the pod's namespace is replaced by the IP of a pod that Service selects
(:func:`service_candidates`, :func:`resolve_services`), the way a headless Service's
DNS name resolves to its pods (PyTorchJob's ``MASTER_ADDR=<job>-master-0``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Pod = dict[str, Any]
Container = dict[str, Any]
# (kind "configMap"|"secret", namespace, name) -> data (secret values still base64) or None
ObjectReader = Callable[[str, str, str], Mapping[str, str] | None]
# (namespace, candidate names, this pod's uid) -> {Service name: a selected pod's IP, or
# None while no selected pod has one}; names that are not Services are left out
ServiceResolver = Callable[[str, set[str], str], Mapping[str, str | None]]

_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_LABEL_REF = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known variables are replaced, ``$$`` escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)


def field_value(pod: Pod, field_path: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath``."""
    meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if field_path in simple:
        return str(simple[field_path] or "")
    match = _LABEL_REF.fullmatch(field_path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ValueError(f"unsupported fieldRef {field_path!r}")


def _ref_value(kind: str, ref: dict[str, Any], namespace: str, read: ObjectReader) -> str | None:
    data = read(kind, namespace, ref["name"])
    if data is None or ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise LookupError(f"{kind} {namespace}/{ref['name']} has no key {ref['key']!r}")
    value = data[ref["key"]]
    return base64.b64decode(value).decode() if kind == "secret" else value


def _env_from(container: Container, namespace: str, read: ObjectReader) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind = "configMap" if "configMapRef" in source else "secret"
        ref = source.get("configMapRef") or source.get("secretRef") or {}
        data = read(kind, namespace, ref["name"]) or {}
        for key, value in data.items():
            decoded = base64.b64decode(value).decode() if kind == "secret" else value
            env[source.get("prefix", "") + key] = decoded
    return env


def container_env(pod: Pod, container: Container, read: ObjectReader) -> dict[str, str]:
    """The container's declared environment, resolved (without the injected extras)."""
    namespace = pod["metadata"]["namespace"]
    env = _env_from(container, namespace, read)
    for var in container.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = expand(var.get("value", ""), env)
        elif "fieldRef" in source:
            env[var["name"]] = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[var["name"]] = _resource_value(container, source["resourceFieldRef"]["resource"])
        else:
            kind = "configMap" if "configMapKeyRef" in source else "secret"
            ref = source.get("configMapKeyRef") or source.get("secretKeyRef") or {}
            value = _ref_value(kind, ref, namespace, read)
            if value is not None:
                env[var["name"]] = value
    return env


def service_candidates(env: Mapping[str, str]) -> set[str]:
    """Env values that could be a Service name (DNS-1035 labels such as ``job-master-0``)."""
    return {value for value in env.values() if _DNS_LABEL.fullmatch(value)}


def resolve_services(env: Mapping[str, str], addresses: Mapping[str, str | None]) -> dict[str, str]:
    """``env`` with every value that names a resolved Service replaced by its pod IP."""
    return {name: addresses.get(value) or value for name, value in env.items()}


def _resource_value(container: Container, resource: str) -> str:
    section, _, name = resource.partition(".")
    return str((container.get("resources", {}).get(section) or {}).get(name, "0"))


class PathMap:
    """In-container paths (mountPaths) -> local folders; longest mountPath wins."""

    def __init__(self, mounts: Mapping[str, Path]) -> None:
        self.mounts = sorted(mounts.items(), key=lambda item: -len(item[0]))

    def local(self, path: str) -> str:
        for mount_path, local in self.mounts:
            mount_path = mount_path.rstrip("/") or "/"
            if path == mount_path or path.startswith(mount_path + "/"):
                return str(local) + path[len(mount_path) :]
        return path

    def rewrite(self, text: str) -> str:
        """Rewrite ``text`` if it *is* an absolute path under a mount (args, env values)."""
        return self.local(text) if text.startswith("/") else text


def volume_folder(volume: dict[str, Any], pod_dir: Path, pvc_root: Path, namespace: str) -> Path:
    """The local folder that stands for ``volume`` (created by the caller)."""
    if "persistentVolumeClaim" in volume:
        return pvc_root / namespace / volume["persistentVolumeClaim"]["claimName"]
    if "hostPath" in volume:
        return Path(volume["hostPath"]["path"])
    return pod_dir / "volumes" / volume["name"]


class VolumeNotReady(Exception):
    """A configMap/secret volume's object does not exist yet: retry the pod later."""


def volume_files(volume: dict[str, Any], namespace: str, read: ObjectReader) -> dict[str, str]:
    """Files to write into a configMap/secret volume (key -> text)."""
    for kind, key in (("configMap", "configMap"), ("secret", "secret")):
        if key in volume:
            name = volume[key].get("name") or volume[key].get("secretName")
            found = read(kind, namespace, name)
            if found is None and not volume[key].get("optional"):
                # as the kubelet: the pod waits (ContainerCreating) until the object exists
                raise VolumeNotReady(f"{kind} {namespace}/{name} not found")
            data = found or {}
            if kind == "secret":
                return {k: base64.b64decode(v).decode() for k, v in data.items()}
            return dict(data)
    return {}
