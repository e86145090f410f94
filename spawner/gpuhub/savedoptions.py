"""Where the hub keeps each user's saved start options (:mod:`gpuhub.startoptions`): one
JSON file (mode 0600) in the hub's data directory, held in memory.

Why a file and not the hub database: JupyterHub's database has no per-user place for a
spawner's data (``user_options`` and ``state`` belong to one server, and ``state`` is
cleared at every start; ``user_info`` belongs to the authenticator, which overwrites it at
login), and a table of gpuhub's own would need JupyterHub's migrations.  The file is read
once per hub process; a start reads the default from memory (no ``await`` between the
decision and the quota reservation) and the file is rewritten in a worker thread
(:meth:`SavedOptions.flush`), atomically (temporary file + rename).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class SavedOptions:
    """Saved start options by user name, backed by ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_user: dict[str, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._by_user is None:
            try:
                raw = json.loads(self.path.read_text())
            except FileNotFoundError:
                raw = {}
            except (OSError, ValueError) as e:
                log.error("gpuhub: %s is unreadable (%s): no saved start options", self.path, e)
                raw = {}
            self._by_user = {
                str(u): dict(o)
                for u, o in (raw if isinstance(raw, dict) else {}).items()
                if isinstance(o, dict)
            }
        return self._by_user

    def get(self, user: str) -> dict[str, Any] | None:
        """``user``'s saved options (untrusted until validated), or ``None``."""
        saved = self._load().get(user)
        return dict(saved) if saved is not None else None

    def put(self, user: str, options: dict[str, Any]) -> None:
        """Keep ``options`` for ``user`` in memory; :meth:`flush` writes the file."""
        self._load()[user] = dict(options)

    def forget(self, user: str) -> None:
        """Drop ``user``'s saved options in memory; :meth:`flush` writes the file."""
        self._load().pop(user, None)

    def _write(self) -> None:
        with self._lock:
            data = json.dumps(self._load(), indent=1, sort_keys=True)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

    async def flush(self) -> None:
        """Write every saved default to the file, off the event loop."""
        await asyncio.to_thread(self._write)


_stores: dict[str, SavedOptions] = {}


def saved_options(path: str) -> SavedOptions:
    """The one store of ``path`` in this process."""
    key = os.path.abspath(path)
    if key not in _stores:
        _stores[key] = SavedOptions(Path(key))
    return _stores[key]
