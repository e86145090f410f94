"""The embedded default backend: jobs as local processes on the hub's machine.

PyTorch: ``torchrun --standalone --nnodes=1 --nproc_per_node=<W×M, or W on CPU>`` with
the job's devices in ``CUDA_VISIBLE_DEVICES`` (rank ``r`` uses local device ``r``); the
script picks gloo on CPU (``GPUHUB_DIST_BACKEND`` says which).  TensorFlow: W processes
with ``TF_CONFIG`` on loopback ports, M devices each.

Every job is a unit of the machine-wide ledger, exactly like a notebook server: a cgroup
of its own (the profile's memory and CPU times the workers, only its GPUs openable) that
the ledger counts while anything in it lives and that is killed whole when the job ends
or is cancelled.  :mod:`gpuhub.jobs.wrapper` supervises the job from inside the unit as
root; the job's own processes run as the user's system account (as their notebook
server does), from the user's home, with a scrubbed environment (never a token).

State lives in ``<data_dir>/jobs/<id>/`` (root's ``job.json``, ``launch.json`` and
``result.json``; the account's ``work/script.py`` and ``logs/``), so jobs survive a
restart of the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from traitlets import Float, Integer, Unicode, default

from ...accounts import DEFAULT_PREFIX, Account, account_name, ensure_account
from ...cgroups import join
from ...errors import OptionError
from ...ledger import Ledger
from ...localstate import alive, decode, encode, process_start
from ...model import Allocation, ImageSpec
from ...spawners.local import LocalBackend, device_env, local_backend, unit_limits
from ..envcheck import FrameworkCheck, env_python
from ..policy import JobSpec, check_cpu_workers, time_limit_reason
from ..records import Job, utcnow
from .base import JobBackend

JOB_ENV = "GPUHUB_JOB"
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR")


# --- pure: what to run --------------------------------------------------------------------


def streams(spec: JobSpec) -> int:
    """Log streams of a job: one per torchrun rank, one per TensorFlow worker."""
    if spec.framework == "pytorch":
        return spec.workers * (spec.gpus_per_worker or 1)
    return spec.workers


def launch_plan(
    spec: JobSpec,
    *,
    job_dir: Path,
    cwd: Path,
    python: str,
    devices: tuple[int, ...],
    ports: list[int],
) -> dict[str, Any]:
    """The wrapper's ``launch.json``: argv, extra env and log file of each process.

    ``devices`` are the allocated local GPUs (empty on CPU); ``ports`` one loopback port
    per TensorFlow worker (unused for PyTorch, where ``--standalone`` picks its own).
    """
    logs = job_dir / "logs"
    script = str(job_dir / "work" / "script.py")
    backend = "nccl" if spec.gpus else "gloo"
    common = {"GPUHUB_DIST_BACKEND": backend, "PYTHONUNBUFFERED": "1"}
    if spec.framework == "pytorch":
        argv = [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes=1",
            f"--nproc_per_node={streams(spec)}",
            f"--log-dir={logs / 'torchrun'}",
            "--redirects=3",
            "--tee=3",
            script,
            *spec.args,
        ]
        return {
            "cwd": str(cwd),
            "procs": [{"argv": argv, "env": common, "log": str(logs / "agent.log")}],
        }
    hosts = [f"127.0.0.1:{p}" for p in ports]
    per = spec.gpus_per_worker
    procs = []
    for i in range(spec.workers):
        mine = devices[i * per : (i + 1) * per] if per else ()
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        env = {
            **common,
            "TF_CONFIG": json.dumps(tf_config, separators=(",", ":")),
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, mine)),
        }
        procs.append(
            {
                "argv": [python, script, *spec.args],
                "env": env,
                "log": str(logs / "workers" / str(i) / "output.log"),
            }
        )
    return {"cwd": str(cwd), "procs": procs}


def job_env(
    spec: JobSpec,
    job_dir: Path,
    home: Path,
    alloc: Allocation | None,
    base: dict[str, str],
    account: str | None = None,
) -> dict[str, str]:
    """The environment of the wrapper (inherited by every job process): a few harmless
    variables of ``base``, the user, and the GPUs.  No hub or service token."""
    env = {k: base[k] for k in _KEEP_ENV if k in base}
    if spec.image.local_env:
        env["PATH"] = f"{spec.image.local_env}/bin:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(
        HOME=str(home),
        PYTHONUNBUFFERED="1",
        GPUHUB_JOB_ID=spec.id,
        GPUHUB_JOB_USER=spec.user,
        **{JOB_ENV: str(job_dir)},
    )
    if account:
        env["USER"] = env["LOGNAME"] = account
    env.update(device_env(alloc))
    return env


def read_tail(path: Path, tail: int, max_bytes: int = 1 << 20) -> list[str]:
    """The last ``tail`` lines of a text file (``[]`` when absent)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-tail:] if tail > 0 else []


