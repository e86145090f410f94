"""Per-user passwords for the embedded default: ``jupyterhub-firstuseauthenticator``
(TLJH's default) with the gpuhub YAML deciding who may log in and which groups they are in.

- Only names listed in the YAML (under ``groups`` or ``auth.admin_users``) may log in,
  unless ``auth.allow_all`` is true.  A listed person's first login sets their password;
  ``gpuhub-config set-password`` sets it beforehand, and ``/hub/auth/change-password``
  changes it.
- The admins of ``auth.admin_users`` get the generated ``<data>/admin-password`` before
  the hub serves its first request, so nobody can claim an admin name.
- Groups come from the YAML as it is *now* (``manage_groups``): at login, before every
  spawn (``refresh_pre_spawn``) and on ``gpuhub-config reload``.
- bcrypt and the password file run in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from firstuseauthenticator import FirstUseAuthenticator
from firstuseauthenticator.firstuseauthenticator import CustomLoginHandler, ResetPasswordHandler
from tornado import web
from traitlets import Unicode, default

from .activeconfig import active_config
from .config import CONFIG_ENV
from .model import GpuhubConfig
from .passwords import MIN_LENGTH, PasswordStore, password_problem
from .scopes import MONITOR_ADMIN_ROLE

Normalize = Callable[[str], str]


def _same(name: str) -> str:
    return name


def group_map(cfg: GpuhubConfig, normalize: Normalize = _same) -> dict[str, list[str]]:
    """``{user: [groups]}`` for every name the YAML lists (admins with no group get ``[]``)."""
    out: dict[str, set[str]] = {normalize(u): set() for u in cfg.auth.admin_users}
    for group, users in cfg.groups.items():
        for u in users:
            out.setdefault(normalize(u), set()).add(group)
    return {u: sorted(gs) for u, gs in out.items()}


def may_log_in(cfg: GpuhubConfig, name: str, normalize: Normalize = _same) -> bool:
    """Listed in the YAML, or any name when ``auth.allow_all`` is true."""
    return cfg.auth.allow_all or name in group_map(cfg, normalize)


def auth_model(cfg: GpuhubConfig, name: str, normalize: Normalize = _same) -> dict[str, Any]:
    """What ``authenticate``/``refresh_user`` return: the name and its groups per the YAML."""
    return {"name": name, "groups": group_map(cfg, normalize).get(name, [])}


def is_listed_admin(cfg: GpuhubConfig, name: str, normalize: Normalize = _same) -> bool:
    return name in {normalize(u) for u in cfg.auth.admin_users}


def set_groups(db: Any, user: Any, names: Iterable[str], known: dict[str, Any]) -> bool:
    """Put the ``orm.User`` ``user`` in exactly the groups ``names`` (created when
    missing; ``known`` caches ``orm.Group`` by name).  True when anything changed."""
    from jupyterhub import orm

    target = sorted(set(names))
    if sorted(g.name for g in user.groups) == target:
        return False
    for name in target:
        if name not in known:
            known[name] = orm.Group.find(db, name) or orm.Group(name=name)
            db.add(known[name])
    user.groups = [known[name] for name in target]
    return True


def grant_admin_roles(db: Any, user: Any) -> None:
    """Give an admin gpuhub's admin roles where the hub defines them
    (:data:`~gpuhub.scopes.MONITOR_ADMIN_ROLE`: the GPU page)."""
    from jupyterhub import orm, roles

    role = orm.Role.find(db, MONITOR_ADMIN_ROLE)
    if role is not None and role not in user.roles:
        roles.grant_role(db, user, role, commit=False)


def sync_users(
    db: Any, wanted: Mapping[str, Iterable[str]], admins: Iterable[str]
) -> dict[str, list[str]]:
    """Make the hub database match the YAML: every listed user exists and is in exactly
    their groups, users no longer listed are in none, listed admins are admins.  Returns
    ``{user: [groups]}`` of the users whose groups changed."""
    from jupyterhub import orm, roles

    existing = {u.name: u for u in db.query(orm.User)}
    admin_names = set(admins)
    known: dict[str, Any] = {}
    changed: dict[str, list[str]] = {}
    for name in sorted(wanted.keys() - existing.keys()):
        user = existing[name] = orm.User(name=name, admin=name in admin_names)
        db.add(user)
        db.flush()
        roles.assign_default_roles(db, entity=user)
    for name, user in sorted(existing.items()):
        if set_groups(db, user, wanted.get(name, ()), known):
            changed[name] = sorted(set(wanted.get(name, ())))
        if name in admin_names and not user.admin:
            user.admin = True
            roles.assign_default_roles(db, entity=user)
        if name in admin_names:
            grant_admin_roles(db, user)
    db.commit()
    return changed


class ChangePasswordHandler(ResetPasswordHandler):
    """FirstUse's change-password page, hashing in a worker thread."""

    @web.authenticated
    async def post(self) -> None:
        user = self.current_user
        new_password = self.get_body_argument("password", strip=False)
        msg = await asyncio.to_thread(self.authenticator.reset_password, user.name, new_password)
        self._register_template_path()
        html = await self.render_template(
            "reset.html",
            result=True,
            alert="success" if "success" in msg else "danger",
            result_message=msg,
        )
        self.finish(html)


