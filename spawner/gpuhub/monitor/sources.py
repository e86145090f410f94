"""Where GPU utilisation comes from: the :class:`Source` interface and the
:class:`ReplaySource` fed from a recorded trace (tests and the benchmark).

A source answers, for one allocation and the devices it holds, one
:class:`DeviceSample` per GPU it can read (an empty tuple when it knows nothing; the
culling policy never acts on nothing).

Trace format (JSON Lines, one object per line; blank lines and lines starting with
``#`` are skipped)::

    {"key": "server:alice/", "t": 0,   "util": 0,  "memory_mib": 300}
    {"key": "server:alice/", "t": 600, "util": 85, "memory_mib": 30000, "gpu": 1}
    {"key": "*",             "t": 0,   "util": 40}

- ``key``: an allocation key (``server:<user>/<server name>`` or ``job:<id>``), or ``*``
  for every allocation that has no rows of its own;
- ``t``: seconds since the allocation started (its ``since``), ≥ 0;
- ``util``: utilisation in percent, 0–100; ``memory_mib``: memory used (default 0);
- ``gpu``: the position of the GPU within the allocation (0 = its first GPU); absent,
  the row applies to every GPU of the allocation.

The value at a time is the latest row at or before it (a step function); before an
allocation's first row nothing is known.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import GpuhubError
from ..ledger import Device
from ..model import Allocation

MIB = 1 << 20


@dataclass(frozen=True)
class DeviceSample:
    """One GPU of an allocation at one moment: ``gpu`` is its UUID or index."""

    gpu: str
    utilization: float
    memory_used: int


class SourceUnavailable(GpuhubError):
    """The configured source cannot be read (e.g. no NVML); the message names the fix."""


class Source(Protocol):
    """Reads the utilisation of the GPUs one allocation holds.  May block (NVML): the
    service calls it in a thread."""

    name: str

    def read(
        self, alloc: Allocation, devices: Sequence[Device], now: float
    ) -> tuple[DeviceSample, ...]:
        """The samples of ``alloc``'s GPUs (``devices``, in the allocation's order) at
        ``now`` (seconds since the epoch)."""
        ...


@dataclass(frozen=True)
class TraceRow:
    t: float
    util: float
    memory_mib: float = 0.0


class TraceError(GpuhubError):
    """A trace file that does not follow the format; names the line."""


def _row(obj: Any, where: str) -> tuple[str, int | None, TraceRow]:
    if not isinstance(obj, dict):
        raise TraceError(f"{where}: expected a JSON object")
    key, t, util = obj.get("key"), obj.get("t"), obj.get("util")
    gpu, mem = obj.get("gpu"), obj.get("memory_mib", 0)
    if not isinstance(key, str) or not key:
        raise TraceError(f"{where}: key must be an allocation key or '*'")
    for name, v, lo, hi in (
        ("t", t, 0, None),
        ("util", util, 0, 100),
        ("memory_mib", mem, 0, None),
    ):
        if isinstance(v, bool) or not isinstance(v, int | float) or v < lo or (hi and v > hi):
            bounds = f"{lo}..{hi}" if hi else f">= {lo}"
            raise TraceError(f"{where}: {name} must be a number {bounds}")
    if gpu is not None and (isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0):
        raise TraceError(f"{where}: gpu must be a whole number >= 0")
    return key, gpu, TraceRow(float(t), float(util), float(mem))  # type: ignore[arg-type]


def parse_trace(
    lines: Sequence[str], source: str = "trace"
) -> dict[str, dict[int | None, list[TraceRow]]]:
    """``{key: {gpu position or None: rows sorted by t}}`` from the trace's lines."""
    out: dict[str, dict[int | None, list[TraceRow]]] = defaultdict(lambda: defaultdict(list))
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise TraceError(f"{source}:{n}: not JSON ({e})") from e
        key, gpu, row = _row(obj, f"{source}:{n}")
        out[key][gpu].append(row)
    for per_gpu in out.values():
        for rows in per_gpu.values():
            rows.sort(key=lambda r: r.t)
    return {k: dict(v) for k, v in out.items()}


def _at(rows: list[TraceRow], t: float) -> TraceRow | None:
    i = bisect.bisect_right([r.t for r in rows], t)
    return rows[i - 1] if i else None


class ReplaySource:
    """Utilisation replayed from a trace (see the module's docstring for the format)."""

    name = "replay"

    def __init__(self, trace: dict[str, dict[int | None, list[TraceRow]]]) -> None:
        self.trace = trace

    @classmethod
    def from_file(cls, path: Path | str) -> ReplaySource:
        p = Path(path)
        try:
            lines = p.read_text().splitlines()
        except OSError as e:
            raise SourceUnavailable(f"cannot read the replay trace {p} ({e.strerror})") from e
        return cls(parse_trace(lines, str(p)))

    def read(
        self, alloc: Allocation, devices: Sequence[Device], now: float
    ) -> tuple[DeviceSample, ...]:
        per_gpu = self.trace.get(alloc.key) or self.trace.get("*")
        if not per_gpu or alloc.since is None:
            return ()
        t = now - alloc.since.timestamp()
        out = []
        for pos in range(alloc.gpus):
            row = _at(per_gpu.get(pos, []), t) or _at(per_gpu.get(None, []), t)
            if row is None:
                continue
            label = str(alloc.devices[pos]) if pos < len(alloc.devices) else str(pos)
            out.append(DeviceSample(label, row.util, int(row.memory_mib * MIB)))
        return tuple(out)
