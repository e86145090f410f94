"""Kubeflow training jobs (``PyTorchJob`` / ``TFJob``, ``kubeflow.org/v1``).

Manifests come from the pure builders in :mod:`gpuhub.jobs.manifests` (admin-owned pod
template, catalog image, GPU limits, gpuhub labels).  Quota is decided on the same live
view of the cluster as the hub's (:mod:`gpuhub.kube.clusterview`: the gpuhub pods of the
watched namespaces, keyed ``pod:<namespace>/<name>``) with the same policy and explanation
as notebooks; a job's reservation (``job:<id>``) holds until all its worker pods are seen.
With a Kueue queue configured, jobs are created suspended (holding nothing) and Kueue
admits them.  A job is created whole or not at all, and cancelled only while unfinished.

Adding Kubeflow Trainer v2 beside this: a ``TrainJobBackend`` would reuse everything here
except :meth:`KubeflowJobBackend._build` / the plural and ``_state`` — a pure
``make_trainjob`` (``trainer.kubeflow.org/v1alpha1``: ``runtimeRef`` to an admin-owned
``ClusterTrainingRuntime``, ``trainer.image/command/numNodes/resourcesPerNode``, the
labels and volumes as ``runtimePatches``) and a state mapping from its conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Bool, Dict, Enum, Integer, List, TraitError, Unicode, default, validate

from ...errors import GpuhubError, OptionError
from ...kube.access import load_client_configuration
from ...kube.clusterview import ClusterView, cluster_view
from ...kube.objects import expand_user_template
from ...ledger import Ledger
from ..errors import JobFinished
from ..manifests import (
    KUBEFLOW_V1,
    LABEL,
    KubeJobSettings,
    job_name,
    job_state,
    make_job,
    make_script_configmap,
)
from ..policy import JobSpec
from ..records import Job, WorkerState
from .base import JobBackend

PLURALS = {"PyTorchJob": "pytorchjobs", "TFJob": "tfjobs"}
_SELECTOR = f"{LABEL}/kind=job"
FINISHED = ("Succeeded", "Failed")
READY_TIMEOUT = 60  # seconds recover() waits for the cluster view's first LIST
CANCEL_ATTEMPTS = 5


class JobNotCreated(GpuhubError):
    """A job could not be created whole; whatever was created was deleted again (409
    when an object of its name is in the way, else 502)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


