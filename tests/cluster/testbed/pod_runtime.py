"""One pod of the process node: its folders, its containers as local processes, its status."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pod_spec import (
    Container,
    ObjectReader,
    PathMap,
    Pod,
    ServiceResolver,
    container_env,
    expand,
    resolve_services,
    service_candidates,
    volume_files,
    volume_folder,
)
from .processes import _die_with_parent

#: How long a container waits for the pods of Services its env names to get an IP (the
#: stand-in for a DNS record appearing); it then starts with the name unresolved.
SERVICE_WAIT_SECONDS = 120.0

#: Env variables that always name a Service, which may not exist yet when the container
#: starts: the training operator sets ``MASTER_ADDR`` to the master's Service and creates
#: that Service beside the pods, in no fixed order.  With real DNS the name resolves once the
#: Service exists (torch's store client retries); here the env is fixed at start, so the
#: container waits for that Service too (until :data:`SERVICE_WAIT_SECONDS`).
SERVICE_ENV = ("MASTER_ADDR",)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerProcess:
    """One container: the process (once started), readiness and exit."""

    spec: Container
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    start_error: str | None = None
    ready: bool = False
    next_probe: float = 0.0
    service_deadline: float | None = None
    next_service_check: float = 0.0

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def poll(self) -> None:
        if self.popen is not None and self.exit_code is None:
            code = self.popen.poll()
            if code is not None:
                self.exit_code = code if code >= 0 else 128 - code
                self.finished_at = now_iso()
                self.ready = False

    @property
    def running(self) -> bool:
        return self.popen is not None and self.exit_code is None

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    def status(self) -> dict[str, Any]:
        state: dict[str, Any]
        if self.done:
            state = {
                "terminated": {
                    "exitCode": self.exit_code,
                    "startedAt": self.started_at,
                    "finishedAt": self.finished_at,
                    "reason": "Completed"
                    if self.exit_code == 0
                    else ("StartError" if self.start_error else "Error"),
                    **({"message": self.start_error} if self.start_error else {}),
                }
            }
        elif self.running:
            state = {"running": {"startedAt": self.started_at}}
        else:
            state = {"waiting": {"reason": "PodInitializing"}}
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"process://{self.popen.pid}" if self.popen else "",
            "ready": self.ready,
            "started": self.running,
            "restartCount": 0,
            "state": state,
        }

    def signal(self, sig: signal.Signals) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)


@dataclass
class PodRuntime:
    """Everything the process node runs for one pod."""

    pod: Pod
    ip: str
    host_ip: str
    pod_dir: Path
    pvc_root: Path
    base_env: Mapping[str, str]
    read: ObjectReader
    init: list[ContainerProcess] = field(default_factory=list)
    main: list[ContainerProcess] = field(default_factory=list)
    start_time: str = field(default_factory=now_iso)
    started: float = field(default_factory=time.monotonic)
    paths: PathMap = field(default_factory=lambda: PathMap({}))
    failure: str | None = None
    failure_reason: str = "ProcessNodeError"
    services: ServiceResolver | None = None

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def prepare(self) -> None:
        """Create the pod's folders (volumes, logs) and the container records."""
        if self.pod_dir.exists():
            shutil.rmtree(self.pod_dir, ignore_errors=True)
        (self.pod_dir / "logs").mkdir(parents=True)
        namespace = self.pod["metadata"]["namespace"]
        spec = self.pod["spec"]
        folders: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            folder = volume_folder(volume, self.pod_dir, self.pvc_root, namespace)
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in volume_files(volume, namespace, self.read).items():
                (folder / name).write_text(text)
            folders[volume["name"]] = folder
        self.init = [self._record(c) for c in spec.get("initContainers") or []]
        self.main = [self._record(c) for c in spec.get("containers") or []]
        mounts: dict[str, Path] = {}
        for c in [*self.init, *self.main]:
            for mount in c.spec.get("volumeMounts") or []:
                local = folders.get(mount["name"], self.pod_dir / "volumes" / mount["name"])
                local = local / mount.get("subPath", "")
                local.mkdir(parents=True, exist_ok=True)
                mounts[mount["mountPath"]] = local
        self.paths = PathMap(mounts)

    def past_deadline(self) -> bool:
        """Whether the pod ran longer than ``spec.activeDeadlineSeconds``; if so it fails
        with ``DeadlineExceeded`` and its containers are killed, as the kubelet does."""
        limit = self.pod["spec"].get("activeDeadlineSeconds")
        if limit is None or self.failure is not None:
            return self.failure_reason == "DeadlineExceeded"
        if time.monotonic() - self.started < float(limit):
            return False
        self.failure = "Pod was active on the node longer than the specified deadline"
        self.failure_reason = "DeadlineExceeded"
        for c in [*self.init, *self.main]:
            c.signal(signal.SIGKILL)
        return True

    def _record(self, spec: Container) -> ContainerProcess:
        return ContainerProcess(spec, self.pod_dir / "logs" / f"{spec['name']}.log")

    def advance(self) -> None:
        """Start the next init container, or the main containers once all inits succeeded.

        Must be called from the process node's main thread (children die with it).
        """
        for c in [*self.init, *self.main]:
            c.poll()
        for c in self.init:
            if c.done and c.exit_code != 0:
                return
            if not c.done:
                if c.popen is None and c.start_error is None:
                    self._launch(c)
                return
        for c in self.main:
            if c.popen is None and c.start_error is None:
                self._launch(c)
        self._write_pids()

    def _launch(self, c: ContainerProcess) -> None:
        pod = {
            **self.pod,
            "status": {**self.pod.get("status", {}), "podIP": self.ip, "hostIP": self.host_ip},
        }
        try:
            declared = container_env(pod, c.spec, self.read)
            resolved = self._resolve_services(c, declared)
            if resolved is None:
                return  # a Service it names has no pod IP yet: try again later
            c.started_at = now_iso()
            env = dict(self.base_env)
            env.update(self._injected_env())
            env.update({k: self.paths.rewrite(v) for k, v in resolved.items()})
            argv = [
                self.paths.rewrite(expand(a, env))
                for a in [*(c.spec.get("command") or []), *(c.spec.get("args") or [])]
            ]
            if not c.spec.get("command"):
                raise RuntimeError("the process node needs an explicit container command")
            with c.log_path.open("ab") as log:
                c.popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self._cwd(c),
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
        except (OSError, RuntimeError, LookupError, ValueError) as error:
            c.start_error = str(error)
            c.started_at = c.started_at or now_iso()
            c.exit_code, c.finished_at = 128, now_iso()
            with c.log_path.open("a") as log:
                log.write(f"process node: cannot start container {c.name}: {error}\n")

    def _resolve_services(self, c: ContainerProcess, env: dict[str, str]) -> dict[str, str] | None:
        """``env`` with Service names replaced by pod IPs; ``None``: wait (see module doc)."""
        candidates = service_candidates(env)
        if self.services is None or not candidates:
            return env
        now = time.monotonic()
        if now < c.next_service_check:
            return None
        c.next_service_check = now + 0.5
        namespace = self.pod["metadata"]["namespace"]
        found = self.services(namespace, candidates, self.uid)
        if c.service_deadline is None:
            c.service_deadline = now + SERVICE_WAIT_SECONDS
        missing = {env[k] for k in SERVICE_ENV if env.get(k) in candidates} - found.keys()
        if (missing or any(ip is None for ip in found.values())) and now < c.service_deadline:
            return None
        return resolve_services(env, found)

    def _injected_env(self) -> dict[str, str]:
        meta = self.pod["metadata"]
        return {
            "POD_IP": self.ip,
            "POD_NAME": meta["name"],
            "POD_NAMESPACE": meta["namespace"],
            "HOSTNAME": meta["name"],
            "NODE_NAME": self.pod["spec"].get("nodeName", ""),
        }

    def _cwd(self, c: ContainerProcess) -> Path:
        working_dir = c.spec.get("workingDir")
        if working_dir:
            local = Path(self.paths.local(working_dir))
            if local.is_dir():
                return local
        return self.pod_dir

    def _write_pids(self) -> None:
        pids = {c.name: c.popen.pid for c in [*self.init, *self.main] if c.popen}
        (self.pod_dir / "pids.json").write_text(json.dumps(pids))

    def probe(self) -> None:
        """Run due readiness probes (called from the prober thread)."""
        now = time.monotonic()
        for c in self.main:
            if not c.running:
                continue
            probe = c.spec.get("readinessProbe")
            if not probe:
                c.ready = True
                continue
            if now < c.next_probe:
                continue
            if c.next_probe == 0.0:
                c.next_probe = now + probe.get("initialDelaySeconds", 0)
                continue
            c.next_probe = now + min(float(probe.get("periodSeconds", 10)), 1.0)
            c.ready = run_probe(probe, self.ip, c.spec)

    def phase(self) -> str:
        if self.failure is not None:
            return "Failed"
        if any(c.done and c.exit_code != 0 for c in self.init):
            return "Failed"
        if not self.main or any(c.popen is None and not c.done for c in self.main):
            return "Pending"
        if all(c.done for c in self.main):
            return "Succeeded" if all(c.exit_code == 0 for c in self.main) else "Failed"
        return "Running"

    def status(self) -> dict[str, Any]:
        """The pod's ``status`` as the process node reports it."""
        phase = self.phase()
        ready = phase == "Running" and all(c.ready for c in self.main)
        inits_done = all(c.done and c.exit_code == 0 for c in self.init)

        def condition(kind: str, value: bool) -> dict[str, Any]:
            return {
                "type": kind,
                "status": "True" if value else "False",
                "lastProbeTime": None,
                "lastTransitionTime": self.start_time,
            }

        return {
            **({"reason": self.failure_reason, "message": self.failure} if self.failure else {}),
            "phase": phase,
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "startTime": self.start_time,
            "conditions": [
                condition("PodScheduled", True),
                condition("Initialized", inits_done),
                condition("ContainersReady", ready),
                condition("Ready", ready),
            ],
            "initContainerStatuses": [c.status() for c in self.init],
            "containerStatuses": [c.status() for c in self.main],
        }

    def terminate(self, grace: float) -> None:
        """SIGTERM every container's process group, SIGKILL after ``grace`` seconds."""
        containers = [*self.init, *self.main]
        for c in containers:
            c.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in containers:
            if c.popen is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.popen.wait(max(0.0, deadline - time.monotonic()))
            c.signal(signal.SIGKILL)
            c.popen.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.popen.pid, signal.SIGKILL)  # leftovers in the group
            c.poll()


def run_probe(probe: dict[str, Any], pod_ip: str, container: Container) -> bool:
    """One readiness probe attempt: httpGet, tcpSocket or exec."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = _port(get["port"], container)
            scheme = get.get("scheme", "HTTP").lower()
            url = f"{scheme}://{get.get('host') or pod_ip}:{port}{get.get('path', '/')}"
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
                return 200 <= resp.status < 400
        if "tcpSocket" in probe:
            port = _port(probe["tcpSocket"]["port"], container)
            with socket.create_connection((pod_ip, port), timeout=timeout):
                return True
        if "exec" in probe:
            result = subprocess.run(
                probe["exec"]["command"], timeout=timeout, capture_output=True, check=False
            )
            return result.returncode == 0
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return False
    return True


def _port(port: int | str, container: Container) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"unknown named port {port!r}")
