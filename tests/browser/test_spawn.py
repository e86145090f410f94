"""Login, the spawn form and the quota denial, in Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests
from browserkit import login
from playwright.sync_api import expect

from hubproc import Hub, auth

pytestmark = pytest.mark.browser

LAB_SHELL = "#jp-main-dock-panel"


def occupy(hub: Hub, user: str, gpus: int) -> None:
    """``user`` starts a GPU server through the REST API (with a token, no browser)."""
    token = hub.token(user)
    r = requests.post(
        f"{hub.api}/users/{user}/server",
        json={"profile": "gpu", "gpus": gpus, "group": "vision"},
        headers=auth(token),
        timeout=60,
    )
    assert r.status_code in (201, 202), r.text


def server_options(hub: Hub, user: str) -> dict[str, Any]:
    r = requests.get(f"{hub.api}/users/{user}", headers=auth(hub.admin_token()), timeout=10)
    r.raise_for_status()
    server = r.json()["servers"].get("")
    assert server is not None, r.json()
    return dict(server["user_options"])


def profile_radios(page: Any) -> list[str]:
    return list(page.locator('input[name="profile"]').evaluate_all("els => els.map(e => e.value)"))


def test_login_spawn_form_to_jupyterlab(hub: Hub, new_page: Any, shots: Path):
    occupy(hub, "alice", 1)  # one of the four A100s is taken, and half of group vision's quota
    page = new_page()
    login(page, hub, "bob")
    expect(page).to_have_url(re.compile(r"/hub/spawn"))
    # only bob's profiles: not the admins' "Big"
    assert profile_radios(page) == ["cpu", "gpu"]
    expect(page.get_by_role("radio", name="CPU only", exact=True)).to_be_checked()
    live = page.locator("#gh-live-gpu")
    expect(live).to_contain_text("3 of 4 A100 free (declared devices)")
    expect(live).to_contain_text("group vision: 1 of 2 left")
    # choose the GPU profile: its fields come alive, the two-GPU choice is off and says why
    page.get_by_role("radio", name="GPU", exact=True).check()
    card = page.locator('.gh-card[data-profile="gpu"]')
    gpus = card.get_by_label("GPUs", exact=True)
    expect(gpus).to_be_enabled()
    two = gpus.locator('option[value="2"]')
    expect(two).to_be_disabled()
    expect(two).to_have_text("2 GPUs — group vision has 1 of 2 GPUs left")
    expect(gpus.locator('option[value="1"]')).to_be_enabled()
    card.get_by_label("Image").select_option(label="PyTorch (CUDA 12.8)")
    card.get_by_label("GPU type").select_option("a100")
    gpus.select_option("1")
    page.screenshot(path=shots / "spawn-form.png")
    page.get_by_role("button", name="Start").click()
    # the spawn pending page, then JupyterLab
    page.wait_for_url(re.compile(r"/user/bob/lab"), timeout=120_000)
    expect(page.locator(LAB_SHELL)).to_be_visible(timeout=120_000)
    expect(page.locator(".jp-Launcher")).to_be_visible(timeout=60_000)
    page.screenshot(path=shots / "jupyterlab.png")
    assert server_options(hub, "bob") == {
        "profile": "gpu",
        "image": "torch",
        "gpu_type": "a100",
        "gpus": "1",
    }


def test_group_at_quota_sees_who_holds_the_gpus(hub: Hub, new_page: Any, shots: Path):
    occupy(hub, "alice", 2)  # group vision's whole quota (2 GPUs)
    page = new_page()
    login(page, hub, "bob")
    expect(page).to_have_url(re.compile(r"/hub/spawn"))
    page.get_by_role("radio", name="GPU", exact=True).check()
    card = page.locator('.gh-card[data-profile="gpu"]')
    expect(card.locator("#gh-live-gpu")).to_contain_text("group vision: 0 of 2 left")
    gpus = card.get_by_label("GPUs", exact=True)
    for n in ("1", "2"):
        expect(gpus.locator(f'option[value="{n}"]')).to_be_disabled()
    # nothing fits, yet the select still shows a count and why it is off (not a blank box)
    expect(gpus).to_have_value("1")
    page.get_by_role("button", name="Start").click()
    # the hub re-renders the form with the spawner's explanation
    error = page.locator(".spawn-error-msg")
    expect(error).to_be_visible()
    expect(error).to_contain_text(re.compile(r"group vision uses 2 of 2 GPUs: alice 2 \(since"))
    expect(page.locator('input[name="profile"]').first).to_be_visible()  # the form is back
    page.screenshot(path=shots / "quota-denied.png")
    r = requests.get(f"{hub.api}/users/bob", headers=auth(hub.admin_token()), timeout=10)
    assert "" not in r.json()["servers"]


def test_spawn_form_labels_and_keyboard_only(hub: Hub, new_page: Any):
    page = new_page()
    login(page, hub, "bob")
    expect(page).to_have_url(re.compile(r"/hub/spawn"))
    # every control of the form has an accessible name from a <label for> (or aria-label)
    unlabelled = page.locator("#spawn_form").evaluate(
        """form => Array.from(form.querySelectorAll('input:not([type=hidden]), select, textarea'))
             .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
             .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    expect(page.get_by_role("radiogroup", name="Server profile")).to_be_visible()
    # keyboard alone: Tab to the profile radios, arrow to GPU, Tab through its fields
    focused = "document.activeElement.id || document.activeElement.tagName"
    page.locator("body").focus()
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate(focused) == "gh-profile-cpu":
            break
    assert page.evaluate(focused) == "gh-profile-cpu"
    page.keyboard.press("ArrowDown")
    assert page.evaluate(focused) == "gh-profile-gpu"
    expect(page.locator("#gh-profile-gpu")).to_be_checked()
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "gh-image-gpu"  # the CPU card's fields are skipped
    page.keyboard.press("ArrowDown")  # PyTorch -> Python
    expect(page.locator("#gh-image-gpu")).to_have_value("python")
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "gh-gpu_type-gpu"
    page.keyboard.press("ArrowDown")  # A100 -> H100
    expect(page.locator("#gh-gpu_type-gpu")).to_have_value("h100")
    expect(page.locator("#gh-live-gpu")).to_contain_text("1 of 1 H100 free")
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "gh-gpus-gpu"
    # Tab on to the Start button and press Enter
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.type") == "submit":
            break
    assert page.evaluate("document.activeElement.textContent.trim()") == "Start"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/user/bob/lab"), timeout=120_000)
    expect(page.locator(LAB_SHELL)).to_be_visible(timeout=120_000)
    assert server_options(hub, "bob") == {
        "profile": "gpu",
        "image": "python",
        "gpu_type": "h100",
        "gpus": "1",
    }
