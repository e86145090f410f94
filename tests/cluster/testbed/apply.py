"""Create-or-replace arbitrary manifests (dicts or YAML files) through the dynamic client."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException


def load_yaml(path: Path) -> list[dict[str, Any]]:
    """The non-empty documents of a (multi-document) YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def apply(api: client.ApiClient, objects: Iterable[dict[str, Any]]) -> None:
    """Create each object, or replace it (keeping its resourceVersion) when it exists."""
    dyn = dynamic.DynamicClient(api)
    for body in objects:
        resource = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        namespace = body["metadata"].get("namespace") if resource.namespaced else None
        try:
            resource.create(body=body, namespace=namespace)
        except ApiException as error:
            if error.status != 409:
                raise
            current = resource.get(name=body["metadata"]["name"], namespace=namespace)
            body = {
                **body,
                "metadata": {
                    **body["metadata"],
                    "resourceVersion": current.metadata.resourceVersion,
                },
            }
            resource.replace(body=body, namespace=namespace)


def delete(api: client.ApiClient, objects: Iterable[dict[str, Any]]) -> None:
    """Delete each object; missing ones are fine."""
    dyn = dynamic.DynamicClient(api)
    for body in objects:
        resource = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        namespace = body["metadata"].get("namespace") if resource.namespaced else None
        try:
            resource.delete(name=body["metadata"]["name"], namespace=namespace)
        except ApiException as error:
            if error.status != 404:
                raise


class Rejected(RuntimeError):
    """The apiserver refused an object in a dry run."""


def dry_run_create(
    api: client.ApiClient, objects: Iterable[dict[str, Any]], namespace: str
) -> None:
    """Create each object with ``dryRun=All`` and strict field validation (unknown or
    duplicate fields are errors); namespaced ones in ``namespace``.  Nothing is stored.
    :class:`Rejected` names the first object the apiserver refuses, with its answer."""
    dyn = dynamic.DynamicClient(api)
    for body in objects:
        resource = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        ns = namespace if resource.namespaced else None
        if resource.namespaced:
            body = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
        try:
            resource.create(
                body=body,
                namespace=ns,
                query_params=[("dryRun", "All"), ("fieldValidation", "Strict")],
            )
        except ApiException as error:
            raise Rejected(f"{body['kind']}/{body['metadata']['name']}: {error.body}") from None
