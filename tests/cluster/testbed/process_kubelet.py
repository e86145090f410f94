"""A kubelet stand-in that runs the pods bound to its node as local processes.

Run as ``python -m testbed.process_kubelet --kubeconfig K --node-name N --root DIR ...``
(see :func:`parse_args`).  It registers the node (labels, taints, declared GPU capacity),
keeps its Ready condition and Lease fresh, runs each container's command with its env in
this Python environment, gives each pod its own loopback IP ``<ip-prefix>.x.y``, serves
container logs for ``kubectl logs``, and on deletion SIGTERMs then SIGKILLs the pod's
process groups and deletes the pod with grace 0.

Limitations: no image pulls, no restarts (a finished container ends the pod), no exec or
port-forward; volumes are local folders and in-container paths under a ``mountPath`` in
``args``/``env``/``workingDir`` are rewritten to those folders.  No cluster DNS: an env
value naming a Service of the pod's namespace becomes the IP of a pod it selects (the
container waits up to 120 s for one to have an IP).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from .kubelet_server import serve_logs
from .node_identity import NodeIdentity, node_body, node_status
from .pod_runtime import PodRuntime
from .pod_spec import Pod, VolumeNotReady

HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 40
MAX_GRACE_SECONDS = 30.0


def log(message: str) -> None:
    """One line on stderr (the launcher sends it to <workdir>/logs/<node>.log)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    print(f"{stamp} {message}", file=sys.stderr, flush=True)


