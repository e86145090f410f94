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
import signal
import socket
import subprocess
import sys
import time
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

    def start(self, timeout: float = 60) -> Hub:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_config(self.config)
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if requests.get(f"{self.api}/", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"hub did not answer in {timeout}s:\n{self.log_tail()}")

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
        remove its cgroups, so a test leaves nothing behind on the machine."""
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

    def wait_ready(self, user: str, token: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.user_model(user, token)["servers"].get("")
            if server and server.get("ready"):
                return dict(server)
            time.sleep(0.2)
        raise TimeoutError(f"{user}'s server not ready in {timeout}s:\n{self.log_tail()}")

    def server_pid(self, user: str, admin_token: str) -> int:
        r = requests.get(f"{self.api}/users/{user}", headers=auth(admin_token), timeout=10)
        return int(r.json()["servers"][""]["state"]["pid"])

    def stop_server(self, user: str, token: str, timeout: float = 30) -> None:
        r = requests.delete(f"{self.api}/users/{user}/server", headers=auth(token), timeout=timeout)
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "" not in self.user_model(user, token)["servers"]:
                return
            time.sleep(0.2)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
