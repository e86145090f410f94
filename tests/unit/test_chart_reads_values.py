"""Every key helm-values/ sets is read by the Zero to JupyterHub 4.4.0 chart: by a template,
or by the hub's ``jupyterhub_config.py`` (:mod:`chart_reads`).  A key nobody reads is
silently ignored by helm (the schema cannot catch a misplaced key that happens to be valid
elsewhere) and by traitlets, so a value that looks set would change nothing.

The chart hands some subtrees on whole (:data:`HANDED_ON`): it never looks inside them, its
consumer does.  Those keys are checked here against that consumer, the classes the hub
really loads."""

from __future__ import annotations

import copy
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_reads import chart_reads, leaf_paths, python_reads, template_reads, unread
from jupyterhub.app import JupyterHub
from jupyterhub.services.service import Service
from traitlets.config import Configurable

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT.parent / "shared" / "data" / "z2jh-4.4.0-chart" / "jupyterhub"
VALUES_FILES = sorted((ROOT / "helm-values").glob("*.yaml"))  # manifests/ is not values

HANDED_ON = {
    # hub.config.<Class>.<trait>: traitlets config for the hub process (c[section].update)
    "hub.config": "the traits of the classes the hub loads (test_hub_config_...)",
    # hub.services.<name>.<field>: one JupyterHub.services entry each; JupyterHub refuses
    # a field that is not an input trait of jupyterhub.services.service.Service
    "hub.services": "Service's input traits (test_hub_services_...)",
    # hub.loadRoles.<name>.<key>: one JupyterHub.load_roles entry each
    "hub.loadRoles": "the role keys JupyterHub reads (test_hub_load_roles_...)",
}
"""The allow-list: subtrees the chart passes through untouched, and what checks them here.
Other subtrees read whole (hub.extraEnv, hub.extraFiles, *.networkPolicy rules, ...) are
data whose shape the chart's schema (tests/unit/test_helm_values.py) already checks."""

ROLE_KEYS = {"name", "description", "scopes", "users", "groups", "services"}
"""What JupyterHub reads from a load_roles entry (jupyterhub/roles.py ``create_role``;
app.py ``init_role_assignment`` for users, groups, services)."""


@pytest.fixture(scope="module")
def reads() -> set[tuple[str, ...]]:
    if not CHART.is_dir():
        pytest.fail(f"the z2jh 4.4.0 chart is missing: expected {CHART}")
    return chart_reads(CHART)


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


def test_every_values_file_is_checked():
    assert {p.name for p in VALUES_FILES} >= {"gpuhub.yaml", "gpu-cluster.yaml"}


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_every_key_our_values_set_is_read_by_the_chart(reads: set[tuple[str, ...]], path: Path):
    assert unread(load(path), reads) == []


def test_a_made_up_key_is_reported(reads: set[tuple[str, ...]]):
    values = copy.deepcopy(load(ROOT / "helm-values" / "gpuhub.yaml"))
    values["hub"]["imagePullPolicy"] = "Always"  # it is hub.image.pullPolicy
    values["singleuser"]["storage"]["dynamic"]["pvcNameTemplat"] = "claim-{username}"
    values["cull"]["timout"] = 60
    values["scheduling"]["userScheduler"]["enable"] = False
    assert unread(values, reads) == [
        "cull.timout",
        "hub.imagePullPolicy",
        "scheduling.userScheduler.enable",
        "singleuser.storage.dynamic.pvcNameTemplat",
    ]


