"""A shared watch cache (LIST once, then WATCH) of pods or nodes, as plain dicts.

KubeSpawner's own reflector keys objects by namespace, so it cannot hold cluster-scoped
nodes; this small informer serves both.  Each cache is shared by every spawner in the hub
process: a spawn or a quota decision reads memory, never the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The parts of a pod gpuhub reads (marks, node, phase, times).  The cache keeps only
    these: a full pod is a hundred nested objects (managed fields, containers, volumes)
    that the garbage collector would rescan, pausing the hub, at 10,000 pods."""
    meta = pod.get("metadata", {})
    keep = ("name", "namespace", "labels", "annotations", "creationTimestamp")
    return {
        "metadata": {k: meta[k] for k in (*keep, "deletionTimestamp") if k in meta},
        "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


def slim_node(node: dict[str, Any]) -> dict[str, Any]:
    """The parts of a node gpuhub reads (labels, schedulability, GPUs, readiness)."""
    meta, spec, status = node.get("metadata", {}), node.get("spec") or {}, node.get("status") or {}
    gpus = (status.get("allocatable") or {}).get("nvidia.com/gpu")
    return {
        "metadata": {"name": meta.get("name"), "labels": meta.get("labels") or {}},
        "spec": {"unschedulable": spec.get("unschedulable", False)},
        "status": {
            "allocatable": {} if gpus is None else {"nvidia.com/gpu": gpus},
            "conditions": [
                {"type": "Ready", "status": c.get("status")}
                for c in status.get("conditions") or []
                if c.get("type") == "Ready"
            ],
        },
    }


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


class Informer:
    """Cache of the objects one list method returns.

    ``list_method`` is a bound ``kubernetes_asyncio`` list method (e.g.
    ``CoreV1Api.list_pod_for_all_namespaces`` or ``list_namespaced_pod`` with
    ``namespace`` in ``kwargs``).  ``slim`` keeps the parts of each object that are read.
    ``list_calls`` counts LISTs (first load + re-lists after a broken watch).
    """

    def __init__(
        self,
        list_method: Callable[..., Any],
        kind: str,
        slim: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        timeout_seconds: int = 300,
        **kwargs: Any,
    ) -> None:
        self.list_method = list_method
        self.kind = kind
        self.slim = slim
        self.kwargs = kwargs
        self.timeout_seconds = timeout_seconds
        self.objects: dict[str, dict[str, Any]] = {}
        self.list_calls = 0
        self.last_error: str | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.relist_listeners: list[Callable[[list[dict[str, Any]]], None]] = []

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        """Start (if needed) and wait for the first LIST; callers bound it with
        ``asyncio.timeout``."""
        self.start()
        await self._ready.wait()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"gpuhub-informer-{self.kind}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _list(self) -> str:
        self.list_calls += 1
        resp = await self.list_method(**self.kwargs, _preload_content=False)
        data = json.loads(await resp.read())
        if getattr(resp, "status", 200) >= 400 or data.get("kind") == "Status":
            raise ApiException(
                status=data.get("code", getattr(resp, "status", 0)),
                reason=data.get("message", "list failed"),
            )
        items = (self.slim(o) for o in data.pop("items", None) or [])
        self.objects = {object_key(o): o for o in items}
        for fn in self.relist_listeners:
            fn(list(self.objects.values()))
        return str(data["metadata"]["resourceVersion"])

    async def _run(self) -> None:
        delay = 0.5
        rv: str | None = None
        while not self._stopping:
            try:
                if rv is None:
                    rv = await self._list()
                    self._ready.set()
                w = watch.Watch()
                method = functools.partial(self.list_method, _preload_content=False)
                async with w.stream(
                    method,
                    resource_version=rv,
                    timeout_seconds=self.timeout_seconds,
                    _request_timeout=self.timeout_seconds + 30,
                    allow_watch_bookmarks=True,
                    **self.kwargs,
                ) as stream:
                    async for event in stream:
                        raw = event["raw_object"]
                        etype = event["type"]
                        rv = raw["metadata"]["resourceVersion"]
                        if etype == "BOOKMARK":
                            continue
                        obj = self.slim(raw)
                        key = object_key(obj)
                        if etype == "DELETED":
                            self.objects.pop(key, None)
                        else:
                            self.objects[key] = obj
                        for fn in self.listeners:
                            fn(etype, obj)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except ApiException as e:
                if e.status == 410:  # resource version too old: re-list
                    rv = None
                    continue
                self.last_error = f"{e.status} {e.reason}".strip()
                if e.status == 403:
                    self.last_error = (
                        f"the hub's service account may not list/watch {self.kind} "
                        f"(403 Forbidden); apply helm-values/manifests/rbac.yaml"
                    )
                log.warning("watch of %s failed (%s); retrying in %.1fs", self.kind, e, delay)
                rv = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
            except Exception as e:  # noqa: BLE001 - keep the cache alive across API trouble
                self.last_error = str(e) or type(e).__name__
                log.warning("watch of %s failed (%s); retrying in %.1fs", self.kind, e, delay)
                rv = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
