"""helm-values/: every values file (and the base merged with each overlay, as helm merges)
validates against the Zero to JupyterHub 4.4.0 chart schema; the embedded gpuhub YAML and
Python snippets are valid; the extra manifests are well formed and grant exactly the
documented RBAC."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from traitlets.config import Config

from gpuhub.config import parse_config
from gpuhub.hubconfig import oauth_config

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "helm-values"
MANIFESTS = VALUES / "manifests"
SCHEMA_PATH = ROOT.parent / "shared" / "data" / "z2jh-4.4.0-values.schema.json"
OVERLAYS = ["gpu-cluster", "oidc-keycloak", "github-teams", "kueue", "ingress-tls"]
HUB_MATRIX = "/usr/local/share/gpuhub/matrix.yaml"  # where images/hub/Dockerfile puts it


def load_schema(path: Path) -> dict[str, Any]:
    if not path.is_file():
        pytest.fail(
            f"the z2jh values schema is missing: expected {path} (the repository's "
            "sibling ../shared/data/; it is values.schema.json of the published "
            "jupyterhub chart 4.4.0)"
        )
    return dict(yaml.safe_load(path.read_text()))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return load_schema(SCHEMA_PATH)


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((VALUES / f"{name}.yaml").read_text())
    assert isinstance(data, dict), f"{name}.yaml is not a mapping"
    return data


def helm_merge(base: Any, overlay: Any) -> Any:
    """How helm combines ``-f`` files: maps merge key by key, anything else (lists
    included) is replaced, and ``null`` deletes the key."""
    if not (isinstance(base, dict) and isinstance(overlay, dict)):
        return copy.deepcopy(overlay)
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def without_required(node: Any) -> Any:
    """The schema minus its ``required`` lists.  helm validates the chart's defaults merged
    with the user's files, and the defaults (values.yaml, not shipped here) supply every
    required key; a user values file is a partial document.  Everything else (unknown keys,
    types, enums, shapes) is checked as helm would."""
    if isinstance(node, dict):
        drop = "properties" in node  # an object's required keys, not a oneOf branch's
        return {k: without_required(v) for k, v in node.items() if not (drop and k == "required")}
    if isinstance(node, list):
        return [without_required(v) for v in node]
    return node


def schema_errors(schema: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """Every violation as ``path.to.key: message`` (empty when valid)."""
    validator = jsonschema.Draft7Validator(without_required(schema))
    return sorted(
        f"{'.'.join(str(p) for p in e.absolute_path) or '<top>'}: {e.message}"
        for e in validator.iter_errors(values)
    )


# -- schema ------------------------------------------------------------------------------
def test_helm_merge_is_helms():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1, "e": {"f": 1}}
    over = {"a": {"c": [3]}, "d": None, "e": {"g": 2}}
    assert helm_merge(base, over) == {"a": {"b": 1, "c": [3]}, "e": {"f": 1, "g": 2}}


@pytest.mark.parametrize("name", ["gpuhub", *OVERLAYS])
def test_values_file_validates(schema: dict[str, Any], name: str):
    assert schema_errors(schema, load(name)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_base_with_overlay_validates(schema: dict[str, Any], overlay: str):
    assert schema_errors(schema, helm_merge(load("gpuhub"), load(overlay))) == []


def test_base_with_every_overlay_validates(schema: dict[str, Any]):
    values = load("gpuhub")
    for overlay in ("gpu-cluster", "oidc-keycloak", "kueue", "ingress-tls"):
        values = helm_merge(values, load(overlay))
    assert schema_errors(schema, values) == []


BAD_OVERLAYS = [
    pytest.param(
        {"singleuser": {"profileList": {"gpu": {"display_name": "GPU"}}}},
        r"^singleuser\.profileList: .* is not of type 'array'$",
        id="profileList-as-dict",
    ),
    pytest.param(
        {"singeluser": {"image": {"name": "x", "tag": "1"}}},
        r"^<top>: Additional properties are not allowed \('singeluser' was unexpected\)$",
        id="unknown-top-level-key",
    ),
    pytest.param(
        {"hub": {"config": {"kubeSpawner": {"delete_pvc": False}}}},
        r"^hub\.config: .*'kubeSpawner' (was unexpected|does not match any of the regexes)",
        id="lowercase-config-section",
    ),
    pytest.param(
        {"cull": {"timeout": "1h"}},
        r"^cull\.timeout: '1h' is not of type 'integer', 'null'$",
        id="wrong-type",
    ),
    pytest.param(
        {"hub": {"extraFiles": {"x": {"mountPath": "/x", "stringData": 1}}}},
        r"^hub\.extraFiles\.x\.stringData: 1 is not of type 'string'$",
        id="extraFiles-stringData-not-a-string",
    ),
]


@pytest.mark.parametrize(("overlay", "message"), BAD_OVERLAYS)
def test_invalid_overlay_is_caught(schema: dict[str, Any], overlay: dict[str, Any], message: str):
    errors = schema_errors(schema, helm_merge(load("gpuhub"), overlay))
    assert errors, "the invalid overlay passed the schema"
    assert any(re.search(message, e) for e in errors), errors


def test_missing_schema_fails_clearly(tmp_path: Path):
    with pytest.raises(pytest.fail.Exception, match=r"z2jh values schema is missing: expected"):
        load_schema(tmp_path / "z2jh-4.4.0-values.schema.json")


# -- what the base promises ----------------------------------------------------------------
def test_base_promises():
    v = load("gpuhub")
    hub, single = v["hub"], v["singleuser"]
    matrix = yaml.safe_load((ROOT / "images" / "matrix.yaml").read_text())
    assert hub["image"] == {"name": f"{matrix['registry']}/hub", "tag": matrix["hub"]["tag"]}
    assert hub["config"]["JupyterHub"]["spawner_class"] == "gpu-kube"
    assert hub["config"]["KubeSpawner"]["delete_pvc"] is False
    assert hub["extraEnv"]["GPUHUB_CONFIG"] == "/usr/local/etc/gpuhub/gpuhub.yaml"
    assert hub["extraFiles"]["gpuhub-yaml"]["mountPath"] == "/usr/local/etc/gpuhub/gpuhub.yaml"
    assert v["cull"]["enabled"] is True and v["cull"]["users"] is False
    # user pods: no ServiceAccount and no token
    assert single["serviceAccountName"] is None
    assert single["extraPodConfig"]["automountServiceAccountToken"] is False
    # PSA baseline: no privileged iptables initContainer; NetworkPolicy blocks metadata
    assert single["cloudMetadata"]["blockWithIptables"] is False
    assert single["networkPolicy"]["enabled"] is True
    assert single["networkPolicy"]["egressAllowRules"]["cloudMetadataServer"] is False
    assert single["storage"]["dynamic"]["pvcNameTemplate"] == "claim-{user_server}"
    # named servers (a CPU and a GPU server side by side); saved options on the hub's volume
    assert hub["allowNamedServers"] is True and hub["namedServerLimitPerUser"] == 3
    saved = hub["config"]["GPUKubeSpawner"]["saved_options_file"]
    assert saved.startswith("/srv/jupyterhub/")  # the chart's default hub.db: sqlite-pvc


def test_prepuller_pulls_every_cuda_image_on_gpu_nodes():
    v = load("gpuhub")["prePuller"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in v[
        "extraTolerations"
    ]
    matrix = yaml.safe_load((ROOT / "images" / "matrix.yaml").read_text())
    cuda = {(f"{matrix['registry']}/{e['image']}", e["tag"]) for e in matrix["images"] if e["cuda"]}
    assert cuda, "images/matrix.yaml lists no CUDA image"
    assert {(i["name"], i["tag"]) for i in v["extraImages"].values()} == cuda


def test_jobs_service_and_roles():
    hub = load("gpuhub")["hub"]
    service = hub["services"]["gpuhub-jobs"]
    assert service["command"][0] == "gpuhub-jobs"
    assert service["url"] == "http://hub:8011"
    roles = hub["loadRoles"]
    assert roles["gpuhub-jobs-service"] == {
        "description": "gpuhub jobs service: read users' names, groups and servers",
        "scopes": ["read:users:name", "read:users:groups", "read:servers"],
        "services": ["gpuhub-jobs"],
    }
    assert roles["user"]["scopes"] == [
        "self",
        "access:services!service=gpuhub-jobs",
        "access:services!service=gpuhub-monitor",
    ]
    assert (
        "access:services!service=gpuhub-jobs" in hub["config"]["KubeSpawner"]["server_token_scopes"]
    )
    # same scopes as the embedded default registers
    from gpuhub import hubconfig

    if hasattr(hubconfig, "JOBS_SERVICE_SCOPES"):
        assert roles["gpuhub-jobs-service"]["scopes"] == hubconfig.JOBS_SERVICE_SCOPES


# -- embedded files ------------------------------------------------------------------------
def extra_files() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for name in ["gpuhub", *OVERLAYS]:
        for key, f in load(name).get("hub", {}).get("extraFiles", {}).items():
            out.append((name, key, f))
    return out


def test_embedded_gpuhub_yaml_parses():
    f = load("gpuhub")["hub"]["extraFiles"]["gpuhub-yaml"]
    data = yaml.safe_load(f["stringData"])
    # the hub image ships this repository's images/matrix.yaml at HUB_MATRIX
    dockerfile = (ROOT / "images" / "hub" / "Dockerfile").read_text()
    assert re.search(rf"^COPY images/matrix.yaml {HUB_MATRIX}$", dockerfile, re.M)
    assert data["image_matrix"] == HUB_MATRIX
    data["image_matrix"] = str(ROOT / "images" / "matrix.yaml")
    cfg = parse_config(data, source="helm-values/gpuhub.yaml")
    assert [p.slug for p in cfg.profiles] == ["cpu", "gpu", "big"]
    # the groups the login overlays admit are the groups the quotas charge
    assert {q.group for q in cfg.quotas.groups} == {"vision", "nlp", "gpuhub-admins"}


@pytest.mark.parametrize(
    ("values", "key", "f"),
    [
        pytest.param(*t, id=f"{t[0]}:{t[1]}")
        for t in extra_files()
        if t[2]["mountPath"].endswith(".py")
    ],
)
def test_config_d_snippets_compile(values: str, key: str, f: dict[str, Any]):
    assert f["mountPath"].startswith("/usr/local/etc/jupyterhub/jupyterhub_config.d/") or (
        f["mountPath"] in (JOBS_CONFIG_PATH, MONITOR_CONFIG_PATH)
    )
    compile(f["stringData"], f"helm-values/{values}.yaml:{key}", "exec")


JOBS_CONFIG_PATH = "/usr/local/etc/gpuhub/jobs_config.py"


def jobs_config_file() -> str:
    hub = load("gpuhub")["hub"]
    (f,) = [f for f in hub["extraFiles"].values() if f["mountPath"] == JOBS_CONFIG_PATH]
    return str(f["stringData"])


def jobs_service_config(tmp_path: Path) -> Config:
    """The jobs service's config as ``gpuhub-jobs --config=...`` loads it (traitlets' own
    loader); the caller sets ``POD_NAMESPACE`` as the chart does in the hub pod."""
    from traitlets.config.loader import PyFileConfigLoader

    (tmp_path / "jobs_config.py").write_text(jobs_config_file())
    return PyFileConfigLoader("jobs_config.py", path=str(tmp_path)).load_config()


def test_jobs_service_runs_kubeflow_from_its_own_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The shipped command loads the shipped file: the Kubeflow backend in the release
    namespace, job pods without an API token and with the user pods' security context."""
    hub = load("gpuhub")["hub"]
    command = hub["services"]["gpuhub-jobs"]["command"]
    assert f"--config={JOBS_CONFIG_PATH}" in command
    monkeypatch.setenv("POD_NAMESPACE", "gpuhub-ns")
    c = jobs_service_config(tmp_path)
    assert c.JobsApp.backend_class == "gpuhub.jobs.backends.kubeflow.KubeflowJobBackend"
    assert c.KubeflowJobBackend.namespace == "gpuhub-ns"
    assert c.JobsApp.data_dir.startswith("/srv/jupyterhub/")  # the hub's own volume
    spec = c.KubeflowJobBackend.pod_template["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec
    single = load("gpuhub")["singleuser"]
    assert single["extraPodConfig"]["automountServiceAccountToken"] is False
    # z2jh's singleuser defaults: uid 1000, fsGid 100; allowPrivilegeEscalation false (ours)
    assert spec["securityContext"] == {"runAsUser": 1000, "fsGroup": 100}
    assert single["allowPrivilegeEscalation"] is False
    assert spec["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False}


def test_jobs_service_config_drives_the_real_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``JobsApp`` parses the shipped command line and file into a Kubeflow backend class
    (the default was the local backend: torchrun inside the hub pod)."""
    from gpuhub.jobs.app import JobsApp
    from gpuhub.jobs.backends.kubeflow import KubeflowJobBackend

    hub = load("gpuhub")["hub"]
    config = tmp_path / "jobs_config.py"
    config.write_text(jobs_config_file())
    argv = [
        a.replace(JOBS_CONFIG_PATH, str(config))
        for a in hub["services"]["gpuhub-jobs"]["command"][1:]
    ]
    monkeypatch.setenv("POD_NAMESPACE", "gpuhub-ns")
    app = JobsApp()
    try:
        app.initialize(argv)
        assert app.backend_class is KubeflowJobBackend
        assert app.bind_url == "http://0.0.0.0:8011"
    finally:
        JobsApp.clear_instance()


def test_servers_reach_the_jobs_service():
    """Servers get ``$GPUHUB_JOBS_URL`` from the service's url (the hub Service's port 8011),
    and the NetworkPolicies let them through: singleuser egress and hub ingress on 8011."""
    from gpuhub.spawners.base import service_jobs_url

    v = load("gpuhub")
    hub = v["hub"]
    service = {"name": "gpuhub-jobs", **hub["services"]["gpuhub-jobs"]}
    assert service_jobs_url([service]) == "http://hub:8011/services/gpuhub-jobs/"
    assert {"name": "gpuhub-jobs", "port": 8011, "targetPort": 8011} in hub["service"]["extraPorts"]
    ingress = hub["networkPolicy"]["ingress"]
    assert any(
        {"port": 8011, "protocol": "TCP"} in r["ports"]
        and {"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}}
        in r["from"]
        for r in ingress
    )
    egress = v["singleuser"]["networkPolicy"]["egress"]
    assert any(
        {"port": 8011, "protocol": "TCP"} in r["ports"]
        and any(
            t.get("podSelector", {}).get("matchLabels", {}).get("component") == "hub"
            for t in r["to"]
        )
        for r in egress
    )


MONITOR_CONFIG_PATH = "/usr/local/etc/gpuhub/monitor_config.py"


def test_monitor_service_and_roles():
    """``gpuhub-monitor`` runs in the hub pod beside ``gpuhub-jobs``: its command and own
    config file, the embedded default's least-privilege scopes, users and their servers may
    reach it, its port on the hub Service and through the NetworkPolicies."""
    from gpuhub import hubconfig

    v = load("gpuhub")
    hub = v["hub"]
    service = hub["services"]["gpuhub-monitor"]
    assert service["command"] == [
        "gpuhub-monitor",
        f"--config={MONITOR_CONFIG_PATH}",
        "--bind-url=http://0.0.0.0:8012",
    ]
    assert service["url"] == "http://hub:8012"
    assert service["display"] is False
    roles = hub["loadRoles"]
    assert roles["gpuhub-monitor-service"]["scopes"] == hubconfig.MONITOR_SERVICE_SCOPES
    assert roles["gpuhub-monitor-service"]["services"] == ["gpuhub-monitor"]
    access = "access:services!service=gpuhub-monitor"
    assert access in roles["user"]["scopes"]
    assert access in hub["config"]["KubeSpawner"]["server_token_scopes"]
    assert {"name": "gpuhub-monitor", "port": 8012, "targetPort": 8012} in hub["service"][
        "extraPorts"
    ]
    assert any(
        {"port": 8012, "protocol": "TCP"} in r["ports"] for r in hub["networkPolicy"]["ingress"]
    )
    egress = v["singleuser"]["networkPolicy"]["egress"]
    assert any({"port": 8012, "protocol": "TCP"} in r["ports"] for r in egress)


def monitor_config_file() -> str:
    (f,) = [
        f
        for f in load("gpuhub")["hub"]["extraFiles"].values()
        if f["mountPath"] == MONITOR_CONFIG_PATH
    ]
    return str(f["stringData"])


def test_monitor_service_config_drives_the_real_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``MonitorApp`` parses the shipped command line and file: GPU holdings from the
    release namespace's pods, the history in the hub's volume."""
    from gpuhub.monitor.app import MonitorApp
    from gpuhub.monitor.kubeholdings import KubeHoldings

    config = tmp_path / "monitor_config.py"
    config.write_text(monitor_config_file())
    argv = [
        a.replace(MONITOR_CONFIG_PATH, str(config))
        for a in load("gpuhub")["hub"]["services"]["gpuhub-monitor"]["command"][1:]
    ]
    monkeypatch.setenv("POD_NAMESPACE", "gpuhub-ns")
    app = MonitorApp()
    try:
        app.initialize(argv)
        assert app.holdings_class is KubeHoldings
        assert app.bind_url == "http://0.0.0.0:8012"
        assert app.data_dir == "/srv/jupyterhub/gpuhub-monitor"  # the hub's own volume
        holdings = KubeHoldings(config=app.config)
        assert holdings.watch_namespaces == ["gpuhub-ns"]
    finally:
        MonitorApp.clear_instance()


def test_the_commented_prometheus_source_parses():
    """The shipped YAML's commented ``monitor`` section, uncommented, is valid."""
    text = load("gpuhub")["hub"]["extraFiles"]["gpuhub-yaml"]["stringData"]
    lines = [ln for ln in text.splitlines() if ln.startswith("# ") and ":" in ln]
    block = "\n".join(ln[2:] for ln in lines if ln[2:].startswith(("monitor", "  ")))
    data = yaml.safe_load(text)
    data["image_matrix"] = str(ROOT / "images" / "matrix.yaml")
    data.update(yaml.safe_load(block))
    cfg = parse_config(data, source="helm-values/gpuhub.yaml")
    assert cfg.monitor.source == "prometheus"
    assert cfg.monitor.prometheus_url and cfg.monitor.prometheus_url.startswith("http://")


def test_kube_snippet_calls_configure_kube():
    f = load("gpuhub")["hub"]["extraFiles"]["gpuhub-hub-config"]
    assert "from gpuhub.hubconfig import configure_kube" in f["stringData"]
    assert re.search(r"^configure_kube\(c\)", f["stringData"], re.M)


def test_oidc_snippet_builds_the_tested_config(monkeypatch: pytest.MonkeyPatch):
    """Run the overlay's snippet as the hub would, against the env the overlay sets."""
    v = load("oidc-keycloak")["hub"]
    for k, val in v["extraEnv"].items():
        monkeypatch.setenv(k, val if isinstance(val, str) else "s3cret")
    c = Config()
    exec(compile(v["extraFiles"]["gpuhub-oauth-config"]["stringData"], "snippet", "exec"), {"c": c})
    g = c.GenericOAuthenticator
    assert c.JupyterHub.authenticator_class == "generic-oauth"
    assert g.authorize_url == (
        "https://keycloak.example.org/realms/gpuhub/protocol/openid-connect/auth"
    )
    assert g.client_secret == "s3cret"
    assert g.manage_groups is True and g.auth_state_groups_key == "oauth_user.groups"
    assert g.admin_groups == {"gpuhub-admins"}
    assert g.allowed_groups == {"vision", "nlp", "gpuhub-users", "gpuhub-admins"}
    assert g.enable_auth_state is True and g.refresh_pre_spawn is True


def test_oauth_config():
    c = oauth_config(
        "http://idp/realms/r",
        "hub",
        "secret",
        "http://hub/hub/oauth_callback",
        groups_claim="roles",
        admin_groups=["ops"],
        allowed_groups=["vision"],
        endpoints={
            "authorize": "http://idp/a",
            "token": "http://idp/t",
            "userinfo": "http://idp/u",
        },
    )
    assert c.JupyterHub.authenticator_class == "generic-oauth"
    assert dict(c.GenericOAuthenticator) == {
        "client_id": "hub",
        "client_secret": "secret",
        "oauth_callback_url": "http://hub/hub/oauth_callback",
        "authorize_url": "http://idp/a",
        "token_url": "http://idp/t",
        "userdata_url": "http://idp/u",
        "scope": ["openid", "profile", "email"],
        "username_claim": "preferred_username",
        "login_service": "your organisation's sign-in",
        "manage_groups": True,
        "auth_state_groups_key": "oauth_user.roles",
        "admin_groups": {"ops"},
        "allowed_groups": {"vision", "ops"},
        "enable_auth_state": True,
        "refresh_pre_spawn": True,
    }


def test_github_snippet_maps_teams_to_group_names():
    f = load("github-teams")["hub"]["extraFiles"]["gpuhub-github-teams"]
    c = Config()
    exec(compile(f["stringData"], "snippet", "exec"), {"c": c})
    key = c.GitHubOAuthenticator.auth_state_groups_key
    teams = [{"slug": "vision", "organization": {"login": "example-org"}}]
    assert key({"teams": teams}) == ["example-org.vision"]
    assert key({}) == []
    gh = load("github-teams")["hub"]["config"]["GitHubOAuthenticator"]
    assert gh["manage_groups"] is True and gh["enable_auth_state"] is True
    assert gh["admin_groups"] == ["example-org.gpuhub-admins"]


# -- manifests -----------------------------------------------------------------------------
def manifest_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        out.extend((path.name, d) for d in yaml.safe_load_all(path.read_text()) if d is not None)
    return out


def test_manifests_are_well_formed():
    docs = manifest_docs()
    assert {name for name, _ in docs} == {"rbac.yaml", "gpu-quota.yaml", "kueue.yaml"}
    for name, d in docs:
        api = d.get("apiVersion")
        assert api == "v1" or (isinstance(api, str) and re.fullmatch(r"[a-z0-9.-]+/v\w+", api)), (
            name,
            d,
        )
        assert isinstance(d.get("kind"), str), (name, d)
        assert isinstance(d.get("metadata", {}).get("name"), str), (name, d)
    kueue = [d for n, d in docs if n == "kueue.yaml"]
    assert {d["apiVersion"] for d in kueue} == {"kueue.x-k8s.io/v1beta1"}
    assert {d["kind"] for d in kueue} >= {"ResourceFlavor", "ClusterQueue", "LocalQueue"}


def rules_of(docs: list[dict[str, Any]]) -> dict[tuple[str, str], set[tuple[str, str, str]]]:
    """(kind, name) -> {(apiGroup, resource, verb)}"""
    out: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
    for d in docs:
        if d["kind"] in ("Role", "ClusterRole"):
            out[(d["kind"], d["metadata"]["name"])] = {
                (g, r, v)
                for rule in d["rules"]
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
            }
    return out


def grants(group: str, resources: list[str], verbs: list[str]) -> set[tuple[str, str, str]]:
    return {(group, r, v) for r in resources for v in verbs}


DOCUMENTED = {
    ("ClusterRole", "gpuhub-hub-nodes"): grants("", ["nodes"], ["get", "list", "watch"]),
    ("ClusterRole", "gpuhub-hub-workloads"): (
        grants("", ["pods"], ["get", "list", "watch"])
        | grants("", ["pods/log"], ["get"])
        | grants(
            "kubeflow.org", ["pytorchjobs", "tfjobs"], ["create", "get", "list", "watch", "delete"]
        )
        | grants("", ["configmaps"], ["create", "get", "list", "delete"])
    ),
}


def test_rbac_grants_exactly_the_documented_list():
    docs = [d for name, d in manifest_docs() if name == "rbac.yaml"]
    assert rules_of(docs) == DOCUMENTED
    for d in docs:
        for rule in d.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
    bindings = {
        (d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"].endswith("Binding")
    }
    assert set(bindings) == {
        ("ClusterRoleBinding", "gpuhub-hub-nodes"),
        ("RoleBinding", "gpuhub-hub-workloads"),
    }
    for b in bindings.values():
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "gpuhub"}]
        assert b["roleRef"]["name"] == b["metadata"]["name"]
    # the workloads rules are granted per namespace only (a RoleBinding, never cluster-wide)
    assert bindings[("RoleBinding", "gpuhub-hub-workloads")]["roleRef"]["kind"] == "ClusterRole"
    assert load("gpuhub")["hub"]["serviceAccount"]["name"] == "hub"


