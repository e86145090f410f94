"""The Zero to JupyterHub 4.4.0 chart rendered by real helm (v3, built by setup.sh) with
``helm-values/gpuhub.yaml`` alone and with each overlay in ``helm-values/``, for the test
cluster's Kubernetes version: ``helm template`` and ``helm lint --strict`` succeed, the
rendered hub objects carry what our values set, every image the release pulls is known,
and the test cluster's apiserver accepts every rendered object (server-side dry run with
strict field validation)."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from charthub import CHART, VALUES, chart_values
from testbed import Cluster
from testbed.apply import Rejected, dry_run_create
from testbed.binaries import BinariesMissing, helm_binary, kubernetes_version

pytestmark = pytest.mark.cluster

OVERLAYS = sorted(p.stem for p in VALUES.glob("*.yaml") if p.stem != "gpuhub")
RENDERS: list[list[str | Path]] = [["gpuhub"], *(["gpuhub", o] for o in OVERLAYS)]
# docs/install-kubernetes.md, before the login overlay
INSTALL: list[str | Path] = ["gpuhub", "gpu-cluster"]
CHART_IMAGES = {
    "quay.io/jupyterhub/configurable-http-proxy:5.2.0",  # proxy.chp.image
    "registry.k8s.io/pause:3.10.1",  # prePuller.pause.image (the image pullers' container)
    "registry.k8s.io/kube-scheduler:v1.30.14",  # scheduling.userScheduler.image
}
"""Images the chart's defaults name and our values leave as they are (z2jh 4.4.0)."""


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return helm_binary()
    except BinariesMissing as error:
        if os.environ.get("GPUHUB_CLUSTER_REQUIRED") == "1":
            pytest.fail(str(error))
        pytest.skip(str(error))


def value_args(files: list[str | Path]) -> list[str]:
    """``-f`` for each file: a name in helm-values/, or a path."""
    paths = [f if isinstance(f, Path) else VALUES / f"{f}.yaml" for f in files]
    return [a for path in paths for a in ("-f", str(path))]


