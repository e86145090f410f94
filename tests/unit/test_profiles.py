"""Validation of untrusted user_options against the user's current groups."""

from __future__ import annotations

import pytest

from gpuhub.errors import OptionError
from gpuhub.profiles import chargeable_groups, validate_options, visible_profiles


def test_visible_profiles_follow_groups(config):
    assert [p.slug for p in visible_profiles(config, [])] == ["cpu"]
    assert [p.slug for p in visible_profiles(config, ["nlp"])] == ["cpu", "gpu"]
    assert [p.slug for p in visible_profiles(config, ["admins"])] == ["cpu", "secret"]


def test_defaults(config):
    r = validate_options(config, "alice", ["vision"], {})
    assert (r.profile.slug, r.image.slug, r.gpus, r.gpu_type, r.group) == (
        "cpu",
        "scipy",
        0,
        None,
        None,
    )
    r = validate_options(config, "alice", ["vision"], {"profile": "gpu"})
    assert (r.image.slug, r.gpus, r.gpu_type, r.group) == ("torch", 1, "a100", None)


def test_form_strings_and_ints_accepted(config):
    r = validate_options(
        config,
        "alice",
        ["vision", "nlp"],
        {"profile": "gpu", "image": "tf", "gpus": "2", "gpu_type": "h100", "group": "nlp"},
    )
    assert (r.image.slug, r.gpus, r.gpu_type, r.group) == ("tf", 2, "h100", "nlp")
    assert validate_options(config, "alice", ["vision"], {"profile": "gpu", "gpus": 4}).gpus == 4


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"profile": "nope"}, "profile"),
        ({"profile": "secret"}, "profile"),  # hidden profile
        ({"profile": "gpu\n"}, "profile"),  # trailing newline
        ({"profile": "gp"}, "profile"),  # partial match
        ({"profile": ["gpu"]}, "profile"),
        ({"profile": "gpu", "image": "scipy"}, "image"),  # image not in profile
        ({"profile": "gpu", "image": "ghcr.io/evil/x"}, "image"),
        ({"profile": "gpu", "gpus": 0}, "gpus"),
        ({"profile": "gpu", "gpus": -1}, "gpus"),
        ({"profile": "gpu", "gpus": 1000}, "gpus"),
        ({"profile": "gpu", "gpus": "2; rm"}, "gpus"),
        ({"profile": "gpu", "gpus": "2\n"}, "gpus"),
        ({"profile": "gpu", "gpus": 3}, "gpus"),
        ({"profile": "gpu", "gpus": True}, "gpus"),
        ({"profile": "gpu", "gpus": 2.0}, "gpus"),
        ({"profile": "gpu", "gpu_type": "v100"}, "gpu_type"),
        ({"profile": "gpu", "gpu_type": "a100 "}, "gpu_type"),
        ({"profile": "gpu", "group": "nlp"}, "group"),  # not a member
        ({"profile": "gpu", "group": "admins"}, "group"),
        ({"profile": "cpu", "gpus": 1}, "gpus"),
        ({"profile": "cpu", "gpu_type": "a100"}, "gpu_type"),
        ({"profile": "cpu", "group": "nlp"}, "group"),
        (
            {"profile": "cpu", "extra_resource_limits": {"nvidia.com/gpu": 8}},
            "extra_resource_limits",
        ),
        ({"image": "tf"}, "image"),  # not in the default profile
    ],
)
def test_forged_options_rejected(config, options, field):
    with pytest.raises(OptionError) as e:
        validate_options(config, "alice", ["vision"], options)
    assert e.value.field == field
    assert e.value.status == 400


def test_no_profile_at_all(raw):
    from gpuhub.config import parse_config

    raw["profiles"] = [p for p in raw["profiles"] if p.get("groups")]
    cfg = parse_config(raw)
    with pytest.raises(OptionError, match="no profile is available"):
        validate_options(cfg, "zed", ["nobody"], {})


def test_chargeable_groups_in_quota_order(config):
    gpu = config.profile("gpu")
    assert chargeable_groups(config, ["nlp", "vision", "other"], gpu) == ["vision", "nlp"]
    assert chargeable_groups(config, ["admins"], config.profile("secret")) == []


def test_profile_of_other_groups_names_the_groups(config):
    # e.g. after bob was removed from vision in the YAML: the answer says why
    with pytest.raises(OptionError) as e:
        validate_options(config, "bob", [], {"profile": "gpu"})
    assert e.value.field == "profile"
    assert str(e.value) == (
        "profile: profile 'gpu' is not available to you (choose one of: cpu): it is for "
        "groups vision, nlp and your groups are none"
    )


@pytest.mark.parametrize(
    "options",
    [
        {"profile": None},
        {"profile": ""},
        {"profile": "gpu", "image": ""},
        {"profile": "gpu", "image": None},
        {"profile": "gpu", "gpus": ""},
        {"profile": "gpu", "gpus": None},
        {"profile": "gpu", "gpu_type": ""},
        {"profile": "gpu", "group": None},
        {"profile": "cpu", "gpus": ""},
    ],
)
def test_explicit_null_or_empty_is_refused_by_name(config, options):
    # README: anything but an allowed value is a 400 naming the field; leaving a field
    # out is how a client asks for the default
    field = next(k for k, v in options.items() if v in (None, ""))
    with pytest.raises(OptionError) as e:
        validate_options(config, "alice", ["vision"], options)
    assert (e.value.field, e.value.status) == (field, 400)
    assert "leave the field out" in e.value.problem


def test_the_spawn_form_never_posts_empty_values():
    from gpuhub.form import options_from_form

    # "first group with room" is the form's empty group option; no profile chosen at all
    assert options_from_form({"group--gpu": [""], "profile": ["gpu"]}) == {"profile": "gpu"}
    assert options_from_form({}) == {}
