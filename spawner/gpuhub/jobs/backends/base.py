"""The contract every job backend fulfils (jupyter-scheduler style: the service's
``backend_class`` trait names the class, tests swap it by config).

The service authenticates the caller, validates the request with
:func:`gpuhub.jobs.policy.validate_job` and only then calls a backend; ownership checks
(a user acts on their own jobs only) are done by the service on the :class:`Job` the
backend returns, so a backend never has to know who is asking.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from traitlets import Instance
from traitlets.config import LoggingConfigurable
from traitlets.traitlets import MetaHasTraits

from ...activeconfig import ActiveConfig
from ...ledger import Ledger
from ...model import GpuhubConfig, ImageSpec
from ..policy import JobSpec
from ..records import Job


class _Meta(MetaHasTraits, ABCMeta):
    """Traitlets' metaclass combined with ``ABCMeta`` (abstract methods enforced)."""


class JobBackend(LoggingConfigurable, metaclass=_Meta):
    """Runs validated jobs and reports on them.

    Constructed once by the service with ``active`` (the gpuhub YAML, followed as it
    changes) and ``data_dir`` (``$GPUHUB_DATA``); traitlets config reaches it through
    ``parent``.
    """

    active = Instance(ActiveConfig, help="The gpuhub configuration, re-read when it changes.")
    data_dir = Instance(Path, help="gpuhub's data directory ($GPUHUB_DATA).")

    @property
    def gpuhub(self) -> GpuhubConfig:
        """The config as the file says now: read it per request, never keep it."""
        return self.active.get()

    # -- life cycle ----------------------------------------------------------------------
    @abstractmethod
    async def recover(self) -> None:
        """Called once when the service starts: reload what was submitted before a
        restart, re-attach to jobs that still run and record the outcome of those that
        ended meanwhile, then keep supervising them.  Must not start or stop any job."""

    async def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Called when the service stops.  Jobs keep running; only supervision stops."""

    # -- quota ---------------------------------------------------------------------------
    @abstractmethod
    def quota_ledger(self) -> Ledger:
        """The ledger the quota is decided on (shared with notebooks), for display."""

    @abstractmethod
    def capacity(self) -> dict[str, tuple[int, int | None]]:
        """``{gpu_type: (total, free)}``; ``free`` is ``None`` where a scheduler queues."""

    # -- jobs ----------------------------------------------------------------------------
    async def preflight(self, spec: JobSpec) -> None:  # noqa: B027 - optional hook
        """Called before :meth:`submit`: refuse (:class:`~gpuhub.errors.OptionError`) a
        valid request this backend cannot run, before anything is reserved or created
        (e.g. the image's environment lacks the framework).  Accepts all by default."""

    async def frameworks(self, image: ImageSpec) -> tuple[str, ...] | None:
        """The frameworks jobs in ``image`` can run, for ``GET api/options``; ``None``
        where the backend cannot tell before running (the default)."""
        return None

    @abstractmethod
    async def submit(self, spec: JobSpec, groups: Iterable[str]) -> Job:
        """Charge ``spec`` to the ledger and start it.

        The quota check and the reservation happen synchronously *before the first
        await* (no other job or notebook can slip in between); a denial raises
        :class:`~gpuhub.errors.QuotaDenied` with the same explanation a notebook gets.
        Whatever fails after the reservation releases it again.
        """

    @abstractmethod
    async def get(self, job_id: str) -> Job | None:
        """The job with this id (any user's), or ``None``."""

    @abstractmethod
    async def list_jobs(self, user: str) -> list[Job]:
        """``user``'s jobs, newest first."""

    @abstractmethod
    async def logs(self, job: Job, worker: int, tail: int) -> tuple[list[str], int]:
        """The last ``tail`` lines of worker ``worker`` and the number of log streams.

        Raises :class:`~gpuhub.errors.OptionError` (field ``worker``) for an index out of
        range.
        """

    @abstractmethod
    async def cancel(self, job: Job) -> Job:
        """Stop a running job (graceful, then forced), release its GPUs and return it in
        state ``Cancelled``.  A job that ended first is returned with its real outcome;
        one still being stopped when the service stops is returned as it is (not done),
        its cancel recorded for the next service.  Only ever touches processes or objects
        of this job."""

    def options_extra(self) -> dict[str, Any]:
        """Backend-specific additions to ``GET api/options`` (none by default)."""
        return {}
