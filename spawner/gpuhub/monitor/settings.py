"""The YAML keys of GPU monitoring: ``profiles[].idle_culling`` and ``monitor``
(sampling, the idle threshold of the history, and how long the history keeps what).

Schema fragments (merged into :data:`gpuhub.config.SCHEMA`), the pure mapping to
:class:`~gpuhub.model.IdleCulling` / :class:`~gpuhub.model.MonitorConfig`, and the checks
the schema cannot express, each naming the key path and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..model import GpuhubConfig, IdleCulling, MonitorConfig

_minutes = {"type": "number", "exclusiveMinimum": 0}
_percent = {"type": "number", "minimum": 0, "maximum": 100}

IDLE_CULLING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["idle_minutes"],
    "properties": {
        "threshold_percent": _percent,
        "idle_minutes": _minutes,
        "warn_minutes": {"type": "number", "minimum": 0},
        "action": {"enum": ["stop", "restart-on-cpu"]},
        "cpu_profile": {"type": "string", "minLength": 1},
    },
}

MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "source": {"enum": ["auto", "nvml", "replay", "prometheus"]},
        "replay_trace": {"type": "string", "minLength": 1},
        "prometheus_url": {"type": "string", "minLength": 1},
        "sample_seconds": {"type": "number", "exclusiveMinimum": 0},
        "idle_threshold_percent": _percent,
        "history_days": {"type": "number", "minimum": 1},
        "history_max_days": {"type": "number", "minimum": 1},
    },
}


def idle_culling_from(d: Mapping[str, Any] | None) -> IdleCulling | None:
    """The validated ``idle_culling`` mapping of a profile (``None`` when absent)."""
    if d is None:
        return None
    idle = float(d["idle_minutes"])
    return IdleCulling(
        threshold_percent=float(d.get("threshold_percent", 5)),
        idle_minutes=idle,
        warn_minutes=float(d.get("warn_minutes", min(10.0, idle / 2))),
        action=d.get("action", "stop"),
        cpu_profile=d.get("cpu_profile"),
    )


def monitor_from(d: Mapping[str, Any], source: str, base_dir: Path) -> MonitorConfig:
    """The validated ``monitor`` mapping; ``replay_trace`` resolved against the config's
    directory and required (and present) when ``source`` is ``replay``."""
    trace = d.get("replay_trace")
    kind = d.get("source", "auto")
    if kind == "replay":
        if trace is None:
            raise ConfigError(
                f"{source}: monitor.replay_trace",
                "monitor.source is replay but no trace is named",
                "set monitor.replay_trace to a trace file (docs/monitoring.md), or use "
                "source: nvml",
            )
        path = base_dir / trace
        if not path.is_file():
            raise ConfigError(
                f"{source}: monitor.replay_trace",
                f"{path} does not exist",
                "record a trace (docs/monitoring.md) or correct the path (relative to this file)",
            )
        trace = str(path.resolve())
    days = float(d.get("history_days", 14))
    max_days = float(d.get("history_max_days", max(400.0, days)))
    if max_days < days:
        raise ConfigError(
            f"{source}: monitor.history_max_days",
            f"hourly rows ({max_days:g} days) must be kept at least as long as raw samples "
            f"(history_days {days:g})",
            f"use {days:g} or more, or lower monitor.history_days",
        )
    return MonitorConfig(
        source=kind,
        replay_trace=trace,
        prometheus_url=prometheus_url_from(d, source),
        sample_seconds=float(d.get("sample_seconds", 30)),
        idle_threshold_percent=float(d.get("idle_threshold_percent", 5)),
        history_days=days,
        history_max_days=max_days,
    )


def prometheus_url_from(d: Mapping[str, Any], source: str) -> str | None:
    """``monitor.prometheus_url``: an ``http(s)://`` URL, required by (and only used with)
    ``source: prometheus``."""
    url, kind = d.get("prometheus_url"), d.get("source", "auto")
    where = f"{source}: monitor.prometheus_url"
    if kind == "prometheus" and url is None:
        raise ConfigError(
            where,
            "monitor.source is prometheus but no Prometheus is named",
            "set monitor.prometheus_url to the Prometheus that scrapes the DCGM exporter "
            "(e.g. http://prometheus-server.monitoring), see docs/monitoring.md",
        )
    if url is None:
        return None
    if kind != "prometheus":
        raise ConfigError(
            where,
            f"prometheus_url is only read with source: prometheus (source is {kind})",
            "set monitor.source: prometheus, or remove prometheus_url",
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(
            where,
            f"{url!r} is not an http(s) URL of a Prometheus",
            "use the base URL Prometheus answers its HTTP API under, e.g. "
            "http://prometheus-server.monitoring:80 (no query string)",
        )
    return str(url)


def check_idle_culling(config: GpuhubConfig) -> None:
    """Culling only on GPU profiles; the warning comes before the cull; a restart on CPU
    names an existing CPU profile."""
    src = config.source
    for i, p in enumerate(config.profiles):
        c = p.idle_culling
        if c is None:
            continue
        where = f"{src}: profiles[{i}].idle_culling"
        if p.gpu is None:
            raise ConfigError(
                where,
                f"profile {p.slug!r} has no gpu, so it holds no GPU to cull for idleness",
                "remove idle_culling here, or give the profile a gpu section",
            )
        if c.warn_minutes >= c.idle_minutes:
            raise ConfigError(
                f"{where}.warn_minutes",
                f"the warning ({c.warn_minutes:g} min) must come before the cull "
                f"(idle_minutes {c.idle_minutes:g})",
                "use a value below idle_minutes",
            )
        if c.action == "restart-on-cpu":
            target = config.profile(c.cpu_profile) if c.cpu_profile else None
            if target is None or target.gpu is not None:
                cpu = sorted(q.slug for q in config.profiles if q.gpu is None)
                raise ConfigError(
                    f"{where}.cpu_profile",
                    f"action restart-on-cpu needs the slug of a CPU profile, got "
                    f"{c.cpu_profile!r} (CPU profiles: {', '.join(cpu) or 'none'})",
                    "name a profile without gpu, or use action: stop",
                )
        elif c.cpu_profile is not None:
            raise ConfigError(
                f"{where}.cpu_profile",
                "cpu_profile is only used with action: restart-on-cpu",
                "remove it, or set action: restart-on-cpu",
            )
