"""A system account per hub user on the embedded default.

Servers and job workers of hub user ``alice`` run as the system account ``gpuhub-alice``:
created on first spawn (no login shell, no password, no sudo, a group of its own), its
home ``<data>/users/alice`` owned by it with mode 0700.  An existing account is reused
only if gpuhub made it (its comment says so), so a hub user can never be mapped onto a
person's or a service's real account.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PREFIX = "gpuhub-"
COMMENT_PREFIX = "gpuhub user "
MAX_NAME = 32  # useradd's limit
NOLOGIN = "/usr/sbin/nologin"


class AccountError(RuntimeError):
    """An account could not be made or is not gpuhub's; the message says the fix."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def account_name(prefix: str, user: str) -> str:
    """The system account of hub user ``user``: ``prefix + user`` when that is a valid,
    short POSIX name, else a sanitised name with a hash of the hub name (still unique)."""
    plain = prefix + user
    if re.fullmatch(r"[a-z_][a-z0-9_-]*", plain) and len(plain) <= MAX_NAME:
        return plain
    digest = hashlib.sha256(user.encode()).hexdigest()[:8]
    safe = re.sub(r"[^a-z0-9_-]+", "-", user.lower()).strip("-")
    head = (prefix + safe)[: MAX_NAME - 9].rstrip("-")
    if not re.match(r"[a-z_]", head):
        head = "u" + head[: MAX_NAME - 10]
    return f"{head}-{digest}"


def lookup(name: str, user: str) -> Account | None:
    """The existing account ``name`` if gpuhub made it for ``user``; ``None`` if absent.
    Raises :class:`AccountError` for an account gpuhub did not make."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    if pw.pw_gecos != COMMENT_PREFIX + user or pw.pw_uid == 0:
        raise AccountError(
            f"the system account {name!r} exists but was not made by gpuhub for {user!r}; "
            "gpuhub never runs a hub user as another account. Fix: rename or remove that "
            "account, or set GPULocalSpawner.account_prefix to another prefix"
        )
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def ensure_account(name: str, user: str, home: Path) -> Account:
    """The account of ``user`` (created if absent) with its home made and private.
    Blocking (``useradd``): call it in a thread from a coroutine."""
    account = lookup(name, user)
    if account is None:
        cmd = [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            str(home),
            "--shell",
            NOLOGIN,
            "--comment",
            COMMENT_PREFIX + user,
            name,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 9):  # 9: made meanwhile by another process
            raise AccountError(
                f"could not create the system account {name!r} for {user!r}: "
                f"{done.stderr.strip() or done.returncode}. Fix: run the hub as root "
                "on a host with useradd"
            )
        account = lookup(name, user)
        assert account is not None
    home.mkdir(parents=True, exist_ok=True)
    st = home.stat()
    if (st.st_uid, st.st_gid) != (account.uid, account.gid):
        os.chown(home, account.uid, account.gid)
    if st.st_mode & 0o777 != 0o700:
        home.chmod(0o700)
    return account
