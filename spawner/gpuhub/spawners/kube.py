"""``GPUKubeSpawner``: KubeSpawner with gpuhub profiles, live-count GPU quotas and
CUDA-matched placement.

Thin over the policy core: the same YAML, validation, ledger and denial messages as the
local spawner.  Usage comes from a shared watch cache of gpuhub-marked pods (notebooks and
job workers, in every namespace gpuhub uses) and node capacity from a node watch, so a
spawn makes no extra LIST call.  The quota check and the reservation happen in one
synchronous step after the caches' first load.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner
from kubespawner.clients import shared_client
from traitlets import Bool, Integer, List, Unicode, default

from ..activeconfig import active_config
from ..kube.clusterview import ClusterView, cluster_view
from ..kube.groupquota import is_quota_rejection
from ..kube.messages import explain_failed_scheduling, pods_ahead, wait_message
from ..kube.objects import pod_overrides
from ..model import Allocation, SpawnRequest
from .base import GpuhubSpawnerMixin, LedgerBackend, user_error

_LIST_TRAITS = ("tolerations", "node_affinity_required", "volumes", "volume_mounts")
_DICT_TRAITS = ("extra_resource_limits", "environment", "extra_labels", "extra_annotations")


def _extend(base: Any, extra: list[Any]) -> Any:
    """The admin's list trait plus gpuhub's items.  KubeSpawner also takes these traits
    as dicts (z2jh sets ``volumes``/``volume_mounts`` that way; values are sorted by key):
    then gpuhub's items go in under ``gpuhub-<n>`` keys."""
    if isinstance(base, dict):
        return {**base, **{f"gpuhub-{i}": item for i, item in enumerate(extra)}}
    return [*base, *extra]


