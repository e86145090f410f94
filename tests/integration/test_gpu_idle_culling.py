"""GPU-idle culling for real: a hub with its managed ``gpuhub-monitor`` service reading a
replayed utilisation trace.  An idle GPU server is warned, then stopped through the hub
and its GPUs freed (a named server too, on its own); a busy one is kept; "keep it"
postpones; ``gpuhub-config usage`` and ``/metrics`` show the GPU-hours and the cull."""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from test_local_hub import ledger_keys, spawn

from hubproc import Hub, auth, process_env
from localconfig import CONFIG

pytestmark = pytest.mark.integration

# alice's GPU stays idle, bob's trains, carol's idles but she presses "keep it"; carol's
# named server "train" idles too, and nobody keeps it
TRACE = [
    {"key": "server:alice/", "t": 0, "util": 0, "memory_mib": 500},
    {"key": "server:bob/", "t": 0, "util": 85, "memory_mib": 30000},
    {"key": "server:carol/", "t": 0, "util": 1},
    {"key": "server:carol/train", "t": 0, "util": 0},
]


def culling_config(trace: Path, idle_culling: bool = True) -> dict[str, Any]:
    cfg = copy.deepcopy(CONFIG)
    if idle_culling:
        gpu = next(p for p in cfg["profiles"] if p["slug"] == "gpu")
        # idle 60 s, warned for the last 50 s (long enough to see and answer the warning
        # on a busy machine), sampled twice a second
        gpu["idle_culling"] = {"threshold_percent": 10, "idle_minutes": 1, "warn_minutes": 50 / 60}
    cfg["monitor"] = {"source": "replay", "replay_trace": str(trace), "sample_seconds": 0.5}
    return cfg