def _ts(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def job_from_object(obj: dict[str, Any]) -> Job:
    """The API's Job for a Kubeflow job object."""
    meta = obj["metadata"]
    labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    state, message = job_state(obj)
    status = obj.get("status") or {}
    workers = int(notes.get(f"{LABEL}/workers", "1"))
    path = notes.get(f"{LABEL}/notebook-path", "")
    deadline = ((obj.get("spec") or {}).get("runPolicy") or {}).get("activeDeadlineSeconds")
    return Job(
        id=labels[f"{LABEL}/job-id"],
        user=notes.get(f"{LABEL}/user", ""),
        name=path.rsplit("/", 1)[-1].removesuffix(".ipynb") or meta["name"],
        path=path,
        framework="pytorch" if obj["kind"] == "PyTorchJob" else "tensorflow",
        workers=workers,
        gpus_per_worker=int(labels.get(f"{LABEL}/gpus", "0")),
        gpu_type=labels.get(f"{LABEL}/gpu-type"),
        group=notes.get(f"{LABEL}/group"),
        image=notes.get(f"{LABEL}/image"),
        state=state,  # type: ignore[arg-type]
        message=message,
        created=_ts(meta.get("creationTimestamp")) or datetime.now().astimezone(),
        started=_ts(status.get("startTime")),
        finished=_ts(status.get("completionTime")),
        worker_states=tuple(WorkerState(i, state) for i in range(workers)),
        time_limit_minutes=int(deadline) / 60 if deadline else None,
    )


class KubeflowJobBackend(JobBackend):
    """Jobs as Kubeflow v1 ``PyTorchJob``/``TFJob`` objects in one namespace."""

    namespace = Unicode(
        "default",
        config=True,
        help="""Namespace of the jobs (the service account needs create/get/list/delete on
        pytorchjobs, tfjobs and configmaps there, and get/list on pods and pods/log).

        .. versionadded:: 0.1
        """,
    )
    watch_namespaces = List(
        Unicode(),
        config=True,
        help="""Namespaces whose gpuhub pods (notebooks and job workers) count against
        quotas, as ``GPUKubeSpawner.watch_namespaces`` for the hub: list the same ones so
        both see the same usage.  Defaults to ``namespace``.

        .. versionadded:: 0.1
        """,
    )

    @default("watch_namespaces")
    def _default_watch_namespaces(self) -> list[str]:
        return [self.namespace]

    pod_template = Dict(
        config=True,
        help="""The admin-owned PodTemplateSpec every replica starts from (securityContext,
        serviceAccountName, nodeSelector, resources…).  Users never supply pod specs; gpuhub
        only fills in image, command, GPUs, volumes, labels and GPU placement.

        .. versionadded:: 0.1
        """,
    )
    home_claim_template = Unicode(
        "claim-{user_server}",
        config=True,
        help="""Name of the user's home PVC, mounted into every replica: KubeSpawner's
        ``pvc_name_template`` (the chart's ``singleuser.storage.dynamic.pvcNameTemplate``),
        expanded as KubeSpawner expands it for the user's default server, so jobs mount the
        very claim the user's notebook server has.  Change both together.

        .. versionadded:: 0.1
        """,
    )
    slug_scheme = Enum(
        ["safe", "escape"],
        "safe",
        config=True,
        help="""KubeSpawner's ``slug_scheme`` of the hub (how ``{username}`` and
        ``{user_server}`` in :attr:`home_claim_template` are escaped); must match the hub's.

        .. versionadded:: 0.1
        """,
    )

    @validate("home_claim_template")
    def _check_home_claim_template(self, proposal: dict[str, Any]) -> str:
        template = str(proposal["value"])
        try:
            expand_user_template(template, "user")
        except (KeyError, IndexError, ValueError) as e:
            raise TraitError(
                f"home_claim_template {template!r}: only the user and server fields of "
                f"KubeSpawner's pvc_name_template can be expanded for a job ({e!r})"
            ) from e
        return template

    kubeconfig = Unicode(
        "",
        config=True,
        help="""Kubeconfig file to use; empty: the in-cluster service account, else
        ``$KUBECONFIG`` / ``~/.kube/config``.

        .. versionadded:: 0.1
        """,
    )
    home_mount_path = Unicode(
        "/home/jovyan", config=True, help="Where the home PVC is mounted (the working dir)."
    )
    clean_pod_policy = Enum(
        ["All", "Running", "None"],
        "Running",
        config=True,
        help="``runPolicy.cleanPodPolicy`` of every job.",
    )
    ttl_seconds_after_finished = Integer(
        86400, config=True, help="``runPolicy.ttlSecondsAfterFinished`` (jobs and logs kept)."
    )
    kueue_queue = Unicode(
        "",
        config=True,
        help="""Kueue LocalQueue of jobs whose profile names none (a profile's
        ``kueue_queue`` wins, as for its notebooks); jobs with a queue carry
        ``kueue.x-k8s.io/queue-name`` and are created suspended for Kueue to admit.

        .. versionadded:: 0.1
        """,
    )

    group_quota_classes = Bool(
        False,
        config=True,
        help="""Give job worker pods their group's PriorityClass, as GPUKubeSpawner's
        ``group_quota_classes`` does for notebooks, so the per-group ResourceQuotas from
        ``gpuhub-config kube-quotas`` cap notebooks and jobs together at the apiserver.

        .. versionadded:: 0.1
        """,
    )

    _api: Any = None
    _view: ClusterView | None = None

    def settings(self) -> KubeJobSettings:
        return KubeJobSettings(
            namespace=self.namespace,
            pod_template=dict(self.pod_template),
            home_claim_template=self.home_claim_template,
            slug_scheme=self.slug_scheme,
            home_mount_path=self.home_mount_path,
            clean_pod_policy=self.clean_pod_policy,
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
            kueue_queue=self.kueue_queue or None,
            group_quota_classes=self.group_quota_classes,
        )

    async def _client(self) -> Any:
        if self._api is None:
            from kubernetes_asyncio import client

            self._api = client.ApiClient(await load_client_configuration(self.kubeconfig))
        return self._api

    async def recover(self) -> None:
        """Nothing to re-attach (the cluster keeps the jobs): connect and start the shared
        view of the cluster, waiting for its first LIST."""
        api = await self._client()
        from kubernetes_asyncio import client

        view = cluster_view(self.watch_namespaces, lambda: client.CoreV1Api(api), self.active.get)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await view.wait_ready()
        except TimeoutError as e:
            problems = "; ".join(view.problems()) or "no answer"
            raise RuntimeError(f"GPU usage could not be read from the cluster: {problems}") from e
        self._view = view

    async def shutdown(self) -> None:
        if self._view is not None:
            await self._view.stop()
            self._view = None
        if self._api is not None:
            await self._api.close()
            self._api = None

    # -- cluster reads --------------------------------------------------------------------
    async def _jobs(self, selector: str = _SELECTOR) -> list[dict[str, Any]]:
        from kubernetes_asyncio import client

        api = client.CustomObjectsApi(await self._client())
        out: list[dict[str, Any]] = []
        for kind, plural in PLURALS.items():
            res = await api.list_namespaced_custom_object(
                "kubeflow.org", "v1", self.namespace, plural, label_selector=selector
            )
            for item in res.get("items", []):
                item.setdefault("kind", kind)
                out.append(item)
        for obj in out:
            if job_state(obj)[0] in FINISHED:
                self._ended(obj)
        return out

    def _ended(self, obj: dict[str, Any]) -> None:
        """A finished job holds nothing any more (its pods, if any, count while seen)."""
        if self._view is not None:
            self._view.ledger.release(f"job:{obj['metadata']['labels'][f'{LABEL}/job-id']}")

    def _require_view(self) -> ClusterView:
        if self._view is None:
            raise RuntimeError("KubeflowJobBackend.recover() first")
        return self._view

    def quota_ledger(self) -> Ledger:
        """The live ledger of the watched namespaces (shared with the hub's view)."""
        if self._view is None:
            return Ledger(self.gpuhub, None)
        return self._view.ledger.snapshot()

    def capacity(self) -> dict[str, tuple[int, int | None]]:
        """``(total, free)`` GPUs per type on the nodes the pod template selects; "free"
        may be shown while the scheduler still queues."""
        if self._view is None:
            return {t: (0, None) for t in self.gpuhub.gpu_types}
        selector = (self.pod_template.get("spec") or {}).get("nodeSelector")
        totals = self._view.capacity(selector).totals(self.gpuhub)
        return {t: (total, free) for t, (total, free) in totals.items()}

    # -- jobs -----------------------------------------------------------------------------
    async def submit(self, spec: JobSpec, groups: Iterable[str]) -> Job:
        """Decide and reserve (synchronously, on the live ledger), then create the job and
        its script ConfigMap; if either create fails, delete what was created and release
        the reservation.  A suspended job (Kueue) releases at once: it holds nothing
        until Kueue admits it and its pods appear."""
        ledger = self._require_view().ledger
        alloc = ledger.reserve(spec.key, spec.ledger_request(), groups, kind="job")
        group = alloc.group if alloc else spec.group
        settings = self.settings()
        try:
            created = await self._create(spec, settings, group)
        except BaseException:
            ledger.release(spec.key)
            raise
        if settings.kueue_queue:
            ledger.release(spec.key)
        return job_from_object(created)

    async def _create(self, spec: JobSpec, settings: KubeJobSettings, group: str | None) -> Any:
        from kubernetes_asyncio import client

        body = make_job(self.gpuhub, spec, settings, group)
        plural = PLURALS[body["kind"]]
        api = client.CustomObjectsApi(await self._client())
        core = client.CoreV1Api(await self._client())
        try:
            created = await api.create_namespaced_custom_object(
                "kubeflow.org", "v1", self.namespace, plural, body
            )
        except ApiException as e:
            raise _not_created(f"{body['kind']} {body['metadata']['name']}", e) from e
        cm = make_script_configmap(spec, settings, group, owner=created)
        try:
            await core.create_namespaced_config_map(self.namespace, cm)
        except BaseException as e:
            with contextlib.suppress(Exception):
                await api.delete_namespaced_custom_object(
                    "kubeflow.org",
                    "v1",
                    self.namespace,
                    plural,
                    body["metadata"]["name"],
                    propagation_policy="Background",
                )
            if isinstance(e, ApiException):
                raise _not_created(f"ConfigMap {cm['metadata']['name']}", e) from e
            raise
        return created

    async def get(self, job_id: str) -> Job | None:
        if not job_id.isalnum():
            return None
        found = await self._jobs(f"{_SELECTOR},{LABEL}/job-id={job_id}")
        return job_from_object(found[0]) if found else None

    async def list_jobs(self, user: str) -> list[Job]:
        jobs = [job_from_object(o) for o in await self._jobs()]
        return sorted((j for j in jobs if j.user == user), key=lambda j: j.created, reverse=True)

    async def logs(self, job: Job, worker: int, tail: int) -> tuple[list[str], int]:
        from kubernetes_asyncio import client

        if not 0 <= worker < job.workers:
            raise OptionError("worker", f"must be 0..{job.workers - 1} for this job")
        name = job_name_for(job)
        replica = "master" if job.framework == "pytorch" and worker == 0 else "worker"
        index = worker - 1 if job.framework == "pytorch" and worker > 0 else worker
        core = client.CoreV1Api(await self._client())
        pods = await core.list_namespaced_pod(
            self.namespace,
            label_selector=(
                f"training.kubeflow.org/job-name={name},"
                f"training.kubeflow.org/replica-type={replica},"
                f"training.kubeflow.org/replica-index={index}"
            ),
        )
        if not pods.items:
            return [], job.workers
        text = await core.read_namespaced_pod_log(
            pods.items[0].metadata.name, self.namespace, tail_lines=tail
        )
        return str(text).splitlines(), job.workers

    async def cancel(self, job: Job) -> Job:
        """Delete the job (its pods and script ConfigMap go with it) only if it is still
        unfinished: the delete carries the ``resourceVersion`` of the read that saw it
        unfinished, so a job that ends in between is not deleted with its logs (raises
        :class:`~gpuhub.jobs.errors.JobFinished` with its real final state)."""
        from kubernetes_asyncio import client

        api = client.CustomObjectsApi(await self._client())
        plural = PLURALS["PyTorchJob" if job.framework == "pytorch" else "TFJob"]
        name = job_name_for(job)
        for _ in range(CANCEL_ATTEMPTS):
            try:
                obj = await api.get_namespaced_custom_object(
                    "kubeflow.org", "v1", self.namespace, plural, name
                )
            except ApiException as e:
                if e.status == 404:
                    break
                raise
            state = job_state(obj)[0]
            if state in FINISHED:
                self._ended(obj)
                raise JobFinished(job.id, state)
            try:
                await api.delete_namespaced_custom_object(
                    "kubeflow.org",
                    "v1",
                    self.namespace,
                    plural,
                    name,
                    body={
                        "preconditions": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                        "propagationPolicy": "Foreground",
                    },
                )
            except ApiException as e:
                if e.status == 409:  # changed since the read: decide again on the new state
                    continue
                if e.status != 404:
                    raise
            break
        else:
            raise JobNotCreated(f"job {job.id!r} kept changing; try to cancel it again", 409)
        if self._view is not None:
            self._view.ledger.release(f"job:{job.id}")
        return job.ended("Cancelled", "cancelled by the user (job deleted)", [])


def job_name_for(job: Job) -> str:
    return f"gpuhub-job-{job.id}"


def _not_created(what: str, e: ApiException) -> JobNotCreated:
    if e.status == 409:
        return JobNotCreated(
            f"the job was not created: {what} already exists in the jobs' namespace "
            "(left by an earlier job?); nothing was started and no GPU is held",
            409,
        )
    return JobNotCreated(
        f"the job was not created: the cluster refused {what} ({e.status} {e.reason}); "
        "nothing was started and no GPU is held"
    )


__all__ = ["KUBEFLOW_V1", "KubeflowJobBackend", "job_name"]
