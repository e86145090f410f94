"""Shared plain-data fixtures for the pure-core tests (no hub, no cluster)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gpuhub.config import parse_config
from gpuhub.model import GpuhubConfig

BASE: dict[str, Any] = {
    "gpu_types": {
        "a100": {
            "display_name": "A100",
            "node_label": "NVIDIA-A100-SXM4-80GB",
            "local_models": ["NVIDIA A100-SXM4-80GB"],
        },
        "h100": {"display_name": "H100", "node_label": "NVIDIA-H100-80GB-HBM3"},
    },
    "images": {
        "scipy": {"display_name": "SciPy (CPU)", "image": "ghcr.io/gpuhub/scipy:1"},
        "torch": {
            "display_name": "PyTorch",
            "image": "ghcr.io/gpuhub/pytorch:2.11-cu128",
            "framework": "pytorch",
            "framework_version": "2.11.0",
            "cuda": "12.8",
            "min_driver": "525.60.13",
        },
        "tf": {
            "display_name": "TensorFlow",
            "image": "ghcr.io/gpuhub/tf:2.21",
            "framework": "tensorflow",
            "framework_version": "2.21.0",
            "cuda": "12.5",
            "min_driver": "525.60.13",
        },
    },
    "profiles": [
        {"slug": "cpu", "display_name": "CPU", "images": ["scipy", "torch"], "default": True},
        {
            "slug": "gpu",
            "display_name": "GPU",
            "images": ["torch", "tf"],
            "groups": ["vision", "nlp"],
            "gpu": {"types": ["a100", "h100"], "counts": [1, 2, 4]},
        },
        {
            "slug": "secret",
            "display_name": "Secret",
            "images": ["torch"],
            "groups": ["admins"],
            "gpu": {"types": ["h100"], "counts": [8]},
        },
    ],
    "quotas": {
        "per_user_gpus": 4,
        "groups": {"vision": {"gpus": 4, "per_type": {"h100": 2}}, "nlp": {"gpus": 2}},
    },
    "groups": {"vision": ["alice", "bob"], "nlp": ["carol", "alice"]},
    "local": {
        "devices": [{"index": i, "type": "a100"} for i in range(4)]
        + [{"index": 4, "type": "h100"}, {"index": 5, "type": "h100"}]
    },
}


@pytest.fixture
def raw() -> dict[str, Any]:
    return copy.deepcopy(BASE)


@pytest.fixture
def config(raw: dict[str, Any]) -> GpuhubConfig:
    return parse_config(raw)
