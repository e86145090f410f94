"""Does a job's environment have its framework: the refusals (pure) and the probe of
real interpreters (a fresh ``venv --without-pip``, no hub)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuhub.errors import OptionError
from gpuhub.jobs import envcheck
from gpuhub.jobs.envcheck import FrameworkCheck, env_python, missing_framework, unusable_env
from gpuhub.model import ImageSpec


def image(local_env: str | None) -> ImageSpec:
    return ImageSpec(
        slug="python", display_name="Python", image="local/python", local_env=local_env
    )


@pytest.fixture
def bare_env(tmp_path: Path) -> Path:
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    return env


def test_the_refusal_names_the_image_the_env_and_the_fix():
    img = image("/opt/envs/py")
    python = env_python(img, "/usr/bin/python3")
    assert python == "/opt/envs/py/bin/python"
    assert missing_framework(img, python, "pytorch") == (
        "image 'python' (/opt/envs/py) has no torch: install it there "
        "(`/opt/envs/py/bin/python -m pip install torch`) or choose an image with PyTorch"
    )
    # no local_env: the service's own interpreter is the environment
    own = image(None)
    assert env_python(own, "/srv/venv/bin/python") == "/srv/venv/bin/python"
    assert missing_framework(own, "/srv/venv/bin/python", "tensorflow") == (
        "image 'python' (/srv/venv/bin/python) has no tensorflow: install it there "
        "(`/srv/venv/bin/python -m pip install tensorflow`) or choose an image with TensorFlow"
    )
    assert unusable_env(img, python, "it broke") == (
        "image 'python' (/opt/envs/py) cannot run jobs: it broke; "
        "choose another image, or ask an admin to fix the image's local_env"
    )


async def test_a_fresh_env_has_no_framework_until_one_is_installed_there(bare_env: Path):
    img = image(str(bare_env))
    python = env_python(img, sys.executable)
    check = FrameworkCheck()
    assert (await check.facts(python)).frameworks() == ()
    with pytest.raises(OptionError) as e:
        await check.require(img, python, "pytorch")
    assert e.value.field == "image"
    assert e.value.problem == missing_framework(img, python, "pytorch")
    # "install it there": the next request sees it
    site = next(bare_env.glob("lib/python*/site-packages"))
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text("")
    await check.require(img, python, "pytorch")
    assert (await check.facts(python)).frameworks() == ("pytorch",)
    with pytest.raises(OptionError):
        await check.require(img, python, "tensorflow")


async def test_answers_are_cached_until_the_environment_changes(bare_env, monkeypatch):
    python = env_python(image(str(bare_env)), sys.executable)
    probes: list[str] = []
    real = envcheck.probe

    async def counted(py: str) -> envcheck.EnvFacts:
        probes.append(py)
        return await real(py)

    monkeypatch.setattr(envcheck, "probe", counted)
    check = FrameworkCheck()
    first = await check.facts(python)
    assert await check.facts(python) is first and probes == [python]
    site = next(bare_env.glob("lib/python*/site-packages"))
    before = site.stat()
    (site / "tensorflow").mkdir()
    (site / "tensorflow" / "__init__.py").write_text("")
    # an install changes the mtime of a directory on sys.path (made sure of here: a
    # file system may keep mtimes coarser than this test is fast)
    os.utime(site, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert (await check.facts(python)).frameworks() == ("tensorflow",)
    assert probes == [python, python]


async def test_an_env_that_cannot_run_is_refused_with_the_reason(tmp_path):
    img = image(str(tmp_path / "missing"))
    python = env_python(img, sys.executable)
    with pytest.raises(OptionError) as e:
        await FrameworkCheck().require(img, python, "pytorch")
    assert e.value.field == "image"
    assert e.value.problem == unusable_env(
        img, python, f"{python} cannot be started (No such file or directory)"
    )
