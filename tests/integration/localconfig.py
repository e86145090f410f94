"""The gpuhub config the integration tests and benchmarks run hubs with: declared GPUs
(4 A100, 1 H100), groups with quotas, a hidden admin profile.  A plain module (not
``conftest``) so other test folders and benchmarks can import it unambiguously."""

from __future__ import annotations

from typing import Any

USERS = [f"u{i}" for i in range(10)]

CONFIG: dict[str, Any] = {
    "gpu_types": {
        "a100": {"display_name": "A100", "node_label": "NVIDIA-A100-SXM4-80GB"},
        "h100": {"display_name": "H100", "node_label": "NVIDIA-H100-80GB-HBM3"},
    },
    "images": {
        "python": {"display_name": "Python", "image": "local/python"},
        "torch": {
            "display_name": "PyTorch",
            "image": "ghcr.io/gpuhub/pytorch:2.11-cu128",
            "framework": "pytorch",
            "cuda": "12.8",
            "min_driver": "525.60.13",
        },
    },
    "profiles": [
        {"slug": "cpu", "display_name": "CPU only", "images": ["python"], "default": True},
        {
            "slug": "gpu",
            "display_name": "GPU",
            "images": ["torch", "python"],
            "groups": ["vision", "nlp"],
            "gpu": {"types": ["a100", "h100"], "counts": [1, 2]},
        },
        {
            "slug": "big",
            "display_name": "Big",
            "images": ["torch"],
            "groups": ["admins"],
            "gpu": {"types": ["a100"], "counts": [4]},
        },
    ],
    "quotas": {
        "per_user_gpus": 2,
        "groups": {"vision": {"gpus": 2}, "nlp": {"gpus": 4, "per_type": {"h100": 1}}},
    },
    "groups": {
        "vision": ["alice", "bob", *USERS],
        "nlp": ["carol", "alice"],
        "admins": ["admin"],
        "guests": ["dave"],
    },
    "auth": {"admin_users": ["admin"]},
    "local": {
        "inventory": "declared",
        "devices": [{"index": i, "type": "a100"} for i in range(4)]
        + [{"index": 4, "type": "h100"}],
    },
}