def rank_logs(job_dir: Path, framework: str, worker: int) -> list[Path]:
    """Log files of one stream, oldest content first."""
    if framework != "pytorch":
        return [job_dir / "logs" / "workers" / str(worker) / "output.log"]
    attempts = sorted(
        (job_dir / "logs" / "torchrun").glob("*/attempt_*"), key=lambda p: p.stat().st_mtime
    )
    if not attempts:
        return []
    rank = attempts[-1] / str(worker)
    return [rank / "stdout.log", rank / "stderr.log"]


# --- the backend ----------------------------------------------------------------------------


@dataclass
class _Entry:
    job: Job
    streams: int
    pid: int | None = None
    pid_start: str | None = None
    cancel_requested: bool = False
    timed_out: bool = False  # its time limit was reached: it is being (or was) ended
    alloc: dict[str, Any] | None = None
    proc: subprocess.Popen[bytes] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    finishing: bool = False  # its end is being recorded (in a thread)

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job.to_json(),
            "streams": self.streams,
            "pid": self.pid,
            "pid_start": self.pid_start,
            "cancel_requested": self.cancel_requested,
            "timed_out": self.timed_out,
            "alloc": self.alloc,
        }


class LocalJobBackend(JobBackend):
    """Jobs as supervised local processes (``torchrun`` or TensorFlow workers)."""

    python = Unicode(
        config=True,
        help="""Python that runs jobs whose image has no ``local_env`` (default: the
        service's own interpreter).  It must have torch (or tensorflow) installed.

        .. versionadded:: 0.1
        """,
    )

    @default("python")
    def _default_python(self) -> str:
        return sys.executable

    grace_period = Float(
        10.0,
        config=True,
        help="""Seconds between SIGTERM and SIGKILL when a job is cancelled.

        .. versionadded:: 0.1
        """,
    )

    poll_interval = Float(
        0.5,
        config=True,
        help="""Seconds between checks of running jobs' processes.

        .. versionadded:: 0.1
        """,
    )

    account_prefix = Unicode(
        DEFAULT_PREFIX,
        config=True,
        help="""Prefix of the users' system accounts (the same as
        ``GPULocalSpawner.account_prefix``): job processes run as the user's account.

        .. versionadded:: 0.1
        """,
    )

    pids_limit = Integer(
        4096,
        config=True,
        help="""Most processes and threads one job may have at once.

        .. versionadded:: 0.1
        """,
    )

    _entries: dict[str, _Entry]
    _task: asyncio.Task[None] | None = None
    _stopping: asyncio.Event | None = None
    _stops: set[asyncio.Task[None]]

    # -- paths and stores ------------------------------------------------------------------
    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def workdir(self, user: str) -> Path:
        """The user's working directory, the same as their notebook server's."""
        return self.data_dir / "users" / user

    @property
    def ledger(self) -> LocalBackend:
        return local_backend(self.gpuhub, str(self.data_dir))

    def quota_ledger(self) -> Ledger:
        return self.ledger.snapshot()

    def capacity(self) -> dict[str, tuple[int, int | None]]:
        return dict(self.ledger.capacity())

    def _save(self, e: _Entry) -> None:
        d = self.jobs_dir / e.job.id
        tmp = d / "job.json.tmp"
        tmp.write_text(json.dumps(e.to_json(), indent=1))
        os.replace(tmp, d / "job.json")

    # -- life cycle --------------------------------------------------------------------------
    async def recover(self) -> None:
        self._entries = {}
        self._stops = set()
        self._stopping = asyncio.Event()
        self.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.jobs_dir.chmod(0o711)
        for path in sorted(self.jobs_dir.glob("*/job.json")):
            try:
                d = json.loads(path.read_text())
                e = _Entry(
                    job=Job.from_json(d["job"]),
                    streams=int(d.get("streams", 1)),
                    pid=d.get("pid"),
                    pid_start=d.get("pid_start"),
                    cancel_requested=bool(d.get("cancel_requested")),
                    timed_out=bool(d.get("timed_out")),
                    alloc=d.get("alloc"),
                )
            except (OSError, ValueError, KeyError, TypeError) as err:
                self.log.warning("gpuhub-jobs: skipping unreadable %s: %s", path, err)
                continue
            self._entries[e.job.id] = e
            if not e.job.done:
                if e.pid and alive(e.pid, e.pid_start):
                    self.log.info("gpuhub-jobs: re-attached to job %s (pid %s)", e.job.id, e.pid)
                    if e.cancel_requested or e.timed_out:  # its stop was cut off: finish it
                        self._stop_later(e)
                else:
                    await self._finish_once(e)
        # a job unit that no running job owns (its record was lost) is stopped
        running = {f"job:{i}" for i, e in self._entries.items() if not e.job.done}
        store = self.ledger.store
        for key, unit in (await asyncio.to_thread(store.units)).items():
            if unit.kind == "job" and key not in running:
                self.log.warning("gpuhub-jobs: stopping %s: no running job owns it", key)
                await asyncio.to_thread(store.release, key)
        self._task = asyncio.create_task(self._supervise())

    async def shutdown(self) -> None:
        """Stop supervising; a cancel in flight stops waiting (see :meth:`cancel`)."""
        if self._stopping is not None:
            self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._stops:  # each returns at once now (its job killed, its stop on disk)
            await asyncio.wait(list(self._stops), timeout=30)

    async def _supervise(self) -> None:
        while True:
            for e in list(self._entries.values()):
                if e.job.state != "Running" or e.finishing:
                    continue
                if self._ended(e):
                    try:
                        await self._finish_once(e)
                    except Exception:
                        self.log.exception("gpuhub-jobs: finishing job %s failed", e.job.id)
                elif self._over_time(e) and self._claim_stop(e, time_limit=True):
                    self.log.warning(
                        "gpuhub-jobs: job %s: %s; ending it",
                        e.job.id,
                        time_limit_reason(e.job.time_limit_minutes or 0),
                    )
                    self._stop_later(e)
            await asyncio.sleep(self.poll_interval)

    @staticmethod
    def _over_time(e: _Entry) -> bool:
        """Whether ``e`` has run past the time limit it was submitted with."""
        deadline = e.job.deadline
        return deadline is not None and utcnow() >= deadline

    def _stop_later(self, e: _Entry) -> None:
        """End ``e`` (already claimed) in a task of its own: the supervisor goes on."""
        task = asyncio.create_task(self._stop(e))
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    def _ended(self, e: _Entry) -> bool:
        if e.proc is not None:
            return e.proc.poll() is not None
        return e.pid is None or not alive(e.pid, e.pid_start)

    def _finish(self, e: _Entry) -> None:
        """Record the outcome, kill what is left of the job's unit, release its GPUs.
        Blocking: runs in a thread."""
        job_dir = self.jobs_dir / e.job.id
        self.ledger.store.release(f"job:{e.job.id}")
        codes: list[int | None] = []
        try:
            result = json.loads((job_dir / "result.json").read_text())
            code, codes = int(result["exit_code"]), list(result["codes"])
        except (OSError, ValueError, KeyError, TypeError):
            code = None
        if e.timed_out:
            job = e.job.ended("Failed", time_limit_reason(e.job.time_limit_minutes or 0), codes)
        elif e.cancel_requested:
            job = e.job.ended("Cancelled", "cancelled by the user", codes)
        elif code == 0:
            job = e.job.ended("Succeeded", "all workers exited with code 0", [0] * e.job.workers)
        elif code is None:
            job = e.job.ended(
                "Failed", "the job's supervisor ended without an exit code (killed?)", codes
            )
        else:
            job = e.job.ended("Failed", f"exit code {code}; see the workers' logs", codes or [code])
        if e.job.framework == "pytorch" and len(codes) == 1:
            job = replace(
                job,
                worker_states=tuple(replace(w, exit_code=codes[0]) for w in job.worker_states),
            )
        e.job = job
        e.proc = None
        self._save(e)
        e.ended.set()
        self.log.info("gpuhub-jobs: job %s %s: %s", job.id, job.state, job.message)

    # -- jobs ------------------------------------------------------------------------------
    async def submit(self, spec: JobSpec, groups: Iterable[str]) -> Job:
        check_cpu_workers(spec, self._jobs(), self.max_cpu_workers_per_user)
        ledger = self.ledger
        alloc = ledger.reserve(spec.key, spec.ledger_request(), groups, kind="job")
        job = Job.from_spec(spec, group=alloc.group if alloc else spec.group)
        e = _Entry(job=job, streams=streams(spec), alloc=encode(alloc) if alloc else None)
        try:
            proc = await asyncio.to_thread(self._start, spec, alloc, e, ledger)
        except Exception as err:
            await asyncio.to_thread(ledger.store.release, spec.key)
            e.job = e.job.ended("Failed", f"the job could not be started: {err}", [])
            if (self.jobs_dir / spec.id).is_dir():
                self._save(e)
            self.log.exception("gpuhub-jobs: starting job %s failed", spec.id)
            return e.job
        e.proc, e.pid, e.pid_start = proc, proc.pid, process_start(proc.pid)
        await asyncio.to_thread(ledger.store.started, spec.key, proc.pid)
        e.job = replace(
            e.job,
            state="Running",
            started=utcnow(),
            worker_states=tuple(replace(w, state="Running") for w in e.job.worker_states),
        )
        self._save(e)
        self.log.info(
            "gpuhub-jobs: started job %s for %s (%d×%d %s, devices %s)",
            spec.id,
            spec.user,
            spec.workers,
            spec.gpus_per_worker,
            spec.gpu_type or "CPU",
            list(decode(e.alloc).devices) if e.alloc else [],
        )
        return e.job

    def _account(self, user: str, home: Path) -> Account | None:
        if os.geteuid() != 0:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            return None
        home.parent.mkdir(parents=True, exist_ok=True)
        home.parent.chmod(0o711)
        return ensure_account(account_name(self.account_prefix, user), user, home)

    def _start(
        self, spec: JobSpec, alloc: Allocation | None, e: _Entry, ledger: LocalBackend
    ) -> subprocess.Popen[bytes]:
        """Write the job directory, make the unit and start the wrapper in it (blocking:
        runs in a thread)."""
        job_dir = self.jobs_dir / spec.id
        job_dir.mkdir(parents=True, mode=0o711)
        self._entries[spec.id] = e
        self._save(e)
        home = self.workdir(spec.user)
        account = self._account(spec.user, home)
        for sub in ("work", "logs"):
            (job_dir / sub).mkdir(mode=0o700)
            if account is not None:
                os.chown(job_dir / sub, account.uid, account.gid)
        script = job_dir / "work" / "script.py"
        script.write_text(spec.script)
        if account is not None:
            os.chown(script, account.uid, account.gid)
        tf_ports = [_free_port() for _ in range(spec.workers)]
        plan = launch_plan(
            spec,
            job_dir=job_dir,
            cwd=home,
            python=self._python_for(spec),
            devices=alloc.devices if alloc else (),
            ports=tf_ports if spec.framework == "tensorflow" else [],
        )
        if account is not None:
            plan["account"] = {"uid": account.uid, "gid": account.gid}
        (job_dir / "launch.json").write_text(json.dumps(plan, indent=1))
        limits = unit_limits(
            spec.profile, ledger.devices, alloc, self.pids_limit, scale=max(1, spec.workers)
        )
        owner = (account.uid, account.gid) if account is not None else None
        files = ledger.store.prepare(spec.key, limits, owner)
        env = job_env(
            spec, job_dir, home, alloc, dict(os.environ), account.name if account else None
        )
        env["TMPDIR"] = str(ledger.store.tmp_dir(spec.key))
        with (job_dir / "wrapper.log").open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "gpuhub.jobs.wrapper", str(job_dir)],
                cwd=home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=functools.partial(join, files),
            )

    def _python_for(self, spec: JobSpec) -> str:
        if spec.image.local_env:
            return str(Path(spec.image.local_env) / "bin" / "python")
        return str(self.python)

    async def get(self, job_id: str) -> Job | None:
        e = self._entries.get(job_id)
        return e.job if e else None

    async def list_jobs(self, user: str) -> list[Job]:
        mine = [e.job for e in self._entries.values() if e.job.user == user]
        return sorted(mine, key=lambda j: j.created, reverse=True)

    async def logs(self, job: Job, worker: int, tail: int) -> tuple[list[str], int]:
        e = self._entries[job.id]
        if not 0 <= worker < e.streams:
            raise OptionError("worker", f"must be 0..{e.streams - 1} for this job")
        job_dir = self.jobs_dir / job.id
        lines: list[str] = []
        for path in rank_logs(job_dir, job.framework, worker):
            lines += read_tail(path, tail)
        return lines[-tail:] if tail > 0 else [], e.streams

    async def cancel(self, job: Job) -> Job:
        """Stop ``job`` if it still runs and return it: ``Cancelled`` only when this call
        found it running; a job that ended first keeps its real outcome."""
        e = self._entries[job.id]
        if not self._claim_stop(e):
            if (e.cancel_requested or e.timed_out) and not e.job.done:  # being stopped
                await self._wait(e, self.grace_period + 5)
            await self._finish_once(e)
            return e.job
        await self._stop(e)
        return e.job

    async def _stop(self, e: _Entry) -> None:
        """End ``e``, claimed by :meth:`_claim_stop`: its claim on disk, SIGTERM, SIGKILL
        after ``grace_period``, then its end recorded."""
        await asyncio.to_thread(self._save, e)
        self._signal(e, signal.SIGTERM)
        if not await self._wait(e, self.grace_period):
            self._signal(e, signal.SIGKILL)
            if self._is_stopping():
                # The service is stopping: the job is killed and why is on disk
                # (``cancel_requested``/``timed_out``); the next service records it.
                return
            await self._wait(e, 5)
        await self._finish_once(e)

    def _is_stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    def _claim_stop(self, e: _Entry, *, time_limit: bool = False) -> bool:
        """Decide whether a cancel (or, with ``time_limit``, the job's time limit) stops
        ``e``: synchronous, so nothing (the supervisor, another request) runs between the
        check and the change.  ``False`` when the job has already ended, or was already
        claimed, by its process, a cancel or its time limit."""
        if e.job.done or e.finishing or e.cancel_requested or e.timed_out or self._ended(e):
            return False
        if time_limit:
            e.timed_out = True
        else:
            e.cancel_requested = True
        return True

    async def _finish_once(self, e: _Entry) -> None:
        """Record the end of ``e`` unless it is recorded, or being recorded, already."""
        if e.job.done:
            return
        if e.finishing:
            await e.ended.wait()
            return
        e.finishing = True
        try:
            await asyncio.to_thread(self._finish, e)
        finally:
            e.finishing = False

    async def _wait(self, e: _Entry, seconds: float) -> bool:
        """Wait until the supervisor has recorded the end of ``e`` (``False``: timeout,
        or the service is stopping)."""
        waits = [asyncio.ensure_future(e.ended.wait())]
        if self._stopping is not None:
            waits.append(asyncio.ensure_future(self._stopping.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return e.ended.is_set()

    def _signal(self, e: _Entry, sig: int) -> None:
        """Signal the wrapper's process group (if it is still the process we started);
        the wrapper forwards it to the job's processes."""
        if e.pid and alive(e.pid, e.pid_start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(e.pid) == e.pid:
                    os.killpg(e.pid, sig)
                else:
                    os.kill(e.pid, sig)

    # -- the job's environment (gpuhub.jobs.envcheck) ----------------------------------------
    @cached_property
    def envs(self) -> FrameworkCheck:
        """Which interpreter has which framework (cached probes)."""
        return FrameworkCheck()

    async def preflight(self, spec: JobSpec) -> None:
        await self.envs.require(spec.image, self._python_for(spec), spec.framework)

    async def frameworks(self, image: ImageSpec) -> tuple[str, ...] | None:
        facts = await self.envs.facts(env_python(image, self.python))
        return facts.frameworks()

    # -- CPU workers (gpuhub.jobs.policy.check_cpu_workers) ---------------------------------
    max_cpu_workers_per_user = Integer(
        4,
        min=0,
        config=True,
        help="""The most CPU worker processes (workers of jobs without GPUs) one user may
        run at a time, across all their running jobs.  A job over it is refused.

        .. versionadded:: 0.1
        """,
    )

    def _jobs(self) -> list[Job]:
        return [e.job for e in self._entries.values()]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
