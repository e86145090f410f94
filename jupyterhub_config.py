"""JupyterHub config of gpuhub's embedded default (one machine, local processes).

Everything comes from the gpuhub YAML (``$GPUHUB_CONFIG``, default
``~/.local/share/gpuhub/gpuhub.yaml``), validated before the hub starts.  Put further
JupyterHub settings below the call; on Kubernetes the Helm chart's own config is used.
"""

from gpuhub.hubconfig import configure_embedded

c = get_config()  # type: ignore[name-defined]  # noqa: F821
configure_embedded(c)
