"""Utilisation from NVML (``nvidia-ml-py``) for the GPUs an allocation holds on this
machine.  ``pynvml`` is imported when the source is opened, not before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..ledger import Device
from ..model import Allocation
from .sources import DeviceSample, SourceUnavailable

FIX = (
    "install the NVIDIA driver (and nvidia-ml-py in the hub's environment), or set "
    "monitor.source to replay in the gpuhub YAML"
)


class NvmlSource:
    """Reads each device by UUID when the inventory knows it (indices may be renumbered
    by ``CUDA_VISIBLE_DEVICES`` elsewhere, UUIDs never), else by index."""

    name = "nvml"

    def __init__(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as e:  # ImportError, or NVMLError (no driver, no library)
            raise SourceUnavailable(f"NVML is not available ({e}): {FIX}") from e
        self._nvml: Any = pynvml

    def close(self) -> None:
        self._nvml.nvmlShutdown()

    def _handle(self, device: Device) -> Any:
        n = self._nvml
        if device.uuid:
            return n.nvmlDeviceGetHandleByUUID(device.uuid)
        return n.nvmlDeviceGetHandleByIndex(device.index)

    def read(
        self, alloc: Allocation, devices: Sequence[Device], now: float
    ) -> tuple[DeviceSample, ...]:
        n = self._nvml
        out = []
        for d in devices:
            try:
                h = self._handle(d)
                util = n.nvmlDeviceGetUtilizationRates(h)
                mem = n.nvmlDeviceGetMemoryInfo(h)
            except n.NVMLError:
                continue  # a device that cannot be read is unknown, never idle
            out.append(DeviceSample(d.uuid or str(d.index), float(util.gpu), int(mem.used)))
        return tuple(out)
