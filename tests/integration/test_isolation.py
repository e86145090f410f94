"""The embedded hub's hidden doors, probed from a user's own kernel as an attacker would:
bob's notebook tries to read the hub's secrets and carol's files and tokens, signal her
server, forge GPU usage, open GPUs it was not given, and use more memory than its profile
allows.  Every door must be closed (run as root: users get their own accounts)."""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path

import pytest
import requests
from test_local_hub import ledger_keys

from gpuhub.cgroups import unit_name
from gpuhub.localstate import tmp_root
from hubproc import Hub, auth, process_env
from kernelrun import Kernel

pytestmark = pytest.mark.integration


def spawn(hub: Hub, user: str, token: str, options: dict) -> None:
    r = requests.post(
        f"{hub.api}/users/{user}/server", json=options, headers=auth(token), timeout=60
    )
    assert r.status_code in (201, 202), r.text
    hub.wait_ready(user, token)


PROBE = r"""
import json, os, signal, subprocess, sys
import tempfile
data, carol_pid, nodes, carol_tmp = {data!r}, {carol_pid!r}, {nodes!r}, {carol_tmp!r}
res = {{}}
def attempt(name, fn):
    try:
        fn(); res[name] = "OPEN"
    except OSError as e:
        res[name] = e.errno
attempt("admin_password", lambda: open(f"{{data}}/admin-password").read())
attempt("hub_db", lambda: open(f"{{data}}/jupyterhub.sqlite", "rb").read(16))
attempt("cookie_secret", lambda: open(f"{{data}}/jupyterhub_cookie_secret", "rb").read())
attempt("ledger_write", lambda: open(f"{{data}}/state/units.json", "a").write("x"))
attempt("state_list", lambda: os.listdir(f"{{data}}/state"))
attempt("config_write", lambda: open(f"{{data}}/gpuhub.yaml", "a").write("\n"))
attempt("carol_home_read", lambda: open(f"{{data}}/users/carol/secret.txt").read())
attempt("carol_home_list", lambda: os.listdir(f"{{data}}/users/carol"))
attempt("carol_home_plant", lambda: open(f"{{data}}/users/carol/planted.txt", "w").write("x"))
attempt("carol_environ", lambda: open(f"/proc/{{carol_pid}}/environ", "rb").read())
attempt("carol_signal", lambda: os.kill(carol_pid, signal.SIGTERM))
attempt("carol_tmp_list", lambda: os.listdir(carol_tmp))
attempt("tmp_root_list", lambda: os.listdir(os.path.dirname(carol_tmp)))
# bob's own temporary files go to his server's private folder
res["tmpdir"] = tempfile.mkdtemp(prefix="bob-")
jobs = [p for p in os.listdir("/proc")
        if p.isdigit() and b"gpuhub.jobs" in open(f"/proc/{{p}}/cmdline", "rb").read()]
assert jobs, "the jobs service runs"
attempt("jobs_environ", lambda: open(f"/proc/{{jobs[0]}}/environ", "rb").read())
for n in nodes:
    attempt("open " + os.path.basename(n), lambda n=n: os.close(os.open(n, os.O_RDWR)))
# forge a GPU allocation marker (the old ledger's truth) in a detached process
forged = {{"key": "forged", "user": "bob", "group": "nlp", "gpu_type": "a100", "gpus": 3,
          "kind": "notebook", "since": None, "devices": [1, 2, 3], "pending": False}}
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True,
                 env={{**os.environ, "GPUHUB_ALLOCATION": json.dumps(forged)}})
res["uid"] = os.getuid()
print(json.dumps(res))
"""