class GPUKubeSpawner(GpuhubSpawnerMixin, KubeSpawner):
    """KubeSpawner subclass for GPU profiles and per-group GPU quotas."""

    gpu_wait_timeout = Integer(
        600,
        config=True,
        help="""Seconds a GPU server may wait for the scheduler (Pending, Unschedulable)
        before the spawn fails with the reason and its quota reservation is released.

        .. versionadded:: 0.1
        """,
    )

    watch_namespaces = List(
        Unicode(),
        config=True,
        help="""Namespaces whose gpuhub pods (notebooks and training-job workers) count
        against quotas.  Defaults to the spawner's own ``namespace``, which the shipped
        ``helm-values/manifests/rbac.yaml`` grants; list every namespace gpuhub uses (the
        jobs' too) and bind that file's RoleBinding in each.  An empty list watches every
        namespace (needs a ClusterRole on pods).  The hub checks at start that it may
        list and watch pods there and nodes cluster-wide, and stops if not.

        .. versionadded:: 0.1
        """,
    )

    @default("watch_namespaces")
    def _default_watch_namespaces(self) -> list[str]:
        return [self.namespace]

    delete_grace_period = Integer(
        30,
        config=True,
        help="""Seconds a stopped server's pod may take to exit before it is killed
        (KubeSpawner's default is 1).  The apiserver's ResourceQuota stops counting a
        terminating pod once its deletion timestamp plus this grace has passed, even when
        the kubelet has not yet killed it and it still holds its GPU; a grace longer than
        a kill takes keeps the pod charged until the kubelet confirms it gone, so a new
        pod is not admitted onto a GPU that is still in use.  A pod that exits on SIGTERM
        is gone at once whatever this value.  A stop never force-deletes a GPU pod.

        .. versionadded:: 0.1
        """,
    )

    group_quota_classes = Bool(
        False,
        config=True,
        help="""Give every GPU pod its group's PriorityClass (``gpuhub-group-<group>``) so
        the per-group ResourceQuotas from ``gpuhub-config kube-quotas`` make the apiserver
        enforce group quotas atomically for notebooks and jobs alike.  Apply those objects
        first; a profile's own ``priority_class`` is then not used for GPU pods.

        .. versionadded:: 0.1
        """,
    )

    _base: dict[str, Any] | None = None
    _gpuhub_request: SpawnRequest | None = None
    _gpuhub_alloc: Allocation | None = None

    # -- the shared cluster view ----------------------------------------------------------
    @property
    def gpuhub_view(self) -> ClusterView:
        """This process's view of the watched namespaces (shared by every spawner)."""
        holder = active_config(self.gpuhub_config_file, self.log)
        return cluster_view(self.watch_namespaces, lambda: shared_client("CoreV1Api"), holder.get)

    async def gpuhub_caches_ready(self) -> None:
        """Wait (at most ``k8s_api_request_retry_timeout``) for the caches' first load."""
        async with asyncio.timeout(self.k8s_api_request_retry_timeout):
            await self.gpuhub_view.wait_ready()

    def gpuhub_backend(self) -> LedgerBackend:
        return self.gpuhub_view.ledger

    def gpuhub_capacity(self) -> tuple[dict[str, tuple[int, int]], str, bool]:
        totals = self.gpuhub_view.capacity(self.node_selector).totals(self.gpuhub)
        return totals, "cluster", True

    async def _render_options_form_async(self) -> str:
        await self.gpuhub_caches_ready()
        return self._render_options_form()

    @default("options_form")
    def _default_kube_options_form(self) -> Any:
        return type(self)._render_options_form_async

    # -- spawn ----------------------------------------------------------------------------
    def start(self) -> asyncio.Future[Any]:
        self._start_future = asyncio.ensure_future(self._gpuhub_start())
        return self._start_future

    async def _gpuhub_start(self) -> Any:
        try:
            await self.gpuhub_caches_ready()
        except TimeoutError as e:
            problems = self.gpuhub_view.problems()
            detail = f": {'; '.join(problems)}" if problems else "; try again shortly"
            self.log.error("gpuhub: GPU usage could not be read from the cluster%s", detail)
            raise user_error(503, f"GPU usage could not be read from the cluster{detail}") from e
        request, alloc = self.claim_resources()  # synchronous: no await from check to reserve
        self._gpuhub_request = request
        self._gpuhub_alloc = alloc
        try:
            await self.save_default()
            self._apply_overrides(request, alloc)
            return await self._start_within_deadline(request)
        except BaseException:
            self.release_resources()
            raise

    async def load_user_options(self) -> None:
        """gpuhub validated and applied ``user_options`` before ``_start``; KubeSpawner's
        own profile_list machinery is not used."""

    def _apply_overrides(self, request: SpawnRequest, alloc: Allocation | None) -> None:
        if self._base is None:
            names = (
                *_LIST_TRAITS,
                *_DICT_TRAITS,
                "image",
                "cpu_limit",
                "cpu_guarantee",
                "mem_limit",
                "mem_guarantee",
                "priority_class_name",
            )
            self._base = {n: copy.deepcopy(getattr(self, n)) for n in names}
        overrides = pod_overrides(
            self.gpuhub, request, alloc, group_quota_classes=self.group_quota_classes
        )
        for name, value in overrides.items():
            base = self._base[name]
            if name in _LIST_TRAITS:
                value = _extend(base, value)
            elif name in _DICT_TRAITS:
                value = {**base, **value}
            elif name == "priority_class_name" and not value:
                value = base
            setattr(self, name, value)

    async def _start_within_deadline(self, request: SpawnRequest) -> Any:
        """KubeSpawner's ``_start`` as a child task, given up after ``gpu_wait_timeout``
        while its pod is Pending.  If this spawn ends early (cancelled because the user
        stopped the server, or failed), the child is cancelled too and a pod whose create
        request was already on its way is deleted: nothing outlives the reservation."""
        task = asyncio.ensure_future(self._start())
        started = time.monotonic()
        try:
            while not task.done():
                await asyncio.wait([task], timeout=1)
                if task.done() or not request.gpus:
                    continue
                if time.monotonic() - started < self.gpu_wait_timeout:
                    continue
                pod = self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}")
                if pod and pod.get("status", {}).get("phase") == "Pending":
                    task.cancel()
                    reason = self.gpuhub_wait_message() or "no GPU became free"
                    await self.stop(now=True)
                    raise user_error(
                        503,
                        f"Gave up after {self.gpu_wait_timeout}s: {reason}. The request was "
                        "withdrawn and its GPU quota released; try again later or pick "
                        "another GPU type.",
                    )
            return task.result()
        except ApiException as e:
            if is_quota_rejection(e.status or 0, str(e.body or e.reason)):
                group = self._gpuhub_alloc.group if self._gpuhub_alloc else "?"
                raise user_error(
                    403,
                    f"Not enough GPU quota: the cluster's quota for group {group} refused the "
                    f"pod ({e.reason}); another server or job took the group's last GPUs "
                    "a moment ago. Try again when one of them stops.",
                ) from e
            raise
        except BaseException:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                with contextlib.suppress(Exception):
                    await self.api.delete_namespaced_pod(
                        self.pod_name,
                        self.namespace,
                        grace_period_seconds=self.delete_grace_period,
                    )
            raise

    async def stop(self, now: bool = False) -> None:
        """Delete the pod with ``delete_grace_period`` even when ``now``: a forced delete
        drops the pod object (and its quota charge) while its process may still hold
        the GPU.  The wait for the pod to be gone is the same."""
        try:
            await super().stop(now=False)
        finally:
            self.release_resources()

    # -- progress -------------------------------------------------------------------------
    def gpuhub_wait_message(self) -> str | None:
        """``waiting for an A100: 0 of 16 free, 3 pods ahead`` while the pod is Pending."""
        req = self._gpuhub_request
        if req is None or not req.gpus or req.gpu_type is None:
            return None
        pod = (
            self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}")
            if self.pod_reflector
            else None
        )
        if pod is not None and pod.get("status", {}).get("phase") != "Pending":
            return None
        totals = self.gpuhub_view.capacity(self.node_selector)
        total, free = totals.totals(self.gpuhub, cuda=req.image.cuda).get(req.gpu_type, (0, 0))
        name = self.gpuhub.gpu_types[req.gpu_type].display_name
        if total == 0:
            seen = totals.drivers(self.gpuhub).get(req.gpu_type, [])
            if not seen or not req.image.cuda:
                return f"the cluster has no schedulable {name} node right now"
            return (
                f"no {name} node has a driver for CUDA {req.image.cuda} "
                f"(needs ≥ {req.image.min_driver or 'a newer driver'}; "
                f"{name} nodes have {', '.join(seen)})"
            )
        ahead = pods_ahead(list(self.gpuhub_view.pods()), self.gpuhub_key, req.gpu_type)
        return wait_message(name, total, free, ahead)

    async def progress(self) -> Any:
        last: str | None = None
        seen_events = 0
        progress = 10
        while True:
            fut = self._start_future
            done = fut is not None and fut.done()
            messages = []
            wait = self.gpuhub_wait_message()
            if wait and wait != last:
                messages.append(wait)
                last = wait
            events = self.events if self.events_enabled else []
            for ev in events[seen_events:]:
                text = ev.get("message") or ""
                if ev.get("reason") == "FailedScheduling":
                    name = None
                    if self._gpuhub_request and self._gpuhub_request.gpu_type:
                        name = self.gpuhub.gpu_types[self._gpuhub_request.gpu_type].display_name
                    text = explain_failed_scheduling(text, name)
                messages.append(text)
            seen_events = len(events)
            for m in messages:
                progress += (90 - progress) / 3
                yield {"progress": int(progress), "message": m}
            if done:
                break
            await asyncio.sleep(1)
