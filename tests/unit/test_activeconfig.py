"""The active-config holder: re-read on change, keep the last good config on error."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuhub.activeconfig import ActiveConfig, active_config, config_digest
from gpuhub.errors import ConfigError


def write(path: Path, raw: dict[str, Any]) -> bytes:
    data = yaml.safe_dump(raw, sort_keys=False).encode()
    path.write_bytes(data)
    return data


@pytest.fixture
def cfg_file(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "gpuhub.yaml"
    write(path, raw)
    return path


def test_unchanged_file_keeps_the_same_object(cfg_file: Path):
    holder = ActiveConfig(cfg_file, interval=0)
    first = holder.get()
    assert holder.get() is first
    assert holder.error is None
    assert holder.digest == config_digest(cfg_file.read_bytes())


def test_changed_file_is_reloaded(cfg_file: Path, raw: dict[str, Any]):
    holder = ActiveConfig(cfg_file, interval=0)
    assert holder.get().quotas.for_group("vision").gpus == 4
    raw["quotas"]["groups"]["vision"]["gpus"] = 3
    raw["groups"]["vision"] = ["alice"]
    data = write(cfg_file, raw)
    cfg = holder.get()
    assert cfg.quotas.for_group("vision").gpus == 3
    assert cfg.groups["vision"] == ("alice",)
    assert holder.digest == config_digest(data)


def test_checks_the_file_at_most_once_per_interval(cfg_file: Path, raw: dict[str, Any]):
    holder = ActiveConfig(cfg_file, interval=3600)
    before = holder.get()
    raw["quotas"]["groups"]["vision"]["gpus"] = 3
    write(cfg_file, raw)
    assert holder.get() is before  # not looked at yet
    assert holder.reload().quotas.for_group("vision").gpus == 3  # reload reads at once
    assert holder.get().quotas.for_group("vision").gpus == 3


def test_invalid_edit_keeps_last_good_and_records_the_error(
    cfg_file: Path, raw: dict[str, Any], caplog: pytest.LogCaptureFixture
):
    holder = ActiveConfig(cfg_file, interval=0)
    good = holder.get()
    good_digest = holder.digest
    bad = copy.deepcopy(raw)
    bad["profiles"][0]["memory"] = "4 GB"
    with caplog.at_level(logging.ERROR, logger="gpuhub.activeconfig"):
        write(cfg_file, bad)
        assert holder.get() is good
    assert holder.digest == good_digest
    assert isinstance(holder.error, ConfigError)
    assert "profiles[0].memory" in str(holder.error)
    assert "profiles[0].memory" in caplog.text and "keeping the last good config" in caplog.text
    # fixed again: the error is cleared and the new file is active
    raw["profiles"][0]["memory"] = "4G"
    write(cfg_file, raw)
    assert holder.get().profiles[0].memory == "4G"
    assert holder.error is None


def test_removed_file_keeps_last_good(cfg_file: Path):
    holder = ActiveConfig(cfg_file, interval=0)
    good = holder.get()
    cfg_file.unlink()
    assert holder.get() is good
    assert holder.error is not None and "file not found" in str(holder.error)


def test_invalid_file_at_start_raises(tmp_path: Path, raw: dict[str, Any]):
    raw["profiles"][0]["slug"] = "Not A Slug"
    path = tmp_path / "gpuhub.yaml"
    write(path, raw)
    with pytest.raises(ConfigError, match=r"profiles\[0\]\.slug"):
        ActiveConfig(path)


def test_one_holder_per_file(cfg_file: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(cfg_file.parent)
    assert active_config(cfg_file) is active_config("gpuhub.yaml")


async def test_with_an_event_loop_the_file_is_read_off_the_loop(cfg_file: Path, raw):
    holder = ActiveConfig(cfg_file, interval=0)
    old = holder.get()
    raw["groups"]["vision"] = ["alice"]
    write(cfg_file, raw)
    assert holder.get() is old  # noticed: read in a worker thread, swapped in on the loop
    pending = holder._pending
    assert pending is not None
    new = await pending
    assert holder.get() is new and new.groups["vision"] == ("alice",)
    assert await holder.areload() is new  # unchanged file: same config


def test_jobs_service_and_backend_read_it_per_request(cfg_file: Path, raw, tmp_path: Path):
    from gpuhub.jobs.backends.base import JobBackend
    from gpuhub.jobs.offloop import ProcessRunner
    from gpuhub.jobs.service import JobsService

    class Backend(JobBackend):
        """Only the contract's config part; nothing runs."""

        recover = submit = get = list_jobs = logs = cancel = quota_ledger = None  # type: ignore
        capacity = None  # type: ignore

    holder = ActiveConfig(cfg_file, interval=0)
    backend = Backend(active=holder, data_dir=tmp_path)
    runner = ProcessRunner(workers=1, time_limit=10.0)
    service = JobsService(holder, backend, None, 8, runner, max_notebook_bytes=1 << 20)
    assert service.gpuhub is backend.gpuhub is holder.config
    raw["gpu_types"]["b200"] = {"display_name": "B200", "node_label": "NVIDIA-B200"}
    write(cfg_file, raw)
    assert "b200" in service.gpuhub.gpu_types and "b200" in backend.gpuhub.gpu_types
