"""Time-to-ready of GPULocalSpawner vs JupyterHub's plain SimpleLocalProcessSpawner.

Two real hubs (each with configurable-http-proxy) run side by side; spawns alternate
between them so both see the same machine load.  Two times per spawn:

- time-to-answer: from the REST start request until the server itself answers its
  ``/api`` (found through its process, polled every 10 ms) — the spawner's own work plus
  the server's boot, which is what gpuhub adds to (accounts, cgroups, the ledger);
- time-to-ready: until the hub's user model says ``ready``.  It adds JupyterHub's check of
  the new server, whose retry backoff has random jitter (0.4–2.3 s measured), the same code
  for both hubs: its ratio needs many rounds to settle.

    python benchmarks/spawn_time.py --rounds 20

Prints each round, the medians and the ratios gpuhub/plain (target ≤ 1.05).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from hubproc import Hub, auth  # noqa: E402
from localconfig import CONFIG  # noqa: E402


def server_port(hub: Hub, user: str) -> int | None:
    """The port of ``user``'s server process (a child of the hub), from its environment."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"JUPYTERHUB_API_URL=http://127.0.0.1:{hub.hub_port}/".encode() not in env:
            continue
        if f"JUPYTERHUB_USER={user}\0".encode() not in env + b"\0":
            continue
        for item in env.split(b"\0"):
            if item.startswith(b"JUPYTERHUB_SERVICE_URL="):
                return int(item.decode().rsplit(":", 1)[1].split("/")[0])
    return None


def spawn_times(hub: Hub, user: str, token: str, options: dict | None) -> tuple[float, float]:
    """``(time-to-answer, time-to-ready)`` of one spawn."""
    t0 = time.perf_counter()
    done: list[float] = []

    def post() -> None:
        r = requests.post(
            f"{hub.api}/users/{user}/server", json=options, headers=auth(token), timeout=120
        )
        r.raise_for_status()

    poster = threading.Thread(target=post)
    poster.start()
    answered = None
    while answered is None:
        port = server_port(hub, user)
        if port:
            try:
                if requests.get(f"http://127.0.0.1:{port}/user/{user}/api", timeout=1).ok:
                    answered = time.perf_counter() - t0
            except requests.RequestException:
                pass
        time.sleep(0.01)
    poster.join()
    while True:
        server = hub.user_model(user, token)["servers"].get("")
        if server and server.get("ready"):
            done.append(time.perf_counter() - t0)
            return answered, done[0]
        time.sleep(0.05)


def side_by_side(tmp: str) -> tuple[Hub, Hub]:
    """gpuhub's hub and the baseline (JupyterHub's ``SimpleLocalProcessSpawner``, same
    config and proxy) in folders under ``tmp``; neither started."""
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
    return gpuhub, plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--profile", default="gpu", help="gpuhub profile to spawn (gpu or cpu)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o711)  # users' accounts pass through to their homes
        gpuhub, plain = side_by_side(tmp)
        try:
            gpuhub.start()
            plain.start()
            tokens = {h.data_dir.name: h.token("alice") for h in (gpuhub, plain)}
            options = {"profile": args.profile}
            answer: dict[str, list[float]] = {"gpuhub": [], "plain": []}
            ready: dict[str, list[float]] = {"gpuhub": [], "plain": []}
            # one warm-up spawn each (first imports fill the page cache; the account is made)
            for h in (gpuhub, plain):
                spawn_times(h, "alice", tokens[h.data_dir.name], options if h is gpuhub else None)
                h.stop_server("alice", tokens[h.data_dir.name])
            for i in range(args.rounds):
                order = (gpuhub, plain) if i % 2 == 0 else (plain, gpuhub)
                for h in order:
                    name = h.data_dir.name
                    a, r = spawn_times(h, "alice", tokens[name], options if h is gpuhub else None)
                    answer[name].append(a)
                    ready[name].append(r)
                    h.stop_server("alice", tokens[name])
                print(
                    f"round {i + 1:2d}: answer gpuhub {answer['gpuhub'][-1]:.3f}s "
                    f"plain {answer['plain'][-1]:.3f}s | ready gpuhub {ready['gpuhub'][-1]:.3f}s "
                    f"plain {ready['plain'][-1]:.3f}s",
                    flush=True,
                )
        finally:
            gpuhub.stop()
            plain.stop()
    for label, times in (("time-to-answer", answer), ("time-to-ready", ready)):
        mg, mp = statistics.median(times["gpuhub"]), statistics.median(times["plain"])
        print(
            f"median {label}: gpuhub ({args.profile} profile) {mg:.3f}s, "
            f"plain SimpleLocalProcessSpawner {mp:.3f}s, ratio gpuhub/plain {mg / mp:.3f}"
            " (target <= 1.05)"
        )


if __name__ == "__main__":
    main()
