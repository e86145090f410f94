"""The ledger shared by every gpuhub process on one machine (the hub and the jobs service).

Each operation takes an exclusive ``flock``, rebuilds a :class:`~gpuhub.ledger.Ledger`
from what is really running, applies the change and writes the pending reservations
back — all synchronously, so no other coroutine or process can slip in between check and
reserve.

Truth is read from ``/proc``: every process gpuhub starts (notebook server, job worker)
carries its allocation in the ``GPUHUB_ALLOCATION`` environment variable, inherited by its
children.  The state file only holds reservations whose process may not exist yet; a
reservation is dropped once the process that made it (its owner) is gone and no live
process carries its key.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from .ledger import Device, Ledger
from .model import Allocation, GpuhubConfig, Kind, SpawnRequest

ENV_MARKER = "GPUHUB_ALLOCATION"
#: which ledger (its state directory) a marked process belongs to: two gpuhub instances on
#: one machine (e.g. parallel test runs) never count each other's processes
LEDGER_MARKER = "GPUHUB_LEDGER"
_MARKER_BYTES = ENV_MARKER.encode() + b"="


def encode(alloc: Allocation) -> str:
    d = asdict(alloc)
    d["since"] = alloc.since.isoformat() if alloc.since else None
    d["devices"] = list(alloc.devices)
    return json.dumps(d, separators=(",", ":"), sort_keys=True)


def decode(text: str) -> Allocation:
    d: dict[str, Any] = json.loads(text)
    d["since"] = datetime.fromisoformat(d["since"]) if d.get("since") else None
    d["devices"] = tuple(d.get("devices", ()))
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


def scan_processes(ledger: str, proc: Path = Path("/proc")) -> dict[str, tuple[Allocation, int]]:
    """Allocations carried by live processes of ``ledger``, by key (with one PID each)."""
    found: dict[str, tuple[Allocation, int]] = {}
    ledger_mark = f"{LEDGER_MARKER}={ledger}".encode() + b"\0"
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if _MARKER_BYTES not in env or ledger_mark not in env + b"\0":
            continue
        for item in env.split(b"\0"):
            if item.startswith(_MARKER_BYTES):
                try:
                    alloc = decode(item[len(_MARKER_BYTES) :].decode())
                except (ValueError, TypeError, KeyError):
                    break
                if alloc.key not in found:
                    found[alloc.key] = (alloc, int(entry.name))
                break
    return found


class LocalLedgerStore:
    """A machine-wide ledger under ``state_dir`` (``ledger.json`` + ``ledger.lock``)."""

    def __init__(
        self,
        config: GpuhubConfig,
        devices: Iterable[Device],
        state_dir: Path,
        scan: Callable[[str], dict[str, tuple[Allocation, int]]] = scan_processes,
    ) -> None:
        self.config = config
        self.devices = tuple(devices)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.state_dir / "ledger.json"
        self.lock_path = self.state_dir / "ledger.lock"
        self.ledger_id = str(self.state_dir.resolve())
        self._scan = scan
        self._me = (os.getpid(), process_start(os.getpid()))

    # -- file --------------------------------------------------------------------------
    def _load(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return list(data.get("reservations", [])) if isinstance(data, dict) else []

    def _save(self, records: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"reservations": records}, indent=1))
        os.replace(tmp, self.path)

    @contextmanager
    def _locked(self) -> Iterator[tuple[Ledger, list[dict[str, Any]]]]:
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            running = self._scan(self.ledger_id)
            records = []
            for r in self._load():
                key = r["alloc"]["key"]
                if key in running or alive(r["owner_pid"], r.get("owner_start")):
                    records.append(r)
            ledger = Ledger(self.config, self.devices)
            ledger.replace(decode(json.dumps(r["alloc"])) for r in records)
            for key, (alloc, _pid) in running.items():
                if ledger.get(key) is None:
                    ledger.add(alloc)
            yield ledger, records
            self._save(records)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- operations (all synchronous) -----------------------------------------------------
    def reserve(
        self, key: str, request: SpawnRequest, groups: Iterable[str], kind: Kind = "notebook"
    ) -> Allocation | None:
        """Check and reserve under the machine-wide lock; raises ``QuotaDenied``."""
        with self._locked() as (ledger, records):
            alloc = ledger.reserve(key, request, groups, kind=kind)
            records[:] = [r for r in records if r["alloc"]["key"] != key]
            if alloc is not None:
                records.append(
                    {
                        "alloc": json.loads(encode(alloc)),
                        "owner_pid": self._me[0],
                        "owner_start": self._me[1],
                    }
                )
            return alloc

    def release(self, key: str) -> None:
        """Drop the reservation under ``key`` (the process is stopped or never started)."""
        with self._locked() as (_ledger, records):
            records[:] = [r for r in records if r["alloc"]["key"] != key]

    def snapshot(self) -> Ledger:
        """A consistent copy of the current ledger (for display and checks)."""
        with self._locked() as (ledger, _records):
            return ledger
