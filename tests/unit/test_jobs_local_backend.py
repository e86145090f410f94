"""The local backend's cancel decision, in process: a real finished process, a real
ledger store under a temporary data directory."""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from gpuhub.activeconfig import ActiveConfig
from gpuhub.jobs.backends.local import LocalJobBackend, _Entry
from gpuhub.jobs.policy import validate_job
from gpuhub.jobs.records import Job

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
