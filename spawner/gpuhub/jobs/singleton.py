"""One jobs service per data directory.

Two guards, both taken before the service's event loop starts (they block):

- :func:`die_with_parent`: a managed service gets ``SIGTERM`` when the hub that started
  it ends, even by ``kill -9`` (Linux ``PR_SET_PDEATHSIG``).  Jobs are not affected: the
  setting is not inherited by children, and jobs run in sessions of their own.
- :func:`hold_lock`: an exclusive ``flock`` on ``<data>/state/jobs-service.lock``, held
  for the life of the process, with the holder's PID written in the file.  A second
  service for the same data directory waits a little (a predecessor may be finishing its
  shutdown), then refuses to start, naming that PID.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from ..errors import GpuhubError

HUB_PID_ENV = "GPUHUB_HUB_PID"
"""Set by the hub config to the hub's PID: the parent a managed service must have."""
PR_SET_PDEATHSIG = 1
_POLL = 0.1


class AlreadyRunning(GpuhubError):
    """Another instance holds the service's lock (``pid``: its PID, if known)."""

    def __init__(self, lock: Path, pid: int | None, waited: float) -> None:
        self.lock = lock
        self.pid = pid
        holder = f"PID {pid}" if pid else "PID not written yet"
        super().__init__(
            f"another instance ({holder}) serves {lock.parent.parent}: it still "
            f"held {lock} after {waited:g} s. Only one may run per data directory; "
            f"stop that one first (kill {pid or '<pid>'})"
        )


def _holder(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def hold_lock(path: Path, wait: float) -> int:
    """Lock ``path`` exclusively for this process, waiting up to ``wait`` seconds for a
    holder to go away; write this process's PID into it and return the descriptor.

    The lock lasts until the descriptor is closed or the process ends (however it
    ends).  The descriptor is not inheritable, so the jobs the service starts never
    hold it.  Blocks: call it before the event loop runs.  Raises :class:`AlreadyRunning`.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AlreadyRunning(path, _holder(fd), wait) from None
                time.sleep(_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def started_by_hub(env: Mapping[str, str]) -> bool:
    """Whether this process runs as a managed JupyterHub service (the hub sets both)."""
    return bool(env.get("JUPYTERHUB_SERVICE_NAME") and env.get("JUPYTERHUB_API_TOKEN"))


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent ends.

    Returns ``False`` when the parent is no longer ``parent``: it ended before the
    request took effect (this process was re-parented), so no signal will come.
    The signal follows the parent *thread* that started this process; JupyterHub
    starts services from its main thread.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    return os.getppid() == parent
