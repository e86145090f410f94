"""Fixtures that run a real hub (JupyterHub + configurable-http-proxy + real single-user
servers).  Requires ``configurable-http-proxy`` on PATH (scripts/test puts it there)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hubproc import Hub
from localconfig import CONFIG


@pytest.fixture(scope="session", autouse=False)
def _need_proxy() -> None:
    if shutil.which("configurable-http-proxy") is None:
        pytest.fail("configurable-http-proxy is not on PATH: run the tests with scripts/test")


@pytest.fixture
def hub_factory(tmp_path: Path, _need_proxy: None) -> Iterator[Callable[..., Hub]]:
    hubs: list[Hub] = []

    def make(config: dict[str, Any] | None = None, name: str = "hub") -> Hub:
        hub = Hub(tmp_path / name, copy.deepcopy(config or CONFIG))
        hubs.append(hub)
        return hub.start()

    yield make
    for hub in hubs:
        hub.stop()


@pytest.fixture
def hub(hub_factory: Callable[..., Hub]) -> Hub:
    return hub_factory()
