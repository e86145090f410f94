"""The local GPU inventory: NVML when a driver is present, else the devices declared in
the config (shown as "declared" in the UI)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .ledger import Device
from .model import GpuhubConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inventory:
    devices: tuple[Device, ...]
    source: str  # "nvml" or "declared"


def nvml_devices() -> list[tuple[int, str, str, int]]:
    """``(index, name, uuid, minor)`` of every GPU NVML sees (``minor``: of its
    ``/dev/nvidia<N>`` node); raises when NVML is unavailable."""
    import pynvml

    pynvml.nvmlInit()
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name: Any = pynvml.nvmlDeviceGetName(h)
            uuid: Any = pynvml.nvmlDeviceGetUUID(h)
            out.append(
                (
                    i,
                    name.decode() if isinstance(name, bytes) else str(name),
                    uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    int(pynvml.nvmlDeviceGetMinorNumber(h)),
                )
            )
        return out
    finally:
        pynvml.nvmlShutdown()


def type_of(config: GpuhubConfig, model_name: str) -> str | None:
    """The configured GPU type whose ``local_models`` lists ``model_name`` exactly."""
    for slug, t in config.gpu_types.items():
        if model_name in t.local_models:
            return slug
    return None


def from_nvml(config: GpuhubConfig, found: list[tuple[int, str, str, int]]) -> Inventory:
    """Map NVML devices to configured types; unknown models are left out (and logged)."""
    devices = []
    for index, name, uuid, minor in found:
        t = type_of(config, name)
        if t is None:
            log.warning(
                "GPU %d (%s) matches no gpu_types[*].local_models entry; it will not be offered",
                index,
                name,
            )
            continue
        devices.append(Device(index=index, type=t, name=name, uuid=uuid, minor_number=minor))
    return Inventory(tuple(devices), "nvml")


def declared(config: GpuhubConfig) -> Inventory:
    return Inventory(
        tuple(
            Device(
                index=d.index,
                type=d.type,
                name=config.gpu_types[d.type].display_name,
                declared=True,
            )
            for d in config.local.devices
        ),
        "declared",
    )


def discover(config: GpuhubConfig) -> Inventory:
    """Follow ``local.inventory``: ``nvml`` requires NVML, ``declared`` never asks it,
    ``auto`` uses NVML when a driver answers and the declared devices otherwise."""
    mode = config.local.inventory
    if mode == "declared":
        return declared(config)
    try:
        found = nvml_devices()
    except Exception as e:
        if mode == "nvml":
            raise ConfigError(
                f"{config.source}: local.inventory",
                f"NVML is not available ({e})",
                "install the NVIDIA driver, or set local.inventory to auto or declared",
            ) from e
        log.info(
            "NVML not available (%s); using the %d declared GPUs", e, len(config.local.devices)
        )
        return declared(config)
    return from_nvml(config, found)
