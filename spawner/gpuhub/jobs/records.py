"""The job record every backend reports: the ``Job`` object of docs/jobs-api.md.

Plain data with a JSON round trip (the local backend keeps it in ``job.json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .policy import JobSpec

State = Literal["Queued", "Running", "Succeeded", "Failed", "Cancelled"]
FINISHED: frozenset[str] = frozenset({"Succeeded", "Failed", "Cancelled"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


@dataclass(frozen=True)
class WorkerState:
    index: int
    state: str
    exit_code: int | None = None


@dataclass(frozen=True)
class Job:
    """A job as the API shows it (``image`` is the catalog slug)."""

    id: str
    user: str
    name: str
    path: str
    framework: str
    workers: int
    gpus_per_worker: int
    gpu_type: str | None
    group: str | None
    image: str | None
    state: State = "Queued"
    message: str = ""
    created: datetime = field(default_factory=utcnow)
    started: datetime | None = None
    finished: datetime | None = None
    worker_states: tuple[WorkerState, ...] = ()
    queue_position: int | None = None
    time_limit_minutes: float | None = None
    """The run time after which the job is ended, fixed when it was submitted."""

    @property
    def done(self) -> bool:
        return self.state in FINISHED

    @property
    def deadline(self) -> datetime | None:
        """When the job's time limit is reached (``None``: no limit, or not started)."""
        if self.time_limit_minutes is None or self.started is None:
            return None
        return self.started + timedelta(minutes=self.time_limit_minutes)

    @classmethod
    def from_spec(cls, spec: JobSpec, group: str | None = None) -> Job:
        """A new ``Queued`` job for ``spec``; ``group`` is the group the ledger charged."""
        return cls(
            id=spec.id,
            user=spec.user,
            name=spec.name,
            path=spec.path,
            framework=spec.framework,
            workers=spec.workers,
            gpus_per_worker=spec.gpus_per_worker,
            gpu_type=spec.gpu_type,
            group=group or spec.group,
            image=spec.image.slug,
            worker_states=tuple(WorkerState(i, "Queued") for i in range(spec.workers)),
            time_limit_minutes=spec.time_limit_minutes,
        )

    def ended(self, state: State, message: str, codes: list[int | None]) -> Job:
        """This job, finished with ``state``; ``codes`` are per-worker exit codes."""
        return replace(
            self,
            state=state,
            message=message,
            finished=self.finished or utcnow(),
            worker_states=tuple(
                WorkerState(i, state, codes[i] if i < len(codes) else None)
                for i in range(self.workers)
            ),
            queue_position=None,
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["created"], d["started"], d["finished"] = (
            iso(self.created),
            iso(self.started),
            iso(self.finished),
        )
        d["worker_states"] = [asdict(w) for w in self.worker_states]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Job:
        d = dict(d)
        for k in ("created", "started", "finished"):
            d[k] = datetime.fromisoformat(d[k]) if d.get(k) else None
        d["created"] = d["created"] or utcnow()
        d["worker_states"] = tuple(WorkerState(**w) for w in d.get("worker_states", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})
