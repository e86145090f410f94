"""What a server on the embedded default is told for VS Code in the browser."""

from __future__ import annotations

from gpuhub.vscode import vscode_env


def test_code_server_on_a_private_socket_with_extensions_in_the_home():
    assert vscode_env("/var/lib/gpuhub/users/alice") == {
        "JUPYTER_VSCODE_PROXY_USE_SOCKET": "1",
        "CODE_EXECUTABLE": "code-server",
        "CODE_EXTENSIONSDIR": "/var/lib/gpuhub/users/alice/.local/share/code-server/extensions",
        "CODE_WORKINGDIR": "/var/lib/gpuhub/users/alice",
        "VSCODE_CLI": "1",
    }


def test_the_local_spawner_gives_it_to_every_server(tmp_path):
    """Next to the devices, for a CPU server too (JupyterHub's own part of the
    environment, which needs a running hub, is left out)."""
    from types import SimpleNamespace
    from unittest import mock

    from jupyterhub.spawner import LocalProcessSpawner
    from traitlets.config import Config

    from gpuhub.localstate import unit_tmp_dir
    from gpuhub.spawners.local import GPULocalSpawner

    c = Config()
    c.GPULocalSpawner.data_dir = str(tmp_path)
    spawner = GPULocalSpawner(config=c)
    with (
        mock.patch.object(LocalProcessSpawner, "get_env", return_value={"PATH": "/x/bin"}),
        mock.patch.object(GPULocalSpawner, "user", SimpleNamespace(name="alice")),
    ):
        env = spawner.get_env()
    home = str(tmp_path / "users" / "alice")
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert {k: env[k] for k in vscode_env(home)} == vscode_env(home)
    assert env["PATH"] == "/x/bin"
    # each server's private temporary folder, named without reading the gpuhub config
    assert env["TMPDIR"] == str(unit_tmp_dir(tmp_path / "state", "server:alice/"))
