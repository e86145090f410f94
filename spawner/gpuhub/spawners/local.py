"""``GPULocalSpawner``: the embedded one-machine default.

Each single-user server is a local process (JupyterHub's ``LocalProcessSpawner``):

- run as the hub user's own system account (:mod:`gpuhub.accounts`), home
  ``<data>/users/<name>`` with mode 0700, when the hub runs as root;
- in a unit of its own (:mod:`gpuhub.cgroups`): the profile's memory and CPU limits, a
  process limit, and only its allocated ``/dev/nvidia<N>`` openable;
- with exactly its devices in ``CUDA_VISIBLE_DEVICES`` (none for a CPU server);
- with VS Code in the browser on a private Unix socket (:mod:`gpuhub.vscode`).

The ledger is the machine-wide :class:`~gpuhub.localstate.LocalLedgerStore`, rebuilt
from the units that really run.  A stop kills the whole unit; after a hub restart a unit
the hub still knows is adopted (its URL is recorded), any other is stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner
from jupyterhub.utils import random_port
from traitlets import Integer, Unicode, default

from ..accounts import DEFAULT_PREFIX, Account, account_name, ensure_account
from ..cgroups import Limits, join
from ..config import CONFIG_ENV
from ..datadir import resolve_data_dir
from ..inventory import Inventory, discover
from ..ledger import Device, Ledger
from ..localstate import LocalLedgerStore, Unit, unit_tmp_dir
from ..model import Allocation, GpuhubConfig, Kind, Profile, SpawnRequest
from ..sizes import human, to_bytes
from ..vscode import vscode_env
from .base import GpuhubSpawnerMixin

_stores: dict[str, LocalLedgerStore] = {}
_inventories: dict[Any, Inventory] = {}
_swept: set[str] = set()


def default_data_dir() -> str:
    """The data directory as the hub finds it (:func:`gpuhub.datadir.resolve_data_dir`)."""
    return str(resolve_data_dir(os.environ.get(CONFIG_ENV)))


def state_dir(data_dir: str) -> Path:
    """Where the machine-wide ledger of a data directory lives (root-only)."""
    return Path(data_dir) / "state"


def local_store(data_dir: str) -> LocalLedgerStore:
    """The one store of a data directory in this process."""
    if data_dir not in _stores:
        _stores[data_dir] = LocalLedgerStore(state_dir(data_dir))
    return _stores[data_dir]


def inventory(config: GpuhubConfig) -> Inventory:
    """The local GPUs for ``config`` (NVML is asked again only when the config's GPU
    settings change)."""
    key = (config.local, tuple(sorted((s, t.local_models) for s, t in config.gpu_types.items())))
    if key not in _inventories:
        _inventories[key] = discover(config)
    return _inventories[key]


@dataclass
class LocalBackend:
    """The ledger backend of one config on this machine (see ``LedgerBackend``)."""

    store: LocalLedgerStore
    config: GpuhubConfig
    devices: tuple[Device, ...]

    def reserve(
        self, key: str, request: SpawnRequest, groups: Iterable[str], kind: Kind = "notebook"
    ) -> Allocation | None:
        return self.store.reserve(self.config, self.devices, key, request, groups, kind)

    def release(self, key: str) -> None:
        self.store.release(key)

    def snapshot(self) -> Ledger:
        return self.store.snapshot(self.config, self.devices)

    def capacity(self) -> dict[str, tuple[int, int]]:
        """``{gpu_type: (total, free)}`` on this machine."""
        ledger = self.snapshot()
        return {
            t: (
                sum(1 for d in self.devices if d.type == t),
                len(ledger.free_devices(t) or []),
            )
            for t in self.config.gpu_types
        }


def local_backend(config: GpuhubConfig, data_dir: str) -> LocalBackend:
    return LocalBackend(local_store(data_dir), config, inventory(config).devices)


def device_env(alloc: Allocation | None) -> dict[str, str]:
    """What a process sees of the GPUs: exactly its own devices, or none at all."""
    if alloc is None:
        return {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
    devices = ",".join(str(d) for d in alloc.devices)
    return {"CUDA_VISIBLE_DEVICES": devices, "NVIDIA_VISIBLE_DEVICES": devices}


def unit_limits(
    profile: Profile, devices: Iterable[Device], alloc: Allocation | None, pids: int, scale: int = 1
) -> Limits:
    """The profile's memory and CPU (times ``scale`` workers), ``pids`` processes, and
    every GPU but the allocated ones fenced off."""
    mine = set(alloc.devices) if alloc else set()
    return Limits(
        memory=to_bytes(profile.memory) * scale,
        cpu=profile.cpu * scale,
        pids=pids,
        denied_gpus=tuple(d.minor for d in devices if d.index not in mine),
    )


def run_as(account: Account | None, cgroup_files: list[str], home: str) -> Callable[[], None]:
    """A ``preexec_fn``: join the unit, drop to the account, private umask, cd home."""

    def preexec() -> None:
        join(cgroup_files)
        if account is not None:
            os.setgid(account.gid)
            os.setgroups([account.gid])
            os.setuid(account.uid)
        os.umask(0o077)
        os.chdir(home)

    return preexec


def oom_notice(profile_memory: str, when: datetime) -> str:
    limit = human(to_bytes(profile_memory))
    return (
        f"Out of memory at {when:%H:%M} UTC: your server reached its {limit}"
        " memory limit and the process using the most memory (usually a kernel) was killed."
        " Use less memory, or start a profile with more."
    )


class GPULocalSpawner(GpuhubSpawnerMixin, LocalProcessSpawner):
    """Local-process spawner with per-user accounts, cgroup limits, GPU fencing and
    group quotas."""

    data_dir = Unicode(
        config=True,
        help="""Where gpuhub keeps user homes (``users/<name>``) and the machine-wide
        ledger (``state/``).  Defaults to ``$GPUHUB_DATA``, else ``~/.local/share/gpuhub``.

        .. versionadded:: 0.1
        """,
    )

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return default_data_dir()

    account_prefix = Unicode(
        DEFAULT_PREFIX,
        config=True,
        help="""Prefix of the system account made for each hub user when the hub runs as
        root (hub user ``alice`` runs as ``gpuhub-alice``).  Accounts are system accounts
        with no login shell and no password.

        .. versionadded:: 0.1
        """,
    )

    pids_limit = Integer(
        4096,
        config=True,
        help="""Most processes and threads one server may have at once (a fork bomb stops
        there).

        .. versionadded:: 0.1
        """,
    )

    @default("saved_options_file")
    def _default_local_saved_options_file(self) -> str:
        return os.path.join(self.data_dir, "saved-options.json")

    @default("home_dir_template")
    def _default_home_dir_template(self) -> str:
        return os.path.join(self.data_dir, "users", "{username}")

    @default("default_url")
    def _default_default_url(self) -> str:
        return "/lab"

    home_dir_template = Unicode(
        config=True,
        help="""Home of each user (``{username}`` is the hub name).  Default
        ``<data_dir>/users/{username}``.

        .. versionadded:: 0.1
        """,
    )

    _gpuhub_alloc: Allocation | None = None
    _account: Account | None = None
    _preexec: Callable[[], None] | None = None
    _notice: str = ""

    @property  # type: ignore[override]
    def gpuhub_notice(self) -> str:
        """Why the last server ended or what hit its limits (checked when shown)."""
        if self.server is not None:
            self._check_oom()
        return self._notice

    # -- the ledger ------------------------------------------------------------------------
    @property
    def home_dir(self) -> str:
        return self.home_dir_template.format(username=self.user.name)

    @property
    def _local(self) -> LocalBackend:
        return local_backend(self.gpuhub, self.data_dir)

    def gpuhub_backend(self) -> LocalBackend:
        self._sweep_once()
        return self._local

    def gpuhub_capacity(self) -> tuple[dict[str, tuple[int, int]], str, bool]:
        return self._local.capacity(), inventory(self.gpuhub).source, False

    def _unit(self) -> Unit | None:
        return self._local.store.get(self.gpuhub_key)

    def _sweep_once(self) -> None:
        """Once per hub process: stop every server unit the hub does not know (a server
        started just before a hub crash whose record never made it), so nothing the hub
        lost track of keeps holding a GPU."""
        if self.data_dir in _swept:
            return
        from jupyterhub import orm
        from sqlalchemy.orm import object_session

        db = object_session(self.orm_spawner) if self.orm_spawner is not None else None
        if db is None:
            return  # not attached to the hub's database yet: sweep on a later call
        _swept.add(self.data_dir)
        known = {
            f"server:{s.user.name}/{s.name}"
            for s in db.query(orm.Spawner).filter(orm.Spawner.server_id.isnot(None))
        }
        store = self._local.store
        for key, unit in store.units().items():
            if unit.kind == "notebook" and key not in known:
                self.log.warning("gpuhub: stopping %s: no server of the hub owns it", key)
                store.release(key)

    # -- start / poll / stop -----------------------------------------------------------------
    async def start(self) -> Any:
        request, self._gpuhub_alloc = self.claim_resources()  # before any await
        key = self.gpuhub_key
        store = self._local.store
        try:
            await self.save_default()
            await asyncio.to_thread(self._prepare, request)
            if not self.port:
                self.port = random_port()
            url = f"http://{self.ip or '127.0.0.1'}:{self.port}"
            await asyncio.to_thread(store.note_url, key, url)
            result = await super().start()
            await asyncio.to_thread(store.started, key, self.pid, url)
            await self._listening()
            return result
        except BaseException:
            await asyncio.to_thread(store.release, key)
            self._gpuhub_alloc = None
            raise

    async def _listening(self) -> None:
        """Return once the server accepts connections (polled every 50 ms), so the hub's
        own check, whose retries back off with random jitter, finds it at its first try;
        a server that exits first is reported with its exit code."""
        host = self.ip or "127.0.0.1"
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited with code {self.proc.returncode} before it answered"
                    " (see the hub's log for its output)"
                )
            try:
                _reader, writer = await asyncio.open_connection(host, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    def _prepare(self, request: SpawnRequest) -> None:
        """Account, home and unit (blocking: runs in a thread)."""
        home = Path(self.home_dir)
        if os.geteuid() == 0:
            home.parent.mkdir(parents=True, exist_ok=True)
            home.parent.chmod(0o711)
            name = account_name(self.account_prefix, self.user.name)
            self._account = ensure_account(name, self.user.name, home)
        else:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._account = None
        backend = self._local
        limits = unit_limits(request.profile, backend.devices, self._gpuhub_alloc, self.pids_limit)
        owner = (self._account.uid, self._account.gid) if self._account else None
        files = backend.store.prepare(self.gpuhub_key, limits, owner)
        self._preexec = run_as(self._account, files, str(home))

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        assert self._preexec is not None, "start() prepares the unit first"
        return self._preexec

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        env["USER"] = env["LOGNAME"] = self._account.name if self._account else self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = "/bin/bash"
        return env

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        env.update(device_env(self._gpuhub_alloc))
        env.update(vscode_env(self.home_dir))
        env["TMPDIR"] = str(unit_tmp_dir(state_dir(self.data_dir), self.gpuhub_key))
        return env

    async def poll(self) -> int | None:
        self._sweep_once()
        if self.proc is not None:
            status: int | None = self.proc.poll()
            if status is not None:
                self._check_oom()
                return status
        unit = await asyncio.to_thread(self._unit)
        if unit is None:
            self.clear_state()
            return 0
        pids = self._local.store.fence.pids(unit.name, unit.pid)
        main = self.pid or unit.pid
        if main and main not in pids:
            self._check_oom()
            return 0  # the server itself ended; stop() kills what it left behind
        self._check_oom(unit)
        return None

    def _check_oom(self, unit: Unit | None = None) -> None:
        unit = unit or self._unit()
        if unit is None:
            return
        kills = self._local.store.fence.oom_kills(unit.name)
        if kills > unit.oom_seen:
            self._local.store.note_oom(unit.key, kills)
            profile = self.gpuhub.profile(str((self.user_options or {}).get("profile", "")))
            memory = profile.memory if profile else "2G"
            self._notice = oom_notice(memory, datetime.now(UTC))
            self.log.warning("gpuhub: %s: out-of-memory kill in its unit", self.gpuhub_key)

    async def stop(self, now: bool = False) -> None:
        try:
            if not now and self.pid and await self.poll() is None:
                try:
                    os.kill(self.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                else:
                    await self.wait_for_death(self.term_timeout)
        finally:
            await asyncio.to_thread(self._local.store.release, self.gpuhub_key)
            self._gpuhub_alloc = None
            self.clear_state()

    async def get_url(self) -> str:
        """After a hub restart: the URL the server was started at (recorded in its unit),
        so JupyterHub re-attaches to a server it lost track of mid-spawn."""
        unit = await asyncio.to_thread(self._unit)
        if unit is not None and unit.url:
            return f"{unit.url}{self.server.base_url}" if self.server else unit.url
        url: str = await super().get_url()
        return url

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        unit = self._unit()
        if unit is not None:
            self._gpuhub_alloc = unit.alloc
            if not self.pid and unit.pid:
                self.pid = unit.pid
