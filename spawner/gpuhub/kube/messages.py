"""Spawn progress and scheduling failures in words a user understands (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .labels import GPU_TYPE, KEY


def article(name: str) -> str:
    return "an" if name[:1].upper() in "AEFHILMNORSX" else "a"


def wait_message(type_name: str, total: int, free: int, ahead: int) -> str:
    """``waiting for an A100: 0 of 16 free, 3 pods ahead``."""
    queue = f", {ahead} pod{'s' if ahead != 1 else ''} ahead" if ahead else ", next in line"
    return f"waiting for {article(type_name)} {type_name}: {free} of {total} free{queue}"


def pods_ahead(pods: Iterable[Mapping[str, Any]], key: str, gpu_type: str) -> int:
    """Pending gpuhub pods of the same GPU type created before the pod of ``key``."""
    pending = [
        p
        for p in pods
        if (p.get("metadata", {}).get("labels") or {}).get(GPU_TYPE) == gpu_type
        and p.get("status", {}).get("phase") == "Pending"
    ]
    mine = next(
        (p for p in pending if (p["metadata"].get("annotations") or {}).get(KEY) == key), None
    )
    if mine is None:
        return len(pending)
    t = mine["metadata"].get("creationTimestamp", "")
    return sum(
        1 for p in pending if p is not mine and p["metadata"].get("creationTimestamp", "") <= t
    )


_REASONS = [
    (re.compile(r"(\d+) Insufficient nvidia\.com/gpu"), "{n} with no free GPU"),
    (
        re.compile(r"(\d+) node\(s\) didn't match Pod's node affinity/selector"),
        "{n} with another GPU type or a driver too old for this image",
    ),
    (re.compile(r"(\d+) node\(s\) had untolerated taint"), "{n} reserved for other work"),
    (re.compile(r"(\d+) Insufficient cpu"), "{n} without enough CPU"),
    (re.compile(r"(\d+) Insufficient memory"), "{n} without enough memory"),
    (re.compile(r"(\d+) node\(s\) were unschedulable"), "{n} cordoned"),
]


def explain_failed_scheduling(message: str, type_name: str | None) -> str:
    """Turn the scheduler's ``0/5 nodes are available: …`` into a sentence."""
    m = re.match(r"0/(\d+) nodes are available", message)
    if not m:
        return f"The cluster cannot place the server yet: {message}"
    parts = []
    for rx, text in _REASONS:
        found = rx.search(message)
        if found:
            n = int(found.group(1))
            parts.append(text.format(n=f"{n} node{'s' if n != 1 else ''}"))
    what = f"{article(type_name)} {type_name}" if type_name else "this server"
    detail = "; ".join(parts) if parts else message
    return f"No node can take {what} right now ({m.group(1)} nodes: {detail}). Waiting."
