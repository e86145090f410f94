"""``gpuhub-config`` without a hub: the data directory rule, and refusals that name the fix."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuhub.cli import main, starter_config
from gpuhub.config import parse_config
from gpuhub.datadir import resolve_data_dir
from gpuhub.passwords import PasswordStore


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $GPUHUB_DATA, and a home of our own (the default data dir lives in it)."""
    monkeypatch.delenv("GPUHUB_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def cfg_file(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "etc" / "gpuhub.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw))
    return path


def test_data_dir_rule(home: Path, cfg_file: Path, monkeypatch: pytest.MonkeyPatch):
    # root's default is outside /root: users' accounts pass through it to their homes
    default = Path("/var/lib/gpuhub") if os.geteuid() == 0 else home / ".local/share/gpuhub"
    assert resolve_data_dir(cfg_file) == default  # the config's folder holds no state
    (cfg_file.parent / "state").mkdir()
    assert resolve_data_dir(cfg_file) == cfg_file.parent
    monkeypatch.setenv("GPUHUB_DATA", "/srv/gpuhub")
    assert resolve_data_dir(cfg_file) == Path("/srv/gpuhub")


def test_usage_without_state_says_so_with_the_fix(home: Path, cfg_file: Path, capsys):
    assert main(["usage", str(cfg_file)]) == 1
    err = capsys.readouterr().err
    assert "no gpuhub state found" in err
    assert str(cfg_file.parent) in err and "GPUHUB_DATA=" in err
    assert not (cfg_file.parent / "state").exists()  # looking creates nothing


def test_usage_finds_state_next_to_the_config(home: Path, cfg_file: Path, capsys):
    (cfg_file.parent / "jupyterhub.sqlite").touch()
    assert main(["usage", str(cfg_file)]) == 0
    out = capsys.readouterr().out
    assert "6 GPUs (declared)" in out and str(cfg_file.parent / "state") in out
    assert "no GPUs in use" in out


def test_reload_refuses_an_invalid_file_with_its_key(home: Path, cfg_file: Path, raw, capsys):
    raw["profiles"][0]["memory"] = "4 GB"
    cfg_file.write_text(yaml.safe_dump(raw))
    assert main(["reload", str(cfg_file)]) == 1
    err = capsys.readouterr().err
    assert "profiles[0].memory" in err and "Fix: write a number" in err
    assert "keeps its current config" in err


def test_reload_without_a_running_hub(home: Path, cfg_file: Path, capsys):
    (cfg_file.parent / "jupyterhub.sqlite").touch()
    assert main(["reload", str(cfg_file)]) == 1
    err = capsys.readouterr().err
    assert "no running hub found" in err and "jupyterhub.pid" in err


def test_reload_refuses_a_hub_without_the_reload_handler(home: Path, cfg_file: Path, capsys):
    data = cfg_file.parent
    (data / "jupyterhub.sqlite").touch()
    (data / "jupyterhub.pid").write_text(str(os.getpid()))  # alive, but wrote no status
    assert main(["reload", str(cfg_file)]) == 1
    assert "has written no" in capsys.readouterr().err


def test_set_password(home: Path, cfg_file: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("carols-first-pw\n"))
    assert main(["set-password", str(cfg_file), "carol"]) == 1
    assert "does not exist" in capsys.readouterr().err  # no data dir yet: nothing written
    data = cfg_file.parent
    (data / "admin-password").write_text("generated\n")  # as the first start writes it
    monkeypatch.setattr("sys.stdin", io.StringIO("carols-first-pw\n"))
    assert main(["set-password", str(cfg_file), "Carol"]) == 0
    assert PasswordStore(data / "passwords.dbm").login("carol", "carols-first-pw").ok
    # an unlisted name, and a short password, are refused with the fix
    monkeypatch.setattr("sys.stdin", io.StringIO("zeds-password\n"))
    assert main(["set-password", str(cfg_file), "zed"]) == 1
    assert "not listed" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["set-password", str(cfg_file), "bob"]) == 1
    assert "at least 8 characters" in capsys.readouterr().err
    assert PasswordStore(data / "passwords.dbm").stored("bob") is None


def test_starter_config_lists_who_may_log_in():
    raw = starter_config()
    cfg = parse_config(raw)
    assert cfg.auth.allow_all is False and cfg.auth.admin_users == ("admin",)
