"""The error-rate anomaly detector on labelled, seeded series: recall per burst and false alarms, measured.

The figures are printed and written to test-output/analytics/anomaly.json. Targets: at most 2% of
unchanged series flagged; recall >= 90% for bursts of x5 and more on series with >= 100 requests an hour
whose burst brings at least 10 failures. Below 10 expected failures no count can tell a burst from
chance (x5 on 0.1% and 100 requests is half a failure an hour), so recall on all series of >= 100
requests an hour is reported, not asserted.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perfops.analytics import anomaly
from perfops.analytics import anomaly_scenarios as sc

OUT = Path(__file__).resolve().parents[2] / "test-output" / "analytics"
PER_SIZE = 300
PLAN = ((sc.TIMES, (3.0, 5.0, 10.0)), (sc.POINTS, (2.0, 5.0, 10.0)))
BANDS = ((0, 5, "<5"), (5, 10, "5-10"), (10, 20, "10-20"), (20, np.inf, ">=20"))
FIRST = datetime(2026, 11, 2, tzinfo=UTC)


def _share(outcomes: list[bool]) -> float | None:
    return round(float(np.mean(outcomes)), 4) if outcomes else None


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    seed = 0
    unchanged: dict[str, list[bool]] = defaultdict(list)
    for _ in range(PER_SIZE * 6):
        seed += 1
        series = sc.generate(seed)
        flagged = anomaly.detect(series.failures, series.requests, series.first_hour) is not None
        unchanged["all"].append(flagged)
        unchanged["noisy" if series.noisy else "steady"].append(flagged)
        if series.volume >= 100:
            unchanged["100_per_hour"].append(flagged)
    figures: dict[str, Any] = {"false_alarms": {key: _share(value) for key, value in unchanged.items()}}
    figures["unchanged_series"] = len(unchanged["all"])
    for kind, sizes in PLAN:
        for size in sizes:
            caught: dict[str, list[bool]] = defaultdict(list)
            for _ in range(PER_SIZE):
                seed += 1
                series = sc.generate(seed, kind, size)
                found = anomaly.detect(series.failures, series.requests, series.first_hour) is not None
                caught["all"].append(found)
                caught["noisy" if series.noisy else "steady"].append(found)
                caught[f"{series.burst_hours}_h"].append(found)
                band = next(name for low, high, name in BANDS if low <= series.burst_failures < high)
                caught[f"expected_failures_{band}"].append(found)
                if series.volume >= 100:
                    caught["100_per_hour"].append(found)
                    if series.burst_failures >= 10:
                        caught["100_per_hour_10_failures"].append(found)
            name = f"x{size:g}" if kind == sc.TIMES else f"+{size:g}_points"
            figures[name] = {key: _share(value) for key, value in sorted(caught.items())}
            figures[name]["series"] = PER_SIZE
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "anomaly.json").write_text(json.dumps(figures, indent=2))
    print("\nanomaly detector, share flagged:", json.dumps(figures, indent=1))
    return figures


def test_unchanged_series_are_rarely_flagged(measured):
    assert measured["false_alarms"]["all"] <= 0.02, measured["false_alarms"]
    assert measured["false_alarms"]["noisy"] <= 0.02, measured["false_alarms"]


def test_bursts_of_x5_and_more_are_caught_where_the_counts_can_show_them(measured):
    for name in ("x5", "x10"):
        assert measured[name]["100_per_hour_10_failures"] >= 0.9, measured[name]
    # Whatever the counts, bigger bursts are caught at least as often.
    assert measured["x3"]["all"] <= measured["x5"]["all"] <= measured["x10"]["all"]


def _steady(hours: int = 24 * 7, requests: int = 200, rate: float = 0.01, seed: int = 1) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    asked = rng.poisson(requests, hours)
    return rng.binomial(asked, rate), asked


def test_no_history_is_no_anomaly():
    failed, asked = _steady(hours=20)
    failed[-3:] = asked[-3:] // 2
    assert anomaly.detect(failed, asked, FIRST) is None
    failed, asked = _steady()
    asked[:-3], failed[:-3] = 0, 0
    assert anomaly.detect(failed, asked, FIRST) is None


def test_small_counts_never_trigger():
    failed, asked = np.zeros(24 * 7, dtype=int), np.full(24 * 7, 7)
    failed[-3:] = [1, 0, 1]  # 2 failures out of 21 requests against none in a week
    assert anomaly.detect(failed, asked, FIRST) is None
    failed[-3:] = [2, 1, 1]
    assert anomaly.detect(failed, asked, FIRST) is None


def test_a_burst_after_a_clean_week_is_found():
    failed, asked = np.zeros(24 * 7, dtype=int), np.full(24 * 7, 300)
    failed[-2:] = [9, 12]
    found = anomaly.detect(failed, asked, FIRST, label="timeout")
    assert found is not None
    assert (found.failures, found.requests) == (21, 600)


def test_an_anomaly_names_its_numbers():
    failed, asked = _steady()
    failed[-3:] = [14, 19, 16]
    found = anomaly.detect(failed, asked, FIRST, label="timeout")
    assert found is not None
    assert found.expected_rate == pytest.approx(0.01, rel=0.25)
    assert found.rate == pytest.approx(found.failures / found.requests)
    assert found.reason.startswith(f"timeout: {100 * found.rate:.1f}% of requests in the last 3 h against ")
    assert f"(z {found.score:.1f}, {found.failures} of {found.requests:,} requests)" in found.reason
    assert found.at.hour in (21, 22, 23)


def test_the_window_and_its_worst_hour_are_those_of_the_burst():
    failed, asked = _steady(seed=3)
    failed[-3] = 30  # one bad hour, then back to normal
    found = anomaly.detect(failed, asked, FIRST)
    assert found is not None
    assert found.at == datetime(2026, 11, 8, 21, tzinfo=UTC)
    assert " in 1 h from 21:00 UTC " in found.reason


def test_decreases_and_silence_are_not_anomalies():
    failed, asked = _steady(rate=0.05)
    failed[-3:] = 0
    assert anomaly.detect(failed, asked, FIRST) is None
    assert anomaly.detect(np.zeros(24 * 7), asked, FIRST) is None


def test_hours_without_requests_are_skipped():
    failed, asked = _steady()
    asked[10:40], failed[10:40] = 0, 0
    asked[-1], failed[-1] = 0, 0
    assert anomaly.detect(failed, asked, FIRST) is None
    failed[-3:-1] = [20, 18]
    found = anomaly.detect(failed, asked, FIRST)
    assert found is not None
    assert found.failures == 38


def test_a_series_that_is_always_noisy_is_judged_by_its_own_tails():
    rng = np.random.default_rng(5)
    asked = rng.poisson(400, 24 * 10)
    spikes = rng.random(24 * 10) < 0.05  # an hour in twenty runs at x4 to x8, every day
    rate = 0.01 * np.where(spikes, rng.uniform(4, 8, 24 * 10), rng.gamma(2.0, 0.5, 24 * 10))
    failed = rng.binomial(asked, rate)
    failed[-1] = int(asked[-1] * 0.05)  # x5: the usual for this series
    assert anomaly.detect(failed, asked, FIRST) is None