class GpuhubAuthenticator(FirstUseAuthenticator):  # type: ignore[misc]
    """FirstUse passwords for the names of the gpuhub YAML, groups managed from the YAML."""

    gpuhub_config_file = Unicode(
        config=True,
        help="""Path of the gpuhub YAML whose ``groups`` and ``auth`` decide who may log in
        and which groups they are in (re-read when it changes).  Defaults to
        ``$GPUHUB_CONFIG``, else ``gpuhub.yaml``.

        .. versionadded:: 0.1
        """,
    )

    @default("gpuhub_config_file")
    def _default_config_file(self) -> str:
        return os.environ.get(CONFIG_ENV, "gpuhub.yaml")

    admin_password_file = Unicode(
        "",
        config=True,
        help="""File holding the admins' initial password (mode 0600).  Every name in the
        YAML's ``auth.admin_users`` without a password gets this one when the hub starts or
        reloads its config, so nobody can claim an admin name first.  Empty: no seeding.

        .. versionadded:: 0.1
        """,
    )

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True

    @default("refresh_pre_spawn")
    def _default_refresh_pre_spawn(self) -> bool:
        return True

    @default("auth_refresh_age")
    def _default_auth_refresh_age(self) -> int:
        return 60

    @default("auth_refresh_strict")
    def _default_auth_refresh_strict(self) -> bool:
        # refresh_user fails only for a name no longer in the YAML: refuse its tokens too
        return True

    @default("min_password_length")
    def _default_min_password_length(self) -> int:
        return MIN_LENGTH

    @default("check_passwords_on_startup")
    def _default_check_passwords(self) -> bool:
        return False  # a migration for databases written before FirstUse 1.0

    @default("create_users")
    def _default_create_users(self) -> bool:
        return False  # who may log in is decided by the YAML (may_log_in)

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        return False  # auth.allow_all of the *current* YAML is honoured by check_allowed

    # -- the YAML ------------------------------------------------------------------------
    @property
    def gpuhub(self) -> GpuhubConfig:
        return active_config(self.gpuhub_config_file, self.log).get()

    @property
    def passwords(self) -> PasswordStore:
        return PasswordStore(self.dbm_path)

    def check_allowed(self, username: str, authentication: Any = None) -> bool:
        return may_log_in(self.gpuhub, username, self.normalize_username)

    def is_admin(self, handler: Any, authentication: dict[str, Any]) -> bool | None:
        name = authentication["name"]
        return True if is_listed_admin(self.gpuhub, name, self.normalize_username) else None

    # -- login -----------------------------------------------------------------------------
    async def authenticate(self, handler: Any, data: Any) -> dict[str, Any] | None:
        if not isinstance(data, dict):
            return None
        name = self.normalize_username(str(data.get("username") or ""))
        password = data.get("password")
        if not name or not isinstance(password, str) or not self.validate_username(name):
            return None
        cfg = self.gpuhub
        if not may_log_in(cfg, name, self.normalize_username):
            self.log.warning("gpuhub: %r is not listed in %s", name, cfg.source)
            return None
        result = await asyncio.to_thread(
            self.passwords.login, name, password, self.min_password_length
        )
        if result.problem:
            if handler is not None:
                handler.custom_login_error = result.problem
            return None
        if not result.ok:
            return None
        if result.claimed:
            self.log.info("gpuhub: %s set their password at first login", name)
        return auth_model(cfg, name, self.normalize_username)

    async def refresh_user(self, user: Any, handler: Any = None) -> bool | dict[str, Any]:
        cfg = self.gpuhub
        if not may_log_in(cfg, user.name, self.normalize_username):
            return False
        return auth_model(cfg, user.name, self.normalize_username)

    # -- users -----------------------------------------------------------------------------
    async def add_user(self, user: Any) -> None:
        """Called for every user in the database at start, and for each new user: give
        them their YAML groups now (so the admin page is right before they log in) and
        seed an admin's password."""
        from sqlalchemy.orm import object_session

        super().add_user(user)
        orm_user = getattr(user, "orm_user", user)
        db = object_session(orm_user)
        cfg = self.gpuhub
        if db is not None:
            groups = group_map(cfg, self.normalize_username).get(user.name, [])
            if set_groups(db, orm_user, groups, {}):
                db.commit()
        if is_listed_admin(cfg, user.name, self.normalize_username):
            await self.seed_admin_passwords([user.name])

    async def seed_admin_passwords(self, names: Iterable[str]) -> list[str]:
        """Give ``names`` without a password the admin password; the names seeded."""
        if not self.admin_password_file:
            return []
        seeded = await asyncio.to_thread(self._seed, list(names))
        for name in seeded:
            self.log.info("gpuhub: %s gets the password of %s", name, self.admin_password_file)
        return seeded

    def _seed(self, names: list[str]) -> list[str]:
        password = Path(self.admin_password_file).read_text().strip()
        return [n for n in names if self.passwords.seed(n, password)]

    async def apply_config(self, db: Any, cfg: GpuhubConfig) -> dict[str, list[str]]:
        """After a reload: the database follows the YAML (users, groups, admins) and new
        admins get the admin password.  Returns the users whose groups changed."""
        wanted = group_map(cfg, self.normalize_username)
        admins = [self.normalize_username(a) for a in cfg.auth.admin_users]
        changed = sync_users(db, wanted, admins)
        await self.seed_admin_passwords(admins)
        return changed

    async def delete_user(self, user: Any) -> None:
        await asyncio.to_thread(self.passwords.delete, user.name)

    def reset_password(self, username: str, new_password: str) -> str:
        """Blocking (bcrypt): the change-password page calls it in a worker thread."""
        problem = password_problem(new_password, self.min_password_length)
        if problem:
            return problem
        self.passwords.set(username, new_password, self.min_password_length)
        self.log.info("gpuhub: %s changed their password", username)
        return "Your password has been changed successfully!"

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        return [
            (r"/login", CustomLoginHandler),
            (r"/auth/change-password", ChangePasswordHandler),
        ]
