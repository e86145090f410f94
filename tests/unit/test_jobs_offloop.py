"""The jobs service's worker processes: answers, refusals and the time limit."""

from __future__ import annotations

import time

import pytest

from gpuhub.errors import OptionError
from gpuhub.jobs.offloop import ProcessRunner
from gpuhub.jobs.policy import parse_body


@pytest.fixture
def runner():
    r = ProcessRunner(workers=2, time_limit=2.0, preload=("gpuhub.jobs.policy",))
    yield r
    r.shutdown()


async def test_value_and_refusal_come_back(runner):
    assert await runner.run("body", parse_body, b'{"a": [1]}') == {"a": [1]}
    with pytest.raises(OptionError) as e:
        await runner.run("body", parse_body, b"[" * 200_000)
    assert e.value.field == "body"


async def test_work_past_the_time_limit_is_stopped_and_names_the_field(runner):
    with pytest.raises(OptionError) as e:
        await runner.run("notebook", time.sleep, 3600)
    assert e.value.field == "notebook" and "took longer than 2 s" in e.value.problem


async def test_a_crash_is_not_a_user_error(runner):
    with pytest.raises(RuntimeError, match="ValueError"):
        await runner.run("notebook", int, "not a number")
