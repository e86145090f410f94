#!/usr/bin/env python3
"""Build gpuhub's images for real on this machine, with no container registry.

    python images/build.py                                  # every local target, then checks
    python images/build.py --targets hub scipy-cpu          # some of them
    python images/build.py --targets scipy-cpu --no-check   # build only

What it does, all cached under ``$GPUHUB_CACHE/images`` (``/var/cache/gpuhub`` as root):

1. the base: ``debootstrap --variant=minbase bookworm`` from Debian's archive, kept as a
   tarball and imported as ``gpuhub-base/debian:bookworm``.  Nothing is ever pulled;
2. a private ``dockerd`` (own data root, exec root, socket and pidfile; ``--bridge=none``,
   ``--iptables=false``: the host network is left alone), started under ``nice -n 19`` so
   every build step is niced, and stopped by its PID at the end;
3. the builds, with BuildKit and ``--network host``, of the production Dockerfiles with
   their ``FROM`` pointed at the local base through the Dockerfiles' own build args:
   a Node image (``images/node``), the hub, configurable-http-proxy, and single-user images
   from ``images/matrix.yaml``;
4. the checks (:func:`image_problems`, :func:`probe_problems`, ``images/smoke``, a real
   JupyterLab answering and VS Code in the browser behind it) inside each built single-user
   image.

What differs from the published images, and why (the builder here reaches Debian's
archive, PyPI and npm, but not Docker Hub, GitHub or download.pytorch.org):

* Debian bookworm instead of ``ubuntu:noble``: Python 3.11, so ``PYTHON_VERSION`` is 3.11;
* code-server's search tool, ripgrep, is Debian's (``RIPGREP=debian``): the @vscode/ripgrep
  release code-server pins downloads its own from GitHub;
* PyTorch wheels from PyPI, so only an entry whose CUDA is PyPI's build of that release
  can be built here (PyTorch 2.11 on PyPI is its cu130 build).

Everything above :class:`Dockerd` is pure: paths, arguments and checks in, lists out.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
try:
    from gpuhub.imagematrix import ImageEntry, Matrix, load_matrix
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(ROOT / "spawner"))
    from gpuhub.imagematrix import ImageEntry, Matrix, load_matrix

sys.path.insert(0, str(ROOT / "images"))
import generate  # noqa: E402  (images/generate.py: the matrix -> build args)

MATRIX = ROOT / "images" / "matrix.yaml"
NODE_PACKAGE = ROOT / "scripts" / "node" / "package.json"

SUITE = "bookworm"
VARIANT = "minbase"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
BASE_TAG = f"gpuhub-base/debian:{SUITE}"
#: The debootstrap tarball as imported, before this machine's CA certificates are added.
ROOTFS_TAG = f"gpuhub-base/debian:{SUITE}-debootstrap"
#: This machine's own CA certificates (e.g. a TLS-intercepting egress proxy's): the local
#: base trusts them, as the host does, so builds reach PyPI and npm through that proxy.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
#: ``python3`` of the base suite (the images' Python).
BASE_PYTHON = {"bookworm": "3.11"}[SUITE]
NODE_TAG = f"gpuhub-base/node:22-{SUITE}"
#: Local tags: ``gpuhub-local/<entry id>:bookworm`` (not the registry's tags: other base).
LOCAL = "gpuhub-local"
#: The CUDA build PyPI publishes for a PyTorch release (checked 2026-12-01 in the wheel's
#: Requires-Dist: torch 2.11.0 needs cuda-toolkit==13.0.2).
PYPI_TORCH_CUDA = {"2.11": "13.0"}
DOCKER_CLI = "/usr/bin/docker"  # Debian's docker.io client: BuildKit without buildx
DAEMON_START_S = 120.0
DAEMON_STOP_S = 60.0
LAB_START_S = 300.0
#: How long jupyter-vscode-proxy may take to start code-server and answer through it.
VSCODE_START_S = 300.0
CHECK_HOSTNAME = "gpuhub-check"


# --- pure: where things live, what to run ---------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Everything this script keeps, under ``<cache>/images``."""

    cache: Path

    @property
    def root(self) -> Path:
        return self.cache / "images"

    @property
    def rootfs_tar(self) -> Path:
        return self.root / f"debian-{SUITE}-{VARIANT}.tar"

    @property
    def data_root(self) -> Path:
        return self.root / "docker"

    @property
    def exec_root(self) -> Path:
        return self.root / "docker-exec"

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "docker.pid"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def lockfile(self) -> Path:
        return self.root / "dockerd.lock"

    @property
    def report(self) -> Path:
        return self.root / "build-report.json"


