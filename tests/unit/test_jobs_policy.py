"""Job request validation and notebook → script: pure, plain dicts."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from gpuhub.errors import OptionError, QuotaDenied
from gpuhub.jobs.backends.local import launch_plan, streams
from gpuhub.jobs.policy import check_cpu_workers, notebook_to_script, validate_job
from gpuhub.jobs.records import Job
from gpuhub.model import GpuhubConfig
from gpuhub.profiles import validate_options


def nb(*sources: str) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"id": "m", "cell_type": "markdown", "metadata": {}, "source": "# title"},
            *(
                {
                    "id": f"c{i}",
                    "cell_type": "code",
                    "metadata": {},
                    "source": s,
                    "outputs": [],
                    "execution_count": None,
                }
                for i, s in enumerate(sources)
            ),
        ],
    }


NB = nb("print(1)")


def job(config: GpuhubConfig, user: str = "bob", groups=("vision",), job_id="abc123", **body: Any):
    body = {"framework": "pytorch", "workers": 2, "gpus_per_worker": 1, "notebook": NB, **body}
    return validate_job(
        config,
        user,
        list(groups),
        body,
        job_id=job_id,
        max_workers=8,
        server_image=body.pop("_server_image", None),
    )


def refused(config: GpuhubConfig, **body: Any) -> str:
    with pytest.raises(OptionError) as e:
        job(config, **body)
    return e.value.field


def test_valid_gpu_job_becomes_a_ledger_request(config):
    spec = job(config, gpu_type="h100", group="vision", args=["--epochs", "3"])
    assert (spec.workers, spec.gpus_per_worker, spec.gpus) == (2, 1, 2)
    assert spec.key == "job:abc123" and spec.args == ("--epochs", "3")
    req = spec.ledger_request()
    assert (req.user, req.gpus, req.gpu_type, req.group) == ("bob", 2, "h100", "vision")
    assert req.profile.slug == "gpu" and req.image.slug == "torch"


def test_cpu_job_holds_no_gpu_and_defaults_to_the_server_image(config):
    spec = job(config, gpus_per_worker=0, _server_image="scipy")
    assert spec.gpus == 0 and spec.gpu_type is None
    assert spec.image.slug == "scipy" and spec.ledger_request().gpus == 0
    # a GPU job cannot use an image that no GPU profile offers: falls back to the default
    assert job(config, _server_image="scipy").image.slug == "torch"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image": "ghcr.io/evil/miner:latest"}, "image"),
        ({"image": "scipy"}, "image"),  # in the catalog but not on a GPU profile
        ({"workers": 0}, "workers"),
        ({"workers": -1}, "workers"),
        ({"workers": 1000}, "workers"),
        ({"workers": "2; rm -rf /"}, "workers"),
        ({"workers": True}, "workers"),
        ({"gpus_per_worker": 3}, "gpus_per_worker"),
        ({"gpus_per_worker": 8}, "gpus_per_worker"),  # only the hidden profile offers 8
        ({"gpus_per_worker": -1}, "gpus_per_worker"),
        ({"gpus_per_worker": "1"}, "gpus_per_worker"),
        ({"gpu_type": "b200"}, "gpu_type"),
        ({"gpu_type": "a100\n"}, "gpu_type"),
        ({"gpus_per_worker": 0, "gpu_type": "a100"}, "gpu_type"),
        ({"group": "nlp"}, "group"),  # bob is not in nlp
        ({"group": "admins"}, "group"),
        ({"framework": "jax"}, "framework"),
        ({"args": "--x"}, "args"),
        ({"args": ["ok", "a\nb"]}, "args"),
        ({"args": ["nul\x00"]}, "args"),
        ({"args": [1]}, "args"),
        ({"path": "a\nb.ipynb"}, "path"),
        ({"pod_spec": {"hostPID": True}}, "pod_spec"),
    ],
)
def test_forged_fields_are_refused_by_name(config, body, field):
    assert refused(config, **body) == field


def test_hidden_gpu_type_is_refused(raw):
    from gpuhub.config import parse_config

    raw["profiles"][1]["gpu"]["types"] = ["a100"]  # h100 only on the admins' profile
    cfg = parse_config(raw)
    with pytest.raises(OptionError) as e:
        job(cfg, gpu_type="h100")
    assert e.value.field == "gpu_type" and "a100" in e.value.problem


def test_user_without_profiles_is_refused(config):
    with pytest.raises(OptionError) as e:
        job(config, user="eve", groups=("nobody",), gpus_per_worker=1)
    assert e.value.field == "gpus_per_worker"


def test_max_workers_is_configurable(config):
    with pytest.raises(OptionError, match="1..2"):
        validate_job(
            config, "bob", ["vision"], {"workers": 3, "notebook": NB}, job_id="x", max_workers=2
        )


def test_cpu_workers_are_limited_per_user_across_running_jobs(config):
    def cpu(job_id: str, workers: int, user: str = "bob", path: str = "train.ipynb"):
        return job(config, user=user, job_id=job_id, workers=workers, gpus_per_worker=0, path=path)

    def running(spec, minute: int, state: str = "Running") -> Job:
        t = datetime(2026, 5, 1, 9, minute, tzinfo=UTC)
        return replace(Job.from_spec(spec), state=state, created=t, started=t)

    jobs = [
        running(cpu("b2", 1, path="eval.ipynb"), 22),
        running(cpu("a1", 2), 12),
        running(cpu("c3", 3), 5, state="Succeeded"),  # ended: not counted
        running(cpu("d4", 4, user="alice"), 1),  # someone else's
        running(job(config, job_id="e5", workers=4), 2),  # GPU workers
    ]
    check_cpu_workers(cpu("new", 1), jobs, 4)  # 3 + 1 fits
    with pytest.raises(QuotaDenied) as e:
        check_cpu_workers(cpu("new", 2), jobs, 4)
    assert e.value.status == 403
    assert e.value.explanation == (
        "Not enough CPU workers: you run 3 of 4 CPU worker processes: "
        "job 'train' (a1) 2 (since 09:12), job 'eval' (b2) 1 (since 09:22) "
        "— you asked for 2. Cancel a job or wait for one to end, or ask for at most 1"
    )
    with pytest.raises(QuotaDenied, match="wait for one to end$"):
        check_cpu_workers(cpu("new", 1), jobs, 3)
    # alone over the limit: the field is wrong whatever runs
    with pytest.raises(OptionError) as e2:
        check_cpu_workers(cpu("new", 5), [], 4)
    assert e2.value.field == "workers" and "ask for at most 4" in e2.value.problem
    # GPU jobs use no CPU workers
    check_cpu_workers(job(config, job_id="g", workers=8), jobs, 0)


def test_magic_cells_are_refused_naming_the_cell():
    with pytest.raises(OptionError) as e:
        notebook_to_script(nb("import torch", "%matplotlib widget\nx = 1"))
    assert e.value.field == "notebook"
    assert str(e.value) == (
        "notebook: cell 3 uses the IPython magic '%matplotlib'; "
        "remove it or move it into a non-code cell"
    )
    for src, word in [
        ("!pip install x", "shell escape"),
        ("files = !ls", "shell escape"),
        ("%%time\nx = 1", "'%%time'"),
        ("get_ipython().run_line_magic('x', '')", "get_ipython()"),
        ("len?", "IPython-only syntax"),
    ]:
        with pytest.raises(OptionError, match=f"cell 2 uses .*{word}"):
            notebook_to_script(nb(src))


def test_allowed_magics_are_stripped_and_strings_left_alone():
    script = notebook_to_script(nb("%matplotlib inline\nq = '''\n%not a magic\n'''\nprint(q)"))
    assert "# gpuhub: stripped %matplotlib inline" in script
    assert "%not a magic" in script and "get_ipython" not in script
    compile(script, "script.py", "exec")


def test_not_a_notebook_is_refused():
    for bad in (None, [], {"nbformat": 3, "cells": []}, {"nbformat": 4, "cells": "x"}):
        with pytest.raises(OptionError) as e:
            notebook_to_script(bad)
        assert e.value.field == "notebook"


def test_local_launch_plans(config, tmp_path):
    spec = job(config, workers=2, gpus_per_worker=2, args=["--lr", "0.1"])
    assert streams(spec) == 4
    plan = launch_plan(
        spec, job_dir=tmp_path, cwd=tmp_path / "home", python="py", devices=(0, 1, 2, 3), ports=[]
    )
    (proc,) = plan["procs"]
    assert proc["argv"] == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=4",
        f"--log-dir={tmp_path / 'logs' / 'torchrun'}",
        "--redirects=3",
        "--tee=3",
        str(tmp_path / "work" / "script.py"),
        "--lr",
        "0.1",
    ]
    assert proc["env"]["GPUHUB_DIST_BACKEND"] == "nccl"
    cpu = job(config, workers=3, gpus_per_worker=0)
    assert streams(cpu) == 3
    assert (
        launch_plan(cpu, job_dir=tmp_path, cwd=tmp_path, python="py", devices=(), ports=[])[
            "procs"
        ][0]["env"]["GPUHUB_DIST_BACKEND"]
        == "gloo"
    )
    tf = job(config, framework="tensorflow", workers=2, gpus_per_worker=1)
    plan = launch_plan(
        tf, job_dir=tmp_path, cwd=tmp_path, python="py", devices=(4, 5), ports=[1111, 2222]
    )
    envs = [p["env"] for p in plan["procs"]]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4", "5"]
    assert envs[1]["TF_CONFIG"] == (
        '{"cluster":{"worker":["127.0.0.1:1111","127.0.0.1:2222"]},'
        '"task":{"type":"worker","index":1}}'
    )


def test_group_cannot_switch_to_a_profile_without_the_image(raw):
    """The image and the group are checked against ONE profile: a group whose profile
    does not offer the image cannot be used to get it (as for notebooks)."""
    from gpuhub.config import parse_config

    raw["profiles"][1]["groups"] = ["vision"]  # gpu: torch, tf
    raw["profiles"].append(
        {
            "slug": "nlp-gpu",
            "display_name": "NLP GPU",
            "images": ["torch"],
            "groups": ["nlp"],
            "gpu": {"types": ["a100"], "counts": [1]},
        }
    )
    cfg = parse_config(raw)
    with pytest.raises(OptionError) as e:
        job(cfg, user="alice", groups=("vision", "nlp"), image="tf", group="nlp", gpu_type="a100")
    assert e.value.field == "group"
    with pytest.raises(OptionError) as e:
        validate_options(cfg, "alice", ["vision", "nlp"], {"profile": "nlp-gpu", "image": "tf"})
    assert e.value.field == "image"
    ok = job(cfg, user="alice", groups=("vision", "nlp"), image="torch", group="nlp")
    assert (ok.profile.slug, ok.image.slug, ok.group) == ("nlp-gpu", "torch", "nlp")


@pytest.mark.parametrize(
    "body",
    [
        {"gpu_type": ""},
        {"group": ""},
        {"image": ""},
        {"workers": None},
        {"framework": ""},
        {"framework": None},
        {"gpus_per_worker": None},
        {"args": None},
        {"path": ""},
        {"notebook": None},
    ],
)
def test_explicit_null_or_empty_job_fields_are_refused_by_name(config, body):
    [(field, _)] = body.items()
    assert refused(config, **body) == field


def test_null_means_default_where_the_jobs_api_allows_it(config):
    # docs/jobs-api.md: gpu_type, group and image are str|null (the dialog sends null)
    spec = job(config, gpus_per_worker=0, gpu_type=None, group=None, image=None)
    assert (spec.gpu_type, spec.group, spec.image.slug) == (None, None, "scipy")


@pytest.mark.parametrize("depth", [200_000, 101])
def test_deeply_nested_body_is_a_400_naming_the_body(depth):
    from gpuhub.jobs.policy import parse_body

    with pytest.raises(OptionError) as e:
        parse_body(b"[" * depth + b"]" * depth)
    assert e.value.field == "body"
    assert parse_body(b"[" * 100 + b"]" * 100)


@pytest.fixture
def split(raw) -> GpuhubConfig:
    """vision's GPU profile offers torch and tf on A100 and H100; nlp's only torch on A100."""
    from gpuhub.config import parse_config

    raw["profiles"][1]["groups"] = ["vision"]
    raw["profiles"].append(
        {
            "slug": "nlp-gpu",
            "display_name": "NLP GPU",
            "images": ["torch"],
            "groups": ["nlp"],
            "gpu": {"types": ["a100"], "counts": [1, 2]},
        }
    )
    return parse_config(raw)


@pytest.mark.parametrize("image", ["torch", "tf", "scipy"])
@pytest.mark.parametrize("gpu_type", ["a100", "h100"])
@pytest.mark.parametrize("gpus", [1, 2, 4])
@pytest.mark.parametrize("group", ["vision", "nlp"])
def test_a_job_gets_exactly_what_a_notebook_would(split, image, gpu_type, gpus, group):
    """One decision: a GPU job is accepted iff a notebook of the same choices on one of
    the user's profiles is, and gets that notebook's profile, image, type and group."""
    choice = {"image": image, "gpu_type": gpu_type, "group": group}
    groups = ["vision", "nlp"]
    try:
        spec = job(split, user="alice", groups=groups, gpus_per_worker=gpus, **choice)
    except OptionError:
        spec = None
    notebooks = []
    for profile in ("gpu", "nlp-gpu"):
        with contextlib.suppress(OptionError):
            options = {"profile": profile, "gpus": gpus, **choice}
            notebooks.append(validate_options(split, "alice", groups, options))
    if spec is None:
        assert notebooks == []
    else:
        assert notebooks and spec.ledger_request() == replace(notebooks[0], gpus=2 * gpus)
