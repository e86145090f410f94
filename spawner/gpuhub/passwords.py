"""Per-user password hashes for the embedded default: bcrypt hashes in a ``dbm`` file in
the data directory, in the format of ``jupyterhub-firstuseauthenticator`` (user name ->
hash).  Every access holds an exclusive lock on ``<db>.lock``, so the hub's worker threads
and ``gpuhub-config set-password`` never interleave (``dbm.dumb`` does no locking).

Every method blocks (file I/O, and bcrypt takes a fraction of a second on purpose): the
hub calls them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import dbm
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt

MIN_LENGTH = 8
MAX_BYTES = 72
"""bcrypt uses the first 72 bytes only (and bcrypt ≥ 5 refuses longer passwords)."""


def password_problem(password: str, min_length: int = MIN_LENGTH) -> str | None:
    """Why ``password`` cannot be set, or ``None`` when it can."""
    if len(password) < min_length:
        return f"Password too short: choose at least {min_length} characters."
    if len(password.encode()) > MAX_BYTES:
        return f"Password too long: choose at most {MAX_BYTES} bytes."
    return None


def hash_password(password: str) -> bytes:
    return bytes(bcrypt.hashpw(password.encode(), bcrypt.gensalt()))


def matches(password: str, hashed: bytes) -> bool:
    raw = password.encode()
    return len(raw) <= MAX_BYTES and bool(bcrypt.checkpw(raw, hashed))


@dataclass(frozen=True)
class LoginResult:
    """``ok``: the password is the user's (``claimed``: it just became theirs);
    ``problem``: why a first password was refused, for the login page."""

    ok: bool
    claimed: bool = False
    problem: str | None = None


class PasswordStore:
    """The password database at ``path`` (files created with mode 0600)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.lock_path = Path(f"{self.path}.lock")

    @contextmanager
    def _db(self) -> Iterator[Any]:
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with dbm.open(str(self.path), "c", 0o600) as db:
                yield db
        finally:
            os.close(fd)

    def stored(self, user: str) -> bytes | None:
        """``user``'s hash, ``None`` before their first login."""
        with self._db() as db:
            value = db.get(user.encode())
        return None if value is None else bytes(value)

    def login(self, user: str, password: str, min_length: int = MIN_LENGTH) -> LoginResult:
        """Check ``password``; on ``user``'s first login it becomes their password."""
        hashed = self.stored(user)
        if hashed is not None:
            return LoginResult(ok=matches(password, hashed))
        problem = password_problem(password, min_length)
        if problem:
            return LoginResult(ok=False, problem=problem)
        new = hash_password(password)
        with self._db() as db:
            hashed = db.get(user.encode())
            if hashed is None:
                db[user.encode()] = new
                return LoginResult(ok=True, claimed=True)
        # another login claimed the name while we hashed: theirs counts
        return LoginResult(ok=matches(password, bytes(hashed)))

    def set(self, user: str, password: str, min_length: int = MIN_LENGTH) -> None:
        """Set (or replace) ``user``'s password; :class:`ValueError` names a bad one."""
        problem = password_problem(password, min_length)
        if problem:
            raise ValueError(problem)
        new = hash_password(password)
        with self._db() as db:
            db[user.encode()] = new

    def seed(self, user: str, password: str) -> bool:
        """Set ``user``'s password unless they have one; True when it was set."""
        if self.stored(user) is not None:
            return False
        new = hash_password(password)
        with self._db() as db:
            if user.encode() in db:
                return False
            db[user.encode()] = new
        return True

    def delete(self, user: str) -> None:
        with self._db() as db:
            if user.encode() in db:
                del db[user.encode()]
