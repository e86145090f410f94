"""Hub crashes against the embedded default's ledger: the hub is ``kill -9``-ed at random
moments of a spawn, and during a storm of spawns, stops and jobs from several users.

After every restart the truth, observed from ``/proc`` independently of the hub
(:mod:`truth`), must hold: no GPU held by two units, no group above its quota, no unit
the hub has no record of, and nothing left running once the users stop."""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
from test_jobs_local import WAIT, Jobs, service_pids
from test_local_hub import ledger_keys
from truth import group_usage, observe

from hubproc import Hub, auth

pytestmark = pytest.mark.integration

QUOTA = {"vision": 2, "nlp": 4}


def check(hub: Hub, where: str) -> None:
    """The invariants, on what really runs."""
    seen = observe(hub.data_dir)
    assert not seen.held_twice(), f"{where}: devices held twice: {seen.held_twice()}"
    used = group_usage(hub.data_dir, seen)
    for group, n in used.items():
        assert n <= QUOTA[group], f"{where}: group {group} holds {n} > quota {QUOTA[group]}"


def settle(hub: Hub, timeout: float = 60) -> None:
    """Wait until the hub's ledger equals the units that have processes."""
    from gpuhub.cgroups import unit_name

    deadline = time.monotonic() + timeout
    while True:
        seen = observe(hub.data_dir)
        keys = set(ledger_keys(hub))
        running = {k for k in keys if seen.pids.get(unit_name(k))}
        gpu_units = {u for u, d in seen.devices.items() if d and seen.pids[u]}
        if keys == running and gpu_units <= {unit_name(k) for k in keys}:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"ledger {keys} != running units {dict(seen.pids)}")
        time.sleep(0.2)


def post(hub: Hub, user: str, token: str, options: dict[str, Any]) -> int:
    try:
        r = requests.post(
            f"{hub.api}/users/{user}/server", json=options, headers=auth(token), timeout=60
        )
        return r.status_code
    except requests.RequestException:
        return 0  # the hub died under the request


def stop(hub: Hub, user: str, token: str) -> int:
    try:
        return requests.delete(
            f"{hub.api}/users/{user}/server", headers=auth(token), timeout=60
        ).status_code
    except requests.RequestException:
        return 0


def wait_settled_server(hub: Hub, user: str, token: str, timeout: float = 90) -> None:
    """Until ``user`` has no pending spawn or stop (ready, or no server)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = hub.user_model(user, token)["servers"].get("")
        if server is None or (server["ready"] and not server["pending"]):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{user}'s server still pending:\n{hub.log_tail()}")


def ensure_running(hub: Hub, user: str, token: str, options: dict[str, Any]) -> None:
    """Start ``user``'s server until it runs (a spawn refused only because the hub is
    still cleaning up after the crash is retried; a quota denial is a failure)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        wait_settled_server(hub, user, token)
        if "" in hub.user_model(user, token)["servers"]:
            return
        code = post(hub, user, token, options)
        assert code != 403, f"{user} denied although the quota fits:\n{hub.log_tail()}"
    raise TimeoutError(f"{user}'s server did not start:\n{hub.log_tail()}")


def unexpected_hub_errors(hub: Hub) -> list[str]:
    """Uncaught exceptions in the hub's log other than JupyterHub's own answers to a stop
    that races a spawn, a start-up check or another stop (500s raised inside JupyterHub's
    ``stop_single_user``: ``RuntimeError: alice pending spawn``, ``KeyError: ('User %s has
    no such spawner …``) or a spawn cancelled by a stop (``CancelledError``)."""
    text = hub.log_path.read_text(errors="replace")
    found = []
    for block in text.split("Uncaught exception")[1:]:
        last = exception_line(block)
        ok = (
            re.fullmatch(r"RuntimeError: \S+ pending (spawn|check|stop)", last)
            or last.startswith("KeyError: ('User %s has no such spawner %r'")
            or last.startswith("asyncio.exceptions.CancelledError")
        )
        if not ok:
            found.append(block[:4000])
    return found


