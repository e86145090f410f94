"""The YAML schema and cross-reference checks: bad config fails with the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuhub.config import load_config, parse_config
from gpuhub.errors import ConfigError


def test_valid_config_parses(config):
    assert [p.slug for p in config.profiles] == ["cpu", "gpu", "secret"]
    gpu = config.profile("gpu")
    assert gpu is not None and gpu.gpu is not None
    assert gpu.gpu.counts == (1, 2, 4) and gpu.shm == "8G"
    assert config.profile("cpu").shm == "1G"
    assert config.quotas.for_group("vision").per_type == {"h100": 2}
    assert config.images["torch"].cuda == "12.8"


def _err(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    return str(e.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["profiles"][1]["gpu"]["types"].append("a10"),
            "gpuhub.yaml: profiles[1].gpu.types[2]: GPU type 'a10' is not defined under gpu_types",
        ),
        (
            lambda r: r["profiles"][0]["images"].append("nope"),
            "gpuhub.yaml: profiles[0].images[2]: image 'nope' is not in the image catalog",
        ),
        (
            lambda r: r["profiles"][1].update(gpus=2),
            (
                "gpuhub.yaml: profiles[1]: Additional properties are not allowed "
                "('gpus' was unexpected)"
            ),
        ),
        (
            lambda r: r["profiles"][1]["gpu"].update(counts=[0]),
            "gpuhub.yaml: profiles[1].gpu.counts[0]: 0 is less than the minimum of 1",
        ),
        (
            lambda r: r["profiles"][1]["gpu"].update(counts=[1, 1]),
            "gpuhub.yaml: profiles[1].gpu.counts: counts [1, 1] repeat a value",
        ),
        (
            lambda r: r["profiles"][2].update(slug="gpu"),
            "gpuhub.yaml: profiles[2].slug: profile slug 'gpu' is used twice",
        ),
        (
            lambda r: r["profiles"][1].update(default=True),
            "gpuhub.yaml: profiles: more than one profile has default: true",
        ),
        (
            lambda r: r["quotas"]["groups"]["vision"]["per_type"].update(v100=1),
            "gpuhub.yaml: quotas.groups.vision.per_type.v100: GPU type 'v100' is not defined",
        ),
        (
            lambda r: r["quotas"]["groups"]["vision"]["per_type"].update(h100=9),
            "per-type quota 9 is larger than the group total 4",
        ),
        (
            lambda r: r["local"]["devices"].append({"index": 0, "type": "a100"}),
            "gpuhub.yaml: local.devices[6].index: device index 0 is declared twice",
        ),
        (
            lambda r: r["profiles"][0].update(memory="lots"),
            "gpuhub.yaml: profiles[0].memory: 'lots' does not match",
        ),
        (
            lambda r: r["images"]["torch"].update(cuda="twelve"),
            "gpuhub.yaml: images.torch.cuda: 'twelve' does not match",
        ),
    ],
)
def test_bad_config_names_key_path(raw, mutate, expected):
    mutate(raw)
    msg = _err(raw)
    assert expected in msg
    assert "Fix:" in msg or "does not match" in msg or "minimum" in msg


def test_empty_and_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found.*GPUHUB_CONFIG"):
        load_config(tmp_path / "absent.yaml")
    empty = tmp_path / "gpuhub.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(empty)
    empty.write_text("profiles: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(empty)


@pytest.mark.parametrize(
    ("mutate", "where", "fix", "not_fix"),
    [
        # a size typo used to get the slug hint ("use lowercase letters, ...")
        (
            lambda r: r["profiles"][0].update(memory="4 GB"),
            "profiles[0].memory",
            "Fix: write a number and an optional unit K, M, G, T",
            "lowercase",
        ),
        (
            lambda r: r["profiles"][0].update(shm=1),
            "profiles[0].shm",
            "Fix: write a size with its unit",
            "stated type",
        ),
        # user names may have capitals and '@': the slug hint was wrong for them
        (
            lambda r: r["groups"]["vision"].append("bob smith"),
            "groups.vision[2]",
            "Fix: use letters, digits, '.', '_', '@' and '-'",
            "lowercase",
        ),
        (
            lambda r: r["groups"].update({"ml team": ["bob"]}),
            "gpuhub.yaml: groups: key 'ml team'",
            "'@'",
            "lowercase",
        ),
        (
            lambda r: r["images"]["torch"].update(cuda=12.8),
            "images.torch.cuda",
            'Fix: write the version in quotes, e.g. "12.8"',
            "stated type",
        ),
        (
            lambda r: r["images"]["torch"].update(cuda="12"),
            "images.torch.cuda",
            "major.minor",
            "lowercase",
        ),
        (
            lambda r: r["images"]["torch"].update(min_driver="r525"),
            "images.torch.min_driver",
            "e.g. 525.60.13",
            "lowercase",
        ),
        (
            lambda r: r["images"]["torch"].update(image="ghcr.io/x/torch 2"),
            "images.torch.image",
            "image reference",
            "'.', '_' and '-' (see",
        ),
        (
            lambda r: r["gpu_types"]["a100"].update(node_label="NVIDIA A100"),
            "gpu_types.a100.node_label",
            "Kubernetes label value",
            "lowercase",
        ),
        (
            lambda r: r["gpu_types"].update({"A10": {"display_name": "A10", "node_label": "A10"}}),
            "gpuhub.yaml: gpu_types: key 'A10'",
            "use lowercase letters",
            "'@'",
        ),
        (
            lambda r: r["profiles"][0].update(cpu=0),
            "profiles[0].cpu",
            "Fix: use a value above 0",
            "stated type",
        ),
        (
            lambda r: r["profiles"][0].update(images=[]),
            "profiles[0].images",
            "Fix: list at least one entry",
            "stated type",
        ),
    ],
)
def test_fix_hint_fits_the_key(raw, mutate, where, fix, not_fix):
    mutate(raw)
    msg = _err(raw)
    assert where in msg and fix in msg, msg
    assert not_fix not in msg, msg


def test_empty_file_hint_points_at_something_that_exists(tmp_path: Path):
    empty = tmp_path / "gpuhub.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError) as e:
        load_config(empty)
    assert "gpuhub-config init" in str(e.value)
    assert "gpuhub.example.yaml" not in str(e.value)
