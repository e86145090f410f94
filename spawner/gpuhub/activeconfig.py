"""The gpuhub config as its file says *now*: one holder per file and process, shared by
the spawners, the authenticator, the hub's reload handler and the jobs service.

:meth:`ActiveConfig.get` looks at the file at most once per ``interval`` (a ``stat``, no
read) and re-reads it only when it changed; :meth:`ActiveConfig.reload` re-reads it at
once (``gpuhub-config reload``).  An invalid file never replaces a good config: the last
good one stays active, the error is logged with its key path and kept in
:attr:`ActiveConfig.error` until a valid file is read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
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


class ActiveConfig:
    """The last good config of ``path`` (loaded at construction: an invalid file raises
    :class:`~gpuhub.errors.ConfigError`, so a process never starts without a config)."""

    def __init__(
        self, path: Path | str, log: logging.Logger | None = None, interval: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.log = log or logging.getLogger(__name__)
        self.interval = interval
        self._lock = threading.Lock()
        self._signature = _signature(self.path)
        raw = read_config_bytes(self.path)
        self._config = config_from_bytes(raw, self.path)
        self.digest = config_digest(raw)
        """Digest of the bytes the active config was parsed from."""
        self.error: ConfigError | None = None
        """The problem of the newest read of the file, ``None`` when it was valid."""
        self._checked = time.monotonic()

    @property
    def config(self) -> GpuhubConfig:
        """The active config, without looking at the file."""
        return self._config

    def get(self) -> GpuhubConfig:
        """The active config, re-read first if the file changed (checked at most once per
        ``interval`` seconds)."""
        now = time.monotonic()
        if now - self._checked >= self.interval:
            self._checked = now
            if _signature(self.path) != self._signature:
                self.reload()
        return self._config

    def reload(self) -> GpuhubConfig:
        """Read the file now; the new config if it is valid, else the last good one."""
        with self._lock:
            signature = _signature(self.path)
            try:
                raw = read_config_bytes(self.path)
                config = config_from_bytes(raw, self.path)
            except ConfigError as e:
                self._signature = signature
                self.error = e
                self.log.error("gpuhub: %s (keeping the last good config)", e)
                return self._config
            self._signature = signature
            changed = config_digest(raw) != self.digest
            self._config, self.digest, self.error = config, config_digest(raw), None
            if changed:
                self.log.info("gpuhub: config %s reloaded", self.path)
            return config


_holders: dict[str, ActiveConfig] = {}


def active_config(path: Path | str, log: logging.Logger | None = None) -> ActiveConfig:
    """The process's holder for ``path`` (created, and the file loaded, on first use)."""
    key = os.path.abspath(path)
    holder = _holders.get(key)
    if holder is None:
        holder = _holders[key] = ActiveConfig(key, log)
    return holder
