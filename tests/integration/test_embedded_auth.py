"""Per-user passwords on the embedded hub (FirstUse + the gpuhub YAML), for real: the
token API VS Code uses, the login form, the change-password page and set-password."""

from __future__ import annotations

import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from test_local_hub import login

from hubproc import Hub, auth
from localconfig import CONFIG

pytestmark = pytest.mark.integration

LEGACY = "legacy-shared-" + secrets.token_hex(6)


@pytest.fixture
def upgraded_hub(tmp_path: Path, _need_proxy: None) -> Iterator[Hub]:
    """A hub whose data directory still has the shared user password of an older gpuhub."""
    hub = Hub(tmp_path / "hub", dict(CONFIG))
    hub.data_dir.mkdir(parents=True)
    (hub.data_dir / "password").write_text(LEGACY + "\n")
    try:
        yield hub.start()
    finally:
        hub.stop()


def refused(r: requests.Response) -> bool:
    return r.status_code == 403 and "token" not in r.text


def test_each_user_has_their_own_password(upgraded_hub: Hub):
    hub = upgraded_hub
    carol_pw, bob_pw = hub.user_password("carol"), hub.user_password("bob")
    # the admin name was claimed by the generated password before anyone could log in
    assert refused(hub.token_response("admin", "an-attackers-password"))
    admin = hub.admin_token()
    # carol's first login sets her password; a second, different one is then refused
    carol = hub.token("carol")
    assert refused(hub.token_response("carol", "carols-other-password"))
    assert hub.token("carol", carol_pw)
    # bob (with his own account) cannot get a token for carol: not with his password,
    # not as himself, not with the old shared password or the admin password
    hub.token("bob")
    assert refused(hub.token_response("carol", bob_pw))
    r = hub.token_response("carol", bob_pw, as_user="bob")
    assert r.status_code == 403 and "no permissions to generate tokens" in r.text
    assert refused(hub.token_response("carol", LEGACY))
    assert refused(hub.token_response("carol", hub.admin_password))
    assert refused(hub.token_response("bob", LEGACY))
    # a name the YAML does not list cannot log in, whatever the password
    assert refused(hub.token_response("zed", hub.user_password("zed")))
    r = requests.get(f"{hub.api}/users/zed", headers=auth(admin), timeout=10)
    assert r.status_code == 404
    # carol's token is hers
    r = requests.get(f"{hub.api}/user", headers=auth(carol), timeout=10)
    assert r.json()["name"] == "carol"


def test_login_form_first_use_and_change_password(hub: Hub):
    # groups are the YAML's from the start, before anyone logged in
    admin = hub.admin_token()
    r = requests.get(f"{hub.api}/users/alice", headers=auth(admin), timeout=10)
    assert sorted(r.json()["groups"]) == ["nlp", "vision"]
    r = requests.get(f"{hub.api}/groups/nlp", headers=auth(admin), timeout=10)
    assert sorted(r.json()["users"]) == ["alice", "carol"]
    # too short a first password: the form says so and nothing is claimed
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=10)
    r = s.post(
        f"{hub.url}/hub/login",
        data={"username": "dave", "password": "short", "_xsrf": s.cookies.get("_xsrf", "")},
        timeout=10,
    )
    assert r.status_code == 403 and "Password too short" in r.text
    s = login(hub, "dave")
    r = s.post(
        f"{hub.url}/hub/auth/change-password",
        data={"password": "daves-new-password", "_xsrf": s.cookies.get("_xsrf", "")},
        timeout=30,
    )
    assert r.status_code == 200 and "changed successfully" in r.text
    assert refused(hub.token_response("dave", hub.user_password("dave")))
    assert hub.token("dave", "daves-new-password")


def test_set_password_closes_the_first_use_window(hub: Hub):
    r = hub.cli("set-password", str(hub.config_path), "erin", stdin="preset-for-erin\n")
    assert r.returncode == 1 and "not listed" in r.stderr
    r = hub.cli("set-password", str(hub.config_path), "u3", stdin="preset-for-u3\n")
    assert r.returncode == 0, r.stderr
    # whoever tries u3 first with another password does not get the account
    assert refused(hub.token_response("u3", hub.user_password("u3")))
    assert hub.token("u3", "preset-for-u3")
    # the password database and the admin password are private files
    private = [hub.data_dir / "admin-password", *hub.data_dir.glob("passwords.dbm*")]
    assert len(private) >= 3, private
    for f in private:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert not (hub.data_dir / "password").exists()  # no shared password any more