def helm_run(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """helm with the test cluster's Kubernetes version for its capabilities."""
    command = [str(helm), *args, "--kube-version", kubernetes_version()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def render(helm: Path, files: list[str | Path], namespace: str = "gpuhub") -> list[dict[str, Any]]:
    """``helm template`` of the chart with the values files in order."""
    out = helm_run(helm, "template", "gpuhub", str(CHART), "-n", namespace, *value_args(files))
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def lint(helm: Path, files: list[str | Path]) -> subprocess.CompletedProcess[str]:
    return helm_run(helm, "lint", str(CHART), "--strict", *value_args(files))


def overlay(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def images(docs: list[dict[str, Any]]) -> set[str]:
    found = set()
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for key in ("initContainers", "containers"):
            found.update(c["image"] for c in pod.get(key, []))
    return found


@pytest.fixture(scope="module")
def installed(helm: Path) -> list[dict[str, Any]]:
    return render(helm, INSTALL)


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    """What helm passes the templates for :data:`INSTALL`: the chart's defaults + ours."""
    return chart_values(INSTALL, {})


def ids(files: list[str | Path]) -> str:
    return "+".join(str(f) for f in files)


@pytest.mark.parametrize("files", RENDERS, ids=ids)
def test_chart_renders_and_lints(helm: Path, files: list[str | Path]):
    docs = render(helm, files)
    assert {"hub", "proxy"} <= {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    linted = lint(helm, files)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout


def test_a_key_the_chart_does_not_know_fails_template_and_lint(helm: Path, tmp_path: Path):
    bad = overlay(tmp_path, {"hub": {"imagee": {"name": "x"}}})
    out = helm_run(helm, "template", "gpuhub", str(CHART), *value_args(["gpuhub", bad]))
    assert out.returncode != 0
    assert "additional properties 'imagee' not allowed" in out.stderr
    assert lint(helm, ["gpuhub", bad]).returncode != 0


def test_hub_deployment_runs_our_image_with_our_files(
    installed: list[dict[str, Any]], values: dict[str, Any]
):
    hub = values["hub"]
    pod = find(installed, "Deployment", "hub")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"{hub['image']['name']}:{hub['image']['tag']}"
    assert pod["serviceAccountName"] == hub["serviceAccount"]["name"] == "hub"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GPUHUB_CONFIG"] == hub["extraEnv"]["GPUHUB_CONFIG"]
    mounts = {m["mountPath"]: m.get("subPath") for m in container["volumeMounts"]}
    for key, f in hub["extraFiles"].items():
        assert mounts[f["mountPath"]] == key


def test_hub_secret_carries_config_services_and_files(
    installed: list[dict[str, Any]], values: dict[str, Any]
):
    secret = find(installed, "Secret", "hub")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    passed = yaml.safe_load(data["values.yaml"])  # what the hub's get_config reads
    assert passed["hub"]["config"] == values["hub"]["config"]
    assert passed["hub"]["config"]["JupyterHub"]["spawner_class"] == "gpu-kube"
    assert passed["hub"]["services"] == values["hub"]["services"]
    assert passed["hub"]["services"]["gpuhub-jobs"]["command"][0] == "gpuhub-jobs"
    assert passed["hub"]["services"]["gpuhub-monitor"]["command"][0] == "gpuhub-monitor"
    assert passed["hub"]["loadRoles"] == values["hub"]["loadRoles"]
    for name in values["hub"]["services"]:
        assert len(data[f"hub.services.{name}.apiToken"]) >= 32
    assert secret["stringData"] == {
        k: f["stringData"] for k, f in values["hub"]["extraFiles"].items()
    }


def test_hub_configmap_holds_the_charts_hub_config(installed: list[dict[str, Any]]):
    data = find(installed, "ConfigMap", "hub")["data"]
    for name in ("jupyterhub_config.py", "z2jh.py"):
        assert data[name] == (CHART / "files" / "hub" / name).read_text()


def test_services_reach_the_jobs_and_monitor_ports(
    installed: list[dict[str, Any]], values: dict[str, Any]
):
    ports = find(installed, "Service", "hub")["spec"]["ports"]
    for extra in values["hub"]["service"]["extraPorts"]:
        assert extra in ports
    hub_policy = find(installed, "NetworkPolicy", "hub")["spec"]
    for rule in values["hub"]["networkPolicy"]["ingress"]:
        assert rule in hub_policy["ingress"]
    user_policy = find(installed, "NetworkPolicy", "singleuser")["spec"]
    for rule in values["singleuser"]["networkPolicy"]["egress"]:
        assert rule in user_policy["egress"]


def test_image_puller_pulls_every_image_on_gpu_nodes(
    installed: list[dict[str, Any]], values: dict[str, Any]
):
    pod = find(installed, "DaemonSet", "continuous-image-puller")["spec"]["template"]["spec"]
    pulled = {c["image"] for c in pod["initContainers"]}
    named = {f"{i['name']}:{i['tag']}" for i in values["prePuller"]["extraImages"].values()}
    single = values["singleuser"]["image"]
    assert pulled == named | {f"{single['name']}:{single['tag']}"}
    for toleration in values["prePuller"]["extraTolerations"]:
        assert toleration in pod["tolerations"]


def test_gpu_cluster_turns_off_the_user_scheduler(helm: Path, installed: list[dict[str, Any]]):
    base = render(helm, ["gpuhub"])
    assert find(base, "Deployment", "user-scheduler")
    assert "user-scheduler" not in {d["metadata"]["name"] for d in installed}
    assert not [d for d in installed if d["kind"] in ("PriorityClass", "StatefulSet")]


def test_every_image_is_ours_or_a_known_chart_default(helm: Path):
    ours: set[str] = set()
    seen: set[str] = set()
    for files in RENDERS:
        seen |= images(render(helm, files))
    for files in RENDERS:
        v = chart_values(files, {})
        ours |= {f"{i['name']}:{i['tag']}" for i in v["prePuller"]["extraImages"].values()}
        ours |= {f"{v[k]['image']['name']}:{v[k]['image']['tag']}" for k in ("hub", "singleuser")}
    assert seen == ours | CHART_IMAGES
    assert all(i.startswith("ghcr.io/gpuhub/") for i in ours)


@pytest.mark.parametrize("files", RENDERS, ids=ids)
def test_the_apiserver_accepts_every_rendered_object(
    helm: Path, k8s_cluster: Cluster, namespace: str, files: list[str | Path]
):
    dry_run_create(k8s_cluster.api, render(helm, files, namespace), namespace)


def test_the_apiserver_refuses_a_field_the_pod_spec_has_not(
    helm: Path, k8s_cluster: Cluster, namespace: str, tmp_path: Path
):
    """hub.extraPodSpec is free-form for the chart's schema: only the apiserver knows."""
    bad = overlay(tmp_path, {"hub": {"extraPodSpec": {"priorityClassNam": "high"}}})
    docs = render(helm, ["gpuhub", bad], namespace)
    with pytest.raises(Rejected, match=r"^Deployment/hub: .*priorityClassNam"):
        dry_run_create(k8s_cluster.api, docs, namespace)
