"""JupyterLab terminals keep the server's environment (gpuhub.terminals)."""

from __future__ import annotations

from jupyter_server.serverapp import ServerApp
from traitlets.config import Config

from gpuhub.spawners.base import GpuhubSpawnerMixin
from gpuhub.spawners.kube import GPUKubeSpawner
from gpuhub.spawners.local import GPULocalSpawner
from gpuhub.terminals import TERMINAL_SHELL_ARG, with_terminal_shell


def test_the_argument_sets_a_non_login_bash_in_jupyter_server():
    app = ServerApp()
    app.parse_command_line([TERMINAL_SHELL_ARG])
    assert app.terminado_settings == {"shell_command": "/bin/bash"}


def test_an_admins_terminal_setting_is_kept():
    mine = '--ServerApp.terminado_settings={"shell_command": ["/bin/zsh"]}'
    assert with_terminal_shell(["--debug", mine]) == ["--debug", mine]
    assert with_terminal_shell(["--debug"]) == ["--debug", TERMINAL_SHELL_ARG]


def test_both_spawners_start_servers_with_it(tmp_path):
    c = Config()
    c.GPULocalSpawner.data_dir = str(tmp_path)
    c.Spawner.args = ["--debug"]
    assert GPULocalSpawner(config=c).get_args()[-2:] == ["--debug", TERMINAL_SHELL_ARG]
    # KubeSpawner builds the container's command from the same method
    assert GPUKubeSpawner.get_args is GpuhubSpawnerMixin.get_args
