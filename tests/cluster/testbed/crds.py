"""Install CustomResourceDefinitions shipped inside a Go module (fetched via the module proxy)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kubernetes import client

from .apply import apply, load_yaml
from .binaries import training_operator_version
from .ports import wait_until

#: The training-operator module whose CRDs tests install (the version setup.sh builds).
TRAINING_OPERATOR = f"github.com/kubeflow/training-operator@{training_operator_version()}"


def module_dir(module: str) -> Path:
    """``go mod download -json <module@version>``: the module's extracted (read-only) folder."""
    env = {**os.environ, "GOTOOLCHAIN": "local"}
    with tempfile.TemporaryDirectory() as outside_any_module:
        result = subprocess.run(
            ["go", "mod", "download", "-json", module],
            cwd=outside_any_module,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        raise RuntimeError(f"go mod download {module} failed: {info.get('Error')}{result.stderr}")
    return Path(info["Dir"])


def crd_documents(directory: Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in the YAML files under ``directory``."""
    return [
        doc
        for path in sorted(directory.rglob("*.y*ml"))
        for doc in load_yaml(path)
        if doc.get("kind") == "CustomResourceDefinition"
    ]


def install_crds(
    cluster: Any,
    module: str = TRAINING_OPERATOR,
    path: str = "manifests/base/crds",
    timeout: float = 60.0,
) -> list[str]:
    """Apply the CRDs found under ``path`` of ``module`` and wait until they are Established.

    ``cluster`` is a :class:`testbed.Cluster` (or anything with an ``api`` ApiClient).
    Returns the CRD names.
    """
    crds = crd_documents(module_dir(module) / path)
    if not crds:
        raise FileNotFoundError(f"no CustomResourceDefinition under {module}/{path}")
    apply(cluster.api, crds)
    extensions = client.ApiextensionsV1Api(cluster.api)
    names = [crd["metadata"]["name"] for crd in crds]

    def established() -> bool:
        for name in names:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    wait_until(established, timeout, f"CRDs {', '.join(names)} Established")
    return names
