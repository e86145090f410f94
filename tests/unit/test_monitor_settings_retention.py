"""The monitor's retention keys and the queued-jobs metric of one machine."""

from __future__ import annotations

from typing import Any

import pytest

from gpuhub.config import parse_config
from gpuhub.errors import ConfigError
from gpuhub.monitor.metrics import MetricsSnapshot, queued_series, render


def test_retention_defaults_and_keys(raw: dict[str, Any]):
    m = parse_config(raw).monitor
    assert (m.history_days, m.history_max_days) == (14, 400)
    raw["monitor"] = {"history_days": 30, "history_max_days": 730}
    m = parse_config(raw).monitor
    assert (m.history_days, m.history_max_days) == (30, 730)
    raw["monitor"] = {"history_days": 500}  # the maximum follows a longer raw history
    assert parse_config(raw).monitor.history_max_days == 500


@pytest.mark.parametrize(
    ("monitor", "expected"),
    [
        (
            {"history_days": 30, "history_max_days": 7},
            (
                "gpuhub.yaml: monitor.history_max_days: hourly rows (7 days) must be kept at "
                "least as long as raw samples (history_days 30) Fix: use 30 or more, or lower "
                "monitor.history_days"
            ),
        ),
        ({"history_days": 0}, "gpuhub.yaml: monitor.history_days: 0 is less than the minimum"),
        ({"history_max_days": "1y"}, "monitor.history_max_days: '1y' is not of type 'number'"),
    ],
)
def test_bad_retention_names_the_key_and_the_fix(raw: dict[str, Any], monitor, expected):
    raw["monitor"] = monitor
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert expected in str(e.value)


def test_nothing_is_queued_on_one_machine_and_the_metric_says_so(config):
    queued = queued_series(config, ())
    assert set(queued.values()) == {0}
    assert set(queued) == {
        (g, t, k) for g in ("vision", "nlp") for t in ("a100", "h100") for k in ("job", "notebook")
    }
    text = render(MetricsSnapshot(queued=queued)).decode()
    assert "# TYPE gpuhub_gpus_queued gauge" in text
    assert 'gpuhub_gpus_queued{gpu_type="h100",group="nlp",kind="job"} 0.0' in text
    assert text.count("gpuhub_gpus_queued{") == 8
