"""Labelled hourly error series with known bursts, to measure the anomaly detector (seeded, no database).

Each series is 7 to 14 days of one agent's hourly requests (a daily cycle, a weekend dip, 10 to 2,000
requests an hour on average) and the failures of one error type: a base rate of 0.1% to 3% (log-uniform),
a little higher at busy hours, with gamma noise from day to day and from hour to hour, drawn binomially.
A quarter of the series are noisy (far more hour-to-hour noise). A burst, when there is one, lasts 1 to
3 hours inside the last 3 hours and raises the rate to a multiple of the base rate (x3, x5, x10) or by
points (+2, +5, +10), on top of the usual noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

UNCHANGED, TIMES, POINTS = "unchanged", "times", "points"
RECENT_HOURS = 3
START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday


@dataclass(frozen=True)
class Series:
    kind: str
    size: float  # the rate multiplier (TIMES) or the points added (POINTS); 0 when unchanged
    volume: float  # mean requests an hour
    base_rate: float
    noisy: bool
    burst_hours: int  # 0 when unchanged
    burst_failures: float  # expected failures during the burst (before the noise)
    failures: np.ndarray
    requests: np.ndarray
    first_hour: datetime


def _gamma(rng: np.random.Generator, cv: float, size: int) -> np.ndarray:
    """Multipliers of mean 1 and coefficient of variation `cv`."""
    return rng.gamma(1 / cv**2, cv**2, size)


def generate(seed: int, kind: str = UNCHANGED, size: float = 0.0) -> Series:
    rng = np.random.default_rng(seed)
    days = int(rng.integers(7, 15))
    hours = days * 24
    first_hour = START + timedelta(hours=int(rng.integers(0, 7 * 24)))
    moments = first_hour.hour + np.arange(hours)
    hour_of_day, weekday = moments % 24, (first_hour.weekday() + moments // 24) % 7
    volume = float(np.exp(rng.uniform(np.log(10), np.log(2000))))
    amplitude, phase = float(rng.uniform(0.3, 0.8)), float(rng.uniform(0, 24))
    cycle = 1 + amplitude * np.sin(2 * np.pi * (hour_of_day - phase) / 24)
    weekend = np.where(weekday >= 5, float(rng.uniform(0.3, 0.8)), 1.0)
    requests = rng.poisson(volume * cycle * weekend)

    base_rate = float(np.exp(rng.uniform(np.log(0.001), np.log(0.03))))
    noisy = bool(rng.random() < 0.25)
    day_cv = float(rng.uniform(0.3, 0.6) if noisy else rng.uniform(0.1, 0.4))
    hour_cv = float(rng.uniform(0.5, 0.8) if noisy else rng.uniform(0.1, 0.3))
    load = 1 + float(rng.uniform(0, 0.5)) * (cycle - 1)  # errors a little more frequent at busy hours
    day = _gamma(rng, day_cv, days + 1)[(moments - first_hour.hour) // 24]
    rate = base_rate * load * day * _gamma(rng, hour_cv, hours)

    burst_hours, burst_failures = 0, 0.0
    if kind != UNCHANGED:
        burst_hours = int(rng.integers(1, RECENT_HOURS + 1))
        start = hours - RECENT_HOURS + int(rng.integers(0, RECENT_HOURS - burst_hours + 1))
        burst = slice(start, start + burst_hours)
        usual = base_rate * load[burst] * requests[burst]
        # The burst adds its failures to the usual noisy ones: x5 is four times the base rate more.
        extra = (size - 1) * base_rate * load[burst] if kind == TIMES else np.full(burst_hours, size / 100)
        rate[burst] += extra
        burst_failures = float((usual + extra * requests[burst]).sum())
    failures = rng.binomial(requests, np.clip(rate, 0, 1))
    return Series(kind, size, volume, base_rate, noisy, burst_hours, burst_failures, failures, requests, first_hour)
