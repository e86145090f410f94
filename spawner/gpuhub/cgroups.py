"""Control groups for the embedded default: every server and job runs in a cgroup of its
own (a *unit*) with the profile's memory, CPU and process limits, and a device rule that
lets it open only the GPUs it was given.  Everything in a unit counts as that unit —
children and detached descendants included — and stopping a unit kills all of it.

Two mechanisms:

- :class:`CgroupV1` — cgroupfs v1 (``memory``, ``cpu``, ``pids``, ``devices``,
  ``freezer``), nested under the hub's own cgroup of each controller, so an outer manager
  (systemd, a container runtime) still accounts for everything gpuhub starts;
- :class:`NoFence` — no usable cgroups (not root, or a host without the controllers): a
  unit is its main process; limits are not enforced and GPU assignment is advisory.

Which one runs is decided once per data directory by :func:`open_fence` and said by
``gpuhub-config check`` and in the hub's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

NVIDIA_MAJOR = 195
"""Character-device major of ``/dev/nvidia<minor>`` (``nvidiactl`` is minor 255)."""

V1_CONTROLLERS = ("memory", "cpu", "pids", "devices", "freezer")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    """What one unit may use.  ``None``: not limited."""

    memory: int | None = None
    cpu: float | None = None
    pids: int | None = None
    denied_gpus: tuple[int, ...] = ()
    """Minors of the GPUs this unit may not open (every GPU it was not given)."""


def unit_name(key: str) -> str:
    """A cgroup directory name for an allocation key (``server:alice/`` →
    ``server_3aalice_2f``): reversible, unique, and safe on any filesystem."""
    return "u-" + re.sub(
        r"[^A-Za-z0-9.-]", lambda m: "".join(f"_{b:02x}" for b in m[0].encode()), key
    )


def v1_settings(limits: Limits) -> list[tuple[str, str, str]]:
    """``(controller, file, value)`` writes that apply ``limits`` to a v1 cgroup."""
    out: list[tuple[str, str, str]] = []
    if limits.memory is not None:
        out.append(("memory", "memory.limit_in_bytes", str(limits.memory)))
    if limits.cpu is not None:
        out.append(("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US)))
        out.append(("cpu", "cpu.cfs_quota_us", str(max(1000, round(limits.cpu * CPU_PERIOD_US)))))
    if limits.pids is not None:
        out.append(("pids", "pids.max", str(limits.pids)))
    for minor in sorted(set(limits.denied_gpus)):
        out.append(("devices", "devices.deny", f"c {NVIDIA_MAJOR}:{minor} rwm"))
    return out


def own_v1_cgroups(proc_cgroup: str) -> dict[str, str]:
    """``{controller: path}`` of a process from the text of ``/proc/<pid>/cgroup``."""
    found: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1]:
            for c in parts[1].split(","):
                found[c] = parts[2]
    return found


def v1_mounts(mountinfo: str) -> dict[str, str]:
    """``{controller: mount point}`` of the cgroup v1 hierarchies in ``/proc/self/mountinfo``."""
    found: dict[str, str] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) >= 3 and fields[0] == "cgroup":
            mount = left.split()[4]
            for opt in fields[2].split(","):
                if opt in V1_CONTROLLERS:
                    found[opt] = mount
    return found


class Fence(Protocol):
    """Units: created with limits, joined by a new process, listed, killed."""

    mechanism: str
    fences_devices: bool
    enforces_limits: bool

    def create(self, unit: str, limits: Limits) -> None: ...

    def join_files(self, unit: str) -> list[str]: ...

    def pids(self, unit: str, main_pid: int | None = None) -> set[int]: ...

    def kill(self, unit: str, main_pid: int | None = None) -> bool: ...

    def oom_kills(self, unit: str) -> int: ...


class CgroupV1:
    """Units as cgroupfs v1 directories ``<base of each controller>/<unit>``."""

    mechanism = "cgroup v1 (cgroupfs)"
    fences_devices = True
    enforces_limits = True

    def __init__(self, bases: dict[str, str]) -> None:
        self.bases = {c: Path(p) for c, p in bases.items()}

    def _dir(self, controller: str, unit: str) -> Path:
        return self.bases[controller] / unit

    def create(self, unit: str, limits: Limits) -> None:
        """Make the unit's cgroups (fresh: a leftover of the same name is killed first)
        and apply ``limits``; raises ``OSError`` naming the file that refused."""
        if any(self._dir(c, unit).exists() for c in self.bases):
            self.kill(unit)
        for c in self.bases:
            self._dir(c, unit).mkdir(parents=True, exist_ok=True)
        for controller, name, value in v1_settings(limits):
            path = self._dir(controller, unit) / name
            try:
                path.write_text(value)
            except OSError as e:
                raise OSError(e.errno, f"cannot set {path} to {value!r}: {e.strerror}") from e
        if limits.memory is not None:  # no swap beyond the limit, where swap accounting exists
            with contextlib.suppress(OSError):
                (self._dir("memory", unit) / "memory.memsw.limit_in_bytes").write_text(
                    str(limits.memory)
                )

    def join_files(self, unit: str) -> list[str]:
        return [str(self._dir(c, unit) / "cgroup.procs") for c in self.bases]

    def pids(self, unit: str, main_pid: int | None = None) -> set[int]:
        try:
            text = (self._dir("pids", unit) / "cgroup.procs").read_text()
        except OSError:
            return set()
        return {int(p) for p in text.split()}

    def kill(self, unit: str, main_pid: int | None = None) -> bool:
        """Kill every process of the unit (frozen first, so none can fork away) and
        remove its cgroups.  ``True`` when the unit is gone."""
        freezer = self._dir("freezer", unit) / "freezer.state"
        deadline = time.monotonic() + 10
        while self.pids(unit) and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                freezer.write_text("FROZEN")
            for pid in self.pids(unit):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                freezer.write_text("THAWED")
            if self.pids(unit):
                time.sleep(0.02)
        gone = True
        for c in self.bases:
            d = self._dir(c, unit)
            if d.exists():
                try:
                    d.rmdir()
                except OSError:
                    gone = False
        return gone

    def oom_kills(self, unit: str) -> int:
        try:
            text = (self._dir("memory", unit) / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return 0


class NoFence:
    """No cgroups: a unit is its main process (children are not followed)."""

    mechanism = "none (no usable cgroups: limits not enforced, GPU assignment advisory)"
    fences_devices = False
    enforces_limits = False

    def create(self, unit: str, limits: Limits) -> None:
        pass

    def join_files(self, unit: str) -> list[str]:
        return []

    def pids(self, unit: str, main_pid: int | None = None) -> set[int]:
        if main_pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(main_pid, 0)
                return {main_pid}
        return set()

    def kill(self, unit: str, main_pid: int | None = None) -> bool:
        if main_pid and self.pids(unit, main_pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(main_pid, signal.SIGKILL)
        return True

    def oom_kills(self, unit: str) -> int:
        return 0


def join(files: Iterable[str]) -> None:
    """Move the calling process into a unit (used in a ``preexec_fn``, before exec)."""
    me = str(os.getpid())
    for f in files:
        with open(f, "w") as fh:
            fh.write(me)


def _probe_v1(state_dir: Path, create: bool = True) -> CgroupV1 | None:
    try:
        mounts = v1_mounts(Path("/proc/self/mountinfo").read_text())
        own = own_v1_cgroups(Path("/proc/self/cgroup").read_text())
    except OSError:
        return None
    if any(c not in mounts or c not in own for c in V1_CONTROLLERS):
        return None
    tag = "gpuhub-" + re.sub(r"[^A-Za-z0-9]", "_", str(state_dir.resolve()))[-80:]
    bases = {c: str(Path(mounts[c] + own[c]) / tag) for c in V1_CONTROLLERS}
    if not create:
        writable = all(os.access(Path(p).parent, os.W_OK) for p in bases.values())
        return CgroupV1(bases) if writable else None
    try:
        for p in bases.values():
            Path(p).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return CgroupV1(bases)


def probe_fence(state_dir: Path) -> Fence:
    """The fence :func:`open_fence` would use for ``state_dir``, without recording it."""
    record = state_dir / "cgroups.json"
    if record.exists():
        return open_fence(state_dir)
    return (_probe_v1(state_dir, create=False) if os.geteuid() == 0 else None) or NoFence()


def open_fence(state_dir: Path) -> Fence:
    """The fence of a data directory's ``state/``: the mechanism recorded there on first
    use (so the hub after a restart and the jobs service find the same units), else the
    best one this host offers (cgroup v1 when running as root with its controllers)."""
    record = state_dir / "cgroups.json"
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and saved.get("mechanism") == "cgroup-v1":
        bases = saved["bases"]
        if all(Path(p).is_dir() for p in bases.values()):
            return CgroupV1(bases)
    fence: Fence = (_probe_v1(state_dir) if os.geteuid() == 0 else None) or NoFence()
    if isinstance(fence, CgroupV1):
        tmp = record.with_suffix(".tmp")
        bases = {c: str(p) for c, p in fence.bases.items()}
        tmp.write_text(json.dumps({"mechanism": "cgroup-v1", "bases": bases}))
        os.replace(tmp, record)
    return fence
