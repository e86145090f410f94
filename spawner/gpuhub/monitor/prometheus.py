"""GPU utilisation on Kubernetes: NVIDIA's DCGM exporter metrics, read from Prometheus.

The exporter (GPU Operator, or its own Helm chart, with Kubernetes mode on: its default)
labels each GPU's series with the pod that holds it (``pod``, ``namespace``; Prometheus
renames them ``exported_pod`` / ``exported_namespace`` when the scrape keeps its own
``pod`` label, and those win).  One instant query per sample reads every GPU::

    GET <prometheus_url>/api/v1/query?query={__name__=~"DCGM_FI_DEV_GPU_UTIL|DCGM_FI_DEV_FB_USED"}

and the answer (Prometheus HTTP API, ``resultType`` ``vector``) is parsed by the pure
:func:`parse_dcgm`::

    {"status": "success", "data": {"resultType": "vector", "result": [
      {"metric": {"__name__": "DCGM_FI_DEV_GPU_UTIL", "gpu": "0", "UUID": "GPU-5a…",
                  "pod": "jupyter-alice", "namespace": "gpuhub", "container": "notebook"},
       "value": [1764580000.5, "73"]},
      {"metric": {"__name__": "DCGM_FI_DEV_FB_USED", …}, "value": [1764580000.5, "30000"]}]}}

``DCGM_FI_DEV_GPU_UTIL`` is percent, ``DCGM_FI_DEV_FB_USED`` MiB of frame buffer used.
A GPU no pod holds carries no pod label and is ignored.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.error import URLError
from urllib.parse import urlencode

from ..errors import GpuhubError
from ..ledger import Device
from ..model import Allocation
from .sources import MIB, DeviceSample

UTIL = "DCGM_FI_DEV_GPU_UTIL"
MEMORY = "DCGM_FI_DEV_FB_USED"
QUERY = f'{{__name__=~"{UTIL}|{MEMORY}"}}'
TIMEOUT = 10.0
"""Seconds one query may take (it runs in the sampling thread)."""

log = logging.getLogger(__name__)


class PrometheusError(GpuhubError):
    """An answer that is not a successful instant vector."""


def _pod(labels: Mapping[str, str]) -> str | None:
    pod = labels.get("exported_pod") or labels.get("pod")
    ns = labels.get("exported_namespace") or labels.get("namespace")
    return f"{ns}/{pod}" if pod and ns else None


def parse_dcgm(answer: Any) -> dict[str, tuple[DeviceSample, ...]]:
    """Pure: ``{"namespace/pod": samples of its GPUs, by UUID (else index)}`` from a
    Prometheus instant-query answer (see the module's docstring).  A GPU with no
    utilisation series is left out; memory defaults to 0."""
    if not isinstance(answer, dict) or answer.get("status") != "success":
        err = answer.get("error") if isinstance(answer, dict) else None
        raise PrometheusError(f"Prometheus answered no success ({err or 'no status'})")
    data = answer.get("data") or {}
    if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        raise PrometheusError("Prometheus answered no instant vector")
    util: dict[tuple[str, str], float] = {}
    memory: dict[tuple[str, str], float] = {}
    for series in data["result"]:
        labels = series.get("metric") or {}
        pod = _pod(labels)
        gpu = labels.get("UUID") or labels.get("gpu")
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if pod is None or gpu is None or not math.isfinite(value):
            continue
        into = {UTIL: util, MEMORY: memory}.get(labels.get("__name__", ""))
        if into is not None:
            into[(pod, str(gpu))] = value
    out: dict[str, list[DeviceSample]] = {}
    for (pod, gpu), u in sorted(util.items()):
        mem = int(memory.get((pod, gpu), 0.0) * MIB)
        out.setdefault(pod, []).append(DeviceSample(gpu, min(max(u, 0.0), 100.0), mem))
    return {pod: tuple(s) for pod, s in out.items()}


class PrometheusSource:
    """DCGM exporter metrics from the Prometheus at ``url`` (its base, e.g.
    ``http://prometheus-server.monitoring``).  Blocking: the service samples in a thread.
    One query per sample (answers are kept for the ``now`` they were asked at); when
    Prometheus does not answer, nothing is known of anyone (so nothing is culled)."""

    name = "prometheus"

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/") + "/api/v1/query?" + urlencode({"query": QUERY})
        self.timeout = timeout
        self._at: float | None = None
        self._pods: dict[str, tuple[DeviceSample, ...]] = {}

    def query(self) -> Any:
        """The raw answer (blocking HTTP)."""
        with urllib.request.urlopen(self.url, timeout=self.timeout) as r:  # noqa: S310 - http(s) checked at start
            return json.load(r)

    def pods(self, now: float) -> dict[str, tuple[DeviceSample, ...]]:
        """Samples by pod, queried once per ``now``."""
        if self._at != now:
            self._at = now
            try:
                self._pods = parse_dcgm(self.query())
            except (OSError, URLError, ValueError, PrometheusError) as e:
                log.warning("gpuhub-monitor: no GPU utilisation from Prometheus (%s)", e)
                self._pods = {}
        return self._pods

    def read(
        self, alloc: Allocation, devices: Sequence[Device], now: float
    ) -> tuple[DeviceSample, ...]:
        by_pod = self.pods(now)
        return tuple(s for pod in alloc.pods for s in by_pod.get(pod, ()))
