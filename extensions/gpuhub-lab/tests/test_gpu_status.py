"""The monitor routes of gpuhub_lab (status bar, "keep it", "give the GPUs back") against a
stand-in upstream (in-process tier): this server only, whatever the browser sends."""

from __future__ import annotations

import json

import pytest
from gpuhub_lab.gpustatus import MONITOR_NOT_CONFIGURED, this_server

from .conftest import HUB_TOKEN, SERVICE_PREFIX
from .test_server_ext import fetch_error


def entry(server: str, **extra):
    return {"server": server, "gpus": 1, "gpu_type": "a100", "warning": None, **extra}


@pytest.fixture
def monitor_env(monkeypatch, upstream):
    """A GPU server named ``gpu1`` of its user, as the hub would start it."""
    monkeypatch.setenv("GPUHUB_MONITOR_URL", upstream.url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "gpu1")
    return upstream


def test_this_server_picks_its_own_entry_and_culls():
    answer = {
        "servers": [entry(""), entry("gpu1", gpus=2), "junk"],
        "culled": [{"server": "gpu1", "action": "stop"}, {"server": "", "action": "stop"}],
    }
    assert this_server(answer, "gpu1") == {
        "server": entry("gpu1", gpus=2),
        "culled": [{"server": "gpu1", "action": "stop"}],
    }
    assert this_server({"servers": [entry("")]}, "gpu1") == {"server": None, "culled": []}
    assert this_server(["not", "a", "dict"], "") == {"server": None, "culled": []}


async def test_status_is_this_servers_entry_with_the_servers_token(jp_fetch, monitor_env):
    monitor_env.answer("GET", "api/servers", 200, {"servers": [entry(""), entry("gpu1")]})

    response = await jp_fetch("gpuhub", "gpu")

    assert json.loads(response.body) == {"server": entry("gpu1"), "culled": []}
    [seen] = monitor_env.requests
    assert (seen.method, seen.path) == ("GET", SERVICE_PREFIX + "api/servers")
    assert seen.headers["Authorization"] == f"token {HUB_TOKEN}"


@pytest.mark.parametrize("operation", ["keep", "give-back"])
async def test_operations_name_this_server_whatever_the_browser_sends(
    jp_fetch, monitor_env, operation
):
    monitor_env.answer("POST", f"api/{operation}", 202, {"server": "gpu1"})

    response = await jp_fetch(
        "gpuhub", "gpu", operation, method="POST", body=json.dumps({"server": "bobs"})
    )

    assert response.code == 202
    [seen] = monitor_env.requests
    assert (seen.method, seen.path) == ("POST", SERVICE_PREFIX + f"api/{operation}")
    assert seen.json() == {"server": "gpu1"}


async def test_monitor_errors_pass_through(jp_fetch, monitor_env):
    body = {"status": 409, "message": "server 'gpu1' is already being given back"}
    monitor_env.answer("POST", "api/give-back", 409, body)

    error = await fetch_error(jp_fetch, "gpuhub", "gpu", "give-back", method="POST", body="")

    assert error.code == 409
    assert json.loads(error.response.body) == body


async def test_503_without_a_configured_monitor(jp_fetch, monkeypatch):
    monkeypatch.delenv("GPUHUB_MONITOR_URL", raising=False)

    error = await fetch_error(jp_fetch, "gpuhub", "gpu")

    assert error.code == 503
    assert json.loads(error.response.body)["message"] == MONITOR_NOT_CONFIGURED


async def test_only_the_three_operations_exist(jp_fetch, monitor_env):
    error = await fetch_error(jp_fetch, "gpuhub", "gpu", "stop", method="POST", body="{}")

    assert error.code == 404
    assert monitor_env.requests == []
