"""VS Code's connection, token to kernel ready: gpuhub (GPULocalSpawner, a saved GPU
default) vs JupyterHub's plain SimpleLocalProcessSpawner.

Two real hubs (each with configurable-http-proxy) run side by side; runs alternate
between them so both see the same machine load.  One run is what the JupyterHub extension
does (tests/integration/test_vscode_flow.py): a token from the user name and password,
the user model, a start with no options, the user model until the server is ready
(asked every 50 ms; the extension asks every second), a session, and code run over the
kernel websocket.  On gpuhub the empty start uses the user's saved default (1 A100 GPU,
saved by the warm-up start with ``"save_default": true``), so it runs the whole path:
saved options, validation, quota reservation, account, unit, device fencing.

    python benchmarks/vscode_flow.py --rounds 10

Prints each round, the medians and the ratio gpuhub/plain.
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
from spawn_time import side_by_side  # noqa: E402

from hubproc import Hub, auth  # noqa: E402
from kernelrun import Kernel  # noqa: E402

CODE = "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"


def vscode_run(hub: Hub, user: str) -> tuple[float, float, str]:
    """``(server ready, kernel ready, the kernel's CUDA_VISIBLE_DEVICES)`` of one run,
    seconds from the token request; the server is stopped and the token deleted after."""
    t0 = time.perf_counter()
    r = requests.post(
        f"{hub.api}/users/{user}/tokens",
        json={"auth": {"username": user, "password": hub.user_password(user)}, "note": "VS Code"},
        timeout=30,
    )
    r.raise_for_status()
    token, token_id = r.json()["token"], r.json()["id"]
    hub.user_model(user, token)
    r = requests.post(hub.server_path(user), headers=auth(token), timeout=120)
    assert r.status_code in (201, 202), r.text
    while not (hub.user_model(user, token)["servers"].get("") or {}).get("ready"):
        time.sleep(0.05)
    ready = time.perf_counter() - t0
    kernel = Kernel(hub.url, user, token)
    try:
        result = kernel.run(CODE)
    finally:
        kernel.close()
    assert result.status == "ok", result
    done = time.perf_counter() - t0
    hub.stop_server(user, token)
    requests.delete(f"{hub.api}/users/{user}/tokens/{token_id}", headers=auth(token), timeout=30)
    return ready, done, result.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o711)  # users' accounts pass through to their homes
        gpuhub, plain = side_by_side(tmp)
        ready: dict[str, list[float]] = {"gpuhub": [], "plain": []}
        kernel: dict[str, list[float]] = {"gpuhub": [], "plain": []}
        try:
            gpuhub.start()
            plain.start()
            # warm-up: the account is made, first imports fill the page cache; on gpuhub
            # this start saves the GPU default that every later empty start uses
            save = {"profile": "gpu", "gpus": 1, "gpu_type": "a100", "save_default": True}
            for h, options in ((gpuhub, save), (plain, None)):
                token = h.token("alice")
                url = h.server_path("alice")
                r = requests.post(url, json=options, headers=auth(token), timeout=120)
                assert r.status_code in (201, 202), r.text
                h.wait_ready("alice", token)
                h.stop_server("alice", token)
            for i in range(args.rounds):
                order = (gpuhub, plain) if i % 2 == 0 else (plain, gpuhub)
                seen = {}
                for h in order:
                    name = h.data_dir.name
                    r_s, k_s, devices = vscode_run(h, "alice")
                    ready[name].append(r_s)
                    kernel[name].append(k_s)
                    seen[name] = devices
                assert seen["gpuhub"] == "0", seen  # the saved GPU default, fenced to GPU 0
                print(
                    f"round {i + 1:2d}: server ready gpuhub {ready['gpuhub'][-1]:.3f}s plain "
                    f"{ready['plain'][-1]:.3f}s | kernel ready gpuhub {kernel['gpuhub'][-1]:.3f}s "
                    f"plain {kernel['plain'][-1]:.3f}s",
                    flush=True,
                )
        finally:
            gpuhub.stop()
            plain.stop()
    for label, times in (("server ready", ready), ("token to kernel ready", kernel)):
        mg, mp = statistics.median(times["gpuhub"]), statistics.median(times["plain"])
        print(
            f"median {label}: gpuhub (saved 1-GPU default) {mg:.3f}s, "
            f"plain SimpleLocalProcessSpawner {mp:.3f}s, ratio gpuhub/plain {mg / mp:.3f}"
        )


if __name__ == "__main__":
    main()
