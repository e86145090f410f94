"""Thin tornado handlers of docs/jobs-api.md.  Errors become HTTP statuses in ONE place
(:meth:`BaseHandler.write_error`), from the type of the gpuhub error."""

from __future__ import annotations

import json
import secrets
from typing import Any

from tornado import web

from ..errors import GpuhubError, OptionError, QuotaDenied
from .errors import JobFinished, JobNotFound, NotYourJob
from .records import Job
from .service import Caller, JobsService


class BaseHandler(web.RequestHandler):
    """Authenticates the caller with the hub (token in the ``Authorization`` header) and
    answers every error as ``{"status", "field", "message"}``."""

    caller: Caller
    _counted: bool = False
    cancels = False
    """Whether a DELETE here cancels a job (the one request a caller holding
    :data:`~gpuhub.scopes.JOBS_CANCEL_ANY` may make for others' jobs)."""

    @property
    def service(self) -> JobsService:
        svc: JobsService = self.settings["gpuhub_jobs"]
        return svc

    def set_default_headers(self) -> None:
        """Every answer is JSON and must never be sniffed as anything else."""
        self.set_header("X-Content-Type-Options", "nosniff")

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API: no cookies are accepted, so no XSRF check."""

    async def prepare(self) -> None:
        self.service.begin()
        self._counted = True
        canceller = self.cancels and self.request.method == "DELETE"
        self.caller = await self.service.authenticate(
            self.request.headers.get("Authorization", ""), canceller
        )

    def on_finish(self) -> None:
        if getattr(self, "_counted", False):
            self.service.end()
            self._counted = False

    on_connection_close = on_finish

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        field: str | None = None
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, GpuhubError):
            status_code = exc.status
            message = exc.explanation if isinstance(exc, QuotaDenied) else exc.message
            if isinstance(exc, OptionError):
                field = exc.field
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "field": field, "message": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, GpuhubError) and value.expected:
            self.log_warning(value)
            return
        super().log_exception(typ, value, tb)

    def log_warning(self, err: GpuhubError) -> None:
        from tornado.log import app_log

        app_log.warning("gpuhub-jobs %s %s: %s", self.request.method, self.request.path, err)

    # -- ownership -----------------------------------------------------------------------
    async def own_job(self, job_id: str, action: bool) -> Job:
        """The caller's job ``job_id``: 404 if absent or (for reads) someone else's,
        403 for an action on someone else's, unless the caller may cancel any job (the
        only action there is)."""
        job = await self.service.backend.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.user != self.caller.name:
            if action and self.caller.cancel_any:
                return job
            if action:
                raise NotYourJob(job_id)
            raise JobNotFound(job_id)
        return job


class OptionsHandler(BaseHandler):
    async def get(self) -> None:
        self.write_json(await self.service.options(self.caller))


class JobsHandler(BaseHandler):
    async def get(self) -> None:
        jobs = await self.service.backend.list_jobs(self.caller.name)
        self.write_json({"jobs": [j.to_json() for j in jobs]})

    async def post(self) -> None:
        spec = await self.service.job_spec(self.caller, self.request.body, secrets.token_hex(6))
        await self.service.backend.preflight(spec)
        job = await self.service.backend.submit(spec, self.caller.groups)
        self.write_json(job.to_json(), 201)


class JobHandler(BaseHandler):
    cancels = True

    async def get(self, job_id: str) -> None:
        self.write_json((await self.own_job(job_id, action=False)).to_json())

    async def delete(self, job_id: str) -> None:
        job = await self.own_job(job_id, action=True)
        if job.done:
            raise JobFinished(job_id, job.state)
        job = await self.service.backend.cancel(job)
        if job.done and job.state != "Cancelled":  # it ended on its own before the backend
            raise JobFinished(job_id, job.state)  # could stop it
        # Cancelled, or (a stopping service) being stopped: the cancel is recorded
        self.write_json(job.to_json(), 202)


class LogsHandler(BaseHandler):
    """``GET api/jobs/{id}/logs?worker=N``: the API's ``worker`` (query and answer) is the
    index of a *log stream*, and ``workers`` their number.  A stream is one rank on one
    machine (``workers × gpus_per_worker`` ranks for a PyTorch GPU job, one per worker
    otherwise) and one worker pod on Kubernetes; the names stay for API compatibility."""

    async def get(self, job_id: str) -> None:
        job = await self.own_job(job_id, action=False)
        stream = _int_arg(self.get_query_argument("worker", "0"), "worker", 0, 10_000)
        tail = _int_arg(self.get_query_argument("tail", "200"), "tail", 1, 10_000)
        lines, streams = await self.service.backend.logs(job, stream, tail)
        self.write_json({"worker": stream, "lines": lines, "workers": streams})


def _int_arg(value: str, field: str, lo: int, hi: int) -> int:
    if not value.isdigit() or not lo <= int(value) <= hi:
        raise OptionError(field, f"must be a whole number {lo}..{hi}")
    return int(value)


def routes(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    p = prefix.rstrip("/")
    jid = r"([0-9a-f]{1,64})"
    return [
        (rf"{p}/api/options", OptionsHandler),
        (rf"{p}/api/jobs", JobsHandler),
        (rf"{p}/api/jobs/{jid}", JobHandler),
        (rf"{p}/api/jobs/{jid}/logs", LogsHandler),
    ]
