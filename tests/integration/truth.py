"""What really runs for a hub, observed from outside it (as root, from ``/proc``), so
tests can compare the hub's ledger with the processes holding GPUs.

A process belongs to a unit of the hub when its ``pids`` cgroup lies under the hub's
unit root (``<data>/state/cgroups.json``); its GPUs are its ``CUDA_VISIBLE_DEVICES``; its
charge comes from the hub's record of the unit (``<data>/state/units.json``)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Observed:
    pids: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    devices: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    """Per unit: the devices its live processes were given."""

    def held_twice(self) -> set[int]:
        seen: set[int] = set()
        twice: set[int] = set()
        for devs in self.devices.values():
            twice |= seen & devs
            seen |= devs
        return twice


def observe(data_dir: Path) -> Observed:
    root = Path(json.loads((data_dir / "state" / "cgroups.json").read_text())["bases"]["pids"])
    tag = "/" + root.name + "/"
    out = Observed()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cg = (entry / "cgroup").read_text()
            status = (entry / "status").read_text()
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if "\nState:\tZ" in status:
            continue
        line = next((ln for ln in cg.splitlines() if ln.split(":")[1] == "pids"), "")
        if tag not in line:
            continue
        unit = line.rsplit("/", 1)[1]
        out.pids[unit].add(int(entry.name))
        for item in env.split(b"\0"):
            if item.startswith(b"CUDA_VISIBLE_DEVICES="):
                value = item.split(b"=", 1)[1].decode()
                out.devices[unit] |= {int(d) for d in value.split(",") if d.strip()}
    return out


def group_usage(data_dir: Path, observed: Observed) -> dict[str, int]:
    """GPUs per group of the units that have live processes (the hub's charge)."""
    try:
        units = json.loads((data_dir / "state" / "units.json").read_text())["units"]
    except (OSError, ValueError):
        units = []
    from gpuhub.cgroups import unit_name

    used: dict[str, int] = defaultdict(int)
    for u in units:
        if u.get("alloc") and observed.pids.get(unit_name(u["key"])):
            used[u["alloc"]["group"]] += u["alloc"]["gpus"]
    return dict(used)
