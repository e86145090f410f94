"""The embedded default's JupyterHub config, as a pure mapping (``Config()``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuhub.hubconfig import embedded_config


def test_embedded_config_per_user_passwords_and_yaml_groups(config):
    data = Path("/srv/gpuhub")
    c = embedded_config(config, data / "gpuhub.yaml", data, "http://127.0.0.1:8000", 8011)
    assert c.JupyterHub.authenticator_class == "gpuhub.auth.GpuhubAuthenticator"
    a = c.GpuhubAuthenticator
    assert a.dbm_path == "/srv/gpuhub/passwords.dbm"
    assert a.gpuhub_config_file == "/srv/gpuhub/gpuhub.yaml"
    assert a.allowed_users == {"alice", "bob", "carol"}
    # groups are the authenticator's (manage_groups): JupyterHub refuses load_groups with it
    assert "load_groups" not in c.JupyterHub
    assert "SharedPasswordAuthenticator" not in c
    # reload: a pid file to signal, and servers that outlive the hub
    assert c.JupyterHub.pid_file == "/srv/gpuhub/jupyterhub.pid"
    assert c.JupyterHub.cleanup_servers is False
    # named servers: a CPU server and a GPU server side by side, each reachable from VS Code
    assert c.JupyterHub.allow_named_servers is True
    assert c.JupyterHub.named_server_limit_per_user == 3


def test_kube_jobs_service_gets_the_hub_pods_cluster_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """JupyterHub starts a managed service without the hub's environment: the chart's
    ``gpuhub-jobs`` gets the gpuhub YAML and the pod's namespace/API address from
    ``configure_kube``; values the chart sets win; other services are left alone."""
    from traitlets.config import Config

    from gpuhub.hubconfig import configure_kube

    yaml_path = tmp_path / "gpuhub.yaml"
    yaml_path.write_text(
        "profiles: [{slug: cpu, display_name: CPU, images: [x]}]\n"
        "images: {x: {display_name: X, image: 'x:1'}}\n"
    )
    c = Config()
    c.JupyterHub.services = [
        {"name": "jupyterhub-idle-culler", "command": ["cull"]},
        {"name": "gpuhub-jobs", "url": "http://hub:8011", "environment": {"A": "1"}},
    ]
    for name in ("KUBERNETES_SERVICE_PORT", "KUBECONFIG", "GPUHUB_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POD_NAMESPACE", "ns1")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    configure_kube(c, str(yaml_path))
    culler, jobs = c.JupyterHub.services
    assert "environment" not in culler
    assert jobs["environment"] == {
        "POD_NAMESPACE": "ns1",
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "GPUHUB_CONFIG": str(yaml_path),
        "A": "1",
    }


def test_servers_get_the_jobs_url_from_the_hubs_service():
    """Both spawners set ``$GPUHUB_JOBS_URL``: by default the hub's ``gpuhub-jobs``
    service URL (on Kubernetes ``http://hub:8011``, the chart's), else what is configured."""
    from traitlets.config import Config

    from gpuhub.spawners.base import GpuhubSpawnerMixin, service_jobs_url
    from gpuhub.spawners.kube import GPUKubeSpawner
    from gpuhub.spawners.local import GPULocalSpawner

    assert service_jobs_url([{"name": "other", "url": "http://x"}]) == ""
    assert (
        service_jobs_url([{"name": "gpuhub-jobs", "url": "http://hub:8011/"}])
        == "http://hub:8011/services/gpuhub-jobs/"
    )
    # one trait and one get_env, in the mixin both spawners share
    for cls in (GPUKubeSpawner, GPULocalSpawner):
        assert cls.class_traits()["jobs_url"] is GpuhubSpawnerMixin.class_traits()["jobs_url"]
        assert "get_env" not in vars(cls) or cls is GPULocalSpawner
    c = Config()
    c.JupyterHub.services = [{"name": "gpuhub-jobs", "url": "http://hub:8011"}]
    assert GPULocalSpawner(config=c).jobs_url == "http://hub:8011/services/gpuhub-jobs/"
    c.GPULocalSpawner.jobs_url = "http://proxy/services/gpuhub-jobs/"
    assert GPULocalSpawner(config=c).jobs_url == "http://proxy/services/gpuhub-jobs/"
    assert GPULocalSpawner(config=Config()).jobs_url == ""
