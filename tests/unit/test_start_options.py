"""Which options a server start uses: sent, the saved default ("the options VS Code
uses") or the last ones, validated against the user's current groups."""

from __future__ import annotations

import asyncio
import json

import pytest

from gpuhub.availability import availability
from gpuhub.errors import OptionError
from gpuhub.form import options_from_form, render_form
from gpuhub.ledger import Ledger
from gpuhub.savedoptions import SavedOptions
from gpuhub.startoptions import SAVE_KEY, resolve_start

GPU = {"profile": "gpu", "gpus": "1", "gpu_type": "a100", "image": "torch"}


def test_an_empty_start_uses_the_saved_default(config):
    for sent in (None, {}):
        start = resolve_start(config, "alice", ["vision"], sent, GPU, last={"profile": "cpu"})
        assert (start.source, start.options, start.save) == ("saved", GPU, None)
        r = start.request
        assert (r.profile.slug, r.gpus, r.gpu_type, r.image.slug) == ("gpu", 1, "a100", "torch")


def test_without_a_saved_default_an_empty_start_keeps_todays_behaviour(config):
    # JupyterHub hands an empty start the server's last options; a new server has none
    start = resolve_start(config, "alice", ["vision"], None, None, last={"profile": "gpu"})
    assert (start.source, start.request.profile.slug, start.request.gpus) == ("last", "gpu", 1)
    start = resolve_start(config, "alice", ["vision"], None, None, last=None)
    assert (start.source, start.request.profile.slug, start.options) == ("last", "cpu", {})


def test_explicit_options_win_over_the_saved_default(config):
    start = resolve_start(config, "alice", ["vision"], {"profile": "cpu"}, GPU)
    assert (start.source, start.request.profile.slug, start.save) == ("sent", "cpu", None)


@pytest.mark.parametrize("flag", ["on", True, "true", "1"])
def test_a_start_may_ask_to_save_its_options_without_storing_the_flag(config, flag):
    start = resolve_start(config, "alice", ["vision"], {**GPU, SAVE_KEY: flag}, None)
    assert start.save == GPU and start.options == GPU and SAVE_KEY not in start.options
    off = resolve_start(config, "alice", ["vision"], {**GPU, SAVE_KEY: False}, None)
    assert off.save is None and off.options == GPU


@pytest.mark.parametrize("flag", ["forget", "FORGET"])
def test_a_start_may_ask_to_forget_the_saved_default(config, flag):
    start = resolve_start(config, "alice", ["vision"], {"profile": "cpu", SAVE_KEY: flag}, GPU)
    assert start.forget and start.save is None
    assert (start.source, start.options) == ("sent", {"profile": "cpu"})
    # only an explicit ask forgets
    for sent in ({"profile": "cpu"}, {"profile": "cpu", SAVE_KEY: "keep"}):
        assert not resolve_start(config, "alice", ["vision"], sent, GPU).forget
    # a start that is refused forgets nothing
    with pytest.raises(OptionError):
        resolve_start(config, "alice", ["vision"], {"profile": "nope", SAVE_KEY: flag}, GPU)


def test_an_unknown_save_value_is_refused_by_name(config):
    with pytest.raises(OptionError) as e:
        resolve_start(config, "alice", ["vision"], {**GPU, SAVE_KEY: "maybe"}, None)
    assert (e.value.field, e.value.status) == (SAVE_KEY, 400)
    assert '"forget"' in e.value.problem


def test_invalid_options_are_never_saved(config):
    with pytest.raises(OptionError) as e:
        resolve_start(config, "dave", ["guests"], {**GPU, SAVE_KEY: "on"}, None)
    assert e.value.field == "profile"


def test_a_default_saved_in_a_group_the_user_left_is_refused_naming_why(config):
    with pytest.raises(OptionError) as e:
        resolve_start(config, "alice", ["guests"], None, GPU)
    text = str(e.value)
    assert e.value.field == "profile" and e.value.status == 400
    assert "your saved default for VS Code and API starts (profile gpu, 1 a100 GPU" in text
    assert "it is for groups vision, nlp and your groups are guests" in text
    assert "spawn form" in text


