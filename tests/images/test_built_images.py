"""gpuhub's images, built for real (images/build.py) and checked from the inside.

A single-user image must have ``jupyterhub-singleuser``, run as uid 1000, pass
``images/smoke`` and start a JupyterLab that answers.  The same checks are run on an image
broken on purpose (root, no ``jupyterhub-singleuser``) and must refuse it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from imagekit import CUDA_TARGET, build

pytestmark = pytest.mark.images


def _check(images: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = build.check_singleuser(images["docker"], images["builds"][name])
    return result


def test_cpu_singleuser_image(images: dict[str, Any]) -> None:
    result = _check(images, "scipy-cpu")
    assert result["problems"] == []
    assert result["probe"]["uid"] == 1000 and result["probe"]["user"] == "jovyan"
    assert result["probe"]["singleuser"] == "/opt/venv/bin/jupyterhub-singleuser"
    assert result["smoke"]["ok"] and result["smoke"]["failed"] == 0
    assert result["lab_version"] == images["matrix"].common["jupyter_server"]


def test_cuda_singleuser_image_on_cpu(images: dict[str, Any]) -> None:
    if CUDA_TARGET not in images["builds"]:
        pytest.skip("the PyTorch CUDA image (several GB) builds with GPUHUB_IMAGES_CUDA=1")
    result = _check(images, CUDA_TARGET)
    assert result["problems"] == []
    assert result["smoke"]["ok"] and result["smoke"]["passed"] >= 4


def test_the_checks_refuse_a_root_image_without_singleuser(images: dict[str, Any]) -> None:
    docker = images["docker"]
    good = images["builds"]["scipy-cpu"].tag
    bad = "gpuhub-local/broken-on-purpose:test"
    dockerfile = f"FROM {good}\nUSER root\nRUN rm /opt/venv/bin/jupyterhub-singleuser\n"
    docker.docker("build", "--network", "none", "-t", bad, "-", input=dockerfile, capture=True)
    try:
        assert build.image_problems(docker.inspect(bad)) == [
            "runs as root (Config.User is 'root'); set USER 1000"
        ]
        assert build.probe_problems(docker.probe(bad)) == [
            "the default user is root (root), not uid 1000",
            "jupyterhub-singleuser is not on PATH",
        ]
    finally:
        docker.docker("rmi", bad, check=False, capture=True)


def test_hub_image(images: dict[str, Any]) -> None:
    docker, matrix = images["docker"], images["matrix"]
    tag = images["builds"]["hub"].tag
    config = docker.inspect(tag)["Config"]
    assert config["User"] == "1000"
    out = docker.run(tag, "jupyterhub", "--version")
    assert out.returncode == 0 and out.stdout.strip() == matrix.hub.versions["jupyterhub"]
    imports = "import gpuhub.spawners.kube, gpuhub.jobs, kubespawner; print('ok')"
    out = docker.run(tag, "python", "-c", imports)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    out = docker.run(tag, "test", "-f", "/usr/local/share/gpuhub/matrix.yaml")
    assert out.returncode == 0


def test_proxy_image(images: dict[str, Any]) -> None:
    docker = images["docker"]
    b = images["builds"]["proxy"]
    assert docker.inspect(b.tag)["Config"]["User"] == "65534"
    out = docker.run(b.tag, "--version")
    assert out.returncode == 0 and out.stdout.strip() == b.args["CHP_VERSION"], out.stderr


def test_nothing_is_pulled(images: dict[str, Any]) -> None:
    """Every image in the private daemon was made here: the base, then our builds."""
    docker = images["docker"]
    repos = docker.docker("images", "--format", "{{.Repository}}", capture=True).stdout.split()
    assert set(repos) <= {"gpuhub-base/debian", "gpuhub-base/node"} | {
        b.tag.split(":")[0] for b in images["builds"].values()
    } | {"<none>"}, repos
    assert os.path.exists(build.Paths(build.default_cache()).rootfs_tar)