class IPPool:
    """Loopback pod IPs ``<prefix>.x.y`` (``prefix`` is two octets, e.g. ``127.42``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.used: set[str] = set()

    def take(self) -> str:
        for x in range(256):
            for y in range(2, 255):
                ip = f"{self.prefix}.{x}.{y}"
                if ip not in self.used:
                    self.used.add(ip)
                    return ip
        raise RuntimeError("no free pod IP left")

    def release(self, ip: str) -> None:
        self.used.discard(ip)


class ProcessKubelet:
    """The node agent: register, heartbeat, watch pods, run and report them."""

    def __init__(
        self, api: client.ApiClient, node: NodeIdentity, root: Path, ip_prefix: str
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.leases = client.CoordinationV1Api(api)
        self.api = api
        self.node = node
        self.root = root
        self.ips = IPPool(ip_prefix)
        self.pods: dict[str, PodRuntime] = {}
        self.terminating: set[str] = set()
        self.reported: dict[str, str] = {}
        self.events: queue.Queue[tuple[str, Pod]] = queue.Queue()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.base_env = self._base_env()

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        server = urlsplit(self.api.configuration.host)
        env["KUBERNETES_SERVICE_HOST"] = server.hostname or "127.0.0.1"
        env["KUBERNETES_SERVICE_PORT"] = str(server.port or 443)
        return env

    # ---- node ------------------------------------------------------------------------
    def register(self) -> None:
        body = node_body(self.node)
        try:
            self.core.create_node(body)
        except ApiException as error:
            if error.status != 409:
                raise
            self.core.patch_node(
                self.node.name, {"metadata": body["metadata"], "spec": body["spec"]}
            )
        self._heartbeat()

    def _heartbeat(self) -> None:
        self.core.patch_node_status(self.node.name, {"status": node_status(self.node)})
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease = {
            "metadata": {"name": self.node.name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.node.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": now,
            },
        }
        try:
            self.leases.patch_namespaced_lease(self.node.name, "kube-node-lease", lease)
        except ApiException as error:
            if error.status != 404:
                raise
            self.leases.create_namespaced_lease("kube-node-lease", lease)

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):
                self._heartbeat()

    # ---- pods --------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        selector = f"spec.nodeName={self.node.name}"
        while not self.stopping.is_set():
            try:
                listed = self.core.list_pod_for_all_namespaces(field_selector=selector)
                for item in listed.items:
                    self.events.put(("MODIFIED", self.api.sanitize_for_serialization(item)))
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=60,
                )
                for event in stream:
                    obj = self.api.sanitize_for_serialization(event["object"])
                    self.events.put((event["type"], obj))
                    if self.stopping.is_set():
                        return
            except Exception:  # noqa: BLE001 - relist after any watch failure
                time.sleep(1)

    def _read_object(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            if kind == "configMap":
                return self.core.read_namespaced_config_map(name, namespace).data or {}
            return self.core.read_namespaced_secret(name, namespace).data or {}
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _service_addresses(
        self, namespace: str, names: set[str], own_uid: str
    ) -> dict[str, str | None]:
        """Services among ``names`` -> the IP of a live pod each selects (``None``: none yet)."""
        found: dict[str, str | None] = {}
        for service in self.core.list_namespaced_service(namespace).items:
            selector = service.spec.selector or {}
            if service.metadata.name not in names or not selector:
                continue
            label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            ips: list[str] = []
            for pod in self.core.list_namespaced_pod(
                namespace, label_selector=label_selector
            ).items:
                if pod.metadata.deletion_timestamp or pod.status.phase in ("Succeeded", "Failed"):
                    continue
                own = self.pods.get(own_uid) if pod.metadata.uid == own_uid else None
                ip = own.ip if own is not None else pod.status.pod_ip
                if ip:
                    ips.append(ip)
            found[service.metadata.name] = min(ips) if ips else None
        return found

    def _pod_dir(self, pod: Pod) -> Path:
        return self.root / "pods" / pod["metadata"]["namespace"] / pod["metadata"]["name"]

    def handle(self, kind: str, pod: Pod) -> None:
        """React to one watch event (main thread)."""
        uid = pod["metadata"]["uid"]
        if kind == "DELETED":
            if uid in self.pods:
                self._terminate(uid, 0.0, delete=False)
            return
        if pod["metadata"].get("deletionTimestamp"):
            grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            self._terminate(uid, min(grace, MAX_GRACE_SECONDS), delete=True, pod=pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if uid not in self.pods and phase not in ("Succeeded", "Failed"):
            runtime = PodRuntime(
                pod,
                self.ips.take(),
                self.node.host_ip,
                self._pod_dir(pod),
                self.root / "pvcs",
                self.base_env,
                self._read_object,
                services=self._service_addresses,
            )
            try:
                runtime.prepare()
            except VolumeNotReady as missing:
                log(f"pod {runtime.key}: waiting for a volume ({missing})")
                self.ips.release(runtime.ip)
                self._retry_later(pod)
                return
            except Exception as error:  # noqa: BLE001 - report it on the pod, keep serving
                runtime.failure = f"cannot prepare pod: {error}"
            log(f"pod {runtime.key} ({uid}) gets IP {runtime.ip}")
            with self.lock:
                self.pods[uid] = runtime

    def _retry_later(self, pod: Pod, delay: float = 1.0) -> None:
        """Queue the pod again (as it is then in the API) after ``delay`` seconds, as the
        kubelet retries a volume mount; nothing if it was deleted or replaced meanwhile."""
        meta = pod["metadata"]

        def again() -> None:
            try:
                now = self.core.read_namespaced_pod(meta["name"], meta["namespace"])
            except ApiException:
                return
            if now.metadata.uid == meta["uid"] and not self.stopping.is_set():
                self.events.put(("MODIFIED", self.api.sanitize_for_serialization(now)))

        timer = threading.Timer(delay, again)
        timer.daemon = True
        timer.start()

    def _terminate(self, uid: str, grace: float, delete: bool, pod: Pod | None = None) -> None:
        runtime = self.pods.get(uid)
        if uid in self.terminating:
            return
        if runtime is None:
            if delete and pod is not None:
                self._delete_now(pod["metadata"]["namespace"], pod["metadata"]["name"], uid)
            return
        self.terminating.add(uid)

        def work() -> None:
            log(f"pod {runtime.key}: stopping (grace {grace:.0f}s)")
            runtime.terminate(grace)
            with self.lock:
                self.pods.pop(uid, None)
            self.reported.pop(uid, None)
            self.ips.release(runtime.ip)
            if delete:
                meta = runtime.pod["metadata"]
                self._delete_now(meta["namespace"], meta["name"], uid)
            self.terminating.discard(uid)

        threading.Thread(target=work, name=f"terminate-{uid}", daemon=True).start()

    def _delete_now(self, namespace: str, name: str, uid: str) -> None:
        body = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
        )
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(name, namespace, body=body)

    def _sync(self) -> None:
        """Advance every pod and report changed statuses (main thread)."""
        with self.lock:
            runtimes = [r for uid, r in self.pods.items() if uid not in self.terminating]
        for runtime in runtimes:
            try:
                self._sync_one(runtime)
            except Exception:  # noqa: BLE001 - one broken pod must not stop the node
                log(f"pod {runtime.key}: sync failed\n{traceback.format_exc()}")

    def _sync_one(self, runtime: PodRuntime) -> None:
        if runtime.past_deadline():
            for c in [*runtime.init, *runtime.main]:
                c.poll()  # killed: report them terminated once they are
        elif runtime.failure is None:
            runtime.advance()
        status = runtime.status()
        encoded = json.dumps(status, sort_keys=True)
        if self.reported.get(runtime.uid) == encoded:
            return
        meta = runtime.pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}
            )
            self.reported[runtime.uid] = encoded
            log(f"pod {runtime.key}: {status['phase']}")
        except ApiException as error:
            if error.status != 404:
                raise

    def _probe_loop(self) -> None:
        while not self.stopping.wait(0.25):
            with self.lock:
                runtimes = list(self.pods.values())
            for runtime in runtimes:
                runtime.probe()

    def _locate_log(self, namespace: str, name: str, container: str) -> Any:
        with self.lock:
            for runtime in self.pods.values():
                meta = runtime.pod["metadata"]
                if (meta["namespace"], meta["name"]) == (namespace, name):
                    for c in [*runtime.init, *runtime.main]:
                        if c.name == container:
                            return c.log_path, lambda c=c: c.running
        path = self.root / "pods" / namespace / name / "logs" / f"{container}.log"
        return (path, lambda: False) if path.exists() else None

    # ---- main ----------------------------------------------------------------------------
    def run(self, cert: Path, key: Path) -> None:
        """Serve until SIGTERM/SIGINT, then stop every pod process."""
        server = serve_logs(self.node.host_ip, self.node.kubelet_port, cert, key, self._locate_log)
        self.register()
        for target in (self._heartbeat_loop, self._watch_loop, self._probe_loop):
            threading.Thread(target=target, name=target.__name__, daemon=True).start()
        try:
            while not self.stopping.is_set():
                try:
                    kind, pod = self.events.get(timeout=0.2)
                    self.handle(kind, pod)
                except queue.Empty:
                    pass
                except Exception:  # noqa: BLE001 - keep the node alive
                    log(f"event handling failed\n{traceback.format_exc()}")
                self._sync()
        finally:
            server.shutdown()
            for runtime in list(self.pods.values()):
                runtime.terminate(2.0)

    def stop(self, *_: object) -> None:
        self.stopping.set()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--root", required=True, type=Path, help="pod folders, logs, PVCs")
    parser.add_argument("--port", required=True, type=int, help="kubelet HTTPS port (logs)")
    parser.add_argument("--tls-cert", required=True, type=Path)
    parser.add_argument("--tls-key", required=True, type=Path)
    parser.add_argument("--ip-prefix", default="127.42", help="pods get <prefix>.x.y")
    parser.add_argument("--gpus", type=int, default=0, help="declared nvidia.com/gpu")
    parser.add_argument("--cpu", default="16")
    parser.add_argument("--memory", default="64Gi")
    parser.add_argument("--label", action="append", default=[], help="key=value")
    parser.add_argument("--taint", action="append", default=[], help="key=value:Effect")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    node = NodeIdentity.from_args(args)
    api = config.new_client_from_config(config_file=args.kubeconfig)
    kubelet = ProcessKubelet(api, node, args.root, args.ip_prefix)
    signal.signal(signal.SIGTERM, kubelet.stop)
    signal.signal(signal.SIGINT, kubelet.stop)
    kubelet.run(args.tls_cert, args.tls_key)


if __name__ == "__main__":
    main()
