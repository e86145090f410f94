"""Where the embedded hub keeps its state, found the same way by the hub, its jobs
service and ``gpuhub-config`` (one function, so an admin's command reads what the hub
writes)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "GPUHUB_DATA"
PID_FILE = "jupyterhub.pid"
STATUS_FILE = "config-status.json"
PASSWORD_DB = "passwords.dbm"
ADMIN_PASSWORD_FILE = "admin-password"
STATE_MARKERS = ("state", "jupyterhub.sqlite", ADMIN_PASSWORD_FILE)
"""Entries only gpuhub writes into its data directory (the GPU ledger directory, the hub
database, the admin password written at the first start)."""


def default_data_dir() -> Path:
    """``/var/lib/gpuhub`` for root (users' accounts must pass through it to their
    homes, which they cannot under ``/root``), else ``~/.local/share/gpuhub``."""
    if os.geteuid() == 0:
        return Path("/var/lib/gpuhub")
    return Path.home() / ".local" / "share" / "gpuhub"


def holds_state(path: Path) -> bool:
    """True when ``path`` looks like a data directory a hub has used."""
    return any((path / name).exists() for name in STATE_MARKERS)


def resolve_data_dir(config_path: Path | str | None = None) -> Path:
    """The data directory: ``$GPUHUB_DATA``; else the directory holding the config file
    when it holds gpuhub state; else :func:`default_data_dir`."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    if config_path is not None:
        folder = Path(config_path).absolute().parent
        if holds_state(folder):
            return folder
    return default_data_dir()


def where_we_looked(config_path: Path | str | None = None) -> str:
    """The places :func:`resolve_data_dir` considers, for an error message."""
    env = os.environ.get(DATA_ENV)
    if env:
        return f"${DATA_ENV}={env}"
    places = [f"${DATA_ENV} (not set)"]
    if config_path is not None:
        places.append(f"{Path(config_path).absolute().parent} (the config's directory)")
    places.append(f"{default_data_dir()} (the default)")
    return ", ".join(places)
