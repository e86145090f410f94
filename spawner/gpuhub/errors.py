"""One error hierarchy for gpuhub; the HTTP status of each error is decided here, once."""

from __future__ import annotations


class GpuhubError(Exception):
    """Base of every error gpuhub raises on purpose.

    ``status`` is the HTTP status an API handler should answer with.
    """

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def expected(self) -> bool:
        """Answered to the client as it is and logged as a warning, without a traceback:
        a refused request (4xx) or "try again" (503, e.g. the hub is restarting)."""
        return self.status < 500 or self.status == 503


class ConfigError(GpuhubError):
    """The gpuhub YAML (or another admin-written file) is invalid.

    ``path`` names the file and key path (``gpuhub.yaml: profiles[1].gpu.types[0]``),
    ``problem`` what is wrong and ``fix`` how to mend it.
    """

    status = 500

    def __init__(self, path: str, problem: str, fix: str | None = None) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        text = f"{path}: {problem}"
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)


class OptionError(GpuhubError):
    """A spawn or job option sent by a browser or API client was refused (400).

    ``field`` is the option's name as the client sent it.
    """

    status = 400

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class QuotaDenied(GpuhubError):
    """The request is valid but does not fit the group's quota, the user's cap or the
    free devices right now (403).  ``explanation`` is the text shown to the user."""

    status = 403

    def __init__(self, explanation: str) -> None:
        self.explanation = explanation
        super().__init__(explanation)
