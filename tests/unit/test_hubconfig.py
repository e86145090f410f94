"""The embedded default's JupyterHub config, as a pure mapping (``Config()``)."""

from __future__ import annotations

from pathlib import Path

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