def test_rbac_comment_lists_the_same_grants():
    text = (MANIFESTS / "rbac.yaml").read_text()
    assert "nodes                                   get list watch" in text
    assert "kubeflow.org pytorchjobs, tfjobs        create get list watch delete" in text
    assert "configmaps (job scripts)                create get list delete" in text


def test_cluster_tier_uses_the_shipped_rbac():
    """The cluster tier grants the hub z2jh's Role plus helm-values/manifests/rbac.yaml
    itself (loaded by testbed.rbac), never a copy that could drift."""
    test_file = ROOT / "tests" / "cluster" / "manifests" / "hub-rbac.yaml"
    docs = [d for d in yaml.safe_load_all(test_file.read_text()) if d]
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding"}
    loader = (ROOT / "tests" / "cluster" / "testbed" / "rbac.py").read_text()
    assert '"helm-values" / "manifests" / "rbac.yaml"' in loader


def test_quota_backstop():
    (quota,) = [d for n, d in manifest_docs() if d["kind"] == "ResourceQuota"]
    assert set(quota["spec"]["hard"]) == {"requests.nvidia.com/gpu"}


def test_no_values_file_mounts_a_second_dev_shm():
    """GPUKubeSpawner mounts a sized ``dshm`` at /dev/shm in every pod
    (gpuhub.kube.objects.pod_overrides); the apiserver refuses a pod with two mounts at one
    path ("mountPath: Invalid value: "/dev/shm": must be unique"), so no values file may add
    one: that failed every spawn of the shipped values (tests/cluster/test_shipped_values.py)."""
    from gpuhub.config import parse_config as _parse
    from gpuhub.kube.objects import pod_overrides
    from gpuhub.profiles import validate_options

    f = load("gpuhub")["hub"]["extraFiles"]["gpuhub-yaml"]
    data = yaml.safe_load(f["stringData"])
    data["image_matrix"] = str(ROOT / "images" / "matrix.yaml")
    cfg = _parse(data, source="helm-values/gpuhub.yaml")
    request = validate_options(cfg, "alice", ["vision"], {"profile": "cpu"})
    ours = {m["mountPath"] for m in pod_overrides(cfg, request, None)["volume_mounts"]}
    assert ours == {"/dev/shm"}
    for name in ["gpuhub", *OVERLAYS]:
        storage = load(name).get("singleuser", {}).get("storage", {})
        mounts = storage.get("extraVolumeMounts", [])
        mounts = mounts.values() if isinstance(mounts, dict) else mounts
        assert not ours & {m["mountPath"] for m in mounts}, name
