"""The change-point detector on labelled, seeded week-long series: recall per step, false positives, location.

The figures are printed and written to test-output/analytics/changepoint.json. A step counts as found
when an upward change is reported within 12 hours of it. Targets: at most 2% of unchanged series with
a reported change (latency and errors each); recall >= 95% for latency steps of +25% or more; for error
steps of +2 points or more >= 95% on series of >= 100 requests an hour (the 20-100 an hour are short of
failures, see the test); for >= 90% of the +50% latency steps found, the location within 3 hours.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perfops.analytics import changepoint
from perfops.analytics import changepoint_scenarios as sc

OUT = Path(__file__).resolve().parents[2] / "test-output" / "analytics"
UNCHANGED = 400
PER_SIZE = 120
LATENCY_STEPS = (0.15, 0.25, 0.5, 1.0)
ERROR_STEPS = (1.0, 2.0, 5.0)
TOLERANCE_HOURS = 12
FIRST = datetime(2026, 11, 23, tzinfo=UTC)


def _found(changes: list[changepoint.ChangePoint], step_index: int) -> int | None:
    """Hours between the step and the nearest reported change, None when none is within tolerance."""
    errors = [abs(change.index - step_index) for change in changes]
    return min(errors) if errors and min(errors) <= TOLERANCE_HOURS else None


def _summary(located: list[int | None], busy: list[bool]) -> dict[str, Any]:
    hits = [hours for hours in located if hours is not None]
    caught = np.array([hours is not None for hours in located])
    busy_series = np.array(busy)
    return {
        "series": len(located),
        "recall": round(float(caught.mean()), 4),
        "recall_100_per_hour": round(float(caught[busy_series].mean()), 4),
        "recall_under_100_per_hour": round(float(caught[~busy_series].mean()), 4),
        "median_location_error_h": float(np.median(hits)) if hits else None,
        "within_3_h": round(float(np.mean([hours <= 3 for hours in hits])), 4) if hits else None,
    }


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    seed = 0
    flagged: dict[str, list[bool]] = defaultdict(list)
    for _ in range(UNCHANGED):
        seed += 1
        series = sc.generate(seed)
        flagged["latency"].append(bool(changepoint.latency(series.p95_ms, series.counts, series.first_hour)))
        flagged["errors"].append(bool(changepoint.errors(series.failures, series.counts, series.first_hour)))
    figures: dict[str, Any] = {
        "false_positives": {metric: round(float(np.mean(values)), 4) for metric, values in flagged.items()},
        "unchanged_series": UNCHANGED,
        "latency": {},
        "errors": {},
    }
    for metric, sizes in (("latency", LATENCY_STEPS), ("errors", ERROR_STEPS)):
        for size in sizes:
            located, busy = [], []
            for _ in range(PER_SIZE):
                seed += 1
                series = sc.generate(seed, sc.LATENCY if metric == "latency" else sc.ERRORS, size)
                if metric == "latency":
                    changes = changepoint.latency(series.p95_ms, series.counts, series.first_hour)
                else:
                    changes = changepoint.errors(series.failures, series.counts, series.first_hour)
                located.append(_found(changes, series.step_index))
                busy.append(bool(np.median(series.counts) >= 100))
            name = f"+{100 * size:.0f}%" if metric == "latency" else f"+{size:g}_points"
            figures[metric][name] = _summary(located, busy)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "changepoint.json").write_text(json.dumps(figures, indent=2))
    print("\nchange-point detector:", json.dumps(figures, indent=1))
    return figures


def test_unchanged_series_rarely_show_a_change(measured):
    assert measured["false_positives"]["latency"] <= 0.02, measured["false_positives"]
    assert measured["false_positives"]["errors"] <= 0.02, measured["false_positives"]


def test_latency_steps_of_25_percent_or_more_are_found(measured):
    for step in ("+25%", "+50%", "+100%"):
        assert measured["latency"][step]["recall"] >= 0.95, measured["latency"]


def test_error_steps_of_2_points_or_more_are_found_on_busy_series(measured):
    # +2 points on 20-100 requests an hour, 12-30 hours from an end of the week, is a handful of failures
    # more: a binomial test told the hour of the step still misses a few, and searching every hour costs
    # the rest (about 80% caught there, 91% over all series). The 95% target holds from 100 requests an
    # hour (median hour); over all series 85% is the floor asserted.
    for step in ("+2_points", "+5_points"):
        assert measured["errors"][step]["recall"] >= 0.85, measured["errors"]
        assert measured["errors"][step]["recall_100_per_hour"] >= 0.95, measured["errors"]


def test_large_latency_steps_are_located_within_3_hours(measured):
    assert measured["latency"]["+50%"]["within_3_h"] >= 0.9, measured["latency"]
    assert measured["latency"]["+100%"]["within_3_h"] >= 0.9, measured["latency"]


def _latency(levels: np.ndarray, requests: int = 200, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Hourly p95 of `requests` lognormal latencies (median 500 ms) times the level of each hour."""
    rng = np.random.default_rng(seed)
    counts = np.full(len(levels), requests)
    p95 = np.array([np.quantile(500 * level * rng.lognormal(0, 0.5, requests), 0.95) for level in levels])
    return p95, counts


