"""Labelled deploy scenarios with known truth, to measure the regression detector (seeded, no database).

Each scenario is one agent's previous version (seven days of history for the hour-of-day profile and
the day before the deploy as the baseline) and its next version (the hours after the deploy), drawn
from a lognormal latency with outliers, a daily cycle, a per-deploy drift of up to 3% and a small
error rate. The next version is either unchanged, slower (the whole distribution, or only a tail of
requests as a slow dependency would, tuned so that p95 moves by exactly the shift), or failing more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perfops.analytics.regression import Sample

UNCHANGED, WHOLE, TAIL, ERRORS = "unchanged", "whole", "tail", "errors"


@dataclass(frozen=True)
class Scenario:
    kind: str
    size: float  # the p95 shift (0.2 = +20%) or the error increase in points
    history: Sample
    baseline: Sample
    candidate: Sample


def _tail_factor(rng: np.random.Generator, sigma: float, shift: float, share: float) -> float:
    """The slowdown of `share` of the requests that moves p95 by `shift` (bisection on a large sample)."""
    reference = rng.lognormal(0.0, sigma, 40_000)
    target = float(np.quantile(reference, 0.95)) * (1 + shift)
    chosen = rng.random(len(reference)) < share
    low, high = 1.0, 50.0
    for _ in range(40):
        middle = (low + high) / 2
        moved = np.where(chosen, reference * middle, reference)
        if np.quantile(moved, 0.95) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def generate(seed: int, kind: str, size: float, n_candidate: int) -> Scenario:
    rng = np.random.default_rng(seed)
    median = float(rng.uniform(300, 3000))
    sigma = float(rng.uniform(0.35, 0.7))
    amplitude = float(rng.uniform(0.1, 0.35))
    phase = float(rng.uniform(0, 24))
    error_rate = float(rng.uniform(0.005, 0.03))

    def requests(n: int, hours: np.ndarray, level: float, errors: float) -> Sample:
        cycle = 1 + amplitude * np.sin(2 * np.pi * (hours - phase) / 24)
        latency = median * level * cycle * rng.lognormal(0.0, sigma, n)
        outliers = rng.random(n) < 0.005
        latency[outliers] *= rng.uniform(3, 10, int(outliers.sum()))
        return Sample.of(latency, rng.random(n) < errors, hours)

    deploy_hour = int(rng.integers(0, 24))
    history_hours = rng.integers(0, 24, 4000)
    baseline_hours = rng.integers(0, 24, int(rng.integers(500, 3000)))
    # The candidate's traffic is the hours after the deploy: a different mix of the day than the baseline's.
    span = int(rng.integers(4, 13))
    candidate_hours = (deploy_hour + rng.integers(0, span, n_candidate)) % 24
    history = requests(len(history_hours), history_hours, 1.0, error_rate)
    baseline = requests(len(baseline_hours), baseline_hours, 1.0, error_rate)
    drift = float(rng.uniform(0.97, 1.03))
    if kind == ERRORS:
        candidate = requests(n_candidate, candidate_hours, drift, error_rate + size / 100)
    else:
        candidate = requests(n_candidate, candidate_hours, drift * (1 + size if kind == WHOLE else 1.0), error_rate)
        if kind == TAIL:
            share = 0.10
            factor = _tail_factor(rng, sigma, size, share)
            slow = rng.random(n_candidate) < share
            latency = candidate.latency_ms.copy()
            latency[slow] *= factor
            candidate = Sample(latency, candidate.failed, candidate.hour)
    return Scenario(kind, size, history, baseline, candidate)
