"""The hub side of ``gpuhub-config reload``, without a hub: what the status file says."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import yaml

from gpuhub.activeconfig import ActiveConfig, config_digest
from gpuhub.hubreload import HubReloader, read_status


def reloader(tmp_path: Path, raw: dict[str, Any]) -> tuple[HubReloader, Path]:
    path = tmp_path / "gpuhub.yaml"
    path.write_text(yaml.safe_dump(raw))
    return HubReloader(ActiveConfig(path), tmp_path, logging.getLogger("test")), path


async def test_reload_reports_the_new_config_and_what_changed(tmp_path: Path, raw):
    r, path = reloader(tmp_path, raw)
    raw["groups"]["vision"] = ["alice"]
    raw["quotas"]["groups"]["vision"]["gpus"] = 3
    path.write_text(yaml.safe_dump(raw))
    await r.reload()
    status = read_status(tmp_path / "config-status.json")
    assert status is not None
    assert status["generation"] == 1 and status["error"] is None
    assert status["digest"] == config_digest(path.read_bytes())
    assert status["changes"] == ["groups.vision: -bob", "quotas.groups.vision.gpus: 4 -> 3"]
    assert stat.S_IMODE((tmp_path / "config-status.json").stat().st_mode) == 0o600
    await r.reload()  # nothing new: still a new generation, no changes
    status = read_status(tmp_path / "config-status.json")
    assert status is not None and status["generation"] == 2 and status["changes"] == []


async def test_invalid_file_is_reported_and_the_old_config_stays(tmp_path: Path, raw):
    r, path = reloader(tmp_path, raw)
    good = r.holder.config
    raw["quotas"]["groups"]["vision"]["gpus"] = "two"
    path.write_text(yaml.safe_dump(raw))
    await r.reload()
    status = read_status(tmp_path / "config-status.json")
    assert status is not None
    assert "quotas.groups.vision.gpus" in status["error"]
    assert status["digest"] != config_digest(path.read_bytes())  # still the old file's
    assert r.holder.config is good
