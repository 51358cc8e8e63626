"""The capacity forecast on the demo's traffic and on series with a known answer: error, band and dates, measured.

Demo scenarios: the expected requests of every hour come from the demo generator itself (`History`: its daily
and weekly profiles, its day-to-day noise and its 1%/day growth), for the whole fleet and for one agent of each
daily profile, over 58 days: 28 observed, 30 to come. Poisson counts are drawn at an agent's rate (0.2 req/s)
and at a fleet's (50 req/s). The figures are printed and written to test-output/analytics/forecast.json.

Targets: backtest MAPE (fitted on 21 days, scored on the next 7) <= 15% at fleet rate in every scenario and
seed, <= 8% on average for the whole fleet, <= 12% on average for every scenario at either rate; the 80% band
covers 65-95% of the held-out hours, a week and 30 days out; a known growth rate reaches a known capacity
within a day of the true date. The demo's near-capacity agent is reported too: its true crossing depends on
7% day-to-day noise, so only the band's upper edge is held to it (it must warn first).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perfops.analytics import forecast
from perfops.telemetry.demo.fleet import NEAR_CAPACITY_AGENT, PRODUCTION, PROFILES, base_size
from perfops.telemetry.demo.plan import build_plan, from_us
from perfops.telemetry.demo.traffic import History

OUT = Path(__file__).resolve().parents[2] / "test-output" / "analytics"
END = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday; the observed 28 days start on a Saturday
OBSERVED_DAYS, FUTURE_DAYS, FITTED_DAYS = 28, 30, 21
SEEDS = range(1, 7)
RATES = {"agent": 0.2, "fleet": 50.0}
SHAPES = ("fleet", *PROFILES)
GROWTHS = (0.005, 0.01, 0.02)
START = datetime(2025, 1, 4, tzinfo=UTC)  # a Saturday, for the synthetic series


def demo_hours(seed: int) -> tuple[datetime, dict[str, np.ndarray], dict[str, float]]:
    """Relative expected requests of each hour of the demo's history: the fleet and one agent per daily profile.

    Also the demo's near-capacity agent (its own profile, its capacity: headroom over its busiest observed hour).
    """
    plan = build_plan(seed, base_size(), OBSERVED_DAYS + FUTURE_DAYS, END)
    history = History(plan, total=1, chunk_size=1)
    model = history.model
    by_profile = np.diff(history.cumulative[:, ::60], axis=1)  # minute boundaries -> hours
    weights = np.bincount(model.ae_profile, weights=model.ae_weight, minlength=len(PROFILES))
    shapes = {"fleet": weights @ by_profile, **dict(zip(PROFILES, by_profile, strict=True))}
    near = plan.ae(NEAR_CAPACITY_AGENT, PRODUCTION)
    shapes["near_capacity"] = by_profile[model.ae_profile[near]]
    agent = plan.agents[plan.agent_index(NEAR_CAPACITY_AGENT)]
    return from_us(plan.start_us), shapes, {"headroom": agent.headroom}


def at_rate(shape: np.ndarray, rate_rps: float) -> np.ndarray:
    """Expected requests/s of each hour, `rate_rps` on average over the observed days."""
    return shape / shape[: OBSERVED_DAYS * 24].mean() * rate_rps


def poisson(expected_rps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Observed requests/s of each hour: a Poisson count of its expected requests."""
    return rng.poisson(expected_rps * 3600) / 3600


