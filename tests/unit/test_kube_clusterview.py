"""One cluster view per process and watch scope: a config edit keeps it (and the
reservations in flight), and adds no second listener to the watches."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.config import kube_config
from traitlets.config import Config

from gpuhub.activeconfig import active_config
from gpuhub.errors import QuotaDenied
from gpuhub.profiles import validate_options
from gpuhub.spawners.kube import GPUKubeSpawner


def spawner(path: Path, user: str, **traits: Any) -> GPUKubeSpawner:
    c = Config()
    c.GPUKubeSpawner.gpuhub_config_file = str(path)
    c.KubeSpawner.namespace = "hub"
    for k, v in traits.items():
        setattr(c.GPUKubeSpawner, k, v)
    who = SimpleNamespace(
        name=user, id=1, url=f"/user/{user}/", groups=[SimpleNamespace(name="vision")]
    )
    return GPUKubeSpawner(_mock=True, user=who, config=c)


@pytest.fixture
def cfg_file(tmp_path: Path, raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    # KubeSpawner loads a kubeconfig when constructed; nothing here contacts a server
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "none", "user": {"token": "unused"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
        "current-context": "none",
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))
    path = tmp_path / "gpuhub.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def test_config_edit_keeps_the_ledger_and_in_flight_reservations(
    cfg_file: Path, raw: dict[str, Any]
) -> None:
    alice = spawner(cfg_file, "alice")
    backend = alice.gpuhub_backend()
    request = validate_options(alice.gpuhub, "alice", ["vision"], {"profile": "gpu", "gpus": 4})
    backend.reserve("server:alice/", request, ["vision"])
    alice.gpuhub_capacity()

    raw["quotas"]["groups"]["vision"]["gpus"] = 6  # the admin edits the YAML
    cfg_file.write_text(yaml.safe_dump(raw))
    active_config(cfg_file).reload()

    bob = spawner(cfg_file, "bob")
    assert bob.gpuhub_backend() is backend
    held = backend.snapshot().get("server:alice/")
    assert held is not None and held.gpus == 4  # alice's spawn in flight still counts
    # the new quota applies to the next decision: 2 more fit, a third does not
    two = validate_options(bob.gpuhub, "bob", ["vision"], {"profile": "gpu", "gpus": 2})
    assert backend.reserve("server:bob/", two, ["vision"]) is not None
    with pytest.raises(QuotaDenied, match="uses 6 of 6"):
        backend.reserve("server:bob/x", two, ["vision"])
    bob.gpuhub_capacity()
    view = bob.gpuhub_view
    assert alice.gpuhub_view is view
    # one ledger and one capacity listener on the pod watch, one capacity listener on
    # the node watch: nothing added by the edit or the second spawner
    assert [len(i.listeners) for i in view.informers] == [2, 1]
    assert sum(fn == backend.observe for i in view.pod_informers for fn in i.listeners) == 1


async def test_default_scope_is_the_spawners_namespace(cfg_file: Path) -> None:
    assert spawner(cfg_file, "alice").watch_namespaces == ["hub"]
    explicit = spawner(cfg_file, "alice", watch_namespaces=["hub", "jobs"])
    assert explicit.watch_namespaces == ["hub", "jobs"]
    assert explicit.gpuhub_view is not spawner(cfg_file, "bob").gpuhub_view
    assert [i.kwargs["namespace"] for i in explicit.gpuhub_view.pod_informers] == ["hub", "jobs"]


async def test_stop_never_force_deletes_and_waits_a_real_grace(cfg_file: Path) -> None:
    assert spawner(cfg_file, "alice").delete_grace_period == 30
