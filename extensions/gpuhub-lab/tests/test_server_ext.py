"""The forwarding handlers of gpuhub_lab against a stand-in upstream (in-process tier)."""

from __future__ import annotations

import json

import nbformat
import pytest
from gpuhub_lab.handlers import NOT_CONFIGURED
from tornado.httpclient import HTTPClientError

from .conftest import HUB_TOKEN, SERVICE_PREFIX

JOB = {
    "id": "j-1a2b",
    "user": "alice",
    "name": "train",
    "path": "dir/train.ipynb",
    "framework": "pytorch",
    "workers": 2,
    "gpus_per_worker": 1,
    "gpu_type": "a100",
    "group": "ml",
    "image": None,
    "state": "Queued",
    "message": "",
    "created": "2026-11-23T04:00:00Z",
    "started": None,
    "finished": None,
    "worker_states": [],
    "queue_position": None,
}

OPTIONS = {
    "frameworks": ["pytorch", "tensorflow"],
    "gpu_types": [{"slug": "a100", "display_name": "A100 80GB", "free": 3, "total": 8}],
    "groups": [{"group": "ml", "left": 3, "quota": 8}],
    "user_left": None,
    "max_workers": 4,
    "gpu_counts": [0, 1, 2, 4],
    "image": {"slug": "torch", "display_name": "PyTorch 2"},
}


def write_notebook(root, rel: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import torch\nprint('rank', torch.distributed.get_rank())"),
        nbformat.v4.new_markdown_cell("# notes"),
    ]
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return nb


async def fetch_error(jp_fetch, *parts, **kwargs) -> HTTPClientError:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*parts, **kwargs)
    return info.value


async def test_options_are_forwarded_with_the_hub_token(jp_fetch, service_env):
    service_env.answer("GET", "api/options", 200, OPTIONS)

    response = await jp_fetch("gpuhub", "options")

    assert response.code == 200
    assert json.loads(response.body) == OPTIONS
    [seen] = service_env.requests
    assert (seen.method, seen.path) == ("GET", SERVICE_PREFIX + "api/options")
    assert seen.headers["Authorization"] == f"token {HUB_TOKEN}"


async def test_job_list_passes_through(jp_fetch, service_env):
    service_env.answer("GET", "api/jobs", 200, {"jobs": [JOB]})

    response = await jp_fetch("gpuhub", "jobs")

    assert json.loads(response.body) == {"jobs": [JOB]}
    assert service_env.requests[0].headers["Authorization"] == f"token {HUB_TOKEN}"


async def test_submit_injects_the_notebook_read_by_the_contents_manager(
    jp_fetch, jp_root_dir, service_env
):
    nb = write_notebook(jp_root_dir, "dir/train.ipynb")
    service_env.answer("POST", "api/jobs", 201, JOB)
    options = {
        "path": "dir/train.ipynb",
        "framework": "pytorch",
        "workers": 2,
        "gpus_per_worker": 1,
        "gpu_type": "a100",
        "group": "ml",
        "args": ["--epochs", "3"],
        "image": None,
    }

    response = await jp_fetch("gpuhub", "jobs", method="POST", body=json.dumps(options))

    assert response.code == 201
    assert json.loads(response.body) == JOB
    [seen] = service_env.requests
    assert (seen.method, seen.path) == ("POST", SERVICE_PREFIX + "api/jobs")
    assert seen.headers["Authorization"] == f"token {HUB_TOKEN}"
    assert seen.headers["Content-Type"] == "application/json"
    sent = seen.json()
    notebook = sent.pop("notebook")
    assert sent == options
    assert notebook["nbformat"] == 4
    assert [c["source"] for c in notebook["cells"]] == [c["source"] for c in nb.cells]


@pytest.mark.parametrize(
    ("status", "field", "message"),
    [
        (
            403,
            None,
            "group ml has 0 of 8 GPUs left: alice holds 4 (notebook), bob holds 4 (job j-77)",
        ),
        (400, "workers", "workers must be between 1 and 4"),
        (409, None, "job j-1a2b already finished"),
    ],
)
async def test_service_errors_pass_through_verbatim(
    jp_fetch, jp_root_dir, service_env, status, field, message
):
    write_notebook(jp_root_dir, "train.ipynb")
    body = {"status": status, "field": field, "message": message}
    service_env.answer("POST", "api/jobs", status, body)

    error = await fetch_error(
        jp_fetch,
        "gpuhub",
        "jobs",
        method="POST",
        body=json.dumps({"path": "train.ipynb", "framework": "pytorch", "workers": 9}),
    )

    assert error.code == status
    assert json.loads(error.response.body) == body


