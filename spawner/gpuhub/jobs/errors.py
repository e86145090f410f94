"""Job-specific errors, on the one gpuhub error hierarchy (status decided by type)."""

from __future__ import annotations

from ..errors import GpuhubError, OptionError


class JobNotFound(GpuhubError):
    """No job with this id is visible to the caller (404)."""

    status = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}; list your jobs with GET api/jobs")


class NotYourJob(GpuhubError):
    """The job exists but belongs to someone else (403 for actions)."""

    status = 403

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} is not yours; you can only act on your own jobs")


class JobFinished(GpuhubError):
    """The job already ended; it cannot be cancelled (409)."""

    status = 409

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(f"job {job_id!r} already ended ({state}); nothing to cancel")


class NotAuthenticated(GpuhubError):
    """No valid hub token came with the request (401)."""

    status = 401


class NotAllowed(GpuhubError):
    """The token is valid but may not use this service (403)."""

    status = 403


class HubUnavailable(GpuhubError):
    """The hub did not answer (it is restarting): nothing was done; try again (503)."""

    status = 503


class TooLarge(OptionError):
    """A request field is larger than the service accepts (413, naming the field)."""

    status = 413
