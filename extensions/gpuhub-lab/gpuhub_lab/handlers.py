"""Forwarding handlers: ``{base_url}/gpuhub/...`` -> the gpuhub jobs service (and, through
:class:`ForwardingHandler`, the monitor: :mod:`gpuhub_lab.gpustatus`).

Status codes and JSON bodies from the service pass through unchanged.  Errors produced here use
the same shape as the service's: ``{"status": N, "field": str | None, "message": str}``.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlencode

import tornado.web
from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

if TYPE_CHECKING:
    from .app import GpuhubLabApp

NOT_CONFIGURED = (
    "the gpuhub jobs service is not configured for this server "
    "(set GPUHUB_JOBS_URL or c.GpuhubLabApp.jobs_url)"
)

#: What the browser may send with ``POST /gpuhub/jobs`` (docs/jobs-api.md, minus ``notebook``,
#: which this server reads itself).  Anything else — a pod spec, say — is refused.
SUBMIT_FIELDS = frozenset(
    {"path", "framework", "workers", "gpus_per_worker", "gpu_type", "group", "args", "image"}
)

#: Query parameters forwarded for the logs route.
LOG_PARAMS = ("worker", "tail")


def inside_root(root: str, path: str) -> bool:
    """Whether ``path`` (relative to ``root``) still lies inside ``root`` once every
    symbolic link and ``..`` is resolved (blocking: a few ``lstat`` calls)."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, path.lstrip("/")))
    return os.path.commonpath([real_root, target]) == real_root


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    """An error in the jobs service's shape."""
    return {"status": status, "field": field, "message": message}


class ForwardingHandler(ExtensionHandlerMixin, APIHandler):
    """Base class: one ``forward`` call per verb, errors in the service's shape.  The
    upstream is the jobs service unless a subclass says otherwise."""

    #: The upstream as error messages name it.
    upstream_name = "gpuhub jobs service"
    #: The 503 message when the upstream's URL is not configured.
    not_configured = NOT_CONFIGURED

    @property
    def gpuhub(self) -> GpuhubLabApp:
        return cast("GpuhubLabApp", self.extensionapp)

    def upstream_url(self) -> str:
        """The upstream's base URL (ending in ``/``), or ``""``."""
        return self.gpuhub.upstream_url()

    def send_error_body(self, status: int, message: str, field: str | None = None) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(status, message, field)))

    def upstream_base(self) -> str | None:
        """The service URL, or ``None`` after answering 503."""
        base = self.upstream_url()
        if not base:
            self.send_error_body(503, self.not_configured)
            return None
        return base

    async def forward(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Call the upstream and answer with what it answered."""
        got = await self.fetch_upstream(method, path, query=query, body=body)
        if got is not None:
            self.pass_through(*got)

    async def fetch_upstream(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[HTTPResponse, str] | None:
        """The upstream's response and base URL; ``None`` after answering an error (not
        configured 503, unreachable 502, timeout 504)."""
        base = self.upstream_base()
        if base is None:
            return None
        url = url_path_join(base, path)
        if query:
            url += "?" + urlencode(query)
        headers = {"Accept": "application/json"}
        token = self.gpuhub.upstream_token()
        if token:
            headers["Authorization"] = f"token {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=json.dumps(body) if body is not None else None,
            request_timeout=self.gpuhub.request_timeout,
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except HTTPClientError as e:  # no HTTP answer at all: tornado's 599 (timeout, ...)
            if e.response is None:
                status = 504 if "timeout" in str(e).lower() else 502
                self.send_error_body(status, f"the {self.upstream_name} at {base} failed: {e}")
                return None
            response = e.response
        except OSError as e:
            self.send_error_body(502, f"could not reach the {self.upstream_name} at {base}: {e}")
            return None
        return response, base

    def pass_through(self, response: HTTPResponse, base: str) -> None:
        code = response.code
        if code == 599:  # pragma: no cover - tornado raises these instead of answering
            self.send_error_body(
                502, f"the {self.upstream_name} at {base} failed: {response.error}"
            )
            return
        raw = response.body or b""
        try:
            json.loads(raw)
        except ValueError:
            reason = response.reason or ""
            if code >= 400:
                self.send_error_body(
                    code, f"the {self.upstream_name} answered {code} {reason}".rstrip()
                )
            else:
                self.send_error_body(
                    502,
                    f"the {self.upstream_name} answered {code} {reason} without JSON"
                    " (is the token accepted by the hub?)",
                )
            return
        self.set_status(code, reason=response.reason)
        self.set_header("Content-Type", "application/json")
        self.finish(raw)


class OptionsHandler(ForwardingHandler):
    """``GET /gpuhub/options`` -> ``GET api/options``: what the dialog offers, quota left."""

    @tornado.web.authenticated
    async def get(self) -> None:
        await self.forward("GET", "api/options")


class JobsHandler(ForwardingHandler):
    """``GET /gpuhub/jobs`` (list) and ``POST /gpuhub/jobs`` (submit a notebook)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        await self.forward("GET", "api/jobs")

    @tornado.web.authenticated
    async def post(self) -> None:
        if self.upstream_base() is None:
            return
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            self.send_error_body(400, "the request body is not valid JSON")
            return
        if not isinstance(body, dict):
            self.send_error_body(400, "the request body must be a JSON object")
            return
        unknown = sorted(set(body) - SUBMIT_FIELDS)
        if unknown:
            self.send_error_body(
                400,
                f"unknown option {unknown[0]!r}: a job is described only by "
                + ", ".join(sorted(SUBMIT_FIELDS)),
                field=unknown[0],
            )
            return
        path = body.get("path")
        if not isinstance(path, str) or not path.strip():
            self.send_error_body(400, "the notebook path is missing", field="path")
            return
        if not await asyncio.to_thread(inside_root, self.contents_manager.root_dir, path):
            self.send_error_body(
                403,
                f"{path} resolves (through a symbolic link or '..') to a file outside this "
                "server's root directory; only notebooks inside it can be run as jobs",
                field="path",
            )
            return
        try:
            model = await ensure_async(
                self.contents_manager.get(path, content=True, type="notebook")  # type: ignore[no-untyped-call]
            )
        except tornado.web.HTTPError as e:
            message = e.log_message % e.args if e.log_message else (e.reason or str(e))
            self.send_error_body(e.status_code, f"cannot read {path}: {message}", field="path")
            return
        await self.forward("POST", "api/jobs", body={**body, "notebook": model["content"]})


class JobHandler(ForwardingHandler):
    """``GET`` / ``DELETE /gpuhub/jobs/{id}``: one job; cancel it."""

    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        await self.forward("GET", f"api/jobs/{quote(job_id, safe='')}")

    @tornado.web.authenticated
    async def delete(self, job_id: str) -> None:
        await self.forward("DELETE", f"api/jobs/{quote(job_id, safe='')}")


class JobLogsHandler(ForwardingHandler):
    """``GET /gpuhub/jobs/{id}/logs?worker=N&tail=M``: the log tail of one worker."""

    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        query: dict[str, str] = {}
        for name in LOG_PARAMS:
            value = self.get_query_argument(name, None)
            if value is None:
                continue
            if not value.isdigit():
                self.send_error_body(400, f"{name} must be a non-negative integer", field=name)
                return
            query[name] = value
        await self.forward("GET", f"api/jobs/{quote(job_id, safe='')}/logs", query=query)
