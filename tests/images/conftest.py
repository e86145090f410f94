"""The images tier: gpuhub's images built for real by images/build.py (cached)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from imagekit import CUDA_TARGET, TARGETS, build


def _missing() -> str | None:
    if os.environ.get("GPUHUB_IMAGES_REQUIRED") != "1" and os.environ.get("GPUHUB_IMAGES") != "1":
        return "run it with scripts/test (installs docker.io, debootstrap) or GPUHUB_IMAGES=1"
    if os.geteuid() != 0:
        return "the images tier runs dockerd and debootstrap: run it as root"
    for tool in ("debootstrap", "dockerd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install docker.io debootstrap)"
    return None


@pytest.fixture(scope="session")
def images() -> Iterator[dict[str, Any]]:
    """The private daemon with every target built (layers cached under GPUHUB_CACHE)."""
    reason = _missing()
    if reason:
        if os.environ.get("GPUHUB_IMAGES_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    targets = TARGETS + ([CUDA_TARGET] if os.environ.get("GPUHUB_IMAGES_CUDA") == "1" else [])
    paths = build.Paths(build.default_cache())
    matrix = build.load_matrix(build.MATRIX)
    builds = {b.name: b for b in build.plan(matrix, targets, build.chp_version())}
    build.make_rootfs_tar(paths)
    with build.Dockerd(paths) as docker:
        docker.import_base(paths)
        for b in builds.values():
            docker.build(b)
        yield {"docker": docker, "builds": builds, "matrix": matrix}
