"""The monitor on Kubernetes, pure parts: gpuhub's pods (as the watch cache keeps them) to
one allocation per server or job through the shared mapping, the replay source on those
keys, the DCGM exporter's answer from Prometheus, the ``monitor`` keys, and the app
picking its holdings from its config file."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from gpuhub.config import parse_config
from gpuhub.errors import ConfigError
from gpuhub.kube.informer import slim_pod
from gpuhub.kube.labels import allocation_marks
from gpuhub.model import Allocation
from gpuhub.monitor.app import MonitorApp
from gpuhub.monitor.holdings import LocalHoldings
from gpuhub.monitor.kubeholdings import KubeHoldings, holdings_from_pods
from gpuhub.monitor.metrics import MetricsSnapshot, render
from gpuhub.monitor.prometheus import PrometheusError, PrometheusSource, parse_dcgm
from gpuhub.monitor.sources import MIB, DeviceSample, ReplaySource, parse_trace

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def notebook_pod(user: str, phase: str = "Running", node: str | None = "gpu-a") -> dict[str, Any]:
    """A server's pod with the marks GPUKubeSpawner gives it (``allocation_marks``)."""
    alloc = Allocation(f"server:{user}/", user, "Vision Team", "a100", 1, since=T0)
    labels, notes = allocation_marks(alloc, "gpu")
    return {
        "metadata": {
            "name": f"jupyter-{user}",
            "namespace": "hub",
            "labels": {**labels, "component": "singleuser-server"},
            "annotations": {**notes, "hub.jupyter.org/username": user},
            "creationTimestamp": "2026-12-01T09:00:05Z",
            "managedFields": [{"manager": "kubespawner"}],
        },
        "spec": {"nodeName": node, "containers": [{"name": "notebook"}]},
        "status": {"phase": phase},
    }


def worker_pod(job: str, i: int, node: str, created: str) -> dict[str, Any]:
    """A PyTorchJob worker as the training operator creates it from the job's template
    (the jobs service's ``job_marks``: no key annotation, the job id in a label)."""
    return {
        "metadata": {
            "name": f"{job}-worker-{i}",
            "namespace": "hub",
            "labels": {
                "gpuhub.io/kind": "job",
                "gpuhub.io/job-id": job,
                "gpuhub.io/user": "bob",
                "gpuhub.io/gpus": "2",
                "gpuhub.io/gpu-type": "h100",
                "gpuhub.io/group": "nlp",
                "training.kubeflow.org/replica-index": str(i),
            },
            "annotations": {"gpuhub.io/user": "bob", "gpuhub.io/group": "nlp"},
            "creationTimestamp": created,
        },
        "spec": {"nodeName": node},
        "status": {"phase": "Running"},
    }


PODS = [
    slim_pod(p)
    for p in (
        notebook_pod("alice"),
        notebook_pod("carol", phase="Pending", node=None),
        notebook_pod("dave", phase="Succeeded"),  # done: holds nothing
        worker_pod("j1", 1, "gpu-b", "2026-12-01T09:01:00Z"),
        worker_pod("j1", 0, "gpu-a", "2026-12-01T09:00:30Z"),
    )
]


def test_pods_become_one_allocation_per_server_or_job():
    h = holdings_from_pods(PODS)
    assert [a.key for a in h.held] == ["job:j1", "server:alice/"]
    job, alice = h.held
    assert (job.user, job.group, job.gpu_type, job.kind, job.gpus) == (
        "bob",
        "nlp",
        "h100",
        "job",
        4,
    )
    assert job.pods == ("hub/j1-worker-0", "hub/j1-worker-1")
    assert job.nodes == ("gpu-a", "gpu-b")
    assert job.since == datetime(2026, 12, 1, 9, 0, 30, tzinfo=UTC)  # the first worker's
    assert (alice.user, alice.group, alice.gpus, alice.kind) == (
        "alice",
        "Vision Team",
        1,
        "notebook",
    )
    assert (alice.pods, alice.nodes, alice.devices) == (("hub/jupyter-alice",), ("gpu-a",), ())
    assert alice.since == datetime(2026, 12, 1, 9, 0, 5, tzinfo=UTC)
    # a Pending pod waits for its GPU: queued, not held
    assert [(a.key, a.gpus, a.nodes) for a in h.queued] == [("server:carol/", 1, ())]
    assert h.devices == {}


def test_cpu_pods_and_an_empty_namespace_hold_nothing():
    cpu = slim_pod(notebook_pod("erin"))
    cpu["metadata"]["labels"]["gpuhub.io/gpus"] = "0"
    assert holdings_from_pods([cpu]).held == ()
    assert holdings_from_pods([]).held == ()


def test_replay_trace_keys_are_the_allocation_keys_on_kubernetes():
    trace = parse_trace(
        [
            '{"key": "server:alice/", "t": 0, "util": 2, "memory_mib": 100}',
            '{"key": "job:j1", "t": 0, "util": 90, "gpu": 3}',
        ]
    )
    src = ReplaySource(trace)
    job, alice = holdings_from_pods(PODS).held
    now = alice.since.timestamp() + 60  # type: ignore[union-attr]
    assert src.read(alice, [], now) == (DeviceSample("0", 2.0, 100 * MIB),)
    assert src.read(job, [], now) == (DeviceSample("3", 90.0, 0),)


