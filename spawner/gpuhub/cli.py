"""``gpuhub-config``: write, check and reload the config; passwords; GPU usage.

gpuhub-config init PATH               write a default config (CPU + GPU profile) if PATH is absent
gpuhub-config check PATH              validate; exit 1 with the key path of the first problem
gpuhub-config reload PATH             validate, then make the running hub use PATH (no restart)
gpuhub-config set-password PATH USER  set USER's password (read from stdin, or prompted)
gpuhub-config usage PATH [--since T]  who holds which GPUs now; GPU-hours per group and user
gpuhub-config kube-quotas PATH NS...  the cluster's per-group quota objects (YAML)

The data directory (hub database, passwords, GPU ledger) is $GPUHUB_DATA, else PATH's
directory when it holds gpuhub state, else ~/.local/share/gpuhub: the hub's own rule.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .activeconfig import config_digest
from .config import config_from_bytes, load_config, read_config_bytes
from .datadir import PASSWORD_DB, PID_FILE, STATUS_FILE, resolve_data_dir, where_we_looked
from .errors import ConfigError
from .inventory import discover, nvml_devices
from .monitor.report import format_report, parse_since


class CommandError(Exception):
    """A refusal of the command, with the fix (exit status 1)."""


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
        "auth": {"admin_users": ["admin"], "allow_all": False},
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


def _data_dir_with_state(path: Path, what: str) -> Path:
    from .datadir import holds_state

    data = resolve_data_dir(path)
    if not holds_state(data):
        raise CommandError(
            f"no gpuhub state found to {what} (looked at: {where_we_looked(path)}). "
            "Fix: set GPUHUB_DATA to the running hub's data directory, e.g. "
            f"GPUHUB_DATA=/path/to/data gpuhub-config ... {path}"
        )
    return data


def _usage(path: Path, since: str = "24h") -> int:
    from .spawners.local import local_backend

    cfg = load_config(path)
    data = _data_dir_with_state(path, "show usage")
    now = time.time()
    try:
        start = parse_since(since, now)
    except ValueError as e:
        raise CommandError(str(e)) from None
    inv = discover(cfg)
    if not (data / "state").is_dir():
        print(f"{len(inv.devices)} GPUs ({inv.source}); ledger in {data / 'state'}")
        print("  no GPUs in use")
        _print_history(data, start, now)
        return 0
    backend = local_backend(cfg, str(data))
    print(
        f"{len(inv.devices)} GPUs ({inv.source}); ledger in {data / 'state'}; "
        f"servers and jobs run in: {backend.store.fence.mechanism}"
    )
    usage = sorted(backend.snapshot().usage(), key=lambda a: a.key)
    for a in usage:
        outside = "" if a.user in cfg.groups.get(a.group, ()) else f" (no longer in {a.group})"
        print(
            f"  {a.key}: {a.user} charges {a.group} for {a.gpus} {a.gpu_type} "
            f"{list(a.devices)}{outside}"
        )
    if not usage:
        print("  no GPUs in use")
    _print_history(data, start, now)
    return 0


def _print_history(data: Path, since: float, until: float) -> None:
    """GPU-hours per group and user from the monitor's history (never creates it)."""
    from .monitor.history import HistoryStore, history_path

    path = history_path(data)
    if not path.is_file():
        print(f"no GPU-hours history yet ({path}: the gpuhub-monitor service writes it)")
        return
    for line in format_report(HistoryStore(path).report(since, until)):
        print(line)


def _read_password(user: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"New password for {user}: ")
        if getpass.getpass("Again: ") != first:
            raise CommandError("the two passwords differ. Fix: run the command again")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _set_password(path: Path, user: str) -> int:
    from .auth import may_log_in
    from .passwords import PasswordStore

    cfg = load_config(path)
    name = user.lower()  # JupyterHub's username normalization
    if not may_log_in(cfg, name, str.lower):
        raise CommandError(
            f"{name!r} is not listed in {path} (groups or auth.admin_users), so it cannot "
            "log in. Fix: add the name to a group under groups, then run this again"
        )
    data = resolve_data_dir(path)
    if not data.is_dir():
        raise CommandError(
            f"the data directory {data} does not exist (looked at: {where_we_looked(path)}). "
            "Fix: start the hub once (scripts/start-hub), or set GPUHUB_DATA to its data "
            "directory"
        )
    store = PasswordStore(data / PASSWORD_DB)
    try:
        store.set(name, _read_password(name))
    except ValueError as e:
        raise CommandError(f"{e} Fix: run the command again with a longer password") from e
    print(f"password of {name} set in {store.path}; they change it at /hub/auth/change-password")
    return 0


def _hub_pid(data: Path) -> int:
    from .hubreload import read_pid

    pid = read_pid(data / PID_FILE)
    if pid is None:
        raise CommandError(
            f"no running hub found: {data / PID_FILE} is missing. Fix: start the hub "
            "(scripts/start-hub), which reads the file at start; or set GPUHUB_DATA to the "
            "running hub's data directory"
        )
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise CommandError(
            f"the hub of {data / PID_FILE} (pid {pid}) is not running. Fix: start the hub "
            "(scripts/start-hub); it reads the file at start"
        ) from None
    return pid


