"""Fixtures of the cluster tier: one real cluster per session, started only when needed.

Nothing here runs at import time and nothing is autouse: a test gets a cluster by asking
for ``k8s_cluster`` (or a fixture built on it).  Without the binaries of
``tests/cluster/setup.sh`` the tests are skipped, unless ``GPUHUB_CLUSTER_REQUIRED=1``
(set it in CI) turns that into a failure.  ``GPUHUB_KEEP_NAMESPACE=1`` keeps test
namespaces for debugging.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import (
    BinariesMissing,
    Cluster,
    Fleet,
    ProcessNode,
    default_fleet,
    hub_rbac_objects,
)
from testbed.apply import delete
from testbed.ports import wait_until
from testbed.rbac import hub_kubeconfig as write_hub_kubeconfig
from testbed.training_operator import TrainingOperator, start_training_operator


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running control plane (etcd, apiserver, controller-manager, scheduler)."""
    try:
        cluster = Cluster(tmp_path_factory.mktemp("k8s"))
    except BinariesMissing as error:
        if os.environ.get("GPUHUB_CLUSTER_REQUIRED") == "1":
            pytest.fail(str(error))
        pytest.skip(str(error))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kwok_fleet(k8s_cluster: Cluster) -> Fleet:
    """The default simulated fleet (A100 at drivers 535/580, H100 at 570, CPU nodes), Ready."""
    fleet = default_fleet()
    k8s_cluster.add_fleet(fleet)
    return fleet


@pytest.fixture(scope="session")
def process_node(k8s_cluster: Cluster) -> ProcessNode:
    """A node whose pods run as local processes on 127.x.y.z (2 declared GPUs)."""
    return k8s_cluster.add_process_node("proc-node", gpus=2)


@pytest.fixture(scope="session")
def training_operator(
    k8s_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrainingOperator]:
    """The real Kubeflow training operator v1 (PyTorchJob, TFJob controllers) as a local
    process, with its CRDs installed; stopped by PID at the end of the session."""
    try:
        operator = start_training_operator(
            k8s_cluster, tmp_path_factory.mktemp("training-operator")
        )
    except BinariesMissing as error:
        if os.environ.get("GPUHUB_CLUSTER_REQUIRED") == "1":
            pytest.fail(str(error))
        pytest.skip(str(error))
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture
def core(k8s_cluster: Cluster) -> client.CoreV1Api:
    """CoreV1Api as the cluster admin."""
    return k8s_cluster.core


@pytest.fixture
def namespace(k8s_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted after the test."""
    core = k8s_cluster.core
    name = f"t-{uuid.uuid4().hex[:8]}"
    test = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:63].strip("-_.")
    core.create_namespace({"metadata": {"name": name, "labels": {"gpuhub.dev/test": test}}})
    wait_until(
        lambda: bool(core.read_namespaced_service_account("default", name)),
        60,
        f"ServiceAccount {name}/default",
    )
    try:
        yield name
    finally:
        if os.environ.get("GPUHUB_KEEP_NAMESPACE") != "1":
            try:
                core.delete_namespace(name)
            except ApiException as error:
                if error.status != 404:
                    raise


@pytest.fixture
def hub_kubeconfig(k8s_cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for ServiceAccount ``<namespace>:hub`` with manifests/hub-rbac.yaml."""
    path = write_hub_kubeconfig(
        k8s_cluster.api,
        k8s_cluster.server,
        k8s_cluster.ca_file,
        namespace,
        tmp_path / "hub.kubeconfig",
    )
    try:
        yield path
    finally:
        cluster_scoped = [
            o for o in hub_rbac_objects(namespace) if o["kind"] == "ClusterRoleBinding"
        ]
        delete(k8s_cluster.api, cluster_scoped)