async def test_get_one_job_and_cancel(jp_fetch, service_env):
    cancelled = {**JOB, "state": "Cancelled"}
    service_env.answer("GET", "api/jobs/j-1a2b", 200, JOB)
    service_env.answer("DELETE", "api/jobs/j-1a2b", 202, cancelled)

    got = await jp_fetch("gpuhub", "jobs", "j-1a2b")
    deleted = await jp_fetch("gpuhub", "jobs", "j-1a2b", method="DELETE")

    assert json.loads(got.body) == JOB
    assert deleted.code == 202
    assert json.loads(deleted.body) == cancelled
    assert [(r.method, r.path) for r in service_env.requests] == [
        ("GET", SERVICE_PREFIX + "api/jobs/j-1a2b"),
        ("DELETE", SERVICE_PREFIX + "api/jobs/j-1a2b"),
    ]


async def test_not_found_job_passes_through(jp_fetch, service_env):
    body = {"status": 404, "field": None, "message": "no job j-nope"}
    service_env.answer("GET", "api/jobs/j-nope", 404, body)

    error = await fetch_error(jp_fetch, "gpuhub", "jobs", "j-nope")

    assert error.code == 404
    assert json.loads(error.response.body) == body


async def test_logs_forward_worker_and_tail(jp_fetch, service_env):
    logs = {"worker": 1, "lines": ["rank 1 ready", "epoch 1 loss 0.3"], "workers": 2}
    service_env.answer("GET", "api/jobs/j-1a2b/logs", 200, logs)

    response = await jp_fetch(
        "gpuhub", "jobs", "j-1a2b", "logs", params={"worker": "1", "tail": "50", "x": "y"}
    )

    assert json.loads(response.body) == logs
    [seen] = service_env.requests
    assert seen.path == SERVICE_PREFIX + "api/jobs/j-1a2b/logs"
    assert seen.query == {"worker": ["1"], "tail": ["50"]}


async def test_logs_reject_a_bad_worker_without_calling_the_service(jp_fetch, service_env):
    error = await fetch_error(jp_fetch, "gpuhub", "jobs", "j-1a2b", "logs", params={"worker": "-1"})

    assert error.code == 400
    assert json.loads(error.response.body)["field"] == "worker"
    assert service_env.requests == []


@pytest.mark.parametrize(
    ("method", "parts", "body"),
    [
        ("GET", ("gpuhub", "options"), None),
        ("GET", ("gpuhub", "jobs"), None),
        ("POST", ("gpuhub", "jobs"), json.dumps({"path": "train.ipynb"})),
        ("DELETE", ("gpuhub", "jobs", "j-1"), None),
        ("GET", ("gpuhub", "jobs", "j-1", "logs"), None),
    ],
)
async def test_503_without_a_configured_service(jp_fetch, monkeypatch, method, parts, body):
    monkeypatch.delenv("GPUHUB_JOBS_URL", raising=False)
    kwargs = {"method": method}
    if body is not None:
        kwargs["body"] = body

    error = await fetch_error(jp_fetch, *parts, **kwargs)

    assert error.code == 503
    assert json.loads(error.response.body) == {
        "status": 503,
        "field": None,
        "message": NOT_CONFIGURED,
    }
    assert NOT_CONFIGURED.startswith("the gpuhub jobs service is not configured for this server")


@pytest.mark.parametrize("extra", ["pod_spec", "notebook", "node_selector"])
async def test_submit_refuses_anything_but_job_options(jp_fetch, jp_root_dir, service_env, extra):
    write_notebook(jp_root_dir, "train.ipynb")
    body = {"path": "train.ipynb", "framework": "pytorch", extra: {"containers": []}}

    error = await fetch_error(jp_fetch, "gpuhub", "jobs", method="POST", body=json.dumps(body))

    assert error.code == 400
    assert json.loads(error.response.body)["field"] == extra
    assert service_env.requests == []


async def test_submit_of_a_missing_notebook_is_404_on_path(jp_fetch, service_env):
    error = await fetch_error(
        jp_fetch, "gpuhub", "jobs", method="POST", body=json.dumps({"path": "nope.ipynb"})
    )

    assert error.code == 404
    answer = json.loads(error.response.body)
    assert answer["field"] == "path"
    assert "nope.ipynb" in answer["message"]
    assert service_env.requests == []