def _wait_for_status(status_path: Path, pid: int, after: int, timeout: float) -> dict[str, Any]:
    """The hub's status once it reports a reload newer than generation ``after`` (the hub
    rewrites the file in one step when it has applied the config)."""
    from .hubreload import read_status

    deadline = time.monotonic() + timeout
    seen: tuple[int, int] | None = None
    while time.monotonic() < deadline:
        try:
            st = status_path.stat()
            stamp = (st.st_ino, st.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp is not None and stamp != seen:
            seen = stamp
            status = read_status(status_path)
            if status and status.get("pid") == pid and int(status.get("generation", -1)) > after:
                return status
        time.sleep(0.05)
    raise CommandError(
        f"the hub (pid {pid}) did not report the reload within {timeout:.0f}s. "
        "Fix: look at the hub's log for the error"
    )


def _reload(path: Path, timeout: float) -> int:
    from .hubreload import read_status

    raw = read_config_bytes(path)
    try:
        config_from_bytes(raw, path)
    except ConfigError as e:
        raise CommandError(f"{e}\nThe running hub keeps its current config.") from e
    data = resolve_data_dir(path)
    pid = _hub_pid(data)
    status_path = data / STATUS_FILE
    before = read_status(status_path)
    if not before or before.get("pid") != pid:
        raise CommandError(
            f"the hub (pid {pid}) has written no {status_path}, so it cannot reload. "
            "Fix: restart it with gpuhub's jupyterhub_config.py (scripts/start-hub)"
        )
    if Path(str(before.get("config"))) != path.resolve():
        raise CommandError(
            f"the running hub uses {before.get('config')}, not {path.resolve()}. "
            "Fix: edit and reload that file"
        )
    os.kill(pid, signal.SIGHUP)
    status = _wait_for_status(status_path, pid, int(before.get("generation", 0)), timeout)
    if status.get("error"):
        raise CommandError(f"{status['error']}\nThe running hub keeps its previous config.")
    if status.get("digest") != config_digest(raw):
        raise CommandError(
            f"{path} changed again while the hub reloaded it. Fix: run gpuhub-config reload again"
        )
    print(f"{path}: active in the hub (pid {pid}); running servers are untouched")
    for line in status.get("changes") or ["no changes"]:
        print(f"  {line}")
    synced = status.get("groups_synced") or {}
    if synced:
        print(f"  groups updated in the hub database for: {', '.join(sorted(synced))}")
    print("  quota and profile changes apply from each user's next spawn")
    return 0


def _kube_quotas(path: Path, namespaces: list[str]) -> int:
    from .kube.groupquota import group_quota_manifests

    if not namespaces:
        print("error: name the namespaces gpuhub uses (hub and jobs)", file=sys.stderr)
        return 1
    objects = group_quota_manifests(load_config(path), namespaces)
    print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuhub-config",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("init", "check"):
        sub.add_parser(name).add_argument("path", type=Path)
    usage = sub.add_parser("usage", help="who holds which GPUs; GPU-hours per group and user")
    usage.add_argument("path", type=Path)
    usage.add_argument(
        "--since",
        default="24h",
        help="start of the GPU-hours period: 24h, 7d, 90m or a date/time (default 24h)",
    )
    reload = sub.add_parser("reload", help="make the running hub use the file")
    reload.add_argument("path", type=Path)
    reload.add_argument(
        "--timeout", type=float, default=60, help="seconds to wait for the hub (default 60)"
    )
    pw = sub.add_parser("set-password", help="set a user's password (stdin, or prompted)")
    pw.add_argument("path", type=Path)
    pw.add_argument("user")
    kq = sub.add_parser("kube-quotas")
    kq.add_argument("path", type=Path)
    kq.add_argument("namespaces", nargs="*", help="the namespaces gpuhub uses")
    return parser


def isolation_status(data: Path) -> str:
    """How the embedded default isolates servers and jobs on this host, in one line."""
    from .cgroups import probe_fence

    fence = probe_fence(data / "state")
    accounts = (
        "as per-user system accounts" if os.geteuid() == 0 else "as the hub's own user (not root)"
    )
    gpus = "GPUs fenced per server" if fence.fences_devices else "GPU assignment is advisory"
    return f"embedded default: servers and jobs run {accounts}, in {fence.mechanism}; {gpus}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "kube-quotas":
            return _kube_quotas(args.path, args.namespaces)
        if args.command == "init":
            return _init(args.path)
        if args.command == "usage":
            return _usage(args.path, args.since)
        if args.command == "reload":
            return _reload(args.path, args.timeout)
        if args.command == "set-password":
            return _set_password(args.path, args.user)
        cfg = load_config(args.path)
        print(f"{args.path}: ok ({len(cfg.profiles)} profiles, {len(cfg.images)} images)")
        print(isolation_status(resolve_data_dir(args.path)))
        return 0
    except (ConfigError, CommandError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
