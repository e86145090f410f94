"""Login through a real OIDC provider, end to end: ``oidc-provider-mock`` (a real OpenID
Connect server from PyPI, run in a thread of this process) and a real hub configured by
:func:`gpuhub.hubconfig.oauth_config`, the function the Helm values' snippet calls.

Keycloak is not used here: this machine has JDK 17 (Keycloak 26 recommends 21 and
deprecates 17) and Keycloak's start-up (tens of seconds, realm import) would be paid on every
test run; see docs/install-kubernetes.md.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from oidc_provider_mock import run_server_in_thread

from hubproc import Hub, auth

pytestmark = pytest.mark.integration

CLIENT_ID = "jupyterhub"
CLIENT_SECRET = "s3cret-" + secrets.token_hex(8)
ADMIN_TOKEN = secrets.token_hex(32)


@pytest.fixture
def provider() -> Iterator[str]:
    """The OIDC provider's issuer URL; its users are set with ``PUT /users/{sub}``."""
    with run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


def set_user(issuer: str, sub: str, groups: list[str]) -> None:
    r = requests.put(
        f"{issuer}/users/{sub}",
        json={"preferred_username": sub, "email": f"{sub}@example.org", "groups": groups},
        timeout=10,
    )
    assert r.status_code == 204, r.text


def hub_config(config: dict[str, Any]) -> dict[str, Any]:
    """The integration CONFIG without its local groups and users: they come from the
    identity provider now (JupyterHub refuses load_groups with manage_groups)."""
    cfg = copy.deepcopy(config)
    cfg.pop("groups", None)
    cfg.pop("auth", None)
    return cfg


CONFIG_PY = """\
from gpuhub.hubconfig import configure_embedded, oauth_config

c = get_config()  # noqa: F821
configure_embedded(c)
c.merge(
    oauth_config(
        {issuer!r},
        {client_id!r},
        {client_secret!r},
        {callback!r},
        groups_claim="groups",
        admin_groups=["admins"],
        allowed_groups=["vision", "nlp", "staff"],
        endpoints={endpoints!r},
    )
)
# a service token for the test's admin API calls
c.JupyterHub.services.append({{"name": "test-admin", "api_token": {token!r}}})
c.JupyterHub.load_roles.append(
    {{
        "name": "test-admin",
        "scopes": ["admin:users", "admin:groups", "read:servers"],
        "services": ["test-admin"],
    }}
)
"""


@pytest.fixture
def oidc_hub(
    tmp_path: Path, provider: str, _need_proxy: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Hub]:
    from localconfig import CONFIG

    discovery = requests.get(f"{provider}/.well-known/openid-configuration", timeout=10).json()
    endpoints = {
        "authorize": discovery["authorization_endpoint"],
        "token": discovery["token_endpoint"],
        "userinfo": discovery["userinfo_endpoint"],
    }
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", secrets.token_hex(32))  # auth_state
    hub = Hub(tmp_path / "hub", hub_config(CONFIG))
    hub.config_file = tmp_path / "jupyterhub_oidc_config.py"
    hub.config_file.write_text(
        CONFIG_PY.format(
            issuer=provider,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            callback=f"{hub.url}/hub/oauth_callback",
            endpoints=endpoints,
            token=ADMIN_TOKEN,
        )
    )
    try:
        yield hub.start()
    finally:
        hub.stop()


def browser_login(hub: Hub, sub: str) -> tuple[requests.Session, requests.Response]:
    """hub /hub/oauth_login -> provider's authorize form -> POST the subject -> hub
    callback -> hub, following every redirect like a browser."""
    s = requests.Session()
    form = s.get(f"{hub.url}/hub/oauth_login", timeout=20)
    assert form.status_code == 200, form.text
    assert "/oauth2/authorize" in form.url, form.url  # we are on the provider's page
    r = s.post(form.url, data={"sub": sub}, timeout=30)
    return s, r


def profiles(s: requests.Session, hub: Hub) -> list[str]:
    page = s.get(f"{hub.url}/hub/spawn", timeout=20).text
    return re.findall(r'name="profile" id="gh-profile-[^"]+" value="([^"]+)"', page)


def hub_user(hub: Hub, name: str) -> dict[str, Any]:
    r = requests.get(f"{hub.api}/users/{name}", headers=auth(ADMIN_TOKEN), timeout=10)
    r.raise_for_status()
    return dict(r.json())


def group_members(hub: Hub, group: str) -> list[str]:
    r = requests.get(f"{hub.api}/groups/{group}", headers=auth(ADMIN_TOKEN), timeout=10)
    return list(r.json()["users"]) if r.ok else []


def test_groups_follow_the_identity_provider(oidc_hub: Hub, provider: str):
    hub = oidc_hub
    set_user(provider, "alice", ["vision", "unrelated"])
    set_user(provider, "carol", ["admins"])
    set_user(provider, "dave", ["guests"])

    s, r = browser_login(hub, "alice")
    assert r.status_code == 200 and r.url.startswith(f"{hub.url}/hub/"), (r.url, r.text[:500])
    alice = hub_user(hub, "alice")
    assert sorted(alice["groups"]) == ["unrelated", "vision"]
    assert alice["admin"] is False
    assert group_members(hub, "vision") == ["alice"]
    assert profiles(s, hub) == ["cpu", "gpu"]

    s_carol, r = browser_login(hub, "carol")
    assert r.status_code == 200, r.text[:500]
    carol = hub_user(hub, "carol")
    assert carol["groups"] == ["admins"] and carol["admin"] is True
    assert profiles(s_carol, hub) == ["cpu", "big"]

    # a user in none of allowed_groups/admin_groups cannot log in
    _, r = browser_login(hub, "dave")
    assert r.status_code == 403, (r.status_code, r.url)
    assert (
        requests.get(f"{hub.api}/users/dave", headers=auth(ADMIN_TOKEN), timeout=10).status_code
        == 404
    )

    # the provider drops alice from "vision": before her next spawn the hub asks the
    # provider again (refresh_pre_spawn), so even her old session cannot start the GPU
    # profile ...
    set_user(provider, "alice", ["staff"])
    r = s.post(
        f"{hub.url}/hub/spawn/alice",
        data={
            "_xsrf": s.cookies.get("_xsrf", ""),
            "profile": "gpu",
            "image--gpu": "torch",
            "gpu_type--gpu": "a100",
            "gpus--gpu": "1",
        },
        timeout=60,
    )
    assert r.status_code == 400, (r.status_code, r.text[:500])
    assert "is not available to you (choose one of: cpu)" in r.text
    assert "" not in hub_user(hub, "alice")["servers"]
    assert hub_user(hub, "alice")["groups"] == ["staff"]

    # ... and at her next login the membership is gone and so is the profile
    s, r = browser_login(hub, "alice")
    assert r.status_code == 200, r.text[:500]
    assert hub_user(hub, "alice")["groups"] == ["staff"]
    assert group_members(hub, "vision") == []
    assert profiles(s, hub) == ["cpu"]
