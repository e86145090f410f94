"""VS Code in the browser on the embedded default: what a user's server is told so that
``jupyter-vscode-proxy`` (a jupyter-server-proxy entry, the "VS Code" launcher tile and
``/user/<name>/vscode/``) runs code-server safely on a machine other accounts share.

- ``JUPYTER_VSCODE_PROXY_USE_SOCKET``: code-server runs ``--auth none``, so it must never
  listen on a TCP port another local account could connect to; jupyter-server-proxy gives
  it a Unix socket in a fresh ``mkdtemp`` folder (mode 0700 under the server's umask),
  created by the user's own account, and code-server makes the socket 0600;
- ``CODE_EXECUTABLE``: which server the proxy starts, found on the server's ``PATH``
  (the hub's, where ``scripts/bootstrap.sh`` puts the cached npm tools);
- ``CODE_EXTENSIONSDIR`` and ``CODE_WORKINGDIR``: extensions and the opened folder in the
  user's home, so installed extensions persist across servers;
- ``VSCODE_CLI``: the server's environment is already the user's (the hub's ``PATH`` with
  gpuhub's venv, the server's ``CUDA_VISIBLE_DEVICES``), so VS Code takes it as it is for
  its terminals and extensions instead of asking a login shell, whose ``/etc/profile``
  resets ``PATH`` (``python`` would not be found in a VS Code terminal).
"""

from __future__ import annotations

import posixpath

CODE_EXECUTABLE = "code-server"
"""The executable ``jupyter-vscode-proxy`` starts (it knows ``code-server`` and
``openvscode-server`` by name); ``scripts/node/package.json`` installs it."""

EXTENSIONS_SUBDIR = ".local/share/code-server/extensions"
"""Where each user's VS Code extensions live, under their home."""


def vscode_env(home: str) -> dict[str, str]:
    """The environment a single-user server needs for VS Code in the browser."""
    return {
        "JUPYTER_VSCODE_PROXY_USE_SOCKET": "1",
        "CODE_EXECUTABLE": CODE_EXECUTABLE,
        "CODE_EXTENSIONSDIR": posixpath.join(home, EXTENSIONS_SUBDIR),
        "CODE_WORKINGDIR": home,
        "VSCODE_CLI": "1",
    }
