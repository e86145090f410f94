"""Helpers of the browser tier's tests (a module of its own: several test folders have a
``conftest``, so ``from conftest import`` would be ambiguous in a run of all tiers)."""

from __future__ import annotations

from typing import Any

from hubproc import Hub


def login(page: Any, hub: Hub, user: str, password: str | None = None) -> None:
    """Log in through the hub's login page, as a person would (with ``user``'s own test
    password unless ``password`` is given; the first login sets it)."""
    page.goto(f"{hub.url}/hub/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password or hub.user_password(user))
    page.get_by_role("button", name="Sign in").click()
