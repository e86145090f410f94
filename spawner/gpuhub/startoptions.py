"""Which options a server start uses: the ones sent, the user's saved default ("the
options VS Code uses"), or the server's last-used ones; validated against the user's
current groups.

The VS Code JupyterHub extension, the admin page and most API clients start a server
with no options.  A user may save a default for such starts (the spawn form's "Use these
options for VS Code and API starts", or ``"save_default": true`` in an API start) and
forget it again (the form's "Forget it", or ``"save_default": "forget"``); an empty start
then uses it, validated like any untrusted request, so a default saved while
the user was in a group is refused, naming why, once they have left it.  Pure: the
spawner reads the saved default, calls :func:`resolve_start` and reserves the request in
the same synchronous step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import OptionError
from .model import GpuhubConfig, SpawnRequest
from .profiles import validate_options

SAVE_KEY = "save_default"
"""The option that asks to keep the other options as the user's default (the form sends
``"on"``; an API client may send ``true``), or to forget the saved default (``"forget"``).
Never stored with them."""
_YES = ("on", "1", "true", "yes")
_NO = ("off", "0", "false", "no", "keep")
FORGET = "forget"

Source = Literal["sent", "saved", "last"]
SaveChoice = Literal["save", "keep", "forget"]


@dataclass(frozen=True)
class Start:
    """The outcome: the validated ``request``; the ``options`` the server runs with (what
    the hub records as its ``user_options``); ``save``, the options to keep as the user's
    default once the request is reserved (``None``: keep what is saved); ``forget``,
    whether to drop the saved default once reserved; ``source``, where the options came
    from."""

    request: SpawnRequest
    options: dict[str, Any]
    save: dict[str, Any] | None
    source: Source
    forget: bool = False


def save_choice(value: Any) -> SaveChoice:
    """What :data:`SAVE_KEY`'s value asks for (an unknown value is refused)."""
    if isinstance(value, bool):
        return "save" if value else "keep"
    if isinstance(value, str):
        if value.lower() in _YES:
            return "save"
        if value.lower() in _NO:
            return "keep"
        if value.lower() == FORGET:
            return "forget"
    raise OptionError(SAVE_KEY, f'must be true, false or "{FORGET}", not {value!r}')


def describe(options: Mapping[str, Any]) -> str:
    """``profile gpu, 1 a100 GPU, image torch`` — a saved default in a sentence."""
    parts = [f"profile {options.get('profile', 'default')}"]
    if "gpus" in options:
        kind = f" {options['gpu_type']}" if "gpu_type" in options else ""
        parts.append(f"{options['gpus']}{kind} GPU{'' if str(options['gpus']) == '1' else 's'}")
    for key in ("image", "group"):
        if key in options:
            parts.append(f"{key} {options[key]}")
    return ", ".join(parts)


def saved_default_refusal(saved: Mapping[str, Any], error: OptionError) -> OptionError:
    """The refusal of a saved default that no longer fits the user's groups or the config."""
    return OptionError(
        error.field,
        f"your saved default for VS Code and API starts ({describe(saved)}) is no longer "
        f"available: {error.problem}. Start a server from the spawn form with "
        "“Use these options for VS Code and API starts” to save new ones",
    )


def resolve_start(
    config: GpuhubConfig,
    user: str,
    groups: list[str],
    sent: Mapping[str, Any] | None,
    saved: Mapping[str, Any] | None,
    last: Mapping[str, Any] | None = None,
) -> Start:
    """THE decision of what a notebook server start asks for.

    ``sent``: the options the client sent (``None`` or ``{}`` for an empty start);
    ``saved``: the user's saved default, if any; ``last``: the options the server last
    ran with (what JupyterHub itself falls back on for an empty start).  Sent options win;
    an empty start uses the saved default, else the last options (today's behaviour:
    the default profile for a new server).  Everything is validated against ``groups``
    (:func:`~gpuhub.profiles.validate_options`); raises :class:`OptionError` naming the
    field, and for a saved default why it no longer applies.
    """
    if sent:
        options = dict(sent)
        choice = save_choice(options.pop(SAVE_KEY)) if SAVE_KEY in options else "keep"
        request = validate_options(config, user, groups, options)
        save = dict(options) if choice == "save" else None
        return Start(request, options, save, "sent", forget=choice == "forget")
    if saved:
        try:
            request = validate_options(config, user, groups, saved)
        except OptionError as e:
            raise saved_default_refusal(saved, e) from e
        return Start(request, dict(saved), None, "saved")
    options = {k: v for k, v in (last or {}).items() if k != SAVE_KEY}
    return Start(validate_options(config, user, groups, options), options, None, "last")
