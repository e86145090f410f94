"""The per-job time limit: decided by the policy from the YAML, recorded with the job,
shown in ``GET api/options`` and put into the Kubeflow manifest.  Pure, plain dicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gpuhub.config import parse_config
from gpuhub.errors import ConfigError
from gpuhub.jobs.backends.kubeflow import job_from_object
from gpuhub.jobs.manifests import KubeJobSettings, job_state, make_job
from gpuhub.jobs.policy import time_limit_for, time_limits, validate_job
from gpuhub.jobs.records import Job

NB = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {},
    "cells": [{"id": "c", "cell_type": "code", "metadata": {}, "source": "1", "outputs": []}],
}


def spec(raw: dict[str, Any], **body: Any):
    return validate_job(
        parse_config(raw),
        "bob",
        ["vision"],
        {"notebook": NB, **body},
        job_id="0a1b2c",
        max_workers=4,
    )


def test_no_limit_by_default(raw):
    s = spec(raw, gpus_per_worker=1)
    assert s.time_limit_minutes is None
    assert Job.from_spec(s).deadline is None


def test_top_level_limit_and_per_profile_override(raw):
    raw["jobs"] = {"time_limit_minutes": 240}
    raw["profiles"][1]["jobs"] = {"time_limit_minutes": 90}  # gpu
    raw["profiles"][0]["jobs"] = {"time_limit_minutes": None}  # cpu: none at all
    config = parse_config(raw)
    assert [time_limit_for(config, p) for p in config.profiles] == [None, 90, 240]
    assert spec(raw, gpus_per_worker=1).time_limit_minutes == 90
    assert spec(raw).time_limit_minutes is None  # CPU workers: the default (cpu) profile
    raw["profiles"][0].pop("jobs")
    assert spec(raw).time_limit_minutes == 240


def test_the_limit_is_recorded_with_the_job(raw):
    raw["jobs"] = {"time_limit_minutes": 1.5}
    job = Job.from_spec(spec(raw, gpus_per_worker=2))
    assert job.time_limit_minutes == 1.5 and job.deadline is None  # not started yet
    started = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    job = Job.from_json({**job.to_json(), "started": started.isoformat()})
    assert job.time_limit_minutes == 1.5
    assert job.deadline == started + timedelta(seconds=90)
    # a record written before time limits existed has none
    old = {k: v for k, v in job.to_json().items() if k != "time_limit_minutes"}
    assert Job.from_json(old).time_limit_minutes is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "gpuhub.yaml: jobs.time_limit_minutes: 0 is less than or equal to the minimum of 0"),
        (-5, "use a value above 0"),
        ("2h", "'2h' is not of type 'number', 'null' Fix: write a number of minutes, e.g. 120"),
        (10**7, "use 527040 or less"),
    ],
)
def test_a_bad_limit_names_the_key_and_the_fix(raw, value, expected):
    raw["jobs"] = {"time_limit_minutes": value}
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert expected in str(e.value)
    raw.pop("jobs")
    raw["profiles"][1]["jobs"] = {"time_limit": 5}
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert str(e.value).startswith("gpuhub.yaml: profiles[1].jobs: Additional properties")


def test_options_show_the_limit_of_each_choice(raw):
    raw["jobs"] = {"time_limit_minutes": 240}
    raw["profiles"][1]["jobs"] = {"time_limit_minutes": 90}
    config = parse_config(raw)
    rows = time_limits(config, "bob", ["vision"])
    assert rows == [
        {"gpu_type": None, "gpus_per_worker": 0, "minutes": 240},
        *(
            {"gpu_type": t, "gpus_per_worker": n, "minutes": 90}
            for t in ("a100", "h100")
            for n in (1, 2, 4)
        ),
    ]
    # admins also see the secret profile's 8 × H100, under the top-level limit
    admin = time_limits(config, "root", ["admins"])
    assert {"gpu_type": "h100", "gpus_per_worker": 8, "minutes": 240} in admin
    assert all(r["gpu_type"] != "a100" for r in admin)


def test_the_kubeflow_job_carries_active_deadline_seconds(raw):
    raw["jobs"] = {"time_limit_minutes": 90}
    config = parse_config(raw)
    s = spec(raw, gpus_per_worker=1, framework="tensorflow")
    settings = KubeJobSettings(namespace="team")
    job = make_job(config, s, settings, "vision")
    assert job["spec"]["runPolicy"] == {
        "cleanPodPolicy": "Running",
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": 86400,
        "activeDeadlineSeconds": 5400,
    }
    # and every worker pod: the kubelet fails it at the deadline, which wakes the operator
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert worker["activeDeadlineSeconds"] == 5400
    torch = make_job(config, spec(raw, gpus_per_worker=1, workers=2), settings, "vision")
    assert torch["spec"]["runPolicy"]["activeDeadlineSeconds"] == 5400
    replicas = torch["spec"]["pytorchReplicaSpecs"]
    assert [replicas[r]["template"]["spec"]["activeDeadlineSeconds"] for r in replicas] == [
        5400,
        5400,
    ]
    # read back by the API from the object the cluster returns
    created = {**job, "metadata": {**job["metadata"], "creationTimestamp": "2026-12-01T09:00:00Z"}}
    assert job_from_object(created).time_limit_minutes == 90
    # a fraction of a second is rounded up; no limit, no deadline
    raw["jobs"] = {"time_limit_minutes": 0.001}
    tiny = make_job(parse_config(raw), spec(raw), settings, None)
    assert tiny["spec"]["runPolicy"]["activeDeadlineSeconds"] == 1
    raw.pop("jobs")
    plain = make_job(parse_config(raw), spec(raw), settings, None)
    assert "activeDeadlineSeconds" not in plain["spec"]["runPolicy"]
    assert "activeDeadlineSeconds" not in str(plain)
    assert job_from_object({**plain, "metadata": created["metadata"]}).time_limit_minutes is None


def _failed(name: str, message: str, at: str) -> dict[str, Any]:
    """The status conditions the training operator v1.9.3 wrote (recorded in the cluster
    tier's test of the time limit)."""
    return {
        "spec": {"runPolicy": {"activeDeadlineSeconds": 30}},
        "status": {
            "startTime": "2026-12-01T11:28:03Z",
            "conditions": [
                {
                    "type": "Created",
                    "status": "True",
                    "reason": "PyTorchJobCreated",
                    "message": f"PyTorchJob {name} is created.",
                    "lastTransitionTime": "2026-12-01T11:28:03Z",
                },
                {
                    "type": "Running",
                    "status": "False",
                    "reason": "PyTorchJobRunning",
                    "message": f"PyTorchJob {name} is running.",
                    "lastTransitionTime": "2026-12-01T11:28:03Z",
                },
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "PyTorchJobFailed",
                    "message": message,
                    "lastTransitionTime": at,
                },
            ],
        },
    }


def test_a_job_failed_at_its_deadline_says_so():
    backoff = (
        "Job gpuhub-job-6d5a7150 has failed because it has reached the specified backoff limit"
    )
    at_deadline = _failed("gpuhub-job-6d5a7150", backoff, "2026-12-01T11:28:33Z")
    assert job_state(at_deadline) == ("Failed", "time limit (0.5 min) reached")
    # failing earlier is the job's own failure, told as the operator tells it
    early = _failed("gpuhub-job-6d5a7150", backoff, "2026-12-01T11:28:20Z")
    assert job_state(early) == ("Failed", backoff)
    no_limit = {**at_deadline, "spec": {"runPolicy": {}}}
    assert job_state(no_limit) == ("Failed", backoff)
