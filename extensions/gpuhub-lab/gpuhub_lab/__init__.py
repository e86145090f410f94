"""gpuhub-lab: "Run as distributed job" for JupyterLab, and its server-side forwarder.

The front end (``gpuhub_lab/labextension``, built from ``src/``) talks only to this server
extension, which forwards ``{base_url}/gpuhub/...`` to the gpuhub jobs service with the
server's own hub token.  See ``docs/jobs-api.md`` for the service contract.
"""

from __future__ import annotations

from typing import Any

try:
    from ._version import __version__
except ImportError:  # pragma: no cover - only when running from a tree that was never built
    import warnings

    warnings.warn(
        "Importing 'gpuhub_lab' outside a proper installation (no _version.py).", stacklevel=2
    )
    __version__ = "dev"

from .app import GpuhubLabApp

__all__ = ["GpuhubLabApp", "__version__"]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "gpuhub-lab"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "gpuhub_lab", "app": GpuhubLabApp}]
