"""gpuhub's local Kubernetes test bed: a real control plane, KWOK GPU nodes, a process node.

Import with ``tests/cluster`` on ``sys.path`` (pytest does this for tests in that folder).
Nothing starts at import time.
"""

from .binaries import Binaries, BinariesMissing
from .cluster import Cluster, stop_from_state
from .crds import install_crds
from .fleet import A100_80GB, H100_80GB, L4, Fleet, GPUModel, NodePool, default_fleet
from .process_node import ProcessNode
from .rbac import hub_kubeconfig, hub_rbac_objects

__all__ = [
    "A100_80GB",
    "H100_80GB",
    "L4",
    "Binaries",
    "BinariesMissing",
    "Cluster",
    "Fleet",
    "GPUModel",
    "NodePool",
    "ProcessNode",
    "default_fleet",
    "hub_kubeconfig",
    "hub_rbac_objects",
    "install_crds",
    "stop_from_state",
]
