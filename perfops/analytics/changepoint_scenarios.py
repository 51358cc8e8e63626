"""Labelled hourly latency and error series with known steps, to measure the change-point detector (seeded).

Seven days, hourly. Requests follow a daily cycle (20 to 500 an hour); each hour's p95 is computed from
that many lognormal latencies (with 0.5% outliers), under a daily latency curve, a day-to-day wobble of
about 2% and a slow drift of up to 3% over the week. Errors: a base rate of 0.5% to 2%, a little higher
at busy hours, with gamma noise per day and per hour, drawn binomially. A step, when there is one,
multiplies latency (+15% to +100%) or adds points to the error rate (+1 to +5) from a random hour at
least 12 hours from either end. One series in ten loses a few hours entirely (no requests: NaN p95).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

UNCHANGED, LATENCY, ERRORS = "unchanged", "latency", "errors"
HOURS = 7 * 24
MARGIN_HOURS = 12
START = datetime(2026, 11, 23, tzinfo=UTC)


@dataclass(frozen=True)
class Series:
    kind: str
    size: float  # the latency step (0.25 = +25%) or the error step in points; 0 when unchanged
    step_index: int  # first hour of the new regime, -1 when unchanged
    p95_ms: np.ndarray
    counts: np.ndarray
    failures: np.ndarray
    first_hour: datetime


def hourly_p95(rng: np.random.Generator, level: np.ndarray, counts: np.ndarray, sigma: float) -> np.ndarray:
    """The p95 of each hour's lognormal latencies (0.5% of them outliers x3 to x10), NaN without requests."""
    total = int(counts.sum())
    latencies = np.repeat(level, counts) * rng.lognormal(0.0, sigma, total)
    outliers = rng.random(total) < 0.005
    latencies[outliers] *= rng.uniform(3, 10, int(outliers.sum()))
    # One sort for all hours: the hour is the integer part of the key, the log latency its fraction, so
    # each hour's latencies come out together and in order; then np.quantile's interpolation.
    logs = np.log(latencies)
    lowest, span = (float(logs.min()), float(np.ptp(logs)) + 1.0) if total else (0.0, 1.0)
    key = np.repeat(np.arange(len(counts)), counts) + (logs - lowest) / span
    ordered = latencies[np.argsort(key)]
    starts = np.cumsum(counts) - counts
    position = starts + 0.95 * np.maximum(counts - 1, 0)
    low = np.floor(position).astype(np.int64).clip(max=max(total - 1, 0))
    high = np.ceil(position).astype(np.int64).clip(max=max(total - 1, 0))
    p95 = np.full(len(counts), np.nan)
    has = counts > 0
    fraction = position - np.floor(position)
    p95[has] = ordered[low[has]] + fraction[has] * (ordered[high[has]] - ordered[low[has]])
    return p95


def generate(seed: int, kind: str = UNCHANGED, size: float = 0.0) -> Series:
    rng = np.random.default_rng(seed)
    first_hour = START + timedelta(hours=int(rng.integers(0, 24)))
    moments = first_hour.hour + np.arange(HOURS)
    hour_of_day, day = moments % 24, (moments - first_hour.hour) // 24
    peak = float(np.exp(rng.uniform(np.log(60), np.log(500))))
    traffic = 1 + float(rng.uniform(0.3, 0.6)) * np.sin(2 * np.pi * (hour_of_day - rng.uniform(0, 24)) / 24)
    counts = rng.poisson(np.clip(peak * traffic / traffic.max(), 20, 500))
    if rng.random() < 0.1:
        counts[rng.choice(HOURS, int(rng.integers(1, 6)), replace=False)] = 0

    step_index = -1 if kind == UNCHANGED else int(rng.integers(MARGIN_HOURS, HOURS - MARGIN_HOURS + 1))
    after = np.arange(HOURS) >= step_index if step_index >= 0 else np.zeros(HOURS, dtype=bool)

    median = float(rng.uniform(300, 3000))
    sigma = float(rng.uniform(0.35, 0.7))
    curve = 1 + float(rng.uniform(0.1, 0.35)) * np.sin(2 * np.pi * (hour_of_day - rng.uniform(0, 24)) / 24)
    wobble = rng.lognormal(0.0, 0.02, 8)[day]
    drift = 1 + float(rng.uniform(-0.03, 0.03)) * np.arange(HOURS) / HOURS
    level = median * curve * wobble * drift * np.where(after & (kind == LATENCY), 1 + size, 1.0)
    p95 = hourly_p95(rng, level, counts, sigma)

    base_rate = float(rng.uniform(0.005, 0.02))
    load = 1 + float(rng.uniform(0, 0.3)) * (traffic - 1)
    day_noise = rng.gamma(1 / 0.15**2, 0.15**2, 8)[day]
    hour_noise = rng.gamma(1 / 0.2**2, 0.2**2, HOURS)
    rate = base_rate * load * day_noise * hour_noise + np.where(after & (kind == ERRORS), size / 100, 0.0)
    failures = rng.binomial(counts, np.clip(rate, 0, 1))
    return Series(kind, size, step_index, p95, counts, failures, first_hour)
