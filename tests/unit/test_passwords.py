"""Per-user password hashes: first use claims, later logins verify, files stay 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gpuhub.passwords import PasswordStore, password_problem


@pytest.fixture
def store(tmp_path: Path) -> PasswordStore:
    return PasswordStore(tmp_path / "passwords.dbm")


def test_first_login_claims_then_only_that_password_works(store: PasswordStore):
    first = store.login("carol", "carols-password")
    assert first.ok and first.claimed
    again = store.login("carol", "carols-password")
    assert again.ok and not again.claimed
    assert not store.login("carol", "another-password").ok
    assert store.stored("bob") is None


def test_bad_first_passwords_are_refused_with_the_reason(store: PasswordStore):
    short = store.login("dave", "short")
    assert not short.ok and "at least 8 characters" in (short.problem or "")
    long = store.login("dave", "x" * 73)
    assert not long.ok and "at most 72 bytes" in (long.problem or "")
    assert store.stored("dave") is None  # nothing claimed
    assert not store.login("dave", "y" * 80).ok


def test_seed_never_replaces_and_set_does(store: PasswordStore):
    assert store.seed("admin", "generated-admin-password")
    assert not store.seed("admin", "someone-elses-password")
    assert store.login("admin", "generated-admin-password").ok
    store.set("admin", "changed-by-admin")
    assert store.login("admin", "changed-by-admin").ok
    assert not store.login("admin", "generated-admin-password").ok
    with pytest.raises(ValueError, match="at least 8"):
        store.set("admin", "short")


def test_delete_frees_the_name(store: PasswordStore):
    store.login("erin", "erins-password")
    store.delete("erin")
    assert store.stored("erin") is None
    store.delete("erin")  # idempotent


def test_files_are_private(store: PasswordStore, tmp_path: Path):
    store.login("carol", "carols-password")
    files = sorted(tmp_path.iterdir())
    assert files, "nothing written"
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_password_problem():
    assert password_problem("12345678") is None
    assert password_problem("1234567") is not None
    assert password_problem("é" * 37) is not None  # 74 bytes
