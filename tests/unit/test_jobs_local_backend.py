"""The local backend's cancel decision, in process: a real finished process, a real
ledger store under a temporary data directory."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from gpuhub.activeconfig import ActiveConfig
from gpuhub.errors import QuotaDenied
from gpuhub.jobs.backends.local import LocalJobBackend, _Entry
from gpuhub.jobs.policy import validate_job
from gpuhub.jobs.records import Job, utcnow
from gpuhub.jobs.service import Caller, JobsService
from gpuhub.localstate import process_start

NB = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {},
    "cells": [{"id": "c", "cell_type": "code", "metadata": {}, "source": "1", "outputs": []}],
}


@pytest.fixture
async def backend(tmp_path: Path, raw):
    path = tmp_path / "gpuhub.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = Config()
    cfg.LocalJobBackend.poll_interval = 3600.0  # the supervisor does not look again
    cfg.LocalJobBackend.grace_period = 0.1
    b = LocalJobBackend(config=cfg, active=ActiveConfig(path), data_dir=tmp_path / "data")
    await b.recover()
    await asyncio.sleep(0)  # the supervisor's first (empty) round
    yield b
    await b.shutdown()


def running_job(b: LocalJobBackend, job_id: str, exit_code: int) -> Job:
    """A job whose process has just ended with ``exit_code``, not yet noticed."""
    spec = validate_job(b.gpuhub, "bob", ["vision"], {"notebook": NB}, job_id=job_id, max_workers=2)
    (b.jobs_dir / job_id).mkdir(parents=True)
    (b.jobs_dir / job_id / "result.json").write_text(
        json.dumps({"exit_code": exit_code, "codes": [exit_code]})
    )
    proc = subprocess.Popen(["sh", "-c", f"exit {exit_code}"])
    proc.wait()  # it ended: the event the cancel races with
    job = replace(Job.from_spec(spec), state="Running")
    b._entries[job_id] = _Entry(job=job, streams=1, pid=proc.pid, proc=proc)
    return job


async def test_a_job_that_ended_before_the_cancel_keeps_its_outcome(backend):
    job = running_job(backend, "0a", 0)
    done = await backend.cancel(job)
    assert done.state == "Succeeded"
    assert (await backend.get("0a")).state == "Succeeded"
    failed = await backend.cancel(running_job(backend, "0b", 3))
    assert failed.state == "Failed" and "exit code 3" in failed.message


async def test_a_running_job_is_cancelled(backend):
    job = running_job(backend, "0c", 0)
    entry = backend._entries["0c"]
    entry.proc = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    entry.pid, sleeper = entry.proc.pid, entry.proc
    done = await backend.cancel(job)
    assert done.state == "Cancelled"
    assert sleeper.wait() != 0  # signalled


async def test_a_cancel_in_flight_when_the_service_stops_answers_and_is_kept(backend):
    """The service stops (its hub died) while a cancel waits for a job that ignores
    SIGTERM: the cancel returns at once (the handler answers 202, not a 500 from a task
    cut off at exit), the job is killed and its cancel is on disk for the next service."""
    job = running_job(backend, "0d", 0)
    entry = backend._entries["0d"]
    entry.proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 3600"], start_new_session=True)
    entry.pid, stubborn = entry.proc.pid, entry.proc
    backend.grace_period = 3600.0  # without the stop, the cancel would wait an hour
    cancel = asyncio.ensure_future(backend.cancel(job))
    await asyncio.sleep(0.2)
    assert not cancel.done()
    await backend.shutdown()
    returned = await asyncio.wait_for(cancel, 30)
    assert not returned.done and returned.id == "0d"
    assert stubborn.wait(timeout=30) != 0  # killed
    saved = json.loads((backend.jobs_dir / "0d" / "job.json").read_text())
    assert saved["cancel_requested"] is True


# --- the time limit: ended by the supervisor, recorded as failed, GPUs freed -------------


@pytest.fixture
async def watched(tmp_path: Path, raw):
    """A backend whose supervisor looks every 50 ms (``raw`` may be edited first)."""
    backends: list[LocalJobBackend] = []

    async def start(data: Path = tmp_path / "data") -> LocalJobBackend:
        path = tmp_path / "gpuhub.yaml"
        path.write_text(yaml.safe_dump(raw))
        cfg = Config()
        cfg.LocalJobBackend.poll_interval = 0.05
        cfg.LocalJobBackend.grace_period = 5.0
        b = LocalJobBackend(config=cfg, active=ActiveConfig(path), data_dir=data)
        await b.recover()
        backends.append(b)
        return b

    yield start
    for b in backends:
        await b.shutdown()


def gpu_job(b: LocalJobBackend, job_id: str, body: dict | None = None) -> _Entry:
    """A running GPU job of bob's: reserved in the real ledger, a real process (``sleep``,
    in a session of its own as the wrapper is), recorded on disk as ``submit`` does."""
    body = {"notebook": NB, "gpus_per_worker": 1, "gpu_type": "a100", **(body or {})}
    spec = validate_job(b.gpuhub, "bob", ["vision"], body, job_id=job_id, max_workers=2)
    alloc = b.ledger.reserve(spec.key, spec.ledger_request(), ["vision"], kind="job")
    assert alloc is not None and alloc.devices
    (b.jobs_dir / job_id).mkdir(parents=True)
    proc = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    job = replace(Job.from_spec(spec, alloc.group), state="Running", started=utcnow())
    e = _Entry(job=job, streams=1, pid=proc.pid, pid_start=process_start(proc.pid), proc=proc)
    b._save(e)
    return e


async def test_a_job_over_its_time_limit_ends_failed_and_frees_its_gpus(watched, raw):
    raw["jobs"] = {"time_limit_minutes": 0.01}  # 0.6 s
    b = await watched()
    e = gpu_job(b, "0e")
    assert e.job.time_limit_minutes == 0.01
    assert "job:0e" in b.ledger.store.units()
    sleeper = e.proc
    b._entries["0e"] = e
    await asyncio.wait_for(e.ended.wait(), 60)
    job = await b.get("0e")
    assert job.state == "Failed"
    assert job.message == "time limit (0.01 min) reached"
    assert sleeper.wait(timeout=30) != 0  # signalled
    assert "job:0e" not in b.ledger.store.units()
    assert b.ledger.snapshot().totals.used(user="bob") == 0
    saved = json.loads((b.jobs_dir / "0e" / "job.json").read_text())
    assert saved["job"]["state"] == "Failed" and saved["timed_out"] is True
    # a cancel afterwards changes nothing: the job already ended
    assert (await b.cancel(job)).message == "time limit (0.01 min) reached"


async def test_the_limit_is_the_one_submitted_with_and_survives_a_restart(watched, raw, tmp_path):
    """The record says 0.01 min; the config now has no limit, and a new service (after a
    restart) re-attaches to the job: it is still ended at the recorded limit."""
    raw["jobs"] = {"time_limit_minutes": 0.01}
    first = await watched()
    first.poll_interval = 3600.0  # the first service does not get to it
    e = gpu_job(first, "0f")
    reaper = threading.Thread(target=e.proc.wait, daemon=True)  # the sleeper's parent: us
    reaper.start()
    await first.shutdown()
    raw.pop("jobs")
    second = await watched()
    assert second.gpuhub.jobs.time_limit_minutes is None
    entry = second._entries["0f"]
    assert entry.proc is None  # re-attached by pid
    await asyncio.wait_for(entry.ended.wait(), 60)
    assert entry.job.state == "Failed"
    assert entry.job.message == "time limit (0.01 min) reached"
    reaper.join(timeout=30)
    assert not reaper.is_alive()


async def test_the_job_dialog_options_show_the_time_limit(watched, raw):
    raw["jobs"] = {"time_limit_minutes": 600}
    raw["profiles"][1]["jobs"] = {"time_limit_minutes": 120}
    b = await watched()
    service = JobsService(b.active, b, None, 2, None, 1 << 20)  # type: ignore[arg-type]
    options = await service.options(Caller("bob", ("vision",), None))
    limits = {(r["gpu_type"], r["gpus_per_worker"]): r["minutes"] for r in options["time_limits"]}
    assert limits[(None, 0)] == 600
    assert limits[("a100", 1)] == limits[("h100", 4)] == 120


async def test_a_job_over_the_quota_is_refused_not_queued(watched):
    """Why ``gpuhub_gpus_queued`` is 0 on one machine: a job that does not fit is
    refused at submit (the 403 names the holders), nothing is recorded or waits."""
    b = await watched()
    other = validate_job(
        b.gpuhub,
        "alice",
        ["vision"],
        {"notebook": NB, "gpus_per_worker": 4},
        job_id="a1",
        max_workers=2,
    )
    assert b.ledger.reserve(other.key, other.ledger_request(), ["vision"], kind="job")
    body = {"notebook": NB, "gpus_per_worker": 1, "gpu_type": "a100"}
    spec = validate_job(b.gpuhub, "bob", ["vision"], body, job_id="b1", max_workers=2)
    with pytest.raises(QuotaDenied, match="alice"):
        await b.submit(spec, ["vision"])
    assert await b.list_jobs("bob") == []
    assert not (b.jobs_dir / "b1").exists()
