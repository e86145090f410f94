"""Time-to-ready of GPULocalSpawner vs JupyterHub's plain SimpleLocalProcessSpawner.

Two real hubs (each with configurable-http-proxy) run side by side; spawns alternate
between them so both see the same machine load.  Time-to-ready = from the REST start
request to the server answering ``ready`` in the user model, polled every 50 ms.

    python benchmarks/spawn_time.py --rounds 10

Prints each round, the medians and the ratio gpuhub/plain (target ≤ 1.05).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from hubproc import Hub, auth  # noqa: E402
from localconfig import CONFIG  # noqa: E402


def time_to_ready(hub: Hub, user: str, token: str, options: dict | None) -> float:
    t0 = time.perf_counter()
    r = requests.post(
        f"{hub.api}/users/{user}/server", json=options, headers=auth(token), timeout=120
    )
    r.raise_for_status()
    while True:
        server = hub.user_model(user, token)["servers"].get("")
        if server and server.get("ready"):
            return time.perf_counter() - t0
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--profile", default="gpu", help="gpuhub profile to spawn (gpu or cpu)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o711)  # users' accounts pass through to their homes
        gpuhub = Hub(Path(tmp) / "gpuhub", CONFIG)
        plain = Hub(
            Path(tmp) / "plain",
            CONFIG,
            extra_args=[
                "--JupyterHub.spawner_class=simple",
                f"--SimpleLocalProcessSpawner.home_dir_template={tmp}/plain/users/{{username}}",
                "--SimpleLocalProcessSpawner.args=['--allow-root']",
                "--SimpleLocalProcessSpawner.default_url=/lab",
            ],
        )
        try:
            gpuhub.start()
            plain.start()
            tokens = {h.data_dir.name: h.token("alice") for h in (gpuhub, plain)}
            options = {"profile": args.profile}
            times: dict[str, list[float]] = {"gpuhub": [], "plain": []}
            # one warm-up spawn each (first imports fill the page cache)
            for h in (gpuhub, plain):
                time_to_ready(h, "alice", tokens[h.data_dir.name], options if h is gpuhub else None)
                h.stop_server("alice", tokens[h.data_dir.name])
            for i in range(args.rounds):
                order = (gpuhub, plain) if i % 2 == 0 else (plain, gpuhub)
                for h in order:
                    name = h.data_dir.name
                    t = time_to_ready(h, "alice", tokens[name], options if h is gpuhub else None)
                    times[name].append(t)
                    h.stop_server("alice", tokens[name])
                print(
                    f"round {i + 1:2d}: gpuhub {times['gpuhub'][-1]:.3f}s  "
                    f"plain {times['plain'][-1]:.3f}s",
                    flush=True,
                )
        finally:
            gpuhub.stop()
            plain.stop()
    mg, mp = statistics.median(times["gpuhub"]), statistics.median(times["plain"])
    print(
        f"median time-to-ready: gpuhub ({args.profile} profile) {mg:.3f}s, "
        f"plain SimpleLocalProcessSpawner {mp:.3f}s"
    )
    print(f"ratio gpuhub/plain: {mg / mp:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
