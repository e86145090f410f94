"""Reloading the embedded hub's config without a restart.

In the hub, :func:`install` (called by :func:`gpuhub.hubconfig.configure_embedded`)
makes ``SIGHUP`` re-read the YAML, bring the database's users and groups in line with it
and then rewrite ``<data>/config-status.json``.  ``gpuhub-config reload`` validates the
file, sends the signal and waits for that status file to report the file's digest.
Running servers are never touched; quota and profile changes apply at the next spawn.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from .activeconfig import ActiveConfig
from .confdiff import describe_changes
from .datadir import STATUS_FILE


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Replace the status file in one step (readers never see half a file), mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(status, f, indent=1)
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class HubReloader:
    """The hub side: owns the status file, applies the YAML on ``SIGHUP``."""

    def __init__(self, holder: ActiveConfig, data_dir: Path, log: logging.Logger) -> None:
        self.holder = holder
        self.status_path = data_dir / STATUS_FILE
        self.log = log
        self.generation = 0
        self.reported = holder.config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def status(
        self, changes: list[str], synced: dict[str, list[str]], failure: str | None = None
    ) -> dict[str, Any]:
        error = failure or (None if self.holder.error is None else str(self.holder.error))
        return {
            "pid": os.getpid(),
            "generation": self.generation,
            "config": str(self.holder.path),
            "digest": self.holder.digest,
            "error": error,
            "changes": changes,
            "groups_synced": synced,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle ``SIGHUP`` on ``loop`` (the hub's) and write the first status."""
        self._loop = loop
        write_status(self.status_path, self.status([], {}))
        signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._start_reload)

    def _start_reload(self) -> None:
        task = asyncio.ensure_future(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> None:
        """Re-read the YAML, apply it to the hub's database, report in the status file."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            self.log.info("gpuhub: reloading %s", self.holder.path)
            await self.holder.areload()
            changes: list[str] = []
            synced: dict[str, list[str]] = {}
            failure = None
            if self.holder.error is None:
                cfg = self.holder.config
                changes = describe_changes(self.reported, cfg)
                try:
                    synced = await self._apply()
                except Exception as e:
                    self.log.exception("gpuhub: applying %s to the hub failed", self.holder.path)
                    failure = f"{self.holder.path}: applying it to the hub failed ({e})"
                self.reported = cfg
                for line in changes:
                    self.log.info("gpuhub: config change: %s", line)
            self.generation += 1
            status = self.status(changes, synced, failure)
            await asyncio.to_thread(write_status, self.status_path, status)

    async def _apply(self) -> dict[str, list[str]]:
        from jupyterhub.app import JupyterHub

        from .auth import GpuhubAuthenticator

        if not JupyterHub.initialized():
            return {}
        app = JupyterHub.instance()
        authenticator = getattr(app, "authenticator", None)
        db = getattr(app, "db", None)
        if isinstance(authenticator, GpuhubAuthenticator) and db is not None:
            return await authenticator.apply_config(db, self.holder.config)
        return {}


def install(holder: ActiveConfig, data_dir: Path, log: logging.Logger) -> HubReloader | None:
    """Install the reload handler in the hub being configured (its event loop runs while
    it reads its config); ``None`` when no event loop runs (not inside a hub)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    reloader = HubReloader(holder, data_dir, log)
    reloader.install(loop)
    return reloader