def exception_line(block: str) -> str:
    """The exception a logged traceback ends with, read in the block's own log record.

    Tornado's log formatter indents every line of a record after the first, so the record
    ends at the next unindented line (the single-user servers' and the proxy's records
    share the hub's log and may carry tracebacks of their own).  In the record, the last
    ``Traceback`` header (the end of an exception chain) is followed by frames indented
    deeper and the exception line at the header's own indent ("" when there is none)."""
    lines = block.splitlines()
    record = lines[:1]
    for ln in lines[1:]:
        if ln.strip() and not ln[0].isspace():
            break
        record.append(ln)
    starts = [i for i, ln in enumerate(record) if ln.lstrip().startswith("Traceback (most recent")]
    if not starts:
        return ""
    header = record[starts[-1]]
    indent = len(header) - len(header.lstrip())
    for ln in record[starts[-1] + 1 :]:
        if ln.strip() and len(ln) - len(ln.lstrip()) <= indent:
            return ln.strip()
    return ""


@pytest.mark.timeout(2400)  # 20 hub restarts and 40 spawns on a busy machine
def test_hub_killed_during_spawns(hub: Hub):
    rng = random.Random(20261201)
    users = ["alice", "bob"]
    tokens = {u: hub.token(u) for u in users}
    for i in range(20):
        user = users[i % 2]
        stop(hub, user, tokens[user])
        wait_settled_server(hub, user, tokens[user])
        t = threading.Thread(target=post, args=(hub, user, tokens[user], {"profile": "gpu"}))
        t.start()
        time.sleep(rng.uniform(0.0, 3.0))  # the randomized moment of the crash
        hub.kill9()
        t.join()
        check(hub, f"round {i} after the kill")
        hub.start()
        # the users start their servers again, as they would after an outage
        for u in users:
            ensure_running(hub, u, tokens[u], {"profile": "gpu"})
        settle(hub)
        check(hub, f"round {i} after the restart")
    for u in users:
        stop(hub, u, tokens[u])
        wait_settled_server(hub, u, tokens[u])
    settle(hub)
    assert ledger_keys(hub) == {}
    assert not observe(hub.data_dir).pids


