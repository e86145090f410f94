"""JupyterLab terminals that keep the server's environment.

Started by a spawner (no TTY on stdout), jupyter_server_terminals runs the terminal shell
as a *login* shell, so ``/etc/profile`` runs first; Debian's resets ``PATH`` to the system
directories.  A user's terminal would then lose what the server was started with: gpuhub's
venv on the embedded default, ``/opt/venv/bin`` in the images (``python`` would be the
system one, without PyTorch or the user's packages).  The server's environment is already
the user's (``HOME``, ``SHELL``, ``PATH``, ``CUDA_VISIBLE_DEVICES``), so the terminal runs
an interactive, non-login ``bash``, which still reads ``/etc/bash.bashrc`` and
``~/.bashrc``.  The same choice as VS Code's ``VSCODE_CLI`` (:mod:`gpuhub.vscode`).
"""

from __future__ import annotations

from collections.abc import Sequence

TERMINAL_SHELL_ARG = "--ServerApp.terminado_settings=shell_command=/bin/bash"
"""The single-user server's argument that sets the terminal shell."""


def with_terminal_shell(args: Sequence[str]) -> list[str]:
    """``args`` (``Spawner.args`` as configured) plus :data:`TERMINAL_SHELL_ARG`, unless
    the admin configured the terminals there already."""
    if any("terminado_settings" in a for a in args):
        return list(args)
    return [*args, TERMINAL_SHELL_ARG]
