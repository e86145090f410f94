"""KWOK: simulated nodes (and the pods bound to them) for real scheduling and quota tests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from .binaries import Binaries
from .fleet import KWOK_ANNOTATION, Fleet
from .processes import Child, spawn

POD_CIDR = "10.128.0.1/9"


def write_stage_config(stages_dir: Path, path: Path) -> Path:
    """Concatenate KWOK's Stage YAMLs (the standalone binary has none built in)."""
    docs = [f.read_text().strip() for f in sorted(stages_dir.glob("*.yaml"))]
    path.write_text("\n---\n".join(docs) + "\n")
    return path


def start_kwok(
    binaries: Binaries, kubeconfig: Path, workdir: Path, detached: bool = False
) -> Child:
    """Run kwok, managing only nodes annotated ``kwok.x-k8s.io/node=fake``."""
    config = write_stage_config(binaries.kwok_stages, workdir / "kwok-stages.yaml")
    argv = [
        str(binaries.kwok),
        f"--kubeconfig={kubeconfig}",
        f"--config={config}",
        f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
        f"--cidr={POD_CIDR}",
        "--node-ip=10.127.0.1",
        "--node-lease-duration-seconds=40",
    ]
    return spawn("kwok", argv, workdir / "logs" / "kwok.log", cwd=workdir, detached=detached)


@dataclass
class KwokFleet:
    """A fleet whose Node objects exist in the cluster."""

    fleet: Fleet

    def create(self, core: client.CoreV1Api, workers: int = 8) -> None:
        """Create every Node (in parallel: a benchmark may ask for 1,000)."""
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda body: core.create_node(body), self.fleet.manifests()))

    def delete(self, core: client.CoreV1Api) -> None:
        for name in self.fleet.node_names():
            core.delete_node(name)
