"""gpuhub: JupyterHub for teams that share GPUs.

The package is split into a pure policy core (``config``, ``model``, ``profiles``,
``quota``, ``ledger``) and thin adapters over it (``spawners``, ``hub``, ``jobs``).
"""

__version__ = "0.1.0"
