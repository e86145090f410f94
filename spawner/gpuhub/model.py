"""Plain, immutable data of the policy core: the validated configuration and the
requests and allocations the policy reasons about.  No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

ALL_GROUPS = "*"


@dataclass(frozen=True)
class GpuType:
    """A kind of GPU users can ask for.

    ``node_label`` is the ``nvidia.com/gpu.product`` value of cluster nodes carrying it;
    ``local_models`` the NVML device names that count as this type on one machine.
    """

    slug: str
    display_name: str
    node_label: str
    local_models: tuple[str, ...] = ()
    memory_gib: int | None = None


@dataclass(frozen=True)
class ImageSpec:
    """One image of the catalog (usually generated from ``images/matrix.yaml``)."""

    slug: str
    display_name: str
    image: str
    framework: Literal["pytorch", "tensorflow", "none"] = "none"
    framework_version: str | None = None
    cuda: str | None = None
    min_driver: str | None = None
    python: str | None = None
    local_env: str | None = None
    """On one machine: a Python environment (venv/conda prefix) to run the server from;
    ``None`` means the hub's own environment."""


@dataclass(frozen=True)
class GpuChoice:
    """The GPU part of a profile: which types and counts it offers."""

    types: tuple[str, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class IdleCulling:
    """GPU-idle culling of a profile's servers: every GPU below ``threshold_percent`` for
    ``idle_minutes`` gives the server back (``stop``, or ``restart-on-cpu`` with
    ``cpu_profile``); the user is warned ``warn_minutes`` ahead."""

    threshold_percent: float = 5.0
    idle_minutes: float = 60.0
    warn_minutes: float = 10.0
    action: Literal["stop", "restart-on-cpu"] = "stop"
    cpu_profile: str | None = None


@dataclass(frozen=True)
class JobLimits:
    """Limits of jobs (top-level ``jobs``, overridden per profile by
    ``profiles[].jobs``): ``time_limit_minutes`` of run time, ``None`` for none."""

    time_limit_minutes: float | None = None


@dataclass(frozen=True)
class Profile:
    """A spawn profile: resources, allowed images, optional GPUs and who may use it."""

    slug: str
    display_name: str
    description: str
    cpu: float
    memory: str
    shm: str
    images: tuple[str, ...]
    groups: tuple[str, ...]
    gpu: GpuChoice | None = None
    default: bool = False
    kueue_queue: str | None = None
    priority_class: str | None = None
    idle_culling: IdleCulling | None = None
    jobs: JobLimits | None = None
    """The profile's own job limits; ``None``: the top-level ``jobs`` apply."""

    @property
    def is_gpu(self) -> bool:
        return self.gpu is not None

    def visible_to(self, groups: frozenset[str]) -> bool:
        return ALL_GROUPS in self.groups or bool(groups.intersection(self.groups))


@dataclass(frozen=True)
class GroupQuota:
    """GPU quota of one group: a total and optional per-type limits."""

    group: str
    gpus: int
    per_type: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class QuotaConfig:
    """All quotas.  ``groups`` keeps the YAML order, which is the charging preference."""

    groups: tuple[GroupQuota, ...] = ()
    per_user_gpus: int | None = None

    def for_group(self, group: str) -> GroupQuota | None:
        for q in self.groups:
            if q.group == group:
                return q
        return None


@dataclass(frozen=True)
class DeclaredDevice:
    """A GPU declared in the config for a machine without NVML (shown as "declared")."""

    index: int
    type: str


@dataclass(frozen=True)
class LocalConfig:
    """Settings of the embedded one-machine mode."""

    inventory: Literal["auto", "nvml", "declared"] = "auto"
    devices: tuple[DeclaredDevice, ...] = ()


@dataclass(frozen=True)
class MonitorConfig:
    """Where GPU utilisation comes from (``auto``: NVML when a driver answers, else none;
    ``prometheus``: DCGM exporter metrics from the Prometheus at ``prometheus_url``),
    how often it is sampled, and below what utilisation a GPU counts as idle in the
    history (profiles with ``idle_culling`` use their own threshold)."""

    source: Literal["auto", "nvml", "replay", "prometheus"] = "auto"
    replay_trace: str | None = None
    prometheus_url: str | None = None
    sample_seconds: float = 30.0
    idle_threshold_percent: float = 5.0
    history_days: float = 14.0
    """Days of raw samples kept; older ones are rolled up into hourly rows."""
    history_max_days: float = 400.0
    """Days of hourly rows kept; older ones are dropped."""


@dataclass(frozen=True)
class AuthConfig:
    """Who may log in to the embedded hub and who is admin."""

    admin_users: tuple[str, ...] = ()
    allow_all: bool = False


@dataclass(frozen=True)
class GpuhubConfig:
    """The whole validated gpuhub configuration."""

    gpu_types: dict[str, GpuType]
    images: dict[str, ImageSpec]
    profiles: tuple[Profile, ...]
    quotas: QuotaConfig
    groups: dict[str, tuple[str, ...]]
    local: LocalConfig = LocalConfig()
    auth: AuthConfig = AuthConfig()
    source: str = "gpuhub.yaml"
    monitor: MonitorConfig = MonitorConfig()
    jobs: JobLimits = JobLimits()

    def profile(self, slug: str) -> Profile | None:
        for p in self.profiles:
            if p.slug == slug:
                return p
        return None


# --- requests and allocations -------------------------------------------------------

Kind = Literal["notebook", "job"]


@dataclass(frozen=True)
class SpawnRequest:
    """A ``user_options`` dict after validation: every value is known to be allowed."""

    user: str
    profile: Profile
    image: ImageSpec
    gpu_type: str | None
    gpus: int
    group: str | None


@dataclass(frozen=True)
class Allocation:
    """GPUs held by one notebook server or job, reserved or running.

    ``key`` is unique (``server:alice/`` or ``job:<id>``); ``devices`` are local device
    indices (empty on Kubernetes, where the kubelet picks devices); on Kubernetes ``pods``
    (``namespace/name``) and ``nodes`` say where it runs (empty on one machine).
    """

    key: str
    user: str
    group: str
    gpu_type: str
    gpus: int
    kind: Kind = "notebook"
    since: datetime | None = None
    devices: tuple[int, ...] = ()
    pending: bool = False
    pods: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
