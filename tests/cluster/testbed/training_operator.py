"""The real Kubeflow training operator v1 (built by setup.sh) as a local process.

:func:`start_training_operator` installs the training-operator CRDs, creates the
``kubeflow`` namespace and the empty webhook Secret its cert rotation fills in
(``training-operator-webhook-cert``, DNS ``training-operator.kubeflow.svc``), and starts
the binary with the admin kubeconfig: no leader election, free loopback ports for the
metrics, health and webhook servers, only the PyTorchJob and TFJob controllers.

What a Deployment would get from the kubelet is done here:

- **The webhook certificate "volume".**  The operator's rotator writes the certificates into
  the Secret and then waits for them as files in its hard-coded
  ``/tmp/k8s-webhook-server/serving-certs`` (the Secret's mountPath in the Deployment).  The
  launcher copies ``tls.crt``/``tls.key``/``ca.crt`` from the Secret there, like a secret
  volume.  Two operators started at once on one machine would share that folder.
- **No admission webhooks.**  The validating webhook configuration is not installed (the
  webhook Service would need cluster DNS or aggregator routing to a non-loopback IP); the
  operator still serves it, and the rotator only logs "Webhook not found".
- **The PyTorch init container.**  Its default (``nslookup <job>-master-0`` from
  ``alpine``) needs cluster DNS.  ``--pytorch-init-container-template-file`` (a file the
  Deployment mounts from a ConfigMap) replaces it with a Python one that prints the master
  address; the process node resolves a Service name in an env value to the Service's pod IP
  and starts the container once that pod has one (see ``testbed/pod_spec.py``).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from .binaries import training_operator_binary
from .crds import install_crds
from .ports import free_ports, wait_until
from .processes import Child, spawn

NAMESPACE = "kubeflow"
WEBHOOK_SECRET = "training-operator-webhook-cert"
CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # noqa: S108 - hard-coded in the operator

INIT_CONTAINER_TEMPLATE = """\
- name: init-pytorch
  image: {{.InitContainerImage}}
  env:
  - name: MASTER_ADDR
    value: {{.MasterAddr}}
  command:
  - python
  - -c
  - "import os; print('init-pytorch: master at', os.environ['MASTER_ADDR'], flush=True)"
"""


@dataclass
class TrainingOperator:
    """A running training operator: its process and the ports it serves."""

    child: Child
    health_port: int
    webhook_port: int
    crds: list[str]
    cert_files: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        """SIGTERM its process group (by PID), SIGKILL after 10 s; remove the cert files.

        v1.9.3 panics on SIGTERM after a clean manager stop ("close of closed channel",
        ``main.go:182``); that is upstream and harmless here."""
        self.child.stop(grace=10.0)
        for path in self.cert_files:
            path.unlink(missing_ok=True)


def _ensure(create: object, *args: object) -> None:
    try:
        create(*args)  # type: ignore[operator]
    except ApiException as error:
        if error.status != 409:
            raise


def start_training_operator(
    cluster: object,
    workdir: Path,
    schemes: tuple[str, ...] = ("pytorchjob", "tfjob"),
    timeout: float = 120.0,
) -> TrainingOperator:
    """Install the CRDs, start the operator, wait until its controllers run."""
    binary = training_operator_binary()
    api: client.ApiClient = cluster.api  # type: ignore[attr-defined]
    core = client.CoreV1Api(api)
    crds = install_crds(cluster)
    _ensure(core.create_namespace, {"metadata": {"name": NAMESPACE}})
    _ensure(
        core.create_namespaced_secret,
        NAMESPACE,
        {"metadata": {"name": WEBHOOK_SECRET}, "type": "Opaque"},
    )
    workdir.mkdir(parents=True, exist_ok=True)
    template = workdir / "initContainer.yaml"
    template.write_text(INIT_CONTAINER_TEMPLATE)
    metrics, health, webhook = free_ports(3)
    argv = [
        str(binary),
        f"--metrics-bind-address=127.0.0.1:{metrics}",
        f"--health-probe-bind-address=127.0.0.1:{health}",
        f"--webhook-server-port={webhook}",
        f"--pytorch-init-container-template-file={template}",
        "--pytorch-init-container-image=process-node/python",
        *[f"--enable-scheme={s}" for s in schemes],
        "--zap-log-level=info",
    ]
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),  # type: ignore[attr-defined]
        "MY_POD_NAMESPACE": NAMESPACE,
    }
    child = spawn("training-operator", argv, workdir / "training-operator.log", env=env)
    operator = TrainingOperator(child, health, webhook, crds)
    try:
        operator.cert_files = _mount_webhook_secret(core, child, timeout)
        log = child.log_path

        def controllers_started() -> bool:
            if not child.running():
                raise RuntimeError(f"training-operator exited:\n{child.log_tail()}")
            text = log.read_text(errors="replace")
            return all(
                f'"controller": "{s}-controller"' in text and "Starting workers" in text
                for s in schemes
            )

        wait_until(
            controllers_started, timeout, "training-operator controllers started", interval=0.5
        )
    except BaseException:
        operator.stop()
        raise
    return operator


def _mount_webhook_secret(core: client.CoreV1Api, child: Child, timeout: float) -> list[Path]:
    """Copy the Secret the rotator filled in to the operator's cert folder."""
    data: dict[str, str] = {}

    def filled() -> bool:
        if not child.running():
            raise RuntimeError(f"training-operator exited:\n{child.log_tail()}")
        data.update(core.read_namespaced_secret(WEBHOOK_SECRET, NAMESPACE).data or {})
        return "tls.crt" in data and "tls.key" in data

    wait_until(filled, timeout, f"Secret {NAMESPACE}/{WEBHOOK_SECRET} filled by the rotator")
    CERT_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for key in ("tls.crt", "tls.key", "ca.crt"):
        if key in data:
            target = CERT_DIR / key
            target.write_bytes(base64.b64decode(data[key]))
            target.chmod(0o600)
            written.append(target)
    return written