def wait_for(what: str, check: Callable[[], Any], hub: Hub, timeout: float = 90) -> Any:
    """Until ``check()`` returns something true (the hub offers no events to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} not seen in {timeout}s:\n{hub.log_tail()}")


class Monitor:
    def __init__(self, hub: Hub) -> None:
        self.base = f"{hub.url}/services/gpuhub-monitor"

    def servers(self, token: str) -> dict[str, Any]:
        r = requests.get(f"{self.base}/api/servers", headers=auth(token), timeout=10)
        r.raise_for_status()
        return dict(r.json())

    def server(self, token: str, name: str = "") -> dict[str, Any] | None:
        return next((s for s in self.servers(token)["servers"] if s["server"] == name), None)

    def keep(self, token: str, body: Any) -> requests.Response:
        return requests.post(
            f"{self.base}/api/keep", data=json.dumps(body), headers=auth(token), timeout=10
        )


def usage(hub: Hub) -> str:
    r = hub.cli("usage", str(hub.config_path), "--since", "1h")
    assert r.returncode == 0, r.stderr
    return str(r.stdout)


def hours(out: str, kind: str, name: str) -> tuple[float, float, bool]:
    m = re.search(
        rf"^  {kind} {name}: ([0-9.]+) GPU-hours, ([0-9.]+) idle( \(holding \d+ now\))?$",
        out,
        re.M,
    )
    assert m, out
    return float(m[1]), float(m[2]), bool(m[3])


def test_idle_gpu_server_is_warned_then_stopped_busy_one_kept(
    hub_factory: Callable[..., Hub], tmp_path: Path
):
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(row) + "\n" for row in TRACE))
    # the servers start without a policy: every idle clock starts together when the
    # admin adds one, however long the spawns took
    hub = hub_factory(culling_config(trace, idle_culling=False))
    mon = Monitor(hub)
    tokens = {u: hub.token(u) for u in ("alice", "bob", "carol")}
    began = time.time()
    for user, options in (
        ("alice", {"profile": "gpu", "gpus": 1}),
        ("bob", {"profile": "gpu", "gpus": 1}),
        ("carol", {"profile": "gpu", "gpu_type": "h100"}),
    ):
        assert spawn(hub, user, tokens[user], options).status_code in (201, 202)
    named = requests.post(
        hub.server_path("carol", "train"),
        json={"profile": "gpu", "gpus": 1, "gpu_type": "a100"},
        headers=auth(tokens["carol"]),
        timeout=60,
    )
    assert named.status_code in (201, 202), named.text
    for user, token in tokens.items():
        hub.wait_ready(user, token)
    hub.wait_ready("carol", tokens["carol"], name="train")
    assert set(ledger_keys(hub)) == {
        "server:alice/",
        "server:bob/",
        "server:carol/",
        "server:carol/train",
    }
    assert (mon.server(tokens["alice"]) or {}).get("idle_culling") is None
    hub.write_config(culling_config(trace))  # the monitor follows the file
    wait_for(
        "the policy applied",
        lambda: all((mon.server(t) or {}).get("idle_culling") for t in tokens.values()),
        hub,
    )

    # alice is warned before anything happens to her server
    warned = wait_for(
        "alice's warning", lambda: (mon.server(tokens["alice"]) or {}).get("warning"), hub
    )
    assert warned["action"] == "stop" and warned["cull_at"] > time.time() - 60
    assert "" in hub.user_model("alice", tokens["alice"])["servers"]

    # carol presses "keep it" during her warning: the idle clock starts again
    carol = wait_for(
        "carol's warning", lambda: (mon.server(tokens["carol"]) or {}).get("warning"), hub
    )
    r = mon.keep(tokens["carol"], {"server": ""})
    assert r.status_code == 200, r.text
    kept = r.json()
    assert kept["warning"] is None and kept["cull_at"] > carol["cull_at"]

    # alice's server is stopped through the hub and her GPU is free again
    wait_for(
        "alice's server stopped",
        lambda: "" not in hub.user_model("alice", tokens["alice"])["servers"],
        hub,
        timeout=180,
    )
    wait_for("alice's GPU freed", lambda: "server:alice/" not in ledger_keys(hub), hub)
    culled = mon.servers(tokens["alice"])["culled"]
    assert [(c["server"], c["action"], c["gpus"]) for c in culled] == [("", "stop", 1)]

    # bob's busy server is kept; carol's "keep it" held: if her server was given back
    # by now, it was no sooner than the new time her "keep it" gave her
    bob = mon.server(tokens["bob"])
    assert bob is not None and bob["warning"] is None and bob["utilization"] == 85
    assert "" in hub.user_model("bob", tokens["bob"])["servers"]
    assert "server:bob/" in ledger_keys(hub)
    carol_culled = mon.servers(tokens["carol"])["culled"]
    assert all(c["at"] >= kept["cull_at"] for c in carol_culled if c["server"] == "")

    # carol's named server, idle and not kept, is stopped on its own: her default one is not
    wait_for(
        "carol's named server stopped",
        lambda: "train" not in hub.user_model("carol", tokens["carol"])["servers"],
        hub,
        timeout=180,
    )
    wait_for("its GPU freed", lambda: "server:carol/train" not in ledger_keys(hub), hub)
    culled = [(c["server"], c["action"]) for c in mon.servers(tokens["carol"])["culled"]]
    assert ("train", "stop") in culled

    # a user acts only on their own servers; the body is checked
    assert mon.keep(tokens["bob"], {"server": "other"}).status_code == 404
    assert mon.keep(tokens["bob"], {"server": 7}).status_code == 400
    assert mon.keep(tokens["bob"], ["x"]).status_code == 400
    assert requests.post(f"{mon.base}/api/keep", json={}, timeout=10).status_code == 401

    # GPU-hours: alice's interval is closed, held idle; bob's busy; per group = sum of users
    out = wait_for(
        "alice's hold closed",
        lambda: (o := usage(hub)) and not hours(o, "user", "alice")[2] and o,
        hub,
    )
    alice, bob_h = hours(out, "user", "alice"), hours(out, "user", "bob")
    vision = hours(out, "group", "vision")
    assert 0 < alice[0] <= (time.time() - began) / 3600 and 0 < alice[1] <= alice[0]
    assert bob_h[0] > 0 and bob_h[1] == 0 and bob_h[2]
    assert vision[0] == pytest.approx(alice[0] + bob_h[0], abs=2e-4)
    assert hours(out, "group", "nlp")[0] > 0

    # Prometheus metrics: for a token with read:metrics (an admin's), not for users
    r = requests.get(f"{mon.base}/metrics", headers=auth(hub.admin_token()), timeout=10)
    assert r.status_code == 200, r.text
    assert 'gpuhub_idle_culls_total{action="stop",group="vision"} 1.0' in r.text
    assert re.search(r'^gpuhub_idle_culls_total\{action="stop",group="nlp"\} [12]\.0', r.text, re.M)
    assert 'gpuhub_gpus_allocated{gpu_type="a100",group="vision",kind="notebook"} 1.0' in r.text
    assert 'gpuhub_group_quota_gpus{group="vision"} 2.0' in r.text
    assert 'gpuhub_gpus_queued{gpu_type="a100",group="vision",kind="job"} 0.0' in r.text
    assert re.search(r'^gpuhub_gpu_idle_seconds_total\{group="vision"\} [1-9]', r.text, re.M)
    assert (
        requests.get(f"{mon.base}/metrics", headers=auth(tokens["bob"]), timeout=10).status_code
        == 403
    )


def test_idle_server_restarts_on_cpu_when_the_profile_says_so(
    hub_factory: Callable[..., Hub], tmp_path: Path
):
    trace = tmp_path / "trace.jsonl"
    trace.write_text(json.dumps({"key": "*", "t": 0, "util": 0}) + "\n")
    cfg = culling_config(trace)
    gpu = next(p for p in cfg["profiles"] if p["slug"] == "gpu")
    gpu["idle_culling"].update(action="restart-on-cpu", cpu_profile="cpu")
    hub = hub_factory(cfg)
    token = hub.token("alice")
    assert spawn(hub, "alice", token, {"profile": "gpu", "gpus": 2}).status_code in (201, 202)
    hub.wait_ready("alice", token)
    assert ledger_keys(hub) == {"server:alice/": (0, 1)}
    # the lab's server side polls with the server's own token
    server_token = process_env(hub.server_pid("alice", hub.admin_token()))["JUPYTERHUB_API_TOKEN"]
    mine = wait_for("alice's server seen", lambda: Monitor(hub).server(server_token), hub)
    assert (mine["gpus"], mine["devices"], mine["group"]) == (2, [0, 1], "vision")
    assert mine["idle_culling"]["action"] == "restart-on-cpu"

    def on_cpu() -> bool:
        server = hub.user_model("alice", token)["servers"].get("") or {}
        return bool(server.get("ready")) and server["user_options"].get("profile") == "cpu"

    wait_for("alice's server back on the CPU profile", on_cpu, hub)
    assert ledger_keys(hub) == {}  # both GPUs given back
    env = process_env(hub.server_pid("alice", hub.admin_token()))
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    culled = Monitor(hub).servers(token)["culled"]
    assert [(c["action"], c["gpus"]) for c in culled] == [("restart-on-cpu", 2)]
