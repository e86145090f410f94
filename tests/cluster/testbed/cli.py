"""Start or stop a test cluster by hand.

python tests/cluster/testbed/cli.py up [--dir DIR] [--no-fleet] [--no-process-node]
    starts a cluster (default fleet + a process node), prints the kubeconfig path and
    stays in the foreground; Ctrl-C stops everything.  --gpu-nodes N replaces the
    default fleet by N nodes with 8 A100 GPUs each.
python tests/cluster/testbed/cli.py up --detach --dir DIR
    same, but returns and leaves the processes running (state in DIR/testbed-state.json)
python tests/cluster/testbed/cli.py down --dir DIR
    stops a detached cluster: exactly the processes recorded in its state file.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `testbed` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.cluster import Cluster, stop_from_state  # noqa: E402
from testbed.fleet import A100_80GB, Fleet, NodePool, default_fleet  # noqa: E402


def _up(args: argparse.Namespace) -> None:
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="gpuhub-k8s-"))
    started = time.monotonic()
    cluster = Cluster(workdir, detached=args.detach).start()
    print(f"control plane ready in {time.monotonic() - started:.1f}s")
    try:
        if not args.no_process_node:
            cluster.add_process_node()
        if not args.no_fleet:
            cluster.add_fleet(_fleet(args.gpu_nodes))
    except BaseException:
        cluster.stop()
        raise
    print(f"all nodes Ready {time.monotonic() - started:.1f}s after launch")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f"state and logs: {workdir}")
    if args.detach:
        print(f"stop with: python {Path(__file__).resolve()} down --dir {workdir}")
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print("Ctrl-C stops it")
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()


def _fleet(gpu_nodes: int | None) -> Fleet:
    if gpu_nodes is None:
        return default_fleet()
    return Fleet(
        (NodePool("a100", count=gpu_nodes, gpu=A100_80GB, gpus_per_node=8, driver="580.65.06"),)
    )


def _down(args: argparse.Namespace) -> None:
    for line in stop_from_state(Path(args.dir)) or ["nothing was running"]:
        print(f"stopped {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a cluster")
    up.add_argument("--dir", help="working directory (default: a new temporary one)")
    up.add_argument("--detach", action="store_true", help="return, leave it running")
    up.add_argument("--no-fleet", action="store_true", help="no KWOK GPU nodes")
    up.add_argument(
        "--gpu-nodes",
        type=int,
        metavar="N",
        help="instead of the default fleet: N nodes with 8 A100 each (benchmarks)",
    )
    up.add_argument("--no-process-node", action="store_true", help="no process node")
    up.set_defaults(run=_up)
    down = sub.add_parser("down", help="stop a detached cluster")
    down.add_argument("--dir", required=True)
    down.set_defaults(run=_down)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
