#!/usr/bin/env python3
"""All-reduce ``rank + 1`` across the local ranks and assert the sum is ``n(n+1)/2``.

Run by ``smoke.py`` on a GPU machine (NCCL, one rank per GPU):

    torchrun --standalone --nproc_per_node=N images/smoke/allreduce.py

``--backend gloo`` runs the same check on CPU processes (no GPU needed).  Every rank prints
one line ending in ``-> ok`` or ``-> MISMATCH``; the exit code is nonzero on a mismatch.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["nccl", "gloo"], default="nccl")
    args = parser.parse_args(argv)
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    value = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    got, expected = value.item(), world * (world + 1) / 2
    ok = got == expected
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    line = (
        f"rank {rank}/{world} {args.backend} on {device} ({name}): all_reduce sum = {got:g}, "
        f"expected n(n+1)/2 = {expected:g} -> {'ok' if ok else 'MISMATCH'}\n"
    )
    sys.stdout.write(line)  # one write per line: the ranks share torchrun's stdout
    sys.stdout.flush()
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
