"""Cost of one machine-wide reserve + release (flock, unit liveness from cgroups, decision,
state file, and making and removing the unit's cgroups).

    python benchmarks/ledger_reserve.py --n 500

This is the work ``GPULocalSpawner.start()`` adds before JupyterHub's own spawn.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from gpuhub.config import parse_config  # noqa: E402
from gpuhub.inventory import declared  # noqa: E402
from gpuhub.localstate import LocalLedgerStore  # noqa: E402
from gpuhub.profiles import validate_options  # noqa: E402
from gpuhub.spawners.local import unit_limits  # noqa: E402
from localconfig import CONFIG  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    cfg = parse_config(CONFIG)
    procs = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalLedgerStore(Path(tmp))
        devices = declared(cfg).devices
        req = validate_options(cfg, "alice", ["vision"], {"profile": "gpu"})
        limits = unit_limits(req.profile, devices, None, pids=4096)
        samples = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            store.reserve(cfg, devices, "server:alice/", req, ["vision"])
            store.prepare("server:alice/", limits)
            store.release("server:alice/")
            samples.append(time.perf_counter() - t0)
    samples.sort()
    print(
        f"{args.n} reserve+prepare+release with {procs} processes, units: "
        f"{store.fence.mechanism}: "
        f"median {statistics.median(samples) * 1e3:.2f} ms, "
        f"p95 {samples[int(0.95 * len(samples))] * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
