"""Settings every test tier shares."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh folder per test, open for traversal only (0711), removed afterwards.

    Hubs under test keep their data directory in ``tmp_path``; run as root they start
    users' servers as per-user accounts, which must pass through it to their homes (the
    hub refuses a data directory they cannot reach, as it would in production).  pytest's
    own temporary root is 0700 and reset at every session start, so it cannot serve."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:40]
    path = Path(tempfile.mkdtemp(prefix=f"gpuhub-test-{name}-"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)