def _steps(*pieces: tuple[int, float]) -> np.ndarray:
    return np.concatenate([np.full(hours, level) for hours, level in pieces])


def test_a_step_is_found_and_explained_with_its_numbers():
    p95, counts = _latency(_steps((100, 1.0), (68, 1.5)))
    [change] = changepoint.latency(p95, counts, FIRST)
    assert (change.index, change.metric) == (100, changepoint.P95)
    assert change.at == datetime(2026, 11, 27, 4, tzinfo=UTC)
    assert change.effect == pytest.approx(1.5, rel=0.06)
    assert change.effect == pytest.approx(change.after / change.before)
    assert change.confidence >= 0.99
    assert change.reason == (
        f"P95 stepped from {change.before:,.0f} ms to {change.after:,.0f} ms ({100 * (change.effect - 1):+.0f}%) "
        f"at 2026-11-27 04:00 UTC, {100 * change.confidence:.1f}% confidence, 68 h after against 100 h before"
    )


def test_steady_series_decreases_and_small_drifts_are_not_reported():
    assert changepoint.latency(*_latency(np.ones(168)), FIRST) == []
    assert changepoint.latency(*_latency(_steps((100, 1.0), (68, 0.6))), FIRST) == []
    # +3% with many requests is a real change, but too small to be worth anyone's attention.
    assert changepoint.latency(*_latency(_steps((84, 1.0), (84, 1.03)), requests=5000), FIRST) == []
    assert changepoint.latency(*_latency(np.linspace(1.0, 1.03, 168), requests=5000), FIRST) == []


def test_hours_without_requests_are_left_out():
    p95, counts = _latency(_steps((90, 1.0), (78, 1.6)))
    empty = [5, 40, 41, 42, 90, 91, 150]
    p95[empty], counts[empty] = np.nan, 0
    [change] = changepoint.latency(p95, counts, FIRST)
    assert change.index == 92  # the first hour of the new regime with requests
    assert changepoint.latency(np.full(168, np.nan), np.zeros(168), FIRST) == []
    assert changepoint.latency(p95[:10], counts[:10], FIRST) == []


def test_at_most_three_changes_most_recent_first():
    p95, counts = _latency(_steps((32, 1.0), (34, 1.3), (34, 1.7), (34, 2.2), (34, 2.9)))
    changes = changepoint.latency(p95, counts, FIRST)
    assert len(changes) == 3
    for change, step in zip(changes, (134, 100, 66), strict=True):
        assert abs(change.index - step) <= 2, changes


def test_an_incident_that_resolved_is_a_step_up_only():
    p95, counts = _latency(_steps((80, 1.0), (20, 1.5), (68, 1.0)))
    [change] = changepoint.latency(p95, counts, FIRST)
    assert change.index == 80
    assert "20 h after against 80 h before" in change.reason


def test_an_error_step_is_found_in_points():
    rng = np.random.default_rng(2)
    requests = rng.poisson(150, 168)
    rate = np.where(np.arange(168) >= 120, 0.06, 0.01)
    failures = rng.binomial(requests, rate)
    [change] = changepoint.errors(failures, requests, FIRST)
    assert (change.index, change.metric) == (120, changepoint.ERROR_RATE)
    assert change.effect == pytest.approx(100 * (change.after - change.before))
    assert change.effect == pytest.approx(5.0, abs=1.0)
    assert change.reason == (
        "Errors stepped from 1.0% to 6.0% (+5.0 points) at 2026-11-28 00:00 UTC, 99.8% confidence, "
        "48 h after against 120 h before"
    )
    # The same step down is an improvement, and a step of half a point is under the minimum.
    assert changepoint.errors(failures[::-1], requests[::-1], FIRST) == []
    small = rng.binomial(requests * 20, np.where(np.arange(168) >= 120, 0.015, 0.01))
    assert changepoint.errors(small, requests * 20, FIRST) == []
    assert changepoint.errors(small, requests * 20, FIRST, min_points=0.25) != []
