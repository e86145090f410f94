"""Sizes as gpuhub writes them (``4G``, ``512M``, ``8Gi``): binary, as in JupyterHub."""

from __future__ import annotations

_UNITS = {"K": 1, "M": 2, "G": 3, "T": 4}


def to_bytes(q: str) -> int:
    """``4G`` = ``4Gi`` = 4 × 1024³ bytes; a plain number is bytes."""
    q = q.removesuffix("i")
    if q[-1] in _UNITS:
        return int(float(q[:-1]) * 1024 ** _UNITS[q[-1]])
    return int(float(q))


def human(n: int) -> str:
    """``4294967296`` → ``4 GiB`` (for messages)."""
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n >= 1024**power:
            value = n / 1024**power
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"
