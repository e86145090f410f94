"""images/build.py's pure parts: the local build plan, the private daemon's command line,
and the checks that decide whether a built single-user image is fit.

The checks are fed ``docker image inspect`` output and probe output recorded from the real
build of ``scipy-cpu`` (tests/unit/data/), then the same data made wrong on purpose: an
image that runs as root or lacks ``jupyterhub-singleuser`` must be refused.  The build
itself is exercised by tests/images (marker ``images``).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gpuhub.imagematrix import load_matrix

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


build = _load("gpuhub_images_build", ROOT / "images" / "build.py")


@pytest.fixture(scope="module")
def matrix():  # type: ignore[no-untyped-def]
    return load_matrix(ROOT / "images" / "matrix.yaml")


@pytest.fixture
def inspect() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "scipy-cpu.inspect.json").read_text())
    return data


@pytest.fixture
def probe() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "scipy-cpu.probe.json").read_text())
    return data


# --- the plan ---------------------------------------------------------------------------


def test_plan_points_every_from_at_local_images(matrix) -> None:  # type: ignore[no-untyped-def]
    builds = build.plan(matrix, ["hub", "proxy", "scipy-cpu", "pytorch-2.11-cu130"], "5.3.0")
    assert [b.name for b in builds] == ["node", "hub", "proxy", "scipy-cpu", "pytorch-2.11-cu130"]
    by = {b.name: b for b in builds}
    assert by["node"].args == {"BASE_IMAGE": "gpuhub-base/debian:bookworm"}
    assert by["hub"].args["BASE_IMAGE"] == "gpuhub-base/debian:bookworm"
    assert by["hub"].args["JUPYTERHUB_VERSION"] == matrix.hub.versions["jupyterhub"]
    assert by["proxy"].args == {
        "NODE_IMAGE": "gpuhub-base/node:22-bookworm",
        "CHP_VERSION": "5.3.0",
    }
    for name in ("scipy-cpu", "pytorch-2.11-cu130"):
        b = by[name]
        assert b.singleuser and b.entry == name
        assert b.tag == f"gpuhub-local/{name}:bookworm"
        assert b.args["BASE_IMAGE"] == "gpuhub-base/debian:bookworm"
        assert b.args["NODE_IMAGE"] == "gpuhub-base/node:22-bookworm"
        assert b.args["PYTHON_VERSION"] == "3.11"  # bookworm's python3
        assert b.args["CODE_SERVER_VERSION"] == matrix.common["code_server"]  # from npm
        assert b.args["RIPGREP"] == "debian"  # GitHub is out of reach here
        assert b.args["PIP_INDEX_ARGS"] == ""
        assert b.args["GPUHUB_IMAGE_ID"] == name
    assert by["scipy-cpu"].target == "cpu"
    assert by["scipy-cpu"].args["PIP_PACKAGES"].split() == list(matrix.entry("scipy-cpu").packages)
    torch = by["pytorch-2.11-cu130"]
    assert torch.target == "cuda"
    assert torch.args["PIP_PACKAGES"] == "torch==2.11.0 torchvision==0.26.0"
    assert torch.args["CUDA_VERSION"] == "13.0"
    assert torch.args["NVIDIA_REQUIRE_CUDA"] == "cuda>=13.0"


def test_plan_without_node_users_skips_node(matrix) -> None:  # type: ignore[no-untyped-def]
    assert [b.name for b in build.plan(matrix, ["hub"], "5.3.0")] == ["hub"]


def test_plan_refuses_a_cuda_build_pypi_does_not_carry(matrix) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        ValueError, match=r"pytorch-2.11-cu128: PyPI's torch 2.11.0 is not the CUDA 12.8"
    ):
        build.plan(matrix, ["pytorch-2.11-cu128"], "5.3.0")


def test_plan_names_an_unknown_target(matrix) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyError, match="'nope' is not in"):
        build.plan(matrix, ["nope"], "5.3.0")


def test_build_command(matrix) -> None:  # type: ignore[no-untyped-def]
    b = build.plan(matrix, ["scipy-cpu"], "5.3.0")[1]
    cmd = build.build_command(b)
    assert cmd[:4] == ["build", "--network", "host", "--progress"]
    assert cmd[cmd.index("-f") + 1] == "images/singleuser/Dockerfile"
    assert cmd[cmd.index("--target") + 1] == "cpu"
    assert "BASE_IMAGE=gpuhub-base/debian:bookworm" in cmd and cmd[-1] == "."


def test_chp_version_is_the_embedded_hubs() -> None:
    package = json.loads((ROOT / "scripts/node/package.json").read_text())
    assert build.chp_version() == package["dependencies"]["configurable-http-proxy"]


# --- the daemon and the base ---------------------------------------------------------------


def test_dockerd_is_private_and_leaves_the_host_network_alone(tmp_path: Path) -> None:
    paths = build.Paths(tmp_path)
    cmd = build.dockerd_command(paths)
    assert cmd[:4] == ["nice", "-n", "19", "dockerd"]
    assert f"--data-root={tmp_path}/images/docker" in cmd
    assert f"--exec-root={tmp_path}/images/docker-exec" in cmd
    assert f"--host=unix://{tmp_path}/images/docker.sock" in cmd
    assert f"--pidfile={tmp_path}/images/docker.pid" in cmd
    assert {"--bridge=none", "--iptables=false", "--ip-masq=false"} <= set(cmd)
    # the socket path must fit a sockaddr_un (108 bytes) from the default cache
    assert len(str(build.Paths(Path("/var/cache/gpuhub")).socket)) < 100


def test_base_comes_from_debians_archive(tmp_path: Path) -> None:
    cmd = build.debootstrap_command(tmp_path / "rootfs")
    assert cmd[:3] == ["nice", "-n", "19"]
    assert cmd[3:] == [
        "debootstrap",
        "--variant=minbase",
        "bookworm",
        str(tmp_path / "rootfs"),
        "http://deb.debian.org/debian",
    ]
    assert build.apt_sources().splitlines() == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert build.Paths(tmp_path).rootfs_tar == tmp_path / "images/debian-bookworm-minbase.tar"


# --- the checks, on recorded output ------------------------------------------------------


def test_recorded_image_passes(inspect: dict[str, Any], probe: dict[str, Any]) -> None:
    assert build.image_problems(inspect) == []
    assert build.probe_problems(probe) == []


@pytest.mark.parametrize("user", ["", "0", "root", "0:0", "root:root"])
def test_image_running_as_root_is_refused(inspect: dict[str, Any], user: str) -> None:
    bad = copy.deepcopy(inspect)
    bad["Config"]["User"] = user
    assert build.image_problems(bad) == [f"runs as root (Config.User is {user!r}); set USER 1000"]


def test_image_with_another_user_or_command_is_refused(inspect: dict[str, Any]) -> None:
    bad = copy.deepcopy(inspect)
    bad["Config"]["User"] = "1001"
    bad["Config"]["Cmd"] = ["jupyter", "lab"]
    del bad["Config"]["Labels"]["io.gpuhub.id"]
    assert build.image_problems(bad) == [
        "runs as 1001, not uid 1000 (Config.User is '1001')",
        "default command is ['jupyter', 'lab'], not ['jupyterhub-singleuser']",
        "no io.gpuhub.id label (not built from images/singleuser/Dockerfile)",
    ]


def test_probe_refuses_root_and_a_missing_singleuser(probe: dict[str, Any]) -> None:
    bad = {**probe, "uid": 0, "user": "root", "singleuser": None}
    assert build.probe_problems(bad) == [
        "the default user is root (root), not uid 1000",
        "jupyterhub-singleuser is not on PATH",
    ]
    assert build.probe_problems({**probe, "lab": None}) == ["jupyter-lab is not on PATH"]


def test_mounts_left_under_the_daemon_roots_are_found(tmp_path: Path) -> None:
    root = tmp_path / "images" / "docker-exec"
    mountinfo = "\n".join(
        [
            "22 1 0:21 / / rw,relatime - overlay overlay rw",
            f"901 22 0:4 net:[4026531840] {root}/netns/default rw shared:1 - nsfs nsfs rw",
            f"902 22 0:50 / {root}/a rw - tmpfs tmpfs rw",
            f"903 902 0:51 / {root}/a/b rw - tmpfs tmpfs rw",
            f"904 22 0:52 / {root}-other/x rw - tmpfs tmpfs rw",
            "905 22 0:53 / /var/lib/docker/netns/default rw - nsfs nsfs rw",
        ]
    )
    assert build.mounts_under(mountinfo, root) == [
        f"{root}/a/b",
        f"{root}/netns/default",
        f"{root}/a",
    ]
