"""Start child processes in their own process groups and stop exactly those, by PID.

Every process started through :func:`spawn` is registered; an ``atexit`` hook stops the
ones still running, and (unless ``detached``) the kernel SIGKILLs them if the starting
process dies without running its hooks (``PR_SET_PDEATHSIG``, main thread only).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_running: dict[int, subprocess.Popen[bytes]] = {}


def _die_with_parent() -> None:
    """Pre-exec hook: SIGKILL this child when the thread that started it exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Child:
    """A started process: its name, handle and log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: tuple[str, ...] = ()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process's combined stdout/stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        stop_group(self.popen, grace)


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    detached: bool = False,
) -> Child:
    """Start ``argv`` in a new session (own process group), output appended to ``log_path``.

    ``PR_SET_PDEATHSIG`` fires when the starting *thread* exits, so it is only set when
    called from the main thread; ``atexit`` and the fixtures' finalizers cover the rest.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    die_with_us = not detached and threading.current_thread() is threading.main_thread()
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_us else None,
        )
    if not detached:
        _running[popen.pid] = popen
    return Child(name, popen, log_path, tuple(argv))


def stop_group(popen: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop the process group led by ``popen`` (which we started): TERM, wait, KILL."""
    _running.pop(popen.pid, None)
    if popen.poll() is None:
        _signal_group(popen.pid, signal.SIGTERM)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(popen.pid, signal.SIGKILL)
            popen.wait(5)
    # Leftover members of the group (the leader is gone, the group id is still ours).
    _signal_group(popen.pid, signal.SIGKILL)


def stop_pid_group(pid: int, grace: float = 10.0) -> None:
    """Like :func:`stop_group` for a process group recorded by PID (e.g. by the CLI)."""
    if not pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        return
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@atexit.register
def _stop_all() -> None:
    for popen in list(_running.values()):
        stop_group(popen, grace=5.0)
