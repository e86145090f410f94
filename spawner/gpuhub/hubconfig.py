"""From the validated gpuhub YAML to JupyterHub's traitlets config (TLJH style: pure
mappings tested with ``Config()``), plus the embedded default's secrets."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from traitlets.config import Config

from .config import load_config
from .model import GpuhubConfig

BIND_ENV = "GPUHUB_BIND_URL"
DEFAULT_BIND = "http://127.0.0.1:8000"


def apply_groups_and_users(c: Config, cfg: GpuhubConfig) -> None:
    """Groups (``load_groups``), who may log in and who is admin."""
    c.JupyterHub.load_groups = {g: {"users": sorted(users)} for g, users in cfg.groups.items()}
    members = {u for users in cfg.groups.values() for u in users}
    c.Authenticator.admin_users = set(cfg.auth.admin_users)
    c.Authenticator.allowed_users = members | set(cfg.auth.admin_users)
    c.Authenticator.allow_all = cfg.auth.allow_all


def read_or_create_secret(path: Path, nbytes: int) -> tuple[str, bool]:
    """A secret kept in ``path`` with mode 0600; ``(value, created)``."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value, True


def embedded_config(
    cfg: GpuhubConfig, config_path: Path, data_dir: Path, bind_url: str, passwords: dict[str, str]
) -> Config:
    """The whole embedded-default hub config (local processes, shared password)."""
    c = Config()
    c.JupyterHub.bind_url = bind_url
    c.JupyterHub.spawner_class = "gpu-local"
    c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
    c.ConfigurableHTTPProxy.pid_file = str(data_dir / "proxy.pid")
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = passwords["user"]
    if cfg.auth.admin_users:
        c.SharedPasswordAuthenticator.admin_password = passwords["admin"]
    c.GPULocalSpawner.gpuhub_config_file = str(config_path)
    c.GPULocalSpawner.data_dir = str(data_dir)
    apply_groups_and_users(c, cfg)
    return c


def configure_embedded(
    c: Any, config_path: str | None = None, data_dir: str | None = None
) -> GpuhubConfig:
    """Load and validate the gpuhub YAML and fill ``c`` for the embedded default.

    Called from the top-level ``jupyterhub_config.py``.  An invalid YAML raises
    :class:`~gpuhub.errors.ConfigError`, so the hub refuses to start with the key path.
    """
    from .spawners.local import default_data_dir

    path = Path(
        config_path or os.environ.get("GPUHUB_CONFIG") or Path(default_data_dir()) / "gpuhub.yaml"
    )
    data = Path(data_dir or default_data_dir())
    cfg = load_config(path)
    user_pw, _ = read_or_create_secret(data / "password", 12)
    admin_pw, _ = read_or_create_secret(data / "admin-password", 32)
    bind = os.environ.get(BIND_ENV, DEFAULT_BIND)
    c.merge(
        embedded_config(
            cfg, path.resolve(), data.resolve(), bind, {"user": user_pw, "admin": admin_pw}
        )
    )
    return cfg
