"""``gpuhub-config``: write a starter config, check a config, show GPU usage.

gpuhub-config init PATH     write a default config (CPU + GPU profile) if PATH is absent
gpuhub-config check PATH    validate; exit 1 with the key path of the first problem
gpuhub-config usage PATH    show who holds which GPUs on this machine
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

import yaml

from .config import load_config
from .errors import ConfigError
from .inventory import discover, nvml_devices


def starter_config() -> dict[str, object]:
    """A config with a CPU and a GPU profile for this machine: its NVML GPUs, or two
    declared GPUs when no driver answers (so the GPU path can be tried anywhere)."""
    try:
        found = nvml_devices()
    except Exception:
        found = []
    gpu_types: dict[str, dict[str, object]] = {}
    devices: list[dict[str, object]] = []
    if found:
        for name in dict.fromkeys(f[1] for f in found):
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "gpu"
            gpu_types[slug] = {
                "display_name": name,
                "node_label": re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:63],
                "local_models": [name],
            }
        inventory = "nvml"
    else:
        gpu_types["gpu"] = {"display_name": "GPU", "node_label": "NVIDIA-A100-SXM4-80GB"}
        devices = [{"index": 0, "type": "gpu"}, {"index": 1, "type": "gpu"}]
        inventory = "declared"
    total = max(len(found), len(devices))
    return {
        "gpu_types": gpu_types,
        "images": {
            "python": {
                "display_name": "Python (this machine's environment)",
                "image": "local/python",
            }
        },
        "profiles": [
            {
                "slug": "cpu",
                "display_name": "CPU only",
                "description": "For editing, data wrangling and small experiments.",
                "cpu": 2,
                "memory": "4G",
                "images": ["python"],
                "default": True,
            },
            {
                "slug": "gpu",
                "display_name": "GPU",
                "description": "GPUs of this machine, yours alone while the server runs.",
                "cpu": 4,
                "memory": "16G",
                "images": ["python"],
                "groups": ["gpu-users"],
                "gpu": {"types": list(gpu_types), "counts": [1, 2] if total > 1 else [1]},
            },
        ],
        "quotas": {"per_user_gpus": total, "groups": {"gpu-users": {"gpus": total}}},
        "groups": {"gpu-users": ["demo"]},
        "auth": {"admin_users": ["admin"], "allow_all": True},
        "local": {"inventory": inventory, "devices": devices},
    }


def _init(path: Path) -> int:
    if path.exists():
        print(f"{path} exists; leaving it as it is")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# gpuhub configuration, written by gpuhub-config init on {dt.date.today()}.\n"
        "# Reference: docs/configuration.md.  Checked at hub start; errors name the key.\n"
    )
    path.write_text(header + yaml.safe_dump(starter_config(), sort_keys=False))
    load_config(path)
    print(f"wrote {path}")
    return 0


def _usage(path: Path) -> int:
    from .spawners.local import default_data_dir, local_backend

    cfg = load_config(path)
    backend = local_backend(cfg, default_data_dir())
    ledger = backend.snapshot()
    inv = discover(cfg)
    print(f"{len(inv.devices)} GPUs ({inv.source}); units: {backend.store.fence.mechanism}")
    for a in sorted(ledger.usage(), key=lambda a: a.key):
        print(f"  {a.key}: {a.user} charges {a.group} for {a.gpus} {a.gpu_type} {list(a.devices)}")
    return 0


def _kube_quotas(path: Path, namespaces: list[str]) -> int:
    from .kube.groupquota import group_quota_manifests

    if not namespaces:
        print("error: name the namespaces gpuhub uses (hub and jobs)", file=sys.stderr)
        return 1
    objects = group_quota_manifests(load_config(path), namespaces)
    print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gpuhub-config",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["init", "check", "usage", "kube-quotas"])
    parser.add_argument("path", type=Path)
    parser.add_argument("namespaces", nargs="*", help="kube-quotas: the namespaces gpuhub uses")
    args = parser.parse_args(argv)
    try:
        if args.command == "kube-quotas":
            return _kube_quotas(args.path, args.namespaces)
        if args.command == "init":
            return _init(args.path)
        if args.command == "usage":
            return _usage(args.path)
        cfg = load_config(args.path)
        print(f"{args.path}: ok ({len(cfg.profiles)} profiles, {len(cfg.images)} images)")
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