def default_cache() -> Path:
    """``$GPUHUB_CACHE``, else what scripts/bootstrap.sh picks."""
    if os.environ.get("GPUHUB_CACHE"):
        return Path(os.environ["GPUHUB_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/gpuhub")
    return Path.home() / ".cache" / "gpuhub"


def debootstrap_command(rootfs: Path) -> list[str]:
    """The base's root filesystem from Debian's archive (no registry involved)."""
    return ["nice", "-n", "19", "debootstrap", f"--variant={VARIANT}", SUITE, str(rootfs), MIRROR]


def apt_sources() -> str:
    """``/etc/apt/sources.list`` of the base: the suite, its updates and security."""
    return (
        f"deb {MIRROR} {SUITE} main\n"
        f"deb {MIRROR} {SUITE}-updates main\n"
        f"deb {SECURITY_MIRROR} {SUITE}-security main\n"
    )


def base_dockerfile(ca_files: Sequence[str]) -> str:
    """The local base: the debootstrap import plus this machine's CA certificates.

    ``ca-certificates`` (installed by every Dockerfile here) adds them to the system bundle,
    which pip, requests and Node are pointed at; without host certificates it is the
    import as is."""
    lines = [f"FROM {ROOTFS_TAG}"]
    if ca_files:
        lines.append("COPY ca/ /usr/local/share/ca-certificates/")
        env = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
        lines.append("ENV " + " ".join(f"{k}={CA_BUNDLE}" for k in env))
    return "\n".join(lines) + "\n"


def dockerd_command(paths: Paths) -> list[str]:
    """A private daemon: nothing shared with a system Docker, no host network changes."""
    return [
        "nice",
        "-n",
        "19",
        "dockerd",
        f"--data-root={paths.data_root}",
        f"--exec-root={paths.exec_root}",
        f"--host=unix://{paths.socket}",
        f"--pidfile={paths.pidfile}",
        "--bridge=none",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
    ]


def mounts_under(mountinfo: str, root: Path) -> list[str]:
    """Mount points below ``root`` in ``/proc/self/mountinfo`` text, deepest first.

    dockerd leaves ``<exec-root>/netns/default`` (an nsfs bind of the host's network
    namespace) mounted when it stops; the script unmounts what is left under its roots."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


@dataclass(frozen=True)
class Build:
    """One ``docker build``: a production Dockerfile with local build args."""

    name: str
    tag: str
    dockerfile: str
    context: str
    args: Mapping[str, str]
    target: str | None = None
    singleuser: bool = False
    entry: str | None = None


def chp_version(package_json: Path = NODE_PACKAGE) -> str:
    """The configurable-http-proxy the embedded hub runs (scripts/node/package.json)."""
    data = json.loads(package_json.read_text(encoding="utf-8"))
    return str(data["dependencies"]["configurable-http-proxy"])


def pypi_packages(entry: ImageEntry) -> list[str]:
    """The entry's pip requirements as PyPI serves them (no PyTorch index).

    PyTorch's index (download.pytorch.org) is out of reach here; PyPI carries one CUDA
    build per release, so an entry for another CUDA cannot be built here."""
    if entry.framework != "pytorch":
        return generate.pip_packages(entry)
    mm = ".".join((entry.version or "").split(".")[:2])
    if entry.cuda is None or PYPI_TORCH_CUDA.get(mm) != entry.cuda:
        raise ValueError(
            f"{entry.id}: PyPI's torch {entry.version} is not the CUDA {entry.cuda} build "
            f"(PyPI has CUDA {PYPI_TORCH_CUDA.get(mm, 'unknown')}); it needs "
            f"download.pytorch.org, which this builder cannot reach"
        )
    return [p.split("+")[0] for p in generate.pip_packages(entry)]


def singleuser_build(matrix: Matrix, entry: ImageEntry) -> Build:
    """A matrix entry built on the local base (see the module docstring for what differs)."""
    args = dict(generate.entry_args(matrix, entry))
    args.update(
        {
            "BASE_IMAGE": BASE_TAG,
            "NODE_IMAGE": NODE_TAG,
            "PYTHON_VERSION": BASE_PYTHON,
            "RIPGREP": "debian",
            "PIP_INDEX_ARGS": "",
            "PIP_PACKAGES": " ".join(pypi_packages(entry)),
        }
    )
    return Build(
        name=entry.id,
        tag=f"{LOCAL}/{entry.id}:{SUITE}",
        dockerfile=generate.SINGLEUSER_DOCKERFILE,
        context=".",
        args=args,
        target="cuda" if entry.cuda else "cpu",
        singleuser=True,
        entry=entry.id,
    )


def plan(matrix: Matrix, names: Sequence[str], chp: str) -> list[Build]:
    """The builds for ``names`` (``node``, ``hub``, ``proxy`` or entry ids), in order.

    The Node image comes first whenever something needs it."""
    builds: dict[str, Build] = {
        "node": Build(
            "node", NODE_TAG, "images/node/Dockerfile", "images/node", {"BASE_IMAGE": BASE_TAG}
        ),
        "hub": Build(
            "hub",
            f"{LOCAL}/hub:{SUITE}",
            generate.HUB_DOCKERFILE,
            ".",
            {**generate.hub_args(matrix), "BASE_IMAGE": BASE_TAG},
        ),
        "proxy": Build(
            "proxy",
            f"{LOCAL}/configurable-http-proxy:{chp}",
            "images/proxy/Dockerfile",
            "images/proxy",
            {"NODE_IMAGE": NODE_TAG, "CHP_VERSION": chp},
        ),
    }
    out: list[Build] = []
    needs_node = any(n != "hub" for n in names)
    if needs_node and "node" not in names:
        out.append(builds["node"])
    for name in names:
        out.append(builds[name] if name in builds else singleuser_build(matrix, matrix.entry(name)))
    return out


def build_command(build: Build) -> list[str]:
    """``docker build`` of one :class:`Build` (run from the repository root)."""
    cmd = ["build", "--network", "host", "--progress", "plain", "-t", build.tag]
    cmd += ["-f", build.dockerfile]
    if build.target:
        cmd += ["--target", build.target]
    for key, value in build.args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    return [*cmd, build.context]


#: Run inside an image: who the default user is and where jupyterhub-singleuser is.
PROBE = (
    "import json, os, pwd, shutil; "
    "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), "
    "'user': pwd.getpwuid(os.getuid()).pw_name, "
    "'singleuser': shutil.which('jupyterhub-singleuser'), "
    "'lab': shutil.which('jupyter-lab'), 'home': os.environ.get('HOME')}))"
)


def image_problems(inspect: Mapping[str, Any]) -> list[str]:
    """What makes ``docker image inspect`` output unfit as a gpuhub single-user image."""
    config = inspect.get("Config") or {}
    problems: list[str] = []
    user = str(config.get("User") or "")
    uid = user.split(":")[0]
    if uid in ("", "0", "root"):
        problems.append(f"runs as root (Config.User is {user!r}); set USER 1000")
    elif uid != "1000":
        problems.append(f"runs as {uid}, not uid 1000 (Config.User is {user!r})")
    cmd = list(config.get("Cmd") or [])
    if cmd != ["jupyterhub-singleuser"]:
        problems.append(f"default command is {cmd!r}, not ['jupyterhub-singleuser']")
    labels = config.get("Labels") or {}
    if not labels.get("io.gpuhub.id"):
        problems.append("no io.gpuhub.id label (not built from images/singleuser/Dockerfile)")
    return problems


def probe_problems(probe: Mapping[str, Any]) -> list[str]:
    """What :data:`PROBE`'s output says is wrong inside a single-user image."""
    problems: list[str] = []
    if probe.get("uid") != 1000:
        who = "root" if probe.get("uid") == 0 else f"uid {probe.get('uid')}"
        problems.append(f"the default user is {who} ({probe.get('user')}), not uid 1000")
    if not probe.get("singleuser"):
        problems.append("jupyterhub-singleuser is not on PATH")
    if not probe.get("lab"):
        problems.append("jupyter-lab is not on PATH")
    return problems


# --- adapters: debootstrap, dockerd, docker -----------------------------------------------


def _log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def make_rootfs_tar(paths: Paths) -> float | None:
    """The cached debootstrap tarball (made once); seconds taken, ``None`` when cached."""
    if paths.rootfs_tar.exists():
        return None
    started = time.monotonic()
    paths.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.root, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _log(f"debootstrap {SUITE} ({VARIANT}) from {MIRROR} (first run only)")
        subprocess.run(debootstrap_command(rootfs), check=True, stdout=subprocess.DEVNULL)
        (rootfs / "etc/apt/sources.list").write_text(apt_sources(), encoding="utf-8")
        for leftover in (rootfs / "var/lib/apt/lists", rootfs / "var/cache/apt/archives"):
            for item in leftover.glob("*"):
                if item.is_file():
                    item.unlink()
        partial = paths.rootfs_tar.with_suffix(".tar.partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.rename(paths.rootfs_tar)  # atomic: a tarball exists only once complete
    return time.monotonic() - started


class Dockerd:
    """The private daemon, started by :meth:`start` and stopped by the PID it got."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{paths.socket}", "DOCKER_BUILDKIT": "1"}
        self.cli = DOCKER_CLI if Path(DOCKER_CLI).exists() else "docker"
        self.lock: Any = None

    def _take_lock(self) -> None:
        """One daemon per data root: a second build (or test run) on the same cache
        waits for the first to stop its daemon instead of failing."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.lock = self.paths.lockfile.open("a")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"[images] another build uses {self.paths.data_root}; waiting for it to end",
                file=sys.stderr,
                flush=True,
            )
            fcntl.flock(self.lock, fcntl.LOCK_EX)

    def _release_lock(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def start(self) -> None:
        self._take_lock()
        try:
            self._start()
        except BaseException:
            self._release_lock()
            raise

    def _start(self) -> None:
        if self.paths.pidfile.exists():
            old = self.paths.pidfile.read_text().strip()
            if old.isdigit() and Path(f"/proc/{old}").exists():
                raise RuntimeError(
                    f"a dockerd (pid {old}) already runs on {self.paths.data_root}; "
                    "stop that build first"
                )
        self.paths.root.mkdir(parents=True, exist_ok=True)
        log = self.paths.log.open("ab")
        self.proc = subprocess.Popen(
            dockerd_command(self.paths),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + DAEMON_START_S
        while self.docker("version", check=False, capture=True).returncode != 0:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited with {self.proc.returncode}: see {self.paths.log}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"dockerd did not answer in {DAEMON_START_S:.0f} s: {self.paths.log}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to our dockerd (it stops its containerd and containers), wait, unmount
        what it left under its roots (its netns/default)."""
        try:
            self._stop()
        finally:
            self._release_lock()

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=DAEMON_STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
        for root in (self.paths.exec_root, self.paths.data_root):
            for point in mounts_under(mountinfo, root):
                subprocess.run(["umount", point], check=False)

    def __enter__(self) -> Dockerd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def docker(
        self, *args: str, check: bool = True, capture: bool = False, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, *args],
            env=self.env,
            cwd=ROOT,
            check=check,
            text=True,
            input=input,
            capture_output=capture,
        )

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False, capture=True).returncode == 0

    def inspect(self, tag: str) -> dict[str, Any]:
        out = self.docker("image", "inspect", tag, capture=True).stdout
        data: dict[str, Any] = json.loads(out)[0]
        return data

    def import_base(self, paths: Paths) -> None:
        """``gpuhub-base/debian:bookworm`` from the cached tarball (once per data root)."""
        if self.has_image(BASE_TAG):
            return
        if not self.has_image(ROOTFS_TAG):
            self.docker("import", "--change", 'CMD ["bash"]', str(paths.rootfs_tar), ROOTFS_TAG)
        with tempfile.TemporaryDirectory(prefix="gpuhub-base-") as tmp:
            ca = Path(tmp) / "ca"
            ca.mkdir()
            names = sorted(p.name for p in HOST_CA_DIR.glob("*.crt"))
            for name in names:
                shutil.copy(HOST_CA_DIR / name, ca / name)
            (Path(tmp) / "Dockerfile").write_text(base_dockerfile(names), encoding="utf-8")
            self.docker("build", "--network", "none", "-t", BASE_TAG, tmp)

    def build(self, build: Build) -> float:
        """Seconds the build took (cached layers included)."""
        started = time.monotonic()
        self.docker(*build_command(build))
        return time.monotonic() - started

    def run(self, tag: str, *command: str) -> subprocess.CompletedProcess[str]:
        """``command`` in a container without a network (loopback only).

        Its hostname resolves to 127.0.0.1, as a pod's does: ``torchrun --standalone``
        looks it up, and without a network there is no DNS to wait for."""
        return self.docker(
            "run", "--rm", "--network", "none", "--hostname", CHECK_HOSTNAME,
            "--add-host", f"{CHECK_HOSTNAME}:127.0.0.1", tag, *command,
            check=False, capture=True,
        )  # fmt: skip

    def probe(self, tag: str) -> dict[str, Any]:
        proc = self.run(tag, "python3", "-c", PROBE)
        if proc.returncode != 0:
            raise RuntimeError(f"probe in {tag} failed: {proc.stderr.strip()}")
        data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return data

    def smoke(self, tag: str, *extra: str) -> tuple[int, str]:
        """images/smoke inside the image (its baked copy and expectations; CPU path here)."""
        proc = self.run(tag, "python", "/opt/gpuhub/smoke/smoke.py", *extra)
        return proc.returncode, proc.stdout + proc.stderr

    def lab_answers(self, tag: str) -> dict[str, Any]:
        """Start JupyterLab in the image (its default user) and ask it over HTTP: its status,
        ``/lab`` and VS Code in the browser behind it."""
        port, token = free_port(), secrets.token_hex(16)
        name = f"gpuhub-lab-check-{secrets.token_hex(4)}"
        self.docker(
            "run", "-d", "--rm", "--name", name, "--network", "host", tag,
            "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
            capture=True,
        )  # fmt: skip
        try:
            return wait_for_lab(port, token, lambda: self._running(name))
        finally:
            self.docker("rm", "-f", name, check=False, capture=True)

    def _running(self, name: str) -> bool:
        proc = self.docker("inspect", "-f", "{{.State.Running}}", name, check=False, capture=True)
        return proc.stdout.strip() == "true"


def free_port() -> int:
    """A port the kernel hands out (bound, then released for the server to take)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(port: int, path: str, token: str = "") -> tuple[int, str, str]:
    """``GET path``: status, body and ``Location`` (``Authorization: token`` when given)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=VSCODE_START_S)
    try:
        conn.request("GET", path, headers={"Authorization": f"token {token}"} if token else {})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return resp.status, body, resp.getheader("Location") or ""
    finally:
        conn.close()


def vscode_page(port: int, token: str) -> tuple[int, str]:
    """VS Code in the browser as the launcher opens it: ``/vscode/`` (jupyter-vscode-proxy
    starts code-server on its Unix socket), following code-server's redirects."""
    path = "/vscode/"
    for _ in range(5):
        status, body, location = _get(port, path, token)
        if status not in (301, 302, 303, 307, 308) or not location:
            return status, body
        path = urllib.parse.urljoin(path, location)
    return status, body


def wait_for_lab(port: int, token: str, alive: Any) -> dict[str, Any]:
    """Wait until the server answers ``/api/status`` (or its container ends), then ``/lab``."""
    deadline = time.monotonic() + LAB_START_S
    while True:
        try:
            status, body, _ = _get(port, "/api/status", token)
            if status == 200:
                break
        except OSError:
            pass
        if not alive():
            raise RuntimeError("the JupyterLab container exited before it answered")
        if time.monotonic() > deadline:
            raise RuntimeError(f"JupyterLab did not answer on port {port} in {LAB_START_S:.0f} s")
        time.sleep(0.5)
    _, api, _ = _get(port, "/api")  # the server's version; no token needed
    lab_status, lab_body, _ = _get(port, "/lab", token)
    vscode_status, vscode_body = vscode_page(port, token)
    return {
        "api_status": json.loads(body),
        "version": json.loads(api).get("version", ""),
        "lab_status": lab_status,
        "lab_page": lab_body,
        "vscode_status": vscode_status,
        "vscode_page": vscode_body,
    }


def image_size(d: Dockerd, tag: str) -> int:
    return int(d.inspect(tag)["Size"])


@dataclass
class Report:
    """Timings and sizes of one run, written to ``<cache>/images/build-report.json``."""

    base_s: float | None = None
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)


def check_singleuser(d: Dockerd, build: Build) -> dict[str, Any]:
    """Every check of one built single-user image; ``problems`` empty when it is fit."""
    problems = image_problems(d.inspect(build.tag))
    probe = d.probe(build.tag)
    problems += probe_problems(probe)
    extra = ["--cpu-allreduce", "2"] if build.args.get("FRAMEWORK") == "pytorch" else []
    code, out = d.smoke(build.tag, *extra)
    if code != 0:
        problems.append(f"images/smoke failed (exit {code}):\n{out}")
    lab = d.lab_answers(build.tag)
    if lab["lab_status"] != 200 or "JupyterLab" not in lab["lab_page"]:
        problems.append(f"JupyterLab's /lab answered {lab['lab_status']}")
    if lab["vscode_status"] != 200 or "vscode-workbench" not in lab["vscode_page"]:
        problems.append(
            f"VS Code in the browser (/vscode/) answered {lab['vscode_status']}: "
            f"{lab['vscode_page'][:300]}"
        )
    last = out.strip().splitlines()[-1] if out.strip() else ""
    summary = json.loads(last) if last.startswith("{") else {}
    return {
        "probe": probe,
        "smoke": {k: summary.get(k) for k in ("ok", "passed", "failed", "skipped")},
        "lab_version": lab["version"],
        "problems": problems,
    }


DEFAULT_TARGETS = ["hub", "proxy", "scipy-cpu", "pytorch-2.11-cu130"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets", nargs="+", default=DEFAULT_TARGETS, help="node, hub, proxy or matrix ids"
    )
    parser.add_argument("--no-check", action="store_true", help="build only")
    parser.add_argument("--cache", type=Path, default=None, help="default: $GPUHUB_CACHE")
    args = parser.parse_args(argv)
    for tool in ("debootstrap", "dockerd"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (apt-get install docker.io debootstrap)")
    paths = Paths(args.cache or default_cache())
    matrix = load_matrix(MATRIX)
    builds = plan(matrix, args.targets, chp_version())
    report = Report(base_s=make_rootfs_tar(paths))
    failed = False
    with Dockerd(paths) as d:
        d.import_base(paths)
        for b in builds:
            _log(f"build {b.name} -> {b.tag}")
            try:
                seconds = d.build(b)
            except subprocess.CalledProcessError:
                report.builds[b.name] = {"tag": b.tag, "failed": True}
                failed = True
                break
            report.builds[b.name] = {"tag": b.tag, "seconds": round(seconds, 1)}
            report.builds[b.name]["size"] = image_size(d, b.tag)
        # images a rebuild replaced would otherwise pile up in the data root
        d.docker("image", "prune", "--force", capture=True)
        if not args.no_check and not failed:
            for b in builds:
                if b.singleuser:
                    _log(f"check {b.tag}")
                    report.checks[b.name] = check_singleuser(d, b)
                    failed |= bool(report.checks[b.name]["problems"])
    text = json.dumps(
        {"base_s": report.base_s, "builds": report.builds, "checks": report.checks}, indent=1
    )
    paths.report.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