@pytest.mark.parametrize(
    ("saved", "field"),
    [
        ({"profile": "gpu", "gpus": "3"}, "gpus"),
        ({"profile": "gpu", "image": "nope"}, "image"),
        ({"profile": "gpu", "shell": "rm -rf /"}, "shell"),
        ({"profile": "gpu", "gpus": None}, "gpus"),
        ({"profile": "gpu", "group": "admins"}, "group"),
    ],
)
def test_invalid_saved_values_are_refused_like_sent_ones(config, saved, field):
    # a file edited by hand, or a config that changed since the default was saved
    with pytest.raises(OptionError) as e:
        resolve_start(config, "alice", ["vision"], None, saved)
    assert e.value.field == field
    assert "your saved default" in e.value.problem


def test_the_form_checkbox_asks_to_save():
    form = {"profile": ["gpu"], "gpus--gpu": ["1"], SAVE_KEY: ["on"]}
    assert options_from_form(form) == {"profile": "gpu", "gpus": "1", SAVE_KEY: "on"}
    assert SAVE_KEY not in options_from_form({"profile": ["gpu"]})
    assert options_from_form({SAVE_KEY: ["on"]}) == {}
    forget = {"profile": ["cpu"], SAVE_KEY: ["forget"]}
    assert options_from_form(forget) == {"profile": "cpu", SAVE_KEY: "forget"}
    assert SAVE_KEY not in options_from_form({"profile": ["cpu"], SAVE_KEY: ["keep"]})
    assert SAVE_KEY not in options_from_form({"profile": ["cpu"], SAVE_KEY: ["delete-all"]})


def test_the_form_shows_the_checkbox_and_the_saved_default(config):
    capacity = {"a100": (4, 4), "h100": (1, 1)}
    avail = availability(
        config, Ledger(config), user="alice", groups=["vision"], capacity=capacity, source="nvml"
    )
    html = render_form(config, ["vision"], avail, saved=GPU)
    assert "Saved for VS Code and API starts: profile gpu, 1 a100 GPU, image torch." in html
    # with a saved default: keep it (checked), replace it, or forget it
    for value in ("keep", "on", "forget"):
        assert f'name="{SAVE_KEY}"' in html and f'value="{value}"' in html
    assert 'value="keep" checked' in html and "Forget it" in html
    assert "Use these options for VS Code and API starts instead" in html
    empty = render_form(config, ["vision"], avail)
    assert "Nothing saved" in empty and 'value="forget"' not in empty
    assert 'type="checkbox" name="save_default"' in empty


def test_saved_options_survive_a_new_store_and_are_private(tmp_path):
    path = tmp_path / "saved-options.json"
    store = SavedOptions(path)
    assert store.get("alice") is None
    store.put("alice", GPU)
    asyncio.run(store.flush())
    assert (path.stat().st_mode & 0o777) == 0o600
    assert SavedOptions(path).get("alice") == GPU
    assert json.loads(path.read_text()) == {"alice": GPU}


def test_a_forgotten_default_is_gone_from_the_file(tmp_path):
    path = tmp_path / "saved-options.json"
    store = SavedOptions(path)
    store.put("alice", GPU)
    store.put("bob", {"profile": "cpu"})
    asyncio.run(store.flush())
    store.forget("alice")
    store.forget("carol")  # nothing saved: nothing to do
    asyncio.run(store.flush())
    assert json.loads(path.read_text()) == {"bob": {"profile": "cpu"}}
    assert SavedOptions(path).get("alice") is None


def test_an_unreadable_file_means_nothing_saved(tmp_path):
    path = tmp_path / "saved-options.json"
    path.write_text("{not json")
    assert SavedOptions(path).get("alice") is None
    path.write_text(json.dumps({"alice": "profile gpu", "bob": {"profile": "cpu"}}))
    store = SavedOptions(path)
    assert (store.get("alice"), store.get("bob")) == (None, {"profile": "cpu"})


def test_a_job_takes_the_image_of_the_server_whose_token_calls():
    from gpuhub.jobs.service import calling_server

    own = ["access:servers!server=alice/train", "read:users:name!user=alice"]
    assert calling_server(own, "alice") == "train"
    assert calling_server(["access:servers!server=alice/"], "alice") == ""
    # a personal token (every server of the user) or another user's server: the default
    assert calling_server(["access:servers!user=alice"], "alice") == ""
    assert calling_server(["access:servers!server=bob/x"], "alice") == ""
    assert calling_server(None, "alice") == ""
