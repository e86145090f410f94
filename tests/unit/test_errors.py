"""Which errors are expected answers (a warning in the log) and which are failures (a
traceback): a refused request or "try again" never reads as an uncaught exception."""

from gpuhub.errors import ConfigError, GpuhubError, OptionError
from gpuhub.jobs.errors import HubUnavailable, NotAllowed


def test_refusals_and_try_again_are_expected():
    assert OptionError("gpus", "must be a number").expected
    assert NotAllowed("only users can run jobs").expected
    assert HubUnavailable("the hub is not answering; try again").expected


def test_internal_failures_are_not():
    assert not GpuhubError("the ledger could not be written").expected
    assert not ConfigError("x", "broken", "fix it").expected