def test_hidden_doors_are_closed(hub: Hub, tmp_path: Path):
    if os.geteuid() != 0:
        pytest.fail("the isolation tests need root (the hub makes system accounts)")
    bob, carol = hub.token("bob"), hub.token("carol")
    spawn(hub, "carol", carol, {"profile": "gpu", "gpu_type": "h100"})  # device 4
    spawn(hub, "bob", bob, {"profile": "gpu", "gpus": 1})  # device 0
    before = ledger_keys(hub)
    assert set(before) == {"server:bob/", "server:carol/"}, before
    admin = hub.admin_token()
    carol_pid = hub.server_pid("carol", admin)
    carol_acct = pwd.getpwuid(os.stat(f"/proc/{carol_pid}").st_uid)
    (hub.data_dir / "users" / "carol" / "secret.txt").write_text("carol's")
    os.chown(hub.data_dir / "users" / "carol" / "secret.txt", carol_acct.pw_uid, carol_acct.pw_gid)
    # GPU device nodes as the driver makes them (char 195:N, mode 0666), without a driver
    nodes = []
    for minor in (0, 1, 4):
        node = tmp_path / "dev" / f"nvidia{minor}"
        node.parent.mkdir(exist_ok=True, mode=0o755)
        os.mknod(node, 0o666 | 0o020000, os.makedev(195, minor))
        node.chmod(0o666)
        nodes.append(str(node))
    tmp_path.chmod(0o755)

    k = Kernel(hub.url, "bob", bob)
    try:
        units_tmp = tmp_root(hub.data_dir / "state")
        carol_tmp = str(units_tmp / unit_name("server:carol/"))
        assert process_env(carol_pid)["TMPDIR"] == carol_tmp
        probe = PROBE.format(
            data=str(hub.data_dir), carol_pid=carol_pid, nodes=nodes, carol_tmp=carol_tmp
        )
        r = k.run(probe)
        assert r.status == "ok", r
        res = json.loads(r.stdout.strip().splitlines()[-1])
        EACCES, EPERM, ENXIO = 13, 1, 6
        for door in (
            "admin_password",
            "hub_db",
            "cookie_secret",
            "ledger_write",
            "state_list",
            "config_write",
            "carol_home_read",
            "carol_home_list",
            "carol_home_plant",
            "carol_environ",
            "jobs_environ",
            "carol_tmp_list",
            "tmp_root_list",
        ):
            assert res[door] == EACCES, (door, res)
        assert res["carol_signal"] == EPERM, res
        assert res["uid"] not in (0, carol_acct.pw_uid)
        assert res["open nvidia0"] == ENXIO, res  # bob's own GPU: allowed (no driver here)
        assert res["open nvidia1"] == EPERM and res["open nvidia4"] == EPERM, res  # fenced
        # the forged marker changed nothing: usage is what the hub started
        assert ledger_keys(hub) == before
        assert not (hub.data_dir / "users" / "carol" / "planted.txt").exists()
        # carol's server still runs, and her token still works only for her
        assert requests.get(f"{hub.url}/user/carol/api/status", headers=auth(carol), timeout=10).ok
        env = process_env(carol_pid)
        assert env["CUDA_VISIBLE_DEVICES"] == "4" and env["USER"] == carol_acct.pw_name
    finally:
        k.close()
    bob_tmp = Path(res["tmpdir"]).parent
    assert bob_tmp == units_tmp / unit_name("server:bob/")
    assert (bob_tmp.stat().st_uid, bob_tmp.stat().st_mode & 0o777) == (res["uid"], 0o700)
    # the detached process bob left is in bob's unit: a stop kills it too, and his server's
    # temporary folder goes with it
    hub.stop_server("bob", bob)
    assert not bob_tmp.exists()
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _uid(p) == res["uid"]]
    assert leftovers == []
    assert set(ledger_keys(hub)) == {"server:carol/"}


def _uid(p: Path) -> int | None:
    """The owner of a live process (``None`` when gone or a zombie: exited, holding
    nothing, waiting for its parent to collect it)."""
    try:
        if "\nState:\tZ" in (p / "status").read_text():
            return None
        return p.stat().st_uid
    except OSError:
        return None


def test_memory_limit_kills_and_tells_the_user(hub: Hub):
    bob = hub.token("bob")
    spawn(hub, "bob", bob, {"profile": "cpu"})  # the CPU profile's default memory: 2G
    k = Kernel(hub.url, "bob", bob)
    try:
        r = k.run("x = bytearray(3 << 30)\nprint('survived')", timeout=120)
    finally:
        k.close()
    assert r.status == "died" and "survived" not in r.stdout, r
    # the hub's home page says what happened, naming the limit
    browser = hub.login("bob")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = browser.get(f"{hub.url}/hub/home", timeout=10).text
        if "Out of memory" in page:
            break
        time.sleep(0.5)
    assert "2 GiB memory limit" in page, page[-2000:]
    # the server itself survived the kernel's death
    assert requests.get(f"{hub.url}/user/bob/api/status", headers=auth(bob), timeout=10).ok
