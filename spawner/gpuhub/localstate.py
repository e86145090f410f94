"""The machine-wide ledger of the embedded default, shared by the hub and the jobs service.

Truth is what runs: every server and job is a *unit* — a cgroup of its own (see
:mod:`gpuhub.cgroups`) — recorded in ``<data>/state/units.json`` (root-only, like the
whole ``state/`` folder).  A record counts while its cgroup holds a process (children and
detached descendants included), or while it is a reservation whose owner (the hub or the
jobs service that made it) is alive and has not started it yet.  Users can neither write
the records nor leave or join a cgroup, so usage cannot be forged or hidden.

Each unit also gets a private temporary folder (mode 0700, owned by its account; the
server's or job's ``TMPDIR``; see :func:`tmp_root`), removed with the unit: what the server
left in it (VS Code's IPC sockets, ``torchrun``'s folders, a user's temporary files) goes
when it stops, and nothing of it sits in the machine's shared ``/tmp``.

Writes (reserve, start, release) run under an exclusive ``flock`` so check and reserve are
one step across processes; reads (:meth:`LocalLedgerStore.snapshot`) take no lock and
write nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from .cgroups import Fence, Limits, open_fence, unit_name
from .ledger import Device, Ledger
from .model import Allocation, GpuhubConfig, Kind, SpawnRequest


def encode(alloc: Allocation) -> dict[str, Any]:
    d = asdict(alloc)
    d["since"] = alloc.since.isoformat() if alloc.since else None
    d["devices"] = list(alloc.devices)
    return d


def decode(d: dict[str, Any]) -> Allocation:
    d = dict(d)
    d["since"] = datetime.fromisoformat(d["since"]) if d.get("since") else None
    for k in ("devices", "pods", "nodes"):
        d[k] = tuple(d.get(k, ()))
    return Allocation(**d)


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks (``None`` if gone): tells PID reuse apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, start: str | None) -> bool:
    now = process_start(pid)
    return now is not None and (start is None or now == start)


@dataclass
class Unit:
    """One server or job: what it holds and where its processes are."""

    key: str
    kind: Kind
    user: str
    alloc: Allocation | None
    owner_pid: int
    owner_start: str | None
    started: bool = False
    pid: int | None = None
    url: str | None = None
    oom_seen: int = 0

    @property
    def name(self) -> str:
        return unit_name(self.key)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["alloc"] = encode(self.alloc) if self.alloc else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Unit:
        d = {k: v for k, v in d.items() if k in _UNIT_FIELDS}
        d["alloc"] = decode(d["alloc"]) if d.get("alloc") else None
        return cls(**d)


_UNIT_FIELDS = {f.name for f in fields(Unit)}


def is_live(unit: Unit, pids: set[int]) -> bool:
    """A unit counts while any process is in it, or while it is an unstarted reservation
    of a live owner (a spawn or job start in progress)."""
    if pids:
        return True
    return not unit.started and alive(unit.owner_pid, unit.owner_start)


RUN_ROOT = Path("/run/gpuhub")
"""Where a hub running as root keeps its units' temporary folders (only root may create
folders in ``/run``)."""


def tmp_root(state_dir: Path) -> Path:
    """The folder of one data directory's unit temporary folders: ``/run/gpuhub/<tag>`` as
    root, else ``<tmp>/gpuhub-<uid>-<tag>`` (``<tag>``: 8 hex digits of the data directory).

    Short on purpose: Unix socket paths hold at most 107 bytes, and code-server's sockets
    (``jupyter-server-proxy-*/socket``, ``vscode-ipc-<uuid>.sock``) live in ``TMPDIR``."""
    tag = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
    if os.geteuid() == 0:
        return RUN_ROOT / tag
    return Path(tempfile.gettempdir()) / f"gpuhub-{os.getuid()}-{tag}"


def unit_tmp_dir(state_dir: Path, key: str) -> Path:
    """The private temporary folder (``TMPDIR``) of the unit of ``key``."""
    return tmp_root(state_dir) / unit_name(key)


def _own_folder(path: Path, mode: int) -> None:
    """``path`` as a real folder of this process's user with ``mode``; refuses a folder or
    link someone else made there first (a shared ``/tmp``)."""
    path.mkdir(mode=mode, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(
            f"{path} is not a folder of uid {os.geteuid()}: remove it and start again"
        )
    path.chmod(mode)


class LocalLedgerStore:
    """Units and the ledger under ``state_dir`` (``units.json`` + ``units.lock``)."""

    def __init__(self, state_dir: Path, fence: Fence | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_dir.chmod(0o700)
        self.path = self.state_dir / "units.json"
        self.lock_path = self.state_dir / "units.lock"
        self.fence = fence or open_fence(self.state_dir)
        self.tmp_root = tmp_root(self.state_dir)
        self._me = (os.getpid(), process_start(os.getpid()))

    def tmp_dir(self, key: str) -> Path:
        """The unit's private temporary folder (its ``TMPDIR``)."""
        return unit_tmp_dir(self.state_dir, key)

    def _end(self, name: str, main_pid: int | None) -> None:
        """Kill the unit's processes, remove its cgroups and its temporary folder."""
        self.fence.kill(name, main_pid)
        shutil.rmtree(self.tmp_root / name, ignore_errors=True)

    # -- file --------------------------------------------------------------------------
    def _load(self) -> dict[str, Unit]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        out = {}
        for d in data.get("units", []) if isinstance(data, dict) else []:
            try:
                u = Unit.from_json(d)
            except (TypeError, ValueError, KeyError):
                continue
            out[u.key] = u
        return out

    def _save(self, units: dict[str, Unit]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"units": [u.to_json() for u in units.values()]}, f, indent=1)
        os.replace(tmp, self.path)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Unit]]:
        """The live units under the lock; dead ones are dropped (their cgroups removed)
        and the result written back when the block ends."""
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            units = {}
            for key, u in self._load().items():
                if is_live(u, self.fence.pids(u.name, u.pid)):
                    units[key] = u
                else:
                    self._end(u.name, None)
            yield units
            self._save(units)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- reading (no lock, no write) -------------------------------------------------------
    def units(self) -> dict[str, Unit]:
        """Every live unit by key."""
        return {k: u for k, u in self._load().items() if is_live(u, self.fence.pids(u.name, u.pid))}

    def get(self, key: str) -> Unit | None:
        return self.units().get(key)

    def snapshot(self, config: GpuhubConfig, devices: Iterable[Device]) -> Ledger:
        """The ledger of what runs now (for the form, the dialog and checks)."""
        ledger = Ledger(config, tuple(devices))
        ledger.replace(u.alloc for u in self.units().values() if u.alloc is not None)
        return ledger

    # -- writing -----------------------------------------------------------------------------
    def reserve(
        self,
        config: GpuhubConfig,
        devices: Iterable[Device],
        key: str,
        request: SpawnRequest,
        groups: Iterable[str],
        kind: Kind = "notebook",
    ) -> Allocation | None:
        """Check the quota and devices and record a unit for ``key``, in one step under
        the machine-wide lock; raises ``QuotaDenied``.  A unit of the same key that still
        runs is replaced (the caller stops it first)."""
        with self._locked() as units:
            ledger = Ledger(config, tuple(devices))
            ledger.replace(u.alloc for k, u in units.items() if u.alloc and k != key)
            alloc = ledger.reserve(key, request, groups, kind=kind)
            units[key] = Unit(
                key=key,
                kind=kind,
                user=request.user,
                alloc=alloc,
                owner_pid=self._me[0],
                owner_start=self._me[1],
            )
            return alloc

    def prepare(self, key: str, limits: Limits, owner: tuple[int, int] | None = None) -> list[str]:
        """Create the unit's cgroups with ``limits`` and its empty temporary folder, owned
        by ``owner`` (uid, gid; ``None``: this process's); the files a new process writes
        its PID to (see :func:`gpuhub.cgroups.join`).  Blocking: call in a thread."""
        self.fence.create(unit_name(key), limits)
        if os.geteuid() == 0:
            _own_folder(RUN_ROOT, 0o711)
        _own_folder(self.tmp_root, 0o711)  # users reach their own folder, list nobody's
        tmp = self.tmp_dir(key)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        if owner is not None:
            os.chown(tmp, *owner)
        return self.fence.join_files(unit_name(key))

    def started(self, key: str, pid: int, url: str | None = None) -> None:
        """The unit's main process runs (it is in the cgroup): from now on the unit
        counts while any process of it lives."""
        with self._locked() as units:
            u = units.get(key)
            if u is not None:
                u.started, u.pid, u.url = True, pid, url

    def note_url(self, key: str, url: str) -> None:
        """Where the unit's server will listen (recorded before it starts, so a hub that
        restarts mid-spawn can re-attach to it)."""
        with self._locked() as units:
            if key in units:
                units[key].url = url

    def note_oom(self, key: str, seen: int) -> None:
        with self._locked() as units:
            if key in units:
                units[key].oom_seen = seen

    def release(self, key: str) -> None:
        """Kill everything in the unit and forget it.  Blocking (waits until the
        cgroup is empty, bounded): call in a thread from a coroutine."""
        u = self._load().get(key)
        self._end(unit_name(key), u.pid if u else None)
        with self._locked() as units:
            units.pop(key, None)