def synthetic(
    days: int,
    *,
    growth: float = 0.0,
    rate_rps: float = 20.0,
    day_noise: float = 0.0,
    monday: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Known truth: a daily cycle (peak at 15:00, 5x the night), quieter weekends, `growth` per day; and draws of it."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    weekday = (START.weekday() + hours // 24) % 7
    cycle = np.exp(0.8 * np.cos(2 * np.pi * (hours % 24 - 15) / 24))
    calendar = cycle * np.where(weekday >= 5, 0.6, 1.0) * np.where(weekday == 0, monday, 1.0)
    truth = calendar * np.exp(growth * hours / 24)
    truth *= rate_rps / truth[: OBSERVED_DAYS * 24].mean()
    noisy = truth * np.exp(rng.normal(0.0, day_noise, days))[hours // 24] if day_noise else truth
    return truth, poisson(noisy, rng)


def _crossing_error_days(found: datetime | None, truth: datetime | None) -> float | None:
    if found is None or truth is None:
        return None
    return round((found - truth).total_seconds() / 86400, 2)


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    fitted_hours, observed_hours = FITTED_DAYS * 24, OBSERVED_DAYS * 24
    backtests: dict[str, list[float]] = {}
    coverage_week: dict[str, list[float]] = {}
    mape_month: dict[str, list[float]] = {}
    coverage_month: dict[str, list[float]] = {}
    near_capacity: list[dict[str, Any]] = []
    for seed in SEEDS:
        first_hour, shapes, near = demo_hours(seed)
        for shape_name in SHAPES:
            for rate_name, rate in RATES.items():
                key = f"{shape_name} at {rate_name} rate ({rate:g} req/s)"
                rps = poisson(at_rate(shapes[shape_name], rate), np.random.default_rng([seed, int(rate * 10)]))
                observed, future = rps[:observed_hours], rps[observed_hours:]
                mape = forecast.backtest(observed, first_hour)
                assert mape is not None
                backtests.setdefault(key, []).append(mape)
                week = forecast.fit(observed[:fitted_hours], first_hour, reach_hours=observed_hours - fitted_hours)
                month = forecast.fit(observed, first_hour, reach_hours=FUTURE_DAYS * 24)
                assert week is not None
                assert month is not None
                held_out = observed[fitted_hours:]
                coverage_week.setdefault(key, []).append(_covered(week, held_out))
                coverage_month.setdefault(key, []).append(_covered(month, future))
                mape_month.setdefault(key, []).append(float(np.mean(np.abs(month.mean_rps - future) / future)))
        # The demo's near-capacity agent: when does it reach its capacity (the same rule as the demo's)?
        expected = at_rate(shapes["near_capacity"], RATES["agent"])
        capacity = near["headroom"] * float(expected[:observed_hours].max())
        rps = poisson(expected, np.random.default_rng([seed, 99]))
        month = forecast.fit(rps[:observed_hours], first_hour)
        assert month is not None
        above = np.flatnonzero(expected[observed_hours:] >= capacity)
        truth = month.start + timedelta(hours=int(above[0])) if len(above) else None
        near_capacity.append(
            {
                "seed": seed,
                "capacity_rps": round(capacity, 4),
                "true_crossing": truth.isoformat() if truth else None,
                "median_crossing_error_days": _crossing_error_days(month.crossing(capacity), truth),
                "band_high_crossing_error_days": _crossing_error_days(month.crossing(capacity, upper=True), truth),
            }
        )

    known_growth = {}
    for growth in GROWTHS:
        crossing = _known_growth_crossing(growth)
        known_growth[f"{100 * growth:g}%/day"] = crossing

    def summary(values: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        return {
            key: {"mean": round(float(np.mean(v)), 4), "min": round(min(v), 4), "max": round(max(v), 4)}
            for key, v in values.items()
        }

    figures = {
        "seeds": len(SEEDS),
        "backtest_mape_21_fitted_7_scored": summary(backtests),
        "band_coverage_7_days": summary(coverage_week),
        "mape_30_days_after_28": summary(mape_month),
        "band_coverage_30_days": summary(coverage_month),
        "near_capacity_agent": near_capacity,
        "known_growth_crossing": known_growth,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "forecast.json").write_text(json.dumps(figures, indent=2))
    print("\ncapacity forecast, measured:", json.dumps(figures, indent=1))
    return figures


def _covered(fc: forecast.Forecast, observed: np.ndarray) -> float:
    return float(np.mean((observed >= fc.low_rps) & (observed <= fc.high_rps)))


def _known_growth_crossing(growth: float) -> dict[str, Any]:
    """Fit 28 days of a series growing `growth` a day, and find when it reaches a capacity 12 days later.

    Traffic reaches a level only at a daily peak: the capacity sits half a day's growth under the 12th day's
    peak, so the true crossing is that peak, and a forecast a few hours of growth off still finds the same day.
    `lag_days` says how far off it is: the forecast's shortfall at the true crossing, in days of growth.
    """
    truth, observed = synthetic(OBSERVED_DAYS + FUTURE_DAYS, growth=growth, seed=int(growth * 1000))
    hours = OBSERVED_DAYS * 24
    capacity = float(truth[hours + 11 * 24 : hours + 12 * 24].max()) * math.exp(-growth / 2)
    fc = forecast.fit(observed[:hours], START)
    assert fc is not None
    true_hour = int(np.flatnonzero(truth[hours:] >= capacity)[0])
    true_at = fc.start + timedelta(hours=true_hour)
    found = fc.crossing(capacity)
    return {
        "capacity_rps": round(capacity, 3),
        "true_crossing": true_at.isoformat(),
        "forecast_crossing": found.isoformat() if found else None,
        "error_hours": None if found is None else (found - true_at).total_seconds() / 3600,
        "lag_days": round(math.log(truth[hours + true_hour] / fc.mean_rps[true_hour]) / growth, 3),
        "explanation": fc.explanation,
    }


def test_backtest_error_at_fleet_rate_is_under_15_percent_everywhere(measured):
    for key, figures in measured["backtest_mape_21_fitted_7_scored"].items():
        if "fleet rate" in key:
            assert figures["max"] <= 0.15, (key, figures)
    assert measured["backtest_mape_21_fitted_7_scored"]["fleet at fleet rate (50 req/s)"]["mean"] <= 0.08


def test_backtest_error_of_a_single_small_agent_stays_useful(measured):
    # 0.2 req/s is 720 requests an hour on average and a few dozen in a quiet night hour: Poisson noise adds up.
    for key, figures in measured["backtest_mape_21_fitted_7_scored"].items():
        assert figures["mean"] <= 0.12, (key, figures)


def test_the_80_percent_band_covers_about_80_percent_of_held_out_hours(measured):
    for horizon in ("band_coverage_7_days", "band_coverage_30_days"):
        for key, figures in measured[horizon].items():
            assert 0.65 <= figures["mean"] <= 0.95, (horizon, key, figures)


def test_30_days_out_the_error_stays_small(measured):
    for key, figures in measured["mape_30_days_after_28"].items():
        assert figures["mean"] <= 0.12, (key, figures)


@pytest.mark.parametrize("growth", GROWTHS)
def test_a_known_growth_reaches_capacity_within_a_day_of_the_true_date(measured, growth):
    crossing = measured["known_growth_crossing"][f"{100 * growth:g}%/day"]
    assert crossing["error_hours"] is not None, crossing
    assert abs(crossing["error_hours"]) <= 24, crossing


def test_the_demo_near_capacity_agent_is_warned_about_before_it_gets_there(measured):
    # With 7% day-to-day noise on 1%/day growth, the day a capacity is first touched is only known to about a
    # week: the median forecast lands within 8 days, and the band's upper edge crosses first.
    for case in measured["near_capacity_agent"]:
        assert case["true_crossing"] is not None, case
        assert abs(case["median_crossing_error_days"]) <= 8, case
        assert case["band_high_crossing_error_days"] <= 0, case


def test_a_flat_series_never_crosses_twice_its_peak():
    _, observed = synthetic(OBSERVED_DAYS, rate_rps=0.2, day_noise=0.07, seed=3)
    fc = forecast.fit(observed, START)
    assert fc is not None
    peak = float(observed.max())
    assert fc.crossing(2 * peak) is None
    assert fc.crossing(2 * peak, upper=True) is None
    assert fc.crossing(0.5 * peak) == fc.start + timedelta(hours=int(np.flatnonzero(fc.mean_rps >= 0.5 * peak)[0]))


def test_one_busy_day_at_the_end_does_not_move_the_month_ahead():
    _, observed = synthetic(OBSERVED_DAYS, growth=0.01, day_noise=0.05, seed=5)
    calm = forecast.fit(observed, START)
    busy = observed.copy()
    busy[-24:] *= 2
    rushed = forecast.fit(busy, START)
    assert calm is not None
    assert rushed is not None
    last_day = slice(-24, None)
    assert rushed.mean_rps[last_day].sum() / calm.mean_rps[last_day].sum() == pytest.approx(1.0, abs=0.05)


def test_fewer_than_three_days_or_no_traffic_is_no_forecast():
    _, observed = synthetic(4)
    assert forecast.fit(observed[: forecast.MIN_HOURS - 1], START) is None
    assert forecast.fit(np.zeros(10 * 24), START) is None
    fc = forecast.fit(observed[: forecast.MIN_HOURS], START)
    assert fc is not None
    assert fc.fitted_hours == 72
    assert fc.backtest_mape is None


def test_hours_before_the_first_request_are_not_history():
    _, observed = synthetic(10, day_noise=0.05, seed=6)
    launched = np.concatenate([np.zeros(20 * 24), observed])  # an agent that went live 10 days ago
    fc = forecast.fit(launched, START - timedelta(days=20))
    assert fc is not None
    assert fc.fitted_hours == 10 * 24
    assert fc.start == START + timedelta(days=10)
    assert fc.explanation.startswith("Fitted on 10 days of hourly traffic")
    assert fc.mean_rps[: 7 * 24].mean() == pytest.approx(observed[-7 * 24 :].mean(), rel=0.1)


def test_the_band_widens_with_the_horizon_and_faster_after_a_short_history():
    widening = {}
    for days in (OBSERVED_DAYS, 4):
        _, observed = synthetic(days, growth=0.01, day_noise=0.05, seed=7)
        fc = forecast.fit(observed, START)
        assert fc is not None
        assert np.all(fc.low_rps < fc.high_rps)
        width = np.log(fc.high_rps / fc.low_rps)
        widening[days] = width[-7 * 24 :].mean() / width[: 7 * 24].mean()
    assert widening[OBSERVED_DAYS] > 1.1
    assert widening[4] > 2.5


def test_the_explanation_names_its_numbers():
    _, observed = synthetic(OBSERVED_DAYS, growth=0.02, day_noise=0.03, seed=8)
    fc = forecast.fit(observed, START)
    assert fc is not None
    assert fc.backtest_mape is not None
    assert fc.explanation.startswith("Fitted on 28 days of hourly traffic with daily and weekly cycles and a +")
    assert f"backtest error {100 * fc.backtest_mape:.1f}% on the last 7 days." in fc.explanation
    assert fc.backtest_mape == forecast.backtest(observed, START)
    trend = re.search(r"a ([+-]\d+\.\d)%/day trend", fc.explanation)
    assert trend is not None
    assert float(trend.group(1)) == pytest.approx(2.0, abs=0.3)


def test_a_short_history_says_what_it_could_not_fit():
    _, observed = synthetic(10, growth=0.01, day_noise=0.05, seed=2)
    fc = forecast.fit(observed, START)
    assert fc is not None
    assert fc.backtest_mape is None
    assert "10 days" in fc.explanation
    assert "weekend shape (weekday levels need 14 days)" in fc.explanation
    assert "no backtest yet (it needs 14 days of history)" in fc.explanation
    # Without a whole weekend, only a daily cycle (3 days from a Monday).
    monday = START + timedelta(days=2)
    fc = forecast.fit(observed[48 : 48 + 72], monday)
    assert fc is not None
    assert "a daily cycle (no whole weekend seen yet)" in fc.explanation


def test_a_busier_monday_is_forecast_as_one():
    _, observed = synthetic(OBSERVED_DAYS, monday=1.4, day_noise=0.05, seed=4)
    fc = forecast.fit(observed, START, reach_hours=14 * 24)
    assert fc is not None
    by_day = fc.mean_rps.reshape(14, 24).sum(axis=1)
    weekday = [(fc.start + timedelta(days=d)).weekday() for d in range(14)]
    mondays = np.mean([by_day[d] for d in range(14) if weekday[d] == 0])
    tuesdays = np.mean([by_day[d] for d in range(14) if weekday[d] == 1])
    assert mondays / tuesdays == pytest.approx(1.4, abs=0.1)


def test_the_forecast_is_never_negative():
    truth, _ = synthetic(OBSERVED_DAYS, growth=-0.03, rate_rps=0.05)
    observed = np.where(truth < np.quantile(truth, 0.4), 0.0, truth)  # nights without traffic, shrinking days
    fc = forecast.fit(observed, START)
    assert fc is not None
    assert fc.low_rps.min() >= 0
    assert fc.mean_rps.min() >= 0
    assert np.all(fc.low_rps <= fc.mean_rps)
    assert np.all(fc.mean_rps <= fc.high_rps)


def test_hours_are_the_forecast_timestamps():
    _, observed = synthetic(5)
    fc = forecast.fit(observed, START + timedelta(hours=7), reach_hours=48)
    assert fc is not None
    assert fc.start == START + timedelta(hours=7 + 5 * 24)
    assert len(fc.mean_rps) == len(fc.low_rps) == len(fc.high_rps) == 48
    assert fc.hours(3) == [fc.start, fc.start + timedelta(hours=1), fc.start + timedelta(hours=2)]
    assert len(fc.hours()) == 48
    assert fc.hours()[-1] == fc.start + timedelta(hours=47)


def test_bad_input_is_refused():
    _, observed = synthetic(5)
    with pytest.raises(ValueError, match="timezone-aware"):
        forecast.fit(observed, datetime(2025, 1, 4))
    with pytest.raises(ValueError, match="on the hour"):
        forecast.fit(observed, START + timedelta(minutes=30))
    with pytest.raises(ValueError, match="non-negative"):
        forecast.fit(-observed, START)
