"""Settings every test tier shares."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_failed] = True
    return report


_failed = pytest.StashKey[bool]()


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh folder per test, open for traversal only (0711); removed afterwards unless
    the test failed (its path is then printed, with the hub's logs in it).

    Hubs under test keep their data directory in ``tmp_path``; run as root they start
    users' servers as per-user accounts, which must pass through it to their homes (the
    hub refuses a data directory they cannot reach, as it would in production).  pytest's
    own temporary root is 0700 and reset at every session start, so it cannot serve."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:40]
    path = Path(tempfile.mkdtemp(prefix=f"gpuhub-test-{name}-"))
    os.chmod(path, 0o711)
    yield path
    if request.node.stash.get(_failed, False):
        print(f"\nkept {path} for the failed test {request.node.nodeid}")
    else:
        shutil.rmtree(path, ignore_errors=True)