@pytest.mark.parametrize("path", ["escape.ipynb", "dir/escape.ipynb", "outdir/train.ipynb"])
async def test_submit_refuses_a_notebook_linked_from_outside_the_root(
    jp_fetch, jp_root_dir, tmp_path_factory, service_env, path
):
    """A symlink in the user's home to a notebook (or a folder) elsewhere is not read."""
    outside = tmp_path_factory.mktemp("outside")
    write_notebook(outside, "train.ipynb")
    (jp_root_dir / "dir").mkdir()
    (jp_root_dir / "escape.ipynb").symlink_to(outside / "train.ipynb")
    (jp_root_dir / "dir" / "escape.ipynb").symlink_to(outside / "train.ipynb")
    (jp_root_dir / "outdir").symlink_to(outside)

    error = await fetch_error(
        jp_fetch, "gpuhub", "jobs", method="POST", body=json.dumps({"path": path})
    )

    assert error.code == 403
    answer = json.loads(error.response.body)
    assert answer["field"] == "path" and path in answer["message"]
    assert service_env.requests == []


async def test_submit_follows_a_symlink_that_stays_inside_the_root(
    jp_fetch, jp_root_dir, service_env
):
    write_notebook(jp_root_dir, "real/train.ipynb")
    (jp_root_dir / "link.ipynb").symlink_to(jp_root_dir / "real" / "train.ipynb")
    service_env.answer("POST", "api/jobs", 201, {"id": "j-1"})

    response = await jp_fetch(
        "gpuhub", "jobs", method="POST", body=json.dumps({"path": "link.ipynb"})
    )

    assert response.code == 201
    assert service_env.requests[0].json()["notebook"]["nbformat"] == 4


@pytest.mark.parametrize("body", ["not json", "[1, 2]", json.dumps({"framework": "pytorch"})])
async def test_submit_with_a_bad_body_is_400(jp_fetch, service_env, body):
    error = await fetch_error(jp_fetch, "gpuhub", "jobs", method="POST", body=body)

    assert error.code == 400
    assert service_env.requests == []


async def test_unreachable_service_is_502(jp_fetch, monkeypatch):
    import tornado.testing

    sock, port = tornado.testing.bind_unused_port()
    sock.close()  # nothing listens there now
    monkeypatch.setenv("GPUHUB_JOBS_URL", f"http://127.0.0.1:{port}/services/gpuhub-jobs/")

    error = await fetch_error(jp_fetch, "gpuhub", "jobs")

    assert error.code == 502
    assert "could not reach the gpuhub jobs service" in json.loads(error.response.body)["message"]


async def test_non_json_error_from_the_hub_keeps_its_status(jp_fetch, service_env):
    service_env.answer("GET", "api/jobs", 503, b"<html>Service Unavailable</html>")

    error = await fetch_error(jp_fetch, "gpuhub", "jobs")

    assert error.code == 503
    assert json.loads(error.response.body)["message"].startswith(
        "the gpuhub jobs service answered 503"
    )


async def test_a_redirect_to_the_hub_login_is_not_passed_to_the_browser(jp_fetch, service_env):
    service_env.answer("GET", "api/jobs", 302, b"")

    error = await fetch_error(jp_fetch, "gpuhub", "jobs")

    assert error.code == 502


async def test_routes_need_an_authenticated_user(jp_fetch, service_env):
    error = await fetch_error(jp_fetch, "gpuhub", "jobs", headers={"Authorization": ""})

    assert error.code == 403
    assert service_env.requests == []


class TestConfiguredByTraits:
    """``c.GpuhubLabApp.jobs_url`` / ``api_token`` win over the environment (integration seam)."""

    @pytest.fixture
    def jp_server_config(self, upstream):
        return {
            "ServerApp": {"jpserver_extensions": {"gpuhub_lab": True}},
            "GpuhubLabApp": {"jobs_url": upstream.url.rstrip("/"), "api_token": "from-config"},
        }

    async def test_traits_override_the_environment(self, jp_fetch, upstream, monkeypatch):
        monkeypatch.setenv("GPUHUB_JOBS_URL", "http://127.0.0.1:9/elsewhere/")
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "from-env")
        upstream.answer("GET", "api/options", 200, OPTIONS)

        response = await jp_fetch("gpuhub", "options")

        assert json.loads(response.body) == OPTIONS
        assert upstream.requests[0].headers["Authorization"] == "token from-config"
