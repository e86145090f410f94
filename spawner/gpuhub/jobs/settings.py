"""The YAML keys of job limits: top-level ``jobs`` and ``profiles[].jobs``.

A schema fragment (merged into :data:`gpuhub.config.SCHEMA` at both places) and the pure
mapping to :class:`~gpuhub.model.JobLimits`.  Which limit a job gets is decided by
:func:`gpuhub.jobs.policy.time_limit_for`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import JobLimits

MAX_TIME_LIMIT_MINUTES = 366 * 24 * 60
"""A year: the longest time limit the YAML accepts."""

JOBS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "time_limit_minutes": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "maximum": MAX_TIME_LIMIT_MINUTES,
        },
    },
}


def job_limits_from(d: Mapping[str, Any] | None) -> JobLimits | None:
    """The validated ``jobs`` mapping (``None`` when the key is absent)."""
    if d is None:
        return None
    minutes = d.get("time_limit_minutes")
    return JobLimits(time_limit_minutes=None if minutes is None else float(minutes))
