"""The gpuhub config as its file says *now*: one holder per file and process, shared by
the spawners, the authenticator, the hub's reload handler and the jobs service.

:meth:`ActiveConfig.get` looks at the file at most once per ``interval`` (a ``stat``, no
read) and re-reads it only when it changed; :meth:`ActiveConfig.areload` re-reads it at
once (``gpuhub-config reload``).  An invalid file never replaces a good config: the last
good one stays active, the error is logged with its key path and kept in
:attr:`ActiveConfig.error` until a valid file is read.

In a process with an event loop (the hub, the jobs service) the file is read and parsed in
a worker thread and the new config is swapped in on the loop, between two requests; a
change noticed by :meth:`get` applies from the next call.  Without a loop (the CLI) it is
read at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .config import config_from_bytes, read_config_bytes
from .errors import ConfigError
from .model import GpuhubConfig

Signature = tuple[int, int, int] | None
"""``(inode, size, mtime_ns)`` of the file, ``None`` when it is missing."""


def config_digest(raw: bytes) -> str:
    """The identity of a config file's content (the hub reports it; the CLI compares)."""
    return hashlib.sha256(raw).hexdigest()


def _signature(path: Path) -> Signature:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class _Read:
    """One read of the file: a config and its digest, or the error."""

    signature: Signature
    config: GpuhubConfig | None = None
    digest: str = ""
    error: ConfigError | None = None


def _read(path: Path) -> _Read:
    """Blocking: stat, read and parse (stat first, so a change during the read is seen
    again at the next check)."""
    signature = _signature(path)
    try:
        raw = read_config_bytes(path)
        return _Read(signature, config_from_bytes(raw, path), config_digest(raw))
    except ConfigError as e:
        return _Read(signature, error=e)


class ActiveConfig:
    """The last good config of ``path`` (loaded at construction: an invalid file raises
    :class:`~gpuhub.errors.ConfigError`, so a process never starts without a config)."""

    def __init__(
        self, path: Path | str, log: logging.Logger | None = None, interval: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.log = log or logging.getLogger(__name__)
        self.interval = interval
        first = _read(self.path)
        if first.error is not None:
            raise first.error
        assert first.config is not None
        self._config = first.config
        self._signature = first.signature
        self.digest = first.digest
        """Digest of the bytes the active config was parsed from."""
        self.error: ConfigError | None = None
        """The problem of the newest read of the file, ``None`` when it was valid."""
        self._checked = time.monotonic()
        self._pending: asyncio.Task[GpuhubConfig] | None = None

    @property
    def config(self) -> GpuhubConfig:
        """The active config, without looking at the file."""
        return self._config

    def get(self) -> GpuhubConfig:
        """The active config; if the file changed (checked at most once per ``interval``
        seconds) it is re-read, in the background when an event loop runs."""
        now = time.monotonic()
        if now - self._checked >= self.interval and self._pending is None:
            self._checked = now
            if _signature(self.path) != self._signature:
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    return self.reload()
                self._pending = asyncio.ensure_future(self.areload())
                self._pending.add_done_callback(self._reloaded)
        return self._config

    def _reloaded(self, task: asyncio.Task[GpuhubConfig]) -> None:
        self._pending = None

    def reload(self) -> GpuhubConfig:
        """Read the file now (blocking); the new config if it is valid, else the last good."""
        return self._apply(_read(self.path))

    async def areload(self) -> GpuhubConfig:
        """:meth:`reload` with the reading in a worker thread and the swap on the loop."""
        return self._apply(await asyncio.to_thread(_read, self.path))

    def _apply(self, read: _Read) -> GpuhubConfig:
        self._signature = read.signature
        if read.error is not None or read.config is None:
            self.error = read.error
            self.log.error("gpuhub: %s (keeping the last good config)", read.error)
            return self._config
        self.digest, self.error = read.digest, None
        if read.config != self._config:  # an equal config keeps its identity (caches key on it)
            self._config = read.config
            self.log.info("gpuhub: config %s reloaded", self.path)
        return self._config


_holders: dict[str, ActiveConfig] = {}


def active_config(path: Path | str, log: logging.Logger | None = None) -> ActiveConfig:
    """The process's holder for ``path`` (created, and the file loaded, on first use)."""
    key = os.path.abspath(path)
    holder = _holders.get(key)
    if holder is None:
        holder = _holders[key] = ActiveConfig(key, log)
    return holder
