"""Check at hub start that the hub's account may watch what gpuhub watches.

A SelfSubjectAccessReview (allowed to every authenticated account) per verb the hub
needs: ``list`` and ``watch`` of pods in each watched namespace and of nodes cluster-wide.
A scope the RBAC does not grant stops the hub at start with the missing permission and the
file that grants it, instead of failing every spawn later."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

RBAC_FILE = "helm-values/manifests/rbac.yaml"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
VERBS = ("list", "watch")

log = logging.getLogger(__name__)


def needed_access(
    namespaces: Sequence[str], nodes: bool = True
) -> list[tuple[str, str, str | None]]:
    """``(verb, resource, namespace)`` the watches need (``nodes``: the node watch too);
    namespace ``None``: cluster-wide."""
    scopes: list[str | None] = list(namespaces) or [None]
    pods = [(verb, "pods", ns) for ns in scopes for verb in VERBS]
    return [*pods, *((verb, "nodes", None) for verb in VERBS if nodes)]


def explain_missing(account: str, missing: Sequence[tuple[str, str, str | None]]) -> str:
    """The sentence the hub stops with."""
    parts = [
        f"{verb} {resource} " + (f"in namespace {ns}" if ns else "cluster-wide")
        for verb, resource, ns in missing
    ]
    return (
        f"gpuhub: {account} may not {'; '.join(parts)}. GPUKubeSpawner watches gpuhub pods in "
        f"its watch_namespaces and nodes cluster-wide; {RBAC_FILE} grants that (bind its "
        "RoleBinding gpuhub-hub-workloads in every watched namespace), or narrow "
        "GPUKubeSpawner.watch_namespaces to the namespaces it is bound in."
    )


async def missing_access(
    api: Any, namespaces: Sequence[str], nodes: bool = True
) -> list[tuple[str, str, str | None]]:
    """The needed permissions that ``api`` (a ``kubernetes_asyncio`` ``ApiClient``) lacks
    (``nodes``: including the node watch)."""
    from kubernetes_asyncio import client

    authz = client.AuthorizationV1Api(api)

    async def allowed(verb: str, resource: str, ns: str | None) -> bool:
        attrs: dict[str, Any] = {"verb": verb, "resource": resource, "group": ""}
        if ns:
            attrs["namespace"] = ns
        body: Any = {"spec": {"resourceAttributes": attrs}}
        review = await authz.create_self_subject_access_review(body)
        return bool(review.status.allowed)

    needed = needed_access(namespaces, nodes)
    answers = await asyncio.gather(*(allowed(*n) for n in needed))
    return [n for n, ok in zip(needed, answers, strict=True) if not ok]


def default_namespace() -> str:
    """KubeSpawner's default namespace: the pod's own, else ``default``."""
    if os.path.exists(SA_NAMESPACE_FILE):
        with open(SA_NAMESPACE_FILE) as f:
            return f.read().strip()
    return "default"


def configured_scope(config: Mapping[str, Any]) -> list[str]:
    """``GPUKubeSpawner.watch_namespaces`` as the loaded traitlets ``config`` sets it
    (default: the spawner's ``namespace``)."""
    own, base = config.get("GPUKubeSpawner", {}), config.get("KubeSpawner", {})
    if "watch_namespaces" in own:
        return list(own["watch_namespaces"])
    for section in (own, base):
        if "namespace" in section:
            return [str(section["namespace"])]
    return [default_namespace()]


async def load_client_configuration(kubeconfig: str = "") -> Any:
    """A ``kubernetes_asyncio`` client ``Configuration``: from ``kubeconfig`` when given,
    else the in-cluster service account, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio import config as kconfig

    conf = client.Configuration()
    if kubeconfig:
        await kconfig.load_kube_config(kubeconfig, client_configuration=conf)
        return conf
    try:
        kconfig.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    except kconfig.ConfigException:
        await kconfig.load_kube_config(client_configuration=conf)
    return conf


async def check_hub_access(config: Mapping[str, Any]) -> str | None:
    """The problem with the hub's access for ``config``'s watch scope, or ``None``."""
    from kubernetes_asyncio import client

    async with client.ApiClient(await load_client_configuration()) as api:
        missing = await missing_access(api, configured_scope(config))
        if not missing:
            return None
        account = "the hub's account"
        try:
            review: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            who = await client.AuthenticationV1Api(api).create_self_subject_review(review)
            account += f" {who.status.user_info.username}"
        except Exception:  # noqa: BLE001 - the name is a courtesy; the check stands
            pass
        return explain_missing(account, missing)


_checks: set[asyncio.Task[None]] = set()


def check_at_hub_start() -> None:
    """From the hub's config file: once the config is loaded (the first time the hub's
    event loop runs again), check the access and stop the hub if it falls short.  Does
    nothing outside a starting JupyterHub (e.g. when a test calls the config helper)."""
    from jupyterhub.app import JupyterHub

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    if not JupyterHub.initialized():
        return
    app = JupyterHub.instance()

    async def check() -> None:
        problem = await check_hub_access(app.config)
        if problem:
            app.log.critical("%s", problem)
            raise SystemExit(1)
        app.log.info("gpuhub: the hub's account may watch gpuhub pods and nodes")

    task = asyncio.get_running_loop().create_task(check(), name="gpuhub-access-check")
    _checks.add(task)
    task.add_done_callback(_checks.discard)
