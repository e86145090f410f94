"""A real hub running gpuhub's Kubernetes config (``kube_hub_config.py``) against the test
cluster: spawns go to ``namespace``, quotas count the gpuhub pods there, and pods land on
the process node whose ``gpuhub.dev/test-node`` label is ``node``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from hubproc import Hub, auth  # noqa: E402

__all__ = ["Hub", "auth", "cluster_hub"]

CONFIG_FILE = Path(__file__).resolve().parent / "kube_hub_config.py"


def cluster_hub(
    data_dir: Path,
    config: dict[str, Any],
    kubeconfig: Path,
    namespace: str,
    node: str,
    **env: str,
) -> Hub:
    """The hub (not started); ``env`` adds settings read by ``kube_hub_config.py``, e.g.
    ``GPUHUB_STUB_SERVER="1"``."""
    return Hub(
        data_dir,
        config,
        config_file=CONFIG_FILE,
        shared_password=True,
        extra_env={
            "KUBECONFIG": str(kubeconfig),
            "GPUHUB_K8S_NAMESPACE": namespace,
            "GPUHUB_NODE_SELECTOR": json.dumps({"gpuhub.dev/test-node": node}),
            **env,
        },
    )
