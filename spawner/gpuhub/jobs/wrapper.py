"""The tiny supervisor of one local job: ``python -m gpuhub.jobs.wrapper <job dir>``.

Reads ``<job dir>/launch.json`` (``{"cwd", "procs": [{"argv", "env", "log"}], "account":
{"uid", "gid"}}``), starts every process in its own (the wrapper's) process group with
stdout+stderr to its log, as the user's account when one is given (the wrapper itself
stays root, inside the job's unit, so the user can neither signal nor alter it),
waits for all of them and writes ``<job dir>/result.json`` (``{"exit_code", "codes"}``)
atomically before exiting with that code — so the outcome survives the jobs service.
If one process fails the others are terminated.  SIGTERM is forwarded to the children.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def write_result(job_dir: Path, codes: list[int | None]) -> int:
    failed = [c for c in codes if c not in (0, None)]
    code = failed[0] if failed else (0 if all(c == 0 for c in codes) else 1)
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps({"exit_code": code, "codes": codes}))
    os.replace(tmp, job_dir / "result.json")
    return code


def drop_to(account: dict[str, int] | None) -> Any:
    """A ``preexec_fn`` that runs a job process as the user's account (private umask)."""

    def preexec() -> None:
        if account is not None:
            os.setgid(account["gid"])
            os.setgroups([account["gid"]])
            os.setuid(account["uid"])
        os.umask(0o077)

    return preexec


def run(job_dir: Path) -> int:
    plan: dict[str, Any] = json.loads((job_dir / "launch.json").read_text())
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    account = plan.get("account")
    for spec in plan["procs"]:
        log = Path(spec["log"])
        log.parent.mkdir(parents=True, exist_ok=True)
        if account is not None:
            os.chown(log.parent, account["uid"], account["gid"])
        with log.open("ab") as out:
            procs.append(
                subprocess.Popen(
                    spec["argv"],
                    cwd=plan["cwd"],
                    env={**os.environ, **spec.get("env", {})},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=drop_to(account),
                )
            )
    while any(p.poll() is None for p in procs):
        if not stopping and any(p.returncode not in (None, 0) for p in procs):
            stopping = True
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        time.sleep(0.2)
    return write_result(job_dir, [p.returncode for p in procs])


def main() -> None:
    code = run(Path(sys.argv[1]))
    sys.exit(code if 0 <= code < 256 else 128 + abs(code) % 128)


if __name__ == "__main__":
    main()
