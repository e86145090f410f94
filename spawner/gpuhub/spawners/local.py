"""``GPULocalSpawner``: the embedded one-machine default.

Single-user servers are local processes (JupyterHub's ``SimpleLocalProcessSpawner``),
each with its own working directory under the data directory and its own GPU device
indices in ``CUDA_VISIBLE_DEVICES``.  GPUs come from NVML or the config's declared
devices; the ledger is the machine-wide :class:`~gpuhub.localstate.LocalLedgerStore`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Unicode, default

from ..inventory import Inventory, discover
from ..localstate import ENV_MARKER, LEDGER_MARKER, LocalLedgerStore, encode
from ..model import Allocation
from .base import GpuhubSpawnerMixin, LedgerBackend

DATA_ENV = "GPUHUB_DATA"

_stores: dict[tuple[str, int], tuple[LocalLedgerStore, Inventory]] = {}


def default_data_dir() -> str:
    return os.environ.get(DATA_ENV) or str(Path.home() / ".local" / "share" / "gpuhub")


def local_store(config_path: str, config: Any, data_dir: str) -> tuple[LocalLedgerStore, Inventory]:
    """One store and inventory per (data dir, config) in this process."""
    key = (data_dir, id(config))
    if key not in _stores:
        inv = discover(config)
        _stores[key] = (LocalLedgerStore(config, inv.devices, Path(data_dir) / "state"), inv)
    return _stores[key]


def device_env(alloc: Allocation | None, ledger_id: str) -> dict[str, str]:
    """What a process sees of the GPUs: exactly its own devices, or none at all; and the
    markers that let the ledger ``ledger_id`` find it in ``/proc``."""
    if alloc is None:
        return {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
    devices = ",".join(str(d) for d in alloc.devices)
    return {
        "CUDA_VISIBLE_DEVICES": devices,
        "NVIDIA_VISIBLE_DEVICES": devices,
        ENV_MARKER: encode(replace(alloc, pending=False)),
        LEDGER_MARKER: ledger_id,
    }


class GPULocalSpawner(GpuhubSpawnerMixin, SimpleLocalProcessSpawner):
    """Local-process spawner with GPU profiles, device isolation and group quotas."""

    data_dir = Unicode(
        config=True,
        help="""Where gpuhub keeps user working directories (``users/<name>``) and the
        machine-wide GPU ledger (``state/``).  Defaults to ``$GPUHUB_DATA``, else
        ``~/.local/share/gpuhub``.

        .. versionadded:: 0.1
        """,
    )

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return default_data_dir()

    jobs_url = Unicode(
        "",
        config=True,
        help="""URL of the gpuhub jobs service through the hub's proxy, given to servers
        as ``$GPUHUB_JOBS_URL`` (the lab extension calls it with ``$JUPYTERHUB_API_TOKEN``).
        Empty: not set.

        .. versionadded:: 0.1
        """,
    )

    @default("home_dir_template")
    def _default_home_dir_template(self) -> str:
        return os.path.join(self.data_dir, "users", "{username}")

    @default("default_url")
    def _default_default_url(self) -> str:
        return "/lab"

    _gpuhub_alloc: Allocation | None = None

    def _store(self) -> tuple[LocalLedgerStore, Inventory]:
        return local_store(self.gpuhub_config_file, self.gpuhub, self.data_dir)

    def gpuhub_backend(self) -> LedgerBackend:
        return self._store()[0]

    def gpuhub_capacity(self) -> tuple[dict[str, tuple[int, int]], str, bool]:
        store, inv = self._store()
        ledger = store.snapshot()
        capacity = {}
        for t in self.gpuhub.gpu_types:
            total = sum(1 for d in inv.devices if d.type == t)
            capacity[t] = (total, len(ledger.free_devices(t) or []))
        return capacity, inv.source, False

    async def start(self) -> Any:
        _request, self._gpuhub_alloc = self.claim_resources()  # before any await
        try:
            return await super().start()
        except BaseException:
            self.release_resources()
            raise

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now=now)
        finally:
            self.release_resources()
            self._gpuhub_alloc = None

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        env.update(device_env(self._gpuhub_alloc, self._store()[0].ledger_id))
        if self.jobs_url:
            env["GPUHUB_JOBS_URL"] = self.jobs_url
        return env

    def get_args(self) -> list[str]:
        args: list[str] = super().get_args()
        if os.geteuid() == 0 and "--allow-root" not in args:
            args.append("--allow-root")
        return args
