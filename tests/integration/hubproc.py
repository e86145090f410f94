"""A real JupyterHub (with the real configurable-http-proxy) run as a subprocess for
tests and benchmarks: free loopback ports, its own data directory, clean shutdown.

The embedded default has per-user passwords (first use sets them): :meth:`Hub.token` and
:meth:`Hub.user_password` log each user in with a test password of their own, which claims
the account at its first use; admins use the generated ``admin-password``."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hub:
    """One hub under ``data_dir``; ``url`` is the proxy's public URL."""

    data_dir: Path
    config: dict[str, Any]
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    config_file: Path | None = None
    """The hub's ``-f`` file; default the repository's ``jupyterhub_config.py``.  A test's
    own file may call ``configure_embedded(c)`` and then add to ``c``."""
    shared_password: bool = False
    """True for a hub with JupyterHub's ``SharedPasswordAuthenticator`` (the cluster tier's
    ``kube_hub_config.py``): one password for every user, in ``data_dir/password``."""
    secret: str = field(default_factory=lambda: secrets.token_hex(6))
    """Part of each user's test password (see :meth:`user_password`)."""
    _hub_pids: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/hub/api"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "gpuhub.yaml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "hub.log"

    @property
    def password(self) -> str:
        """The shared password of a ``shared_password`` hub."""
        if not self.shared_password:
            raise AttributeError("the embedded hub has per-user passwords: use user_password()")
        return (self.data_dir / "password").read_text().strip()

    def user_password(self, user: str) -> str:
        """``user``'s password: the admin password for the config's admins, else a test
        password of their own (their first login with it sets it)."""
        if self.shared_password:
            return self.password
        if user in self.config.get("auth", {}).get("admin_users", ()):
            return self.admin_password
        return f"{user}-pw-{self.secret}"

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 120) -> Any:
        """Run the shipped ``gpuhub-config`` console script with this hub's environment."""
        return subprocess.run(
            [str(Path(sys.executable).parent / "gpuhub-config"), *args],
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @property
    def admin_password(self) -> str:
        return (self.data_dir / "admin-password").read_text().strip()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            GPUHUB_DATA=str(self.data_dir),
            GPUHUB_CONFIG=str(self.config_path),
            GPUHUB_BIND_URL=self.url,
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60, attempts: int = 3) -> Hub:
        """Start the hub and wait until *this* hub answers on its ports.  Ports are picked
        by binding, so another process may take one before the hub binds it: when the hub
        or its proxy fails to bind (``address already in use`` in the log), or a port is
        answered by a process that is not ours, start again on fresh ports."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_config(self.config)
        for attempt in range(attempts):
            if attempt:
                self.port, self.hub_port, self.proxy_api_port = (free_port() for _ in range(3))
            try:
                return self._start_once(timeout)
            except PortTaken as e:
                self._kill_session()
                if attempt == attempts - 1:
                    raise RuntimeError(f"hub could not bind its ports {attempts}×: {e}") from e
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> Hub:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterhub",
                "-f",
                str(self.config_file or ROOT / "jupyterhub_config.py"),
                f"--JupyterHub.hub_port={self.hub_port}",
                f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{self.proxy_api_port}",
                *self.extra_args,
            ],
            cwd=self.data_dir,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._hub_pids.add(self.proc.pid)
        wait_for_own_hub(
            self.proc,
            self.api,
            {self.port: "proxy", self.hub_port: "hub"},
            lambda: self.log_since(offset),
            timeout,
            self.owns,
        )
        return self

    def owns(self, pid: int) -> bool:
        """``pid`` is one of our hubs, started by one (its proxy), or the proxy a hub of
        ours recorded (it outlives a ``kill -9`` of the hub)."""
        with contextlib.suppress(OSError, ValueError):
            if pid == int((self.data_dir / "proxy.pid").read_text()):
                return True
        return bool(ancestry(pid) & self._hub_pids)

    def log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _kill_session(self) -> None:
        """Kill what a failed start left (the hub's session: hub, proxy, services)."""
        if self.proc is None:
            return
        kill_session(self.proc.pid)
        self.proc.wait()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def kill9(self) -> None:
        """``kill -9`` the hub process alone (its proxy and servers live on)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 30) -> None:
        """Stop the hub process gracefully (SIGTERM) and wait; with the embedded default's
        ``cleanup_servers = False`` its servers live on."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "jupyterhub.pid"

    def status(self) -> dict[str, Any]:
        """The hub's ``config-status.json`` (what ``gpuhub-config reload`` waits for)."""
        return dict(json.loads((self.data_dir / "config-status.json").read_text()))

    def write_config(self, config: dict[str, Any]) -> None:
        """Edit the hub's YAML as an admin would (the running hub is not told)."""
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def stop(self) -> None:
        """Stop the hub (which stops its servers and proxy), then anything it left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.remove_units()

    def remove_units(self) -> None:
        """Kill what still runs in the hub's units (servers outlive the hub by design) and
        remove its cgroups and the units' temporary folders, so a test leaves nothing
        behind on the machine."""
        from gpuhub.localstate import tmp_root

        self._kill_units()
        shutil.rmtree(tmp_root(self.data_dir / "state"), ignore_errors=True)

    def _kill_units(self) -> None:
        from gpuhub.cgroups import CgroupV1

        try:
            record = json.loads((self.data_dir / "state" / "cgroups.json").read_text())
        except (OSError, ValueError):
            return
        fence = CgroupV1(record["bases"])
        for unit in {
            p.name
            for base in fence.bases.values()
            if base.is_dir()
            for p in base.iterdir()
            if p.is_dir()
        }:
            fence.kill(unit)
        for base in fence.bases.values():
            with contextlib.suppress(OSError):
                base.rmdir()

    def leftover_pids(self) -> list[int]:
        """Processes this hub started (servers, proxy): they carry its ports in argv/env."""
        marks = [f"127.0.0.1:{self.hub_port}".encode(), f"127.0.0.1:{self.proxy_api_port}".encode()]
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                blob = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(m in blob for m in marks):
                found.append(int(entry.name))
        return found

    def job_pids(self) -> list[int]:
        """Processes of this hub's local jobs (they carry GPUHUB_JOB=<data>/jobs/<id>)."""
        mark = f"GPUHUB_JOB={self.data_dir}/jobs/".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if mark in (entry / "environ").read_bytes():
                        found.append(int(entry.name))
        return found

    # -- API helpers -----------------------------------------------------------------
    def token(self, user: str, password: str | None = None) -> str:
        """A token made the way VS Code makes one: username + password in the body
        (``user``'s own test password unless ``password`` is given)."""
        r = self.token_response(user, password or self.user_password(user))
        r.raise_for_status()
        return str(r.json()["token"])

    def login(self, user: str, password: str | None = None) -> requests.Session:
        """A browser-like session logged in through the hub's login form."""
        s = requests.Session()
        s.get(f"{self.url}/hub/login", timeout=10)
        r = s.post(
            f"{self.url}/hub/login?next=",
            data={
                "username": user,
                "password": password or self.user_password(user),
                "_xsrf": s.cookies.get("_xsrf", ""),
            },
            timeout=10,
            allow_redirects=False,
        )
        r.raise_for_status()
        assert r.status_code == 302, r.text
        return s

    def token_response(self, user: str, password: str, as_user: str | None = None) -> Any:
        """``POST /users/{user}/tokens`` authenticated as ``as_user`` (default ``user``)."""
        return requests.post(
            f"{self.api}/users/{user}/tokens",
            json={"auth": {"username": as_user or user, "password": password}, "note": "test"},
            timeout=30,
        )

    def admin_token(self) -> str:
        return self.token("admin", self.admin_password)

    def user_model(self, user: str, token: str) -> dict[str, Any]:
        r = requests.get(f"{self.api}/users/{user}", headers=auth(token), timeout=10)
        r.raise_for_status()
        return dict(r.json())

    def wait_ready(
        self, user: str, token: str, timeout: float = 60, name: str = ""
    ) -> dict[str, Any]:
        """The model of ``user``'s server ``name`` (default: the default server) once it
        is ready, asked every 0.2 s as the VS Code extension asks every second."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.user_model(user, token)["servers"].get(name)
            if server and server.get("ready"):
                return dict(server)
            time.sleep(0.2)
        raise TimeoutError(f"{user}'s server {name!r} not ready in {timeout}s:\n{self.log_tail()}")

    def server_pid(self, user: str, admin_token: str, name: str = "") -> int:
        r = requests.get(f"{self.api}/users/{user}", headers=auth(admin_token), timeout=10)
        return int(r.json()["servers"][name]["state"]["pid"])

    def server_path(self, user: str, name: str = "") -> str:
        return f"{self.api}/users/{user}/server" + (f"s/{name}" if name else "")

    def stop_server(self, user: str, token: str, timeout: float = 30, name: str = "") -> None:
        r = requests.delete(self.server_path(user, name), headers=auth(token), timeout=timeout)
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name not in self.user_model(user, token)["servers"]:
                return
            time.sleep(0.2)


class PortTaken(Exception):
    """A port the harness picked was taken by another process before ours bound it."""


BIND_FAILURES = ("address already in use", "eaddrinuse")


def listening_pids(port: int) -> set[int]:
    """PIDs holding a listening TCP socket on ``port`` (any local address), from /proc."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    marks = {f"socket:[{i}]" for i in inodes}
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in marks:
                        pids.add(int(entry.name))
                        break
    return pids


def ancestry(pid: int) -> set[int]:
    """``pid`` and its ancestors (from /proc/<pid>/stat)."""
    out: set[int] = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def kill_session(session: int) -> None:
    """SIGKILL every process of session ``session`` (a process we started with
    ``start_new_session=True``) and their children, by PID."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError):
            if os.getsid(pid) == session or session in ancestry(pid) - {pid}:
                os.kill(pid, signal.SIGKILL)


def wait_for_own_hub(
    proc: subprocess.Popen[bytes],
    api: str,
    ports: dict[int, str],
    log: Callable[[], str],
    timeout: float,
    ours: Callable[[int], bool],
) -> None:
    """Wait until the hub API answers JSON at ``api`` and every port in ``ports`` is
    listened on by a process for which ``ours(pid)`` holds: never take another process's
    answer for ours.  :class:`PortTaken` when a bind failed or a port is held by another
    process; ``RuntimeError`` when the hub exits; ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log()
        if any(m in text.lower() for m in BIND_FAILURES):
            raise PortTaken(text[-2000:])
        if proc.poll() is not None:
            raise RuntimeError(f"hub exited ({proc.returncode}):\n{text[-6000:]}")
        try:
            r = requests.get(f"{api}/", timeout=2)
            answered = r.ok and "version" in r.json()
        except (requests.RequestException, ValueError):
            answered = False
        if answered:
            owners = {port: listening_pids(port) for port in ports}
            foreign = {
                f"{ports[port]} port {port}: PIDs {sorted(pids)}"
                for port, pids in owners.items()
                if pids and not any(ours(pid) for pid in pids)
            }
            if foreign:
                raise PortTaken("; ".join(sorted(foreign)))
            if all(owners.values()):
                return
        time.sleep(0.2)
    raise TimeoutError(f"hub did not answer in {timeout}s:\n{log()[-6000:]}")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