# -- Prometheus + DCGM exporter ------------------------------------------------------------
RECORDED = Path(__file__).with_name("data") / "prometheus-dcgm-answer.json"


def answer() -> dict[str, Any]:
    return dict(json.loads(RECORDED.read_text()))


def test_dcgm_answer_parses_to_samples_by_pod():
    by_pod = parse_dcgm(answer())
    assert by_pod == {
        "hub/jupyter-alice": (DeviceSample("GPU-1111", 3.0, 512 * MIB),),
        "hub/j1-worker-0": (
            DeviceSample("GPU-2222", 91.0, 30000 * MIB),
            DeviceSample("GPU-3333", 88.0, 29000 * MIB),
        ),
        # scraped by a ServiceMonitor without honorLabels: exported_* name the pod
        "hub/j1-worker-1": (DeviceSample("GPU-4444", 100.0, 0),),
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "parse error"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "instant vector"),
        ([], "no status"),
    ],
)
def test_a_failed_answer_is_an_error(bad: Any, message: str):
    with pytest.raises(PrometheusError, match=message):
        parse_dcgm(bad)


def test_prometheus_source_reads_each_allocations_pods_once_per_sample():
    job, alice = holdings_from_pods(PODS).held
    src = PrometheusSource("http://prometheus.monitoring:9090/")
    assert src.url.startswith("http://prometheus.monitoring:9090/api/v1/query?query=")
    with mock.patch.object(PrometheusSource, "query", return_value=answer()) as q:
        assert [s.gpu for s in src.read(job, [], 100.0)] == ["GPU-2222", "GPU-3333", "GPU-4444"]
        assert src.read(alice, [], 100.0) == (DeviceSample("GPU-1111", 3.0, 512 * MIB),)
        assert q.call_count == 1
        src.read(alice, [], 130.0)
        assert q.call_count == 2
    # Prometheus down: nothing known of anyone (so nothing is culled), no exception
    with mock.patch.object(PrometheusSource, "query", side_effect=OSError("refused")):
        assert src.read(alice, [], 160.0) == ()


# -- the monitor keys ----------------------------------------------------------------------
def with_monitor(raw: dict[str, Any], monitor: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    out["monitor"] = monitor
    return out


def test_prometheus_settings(raw):
    cfg = parse_config(
        with_monitor(raw, {"source": "prometheus", "prometheus_url": "http://prom:9090"})
    )
    assert (cfg.monitor.source, cfg.monitor.prometheus_url) == ("prometheus", "http://prom:9090")


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        ({"source": "prometheus"}, "monitor.source is prometheus but no Prometheus is named"),
        ({"prometheus_url": "http://prom"}, "only read with source: prometheus"),
        ({"source": "prometheus", "prometheus_url": "prom:9090"}, "not an http"),
        ({"source": "prometheus", "prometheus_url": "http://p/?query=up"}, "not an http"),
    ],
)
def test_prometheus_settings_are_checked_at_start(raw, monitor: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message) as e:
        parse_config(with_monitor(raw, monitor))
    assert "monitor.prometheus_url" in str(e.value)


def test_queued_gpus_are_a_metric():
    text = render(MetricsSnapshot(queued={("vision", "a100", "notebook"): 1})).decode()
    assert 'gpuhub_gpus_queued{gpu_type="a100",group="vision",kind="notebook"} 1.0' in text
    assert "# TYPE gpuhub_gpus_queued gauge" in text


# -- which holdings ------------------------------------------------------------------------
def test_the_app_takes_its_holdings_from_its_config_file(tmp_path: Path):
    config = tmp_path / "monitor_config.py"
    config.write_text(
        'c.MonitorApp.holdings_class = "gpuhub.monitor.kubeholdings.KubeHoldings"\n'
        'c.KubeHoldings.watch_namespaces = ["hub", "jobs"]\n'
    )
    try:
        app = MonitorApp()
        app.initialize([f"--config={config}", f"--data-dir={tmp_path}"])
        assert app.holdings_class is KubeHoldings
        assert app.config.KubeHoldings.watch_namespaces == ["hub", "jobs"]
    finally:
        MonitorApp.clear_instance()
    try:
        assert MonitorApp().holdings_class is LocalHoldings  # the embedded default
    finally:
        MonitorApp.clear_instance()


def test_the_chart_monitor_service_gets_the_hub_pods_environment():
    """Like ``gpuhub-jobs``: the gpuhub YAML and the in-cluster address / namespace (a
    managed service starts without the hub's environment)."""
    from gpuhub.hubconfig import kube_jobs_service_env

    services = [{"name": "gpuhub-monitor", "environment": {"EXTRA": "1"}}, {"name": "other"}]
    environ = {"POD_NAMESPACE": "gpuhub", "KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOME": "/x"}
    kube_jobs_service_env(services, Path("/etc/gpuhub.yaml"), environ)
    assert services[0]["environment"] == {
        "POD_NAMESPACE": "gpuhub",
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "GPUHUB_CONFIG": "/etc/gpuhub.yaml",
        "EXTRA": "1",
    }
    assert "environment" not in services[1]
