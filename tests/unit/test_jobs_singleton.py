"""One jobs service per data directory: the lock and the parent-death signal, between
real processes (no hub)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import gpuhub
from gpuhub.jobs.app import JobsApp
from gpuhub.jobs.singleton import AlreadyRunning, hold_lock

PYTHONPATH = str(Path(gpuhub.__file__).resolve().parents[1])

# holds the lock until its stdin closes; starts a long-lived child like a job first
HOLDER = """
import subprocess, sys
from pathlib import Path
from gpuhub.jobs.singleton import hold_lock
hold_lock(Path(sys.argv[1]), 0)
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"],
    stdin=subprocess.DEVNULL, close_fds=False, start_new_session=True,
)
print("locked", child.pid, flush=True)
sys.stdin.read()
"""

# starts LEAF and passes its lines on, then waits to be killed
MIDDLE = """
import subprocess, sys
leaf = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE)
print(leaf.stdout.readline().decode().strip(), flush=True)
sys.stdin.read()
"""

# asks for SIGTERM when its parent dies; records the signal in a file
LEAF = """
import os, signal, sys, time
from gpuhub.jobs.singleton import die_with_parent
def term(*_):
    open(sys.argv[1], "w").write("SIGTERM")
    os._exit(0)
signal.signal(signal.SIGTERM, term)
print(die_with_parent(os.getppid()), die_with_parent(os.getppid() + 100000), flush=True)
while True:
    time.sleep(1)
"""


def python(code: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes], int]]:
    path = JobsApp(data_dir=str(tmp_path)).lock_path
    proc = python(HOLDER, str(path))
    assert proc.stdout is not None
    word, child = proc.stdout.readline().split()
    assert word == b"locked"
    yield path, proc, int(child)
    for pid in (proc.pid, int(child)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def test_a_second_process_is_refused_naming_the_holder(holder):
    path, proc, _ = holder
    assert path == path.parent.parent / "state" / "jobs-service.lock"
    assert path.read_text() == f"{proc.pid}\n"
    with pytest.raises(AlreadyRunning) as e:
        hold_lock(path, 0.3)
    assert e.value.pid == proc.pid
    message = str(e.value)
    assert f"(PID {proc.pid})" in message and f"kill {proc.pid}" in message, message
    assert str(path) in message and str(path.parent.parent) in message, message


def test_a_waiting_process_takes_over_when_the_holder_ends(holder):
    path, proc, _ = holder
    assert proc.stdin is not None
    proc.stdin.close()  # the holder ends while we wait
    fd = hold_lock(path, 60)
    try:
        assert path.read_text() == f"{os.getpid()}\n"
    finally:
        os.close(fd)


def test_the_lock_dies_with_its_process_not_with_the_jobs_it_started(holder):
    path, proc, child = holder
    proc.kill()
    proc.wait()
    assert Path(f"/proc/{child}").exists()  # a job started by the service lives on
    fd = hold_lock(path, 60)  # ... without holding the lock (it never inherits it)
    os.close(fd)


def test_a_process_gets_sigterm_when_its_parent_is_killed(tmp_path):
    flag = tmp_path / "leaf-signal"
    middle = python(MIDDLE, LEAF, str(flag))
    assert middle.stdout is not None
    # True for its real parent; False when the parent is not the one expected (gone)
    assert middle.stdout.readline().split() == [b"True", b"False"]
    middle.kill()
    middle.wait()
    wait_until(
        lambda: flag.exists() and flag.read_text() == "SIGTERM",
        "the leaf got no SIGTERM when its parent was killed",
    )