def test_storm_with_hub_crashes(hub: Hub):
    """≥ 1,000 randomized spawn, stop and job operations from 8 users, with three hub
    ``kill -9``s; an independent sampler watches the truth the whole time."""
    rng = random.Random(1201)
    users = [f"u{i}" for i in range(6)] + ["alice", "carol"]
    tokens = {u: hub.token(u) for u in users}
    jobs = {u: Jobs.__new__(Jobs) for u in users}
    for u, j in jobs.items():
        j.hub, j.user, j.token, j.base = hub, u, tokens[u], f"{hub.url}/services/gpuhub-jobs/api"
    options = [
        {"profile": "cpu"},
        {"profile": "gpu"},
        {"profile": "gpu", "gpus": 2},
        {"profile": "gpu", "gpu_type": "h100"},
    ]
    outcomes: Counter[str] = Counter()
    violations: list[str] = []
    done = threading.Event()
    hub_up = threading.Event()
    hub_up.set()

    def sampler() -> None:
        while not done.is_set():
            try:
                check(hub, "sampler")
            except AssertionError as e:
                violations.append(str(e))
            except (OSError, ValueError):
                pass  # a file replaced while read
            time.sleep(0.05)

    def op_spawn(u: str, r: random.Random) -> str:
        return f"spawn {post(hub, u, tokens[u], r.choice(options))}"

    def op_stop(u: str, r: random.Random) -> str:
        return f"stop {stop(hub, u, tokens[u])}"

    def op_job(u: str, r: random.Random) -> str:
        try:
            resp = jobs[u].submit(WAIT, workers=1, gpus_per_worker=r.choice([0, 1]), args=["x"])
        except requests.RequestException:
            return "job 0"
        return f"job {resp.status_code}"

    def op_cancel(u: str, r: random.Random) -> str:
        try:
            mine = jobs[u].call("GET", "jobs").json().get("jobs", [])
            live = [j["id"] for j in mine if j["state"] in ("Queued", "Running")]
            if not live:
                return "cancel none"
            return f"cancel {jobs[u].call('DELETE', 'jobs/' + r.choice(live)).status_code}"
        except (requests.RequestException, ValueError):
            return "cancel 0"

    ops: list[Callable[[str, random.Random], str]] = [op_spawn] * 5 + [op_stop] * 4
    ops += [op_job, op_cancel]
    total, per_thread = 0, 130  # 8 threads × 130 = 1,040 operations
    lock = threading.Lock()

    def worker(u: str, seed: int) -> None:
        nonlocal total
        r = random.Random(seed)
        for _ in range(per_thread):
            op = r.choice(ops)
            while True:  # an operation counts once the hub (or its service) answered it
                hub_up.wait()
                result = op(u, r)
                if not result.endswith((" 0", " 503")):
                    break
                time.sleep(0.2)
            with lock:
                outcomes[result] += 1
                total += 1

    watch = threading.Thread(target=sampler, daemon=True)
    watch.start()
    threads = [threading.Thread(target=worker, args=(u, rng.random())) for u in users]
    for t in threads:
        t.start()
    for crash in (260, 520, 780):
        while total < crash and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        hub_up.clear()
        hub.kill9()
        hub.start()
        hub_up.set()
    for t in threads:
        t.join()
    # everyone stops: servers and jobs
    for u in users:
        stop(hub, u, tokens[u])
        op_cancel(u, rng)
    for u in users:
        wait_settled_server(hub, u, tokens[u])
        for j in jobs[u].call("GET", "jobs").json().get("jobs", []):
            if j["state"] in ("Queued", "Running"):
                jobs[u].call("DELETE", f"jobs/{j['id']}")
    deadline = time.monotonic() + 60
    while observe(hub.data_dir).pids and time.monotonic() < deadline:
        time.sleep(0.2)
    done.set()
    watch.join()
    print(f"{total} operations: {dict(sorted(outcomes.items()))}")
    assert total >= 1000
    assert violations == [], violations[:5]
    assert not observe(hub.data_dir).pids, "processes left after every user stopped"
    assert ledger_keys(hub) == {}
    assert len(service_pids(hub)) == 1, "exactly one jobs service at the end"
    assert not [k for k in outcomes if k.startswith(("job", "cancel")) and k.endswith(" 500")]
    errors = unexpected_hub_errors(hub)
    assert not errors, f"{outcomes}\n" + "\n----\n".join(errors)
    assert outcomes["spawn 403"] > 0 and any(k.startswith("spawn 20") for k in outcomes)
    assert any(k in outcomes for k in ("job 201", "job 200")), outcomes


def test_exception_line_reads_the_hub_log_format():
    """The hub logs through tornado's formatter (continuation lines indented): the
    exception line must be found there, and a frame line must never be taken for it."""
    import io
    import logging

    from tornado.log import LogFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogFormatter(color=False))
    log = logging.getLogger("gpuhub-test-exception-line")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise KeyError("cause")
        except KeyError as e:
            raise RuntimeError("u4 pending check") from e
    except RuntimeError:
        log.error("Uncaught exception DELETE /hub/api/users/u4/server", exc_info=True)
    # a single-user server's record after it, with a traceback of its own
    try:
        raise ConnectionRefusedError("hub is down")
    except ConnectionRefusedError:
        log.error("Error connecting to the hub", exc_info=True)
    log.removeHandler(handler)
    text = stream.getvalue()
    assert "\n    Traceback (most recent call last):" in text, text
    block = text.split("Uncaught exception")[1]
    assert "ConnectionRefusedError" in block
    assert exception_line(block) == "RuntimeError: u4 pending check"
    assert exception_line("no traceback here") == ""