def test_the_charts_own_defaults_are_not_all_read(reads: set[tuple[str, ...]]):
    """The parse is not vacuous: the keys of the chart's values.yaml it leaves unread are
    the ones no 4.4.0 template or hub line reads (``custom`` is for users' extraConfig,
    ``enabled`` and ``global`` for parent charts)."""
    assert unread(load(CHART / "values.yaml"), reads) == [
        "custom",
        "enabled",
        "global.safeToShowValues",
        "prePuller.pause.image.pullPolicy",
        "prePuller.pause.image.pullSecrets",
        "proxy.secretSync.image.pullSecrets",
        "singleuser.networkTools.image.pullSecrets",
    ]


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("templates", "hub.image"),
        ("templates", "proxy.service.type"),
        ("templates", "singleuser.cloudMetadata.enabled"),  # hasKey .Values.x "enabled"
        ("templates", "hub.config.CryptKeeper.keys"),  # .Values.hub.config | dig ...
        ("templates", "imagePullSecrets"),  # $jupyterhub_values.imagePullSecrets
        ("python", "singleuser.startTimeout"),  # ("start_timeout", None): camelCaseify
        ("python", "singleuser.image.pullPolicy"),  # ("image_pull_policy", "image.pullPolicy")
        ("python", "hub.namedServerLimitPerUser"),
        ("python", "hub.services"),  # get_config and f"hub.services.{key}.apiToken"
        ("python", "cull.removeNamedServers"),
    ],
)
def test_each_kind_of_read_is_found(source: str, path: str):
    found = (
        template_reads(CHART)
        if source == "templates"
        else python_reads(CHART / "files" / "hub" / "jupyterhub_config.py")
    )
    assert tuple(path.split(".")) in found


def test_handed_on_subtrees_are_read_whole(reads: set[tuple[str, ...]]):
    for prefix in HANDED_ON:
        assert tuple(prefix.split(".")) in reads


# -- what the chart hands on ---------------------------------------------------------------
def hub_classes(files: list[Path]) -> dict[str, list[type[Configurable]]]:
    """Class name -> classes, for every class in the MRO of what the hub loads: JupyterHub,
    its proxy and CryptKeeper, and the spawner and authenticator the values name."""
    from jupyterhub.crypto import CryptKeeper
    from jupyterhub.proxy import ConfigurableHTTPProxy

    loaded: list[type] = [JupyterHub, ConfigurableHTTPProxy, CryptKeeper]
    groups = {
        "spawner_class": "jupyterhub.spawners",
        "authenticator_class": "jupyterhub.authenticators",
    }
    for path in files:
        hub_app = load(path).get("hub", {}).get("config", {}).get("JupyterHub", {})
        for trait, group in groups.items():
            if trait in hub_app:
                (entry,) = entry_points(group=group, name=hub_app[trait])
                loaded.append(entry.load())
    classes: dict[str, list[type[Configurable]]] = {}
    for cls in loaded:
        for base in cls.__mro__:
            if isinstance(base, type) and issubclass(base, Configurable):
                classes.setdefault(base.__name__, []).append(base)
    return classes


def unknown_traits(
    values: dict[str, Any], classes: dict[str, list[type[Configurable]]]
) -> list[str]:
    bad = []
    for section, traits in values.get("hub", {}).get("config", {}).items():
        known = {t for cls in classes.get(section, []) for t in cls.class_traits(config=True)}
        bad += [f"hub.config.{section}.{t}" for t in traits if t not in known]
    return sorted(bad)


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_hub_config_sets_traits_of_the_classes_the_hub_loads(path: Path):
    assert unknown_traits(load(path), hub_classes(VALUES_FILES)) == []


def test_a_made_up_trait_is_reported():
    values = copy.deepcopy(load(ROOT / "helm-values" / "gpuhub.yaml"))
    values["hub"]["config"]["KubeSpawner"]["delete_pvcs"] = False
    values["hub"]["config"]["KubeSpawer"] = {"http_timeout": 60}
    assert unknown_traits(values, hub_classes(VALUES_FILES)) == [
        "hub.config.KubeSpawer.http_timeout",
        "hub.config.KubeSpawner.delete_pvcs",
    ]


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_hub_services_set_service_fields(path: Path):
    fields = set(Service.class_traits(input=True)) | {"apiToken"}  # the chart's own key
    services = load(path).get("hub", {}).get("services", {})
    assert [f"{n}.{k}" for n, s in services.items() for k in s if k not in fields] == []


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_hub_load_roles_set_role_keys(path: Path):
    roles = load(path).get("hub", {}).get("loadRoles", {})
    assert [f"{n}.{k}" for n, r in roles.items() for k in r if k not in ROLE_KEYS] == []


def test_leaf_paths_stop_at_lists_and_nulls():
    doc = {"a": {"b": [1, {"c": 2}], "d": None, "e": {}}, "f": 1}
    assert list(leaf_paths(doc)) == [("a", "b"), ("a", "d"), ("a", "e"), ("f",)]
