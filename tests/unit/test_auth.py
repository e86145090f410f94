"""The embedded default's authenticator: who may log in and which groups they get, from
the YAML as it is now (pure mappings, the class without a hub, the database sync)."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from gpuhub.activeconfig import active_config
from gpuhub.auth import (
    GpuhubAuthenticator,
    auth_model,
    group_map,
    is_listed_admin,
    may_log_in,
    sync_users,
)
from gpuhub.config import parse_config
from gpuhub.passwords import PasswordStore

ROOT = Path(__file__).resolve().parents[2]


def test_group_map_lists_every_name_with_its_groups(raw: dict[str, Any]):
    raw["auth"] = {"admin_users": ["root", "alice"]}
    cfg = parse_config(raw)
    assert group_map(cfg) == {
        "alice": ["nlp", "vision"],
        "bob": ["vision"],
        "carol": ["nlp"],
        "root": [],
    }
    assert auth_model(cfg, "bob") == {"name": "bob", "groups": ["vision"]}
    assert auth_model(cfg, "zed") == {"name": "zed", "groups": []}
    assert is_listed_admin(cfg, "root") and not is_listed_admin(cfg, "bob")


def test_names_are_normalized_like_the_hub(raw: dict[str, Any]):
    raw["groups"]["vision"].append("Bob.Smith@X")
    cfg = parse_config(raw)
    assert group_map(cfg, str.lower)["bob.smith@x"] == ["vision"]
    assert may_log_in(cfg, "bob.smith@x", str.lower)


def test_only_listed_names_may_log_in_unless_allow_all(raw: dict[str, Any]):
    cfg = parse_config(raw)
    assert may_log_in(cfg, "carol") and not may_log_in(cfg, "zed")
    raw["auth"] = {"allow_all": True}
    assert may_log_in(parse_config(raw), "zed")


def test_the_entry_point_names_the_class():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["jupyterhub.authenticators"]["gpuhub-firstuse"]
    assert target == f"{GpuhubAuthenticator.__module__}:{GpuhubAuthenticator.__name__}"


# -- the class, without a hub ---------------------------------------------------------------
@pytest.fixture
def authenticator(tmp_path: Path, raw: dict[str, Any]) -> GpuhubAuthenticator:
    raw["auth"] = {"admin_users": ["admin"]}
    path = tmp_path / "gpuhub.yaml"
    path.write_text(yaml.safe_dump(raw))
    (tmp_path / "admin-password").write_text("generated-admin-secret\n")
    return GpuhubAuthenticator(
        gpuhub_config_file=str(path),
        dbm_path=str(tmp_path / "passwords.dbm"),
        admin_password_file=str(tmp_path / "admin-password"),
    )


def login(a: GpuhubAuthenticator, user: str, password: str) -> tuple[Any, Any]:
    handler = SimpleNamespace(custom_login_error="")
    result = asyncio.run(a.authenticate(handler, {"username": user, "password": password}))
    return result, handler


def test_defaults_fit_a_team_box(authenticator: GpuhubAuthenticator):
    a = authenticator
    assert a.manage_groups and a.refresh_pre_spawn and a.auth_refresh_age <= 60
    assert a.min_password_length == 8 and a.allow_all is False


def test_first_login_claims_and_returns_the_yaml_groups(authenticator: GpuhubAuthenticator):
    result, _ = login(authenticator, "Alice", "alices-password")
    assert result == {"name": "alice", "groups": ["nlp", "vision"]}
    assert login(authenticator, "alice", "not-alices-password")[0] is None
    assert login(authenticator, "alice", "alices-password")[0] is not None


def test_unlisted_names_and_short_passwords_are_refused(authenticator: GpuhubAuthenticator):
    assert login(authenticator, "zed", "zeds-password")[0] is None
    assert PasswordStore(authenticator.dbm_path).stored("zed") is None
    result, handler = login(authenticator, "bob", "short")
    assert result is None and "at least 8 characters" in handler.custom_login_error
    assert not authenticator.check_allowed("zed") and authenticator.check_allowed("bob")


def test_admin_password_is_seeded_so_the_name_cannot_be_claimed(
    authenticator: GpuhubAuthenticator,
):
    assert asyncio.run(authenticator.seed_admin_passwords(["admin"])) == ["admin"]
    assert login(authenticator, "admin", "someone-elses-password")[0] is None
    result, _ = login(authenticator, "admin", "generated-admin-secret")
    assert result == {"name": "admin", "groups": []}
    assert authenticator.is_admin(None, result) is True
    assert authenticator.is_admin(None, {"name": "bob"}) is None  # never demotes


def test_refresh_follows_the_yaml(authenticator: GpuhubAuthenticator, raw: dict[str, Any]):
    user = SimpleNamespace(name="bob")
    assert asyncio.run(authenticator.refresh_user(user)) == {"name": "bob", "groups": ["vision"]}
    raw["auth"] = {"admin_users": ["admin"]}
    raw["groups"]["vision"] = ["alice"]
    raw["groups"]["nlp"] = ["carol", "alice", "bob"]
    path = Path(authenticator.gpuhub_config_file)
    path.write_text(yaml.safe_dump(raw))
    active_config(path).reload()
    assert asyncio.run(authenticator.refresh_user(user)) == {"name": "bob", "groups": ["nlp"]}
    raw["groups"]["nlp"] = ["carol"]
    path.write_text(yaml.safe_dump(raw))
    active_config(path).reload()
    assert asyncio.run(authenticator.refresh_user(user)) is False  # no longer listed


def test_change_password(authenticator: GpuhubAuthenticator):
    login(authenticator, "carol", "carols-password")
    assert "at least 8" in authenticator.reset_password("carol", "short")
    assert "success" in authenticator.reset_password("carol", "carols-new-password")
    assert login(authenticator, "carol", "carols-new-password")[0] is not None
    assert login(authenticator, "carol", "carols-password")[0] is None


# -- the hub database -------------------------------------------------------------------------
@pytest.fixture
def db() -> Any:
    from jupyterhub import orm, roles

    session = orm.new_session_factory("sqlite://")()
    for role in roles.get_default_roles():
        roles.create_role(session, role)
    return session


def groups_in(db: Any) -> dict[str, tuple[list[str], bool]]:
    from jupyterhub import orm

    return {u.name: (sorted(g.name for g in u.groups), u.admin) for u in db.query(orm.User)}


def test_sync_makes_the_database_follow_the_yaml(db: Any):
    from jupyterhub import orm

    gone = orm.User(name="zed")
    gone.groups = [orm.Group(name="vision")]
    db.add(gone)
    db.commit()
    changed = sync_users(db, {"alice": ["vision", "nlp"], "admin": []}, ["admin"])
    assert changed == {"alice": ["nlp", "vision"], "zed": []}
    assert groups_in(db) == {
        "zed": ([], False),
        "admin": ([], True),
        "alice": (["nlp", "vision"], False),
    }
    assert "user" in {r.name for r in orm.User.find(db, "alice").roles}
    # bob removed from vision, erin added: only their rows change
    assert sync_users(db, {"alice": ["nlp"], "erin": ["vision"]}, []) == {
        "alice": ["nlp"],
        "erin": ["vision"],
    }
    assert sync_users(db, {"alice": ["nlp"], "erin": ["vision"]}, []) == {}
