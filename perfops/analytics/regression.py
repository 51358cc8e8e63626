"""Is a new version of an agent worse than the one before it? A decision with its evidence.

Pure statistics on two samples of requests (latency, failed, hour of day): no database.

- Latency, two one-sided tests (Bonferroni over the three tests: alpha / 4 for location and errors,
  alpha / 2 for the tail, the test with the least power):
  - location: Mann-Whitney U on log latency of successful requests, with the Hodges-Lehmann shift as
    the effect (a ratio: 1.15 means requests are typically 15% slower);
  - tail: the share of requests above the baseline's p95, candidate against baseline (a two-proportion
    z-test), with the p95 ratio as the effect. A regression that only slows some requests (a slow
    dependency) moves the tail, not the median.
  Each needs its effect to clear a minimum (7% for the shift, 10% for the p95), so a large sample
  does not flag a negligible change.
- Errors: a one-sided two-proportion z-test on the failure share, at least half a point worse.
- Daily cycles: latencies are divided by the agent's hour-of-day profile (a smooth daily curve fitted
  to the baseline's history) before they are compared, so a version that went out in the evening
  rush is not judged against the quiet morning.
- Too few requests on either side (under `min_requests`): "insufficient", never a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient"
MIN_REQUESTS = 200
ALPHA = 0.01
MIN_SHIFT = 1.07  # smaller typical shifts are within the day-to-day drift of an agent (a few %)
MIN_P95_RATIO = 1.10
MIN_ERROR_POINTS = 0.5
# The hour-of-day curve needs most of the day in the history, and never moves latency by more than 3x.
MIN_HOURS_COVERED = 18
MAX_HOUR_EFFECT = math.log(3.0)
HL_SAMPLE = 1500  # pairs for the Hodges-Lehmann estimate: 1,500 x 1,500 differences


@dataclass(frozen=True)
class Sample:
    """Requests of one version: latency (ms), whether each failed, and its UTC hour of day."""

    latency_ms: np.ndarray
    failed: np.ndarray
    hour: np.ndarray

    @classmethod
    def of(cls, latency_ms: Any, failed: Any, hour: Any) -> Sample:
        return cls(
            np.asarray(latency_ms, dtype=np.float64),
            np.asarray(failed, dtype=bool),
            np.asarray(hour, dtype=np.int64) % 24,
        )

    def __len__(self) -> int:
        return len(self.latency_ms)


def hour_profile(history: Sample, min_requests: int = 200) -> np.ndarray:
    """Log-latency offset of each UTC hour from the day's typical level: a smooth daily curve.

    Fitted by least squares on the log latency of successful requests with two harmonics (24 h and
    12 h), the extremes trimmed; a per-hour median would be noisier by far (a few dozen requests an
    hour) and its noise would read as a difference between versions. Zeros without enough history.
    """
    ok = ~history.failed & (history.latency_ms > 0)
    logs, hours = np.log(history.latency_ms[ok]), history.hour[ok].astype(np.float64)
    covered = int((np.bincount(history.hour[ok], minlength=24) >= 10).sum())
    if len(logs) < min_requests or covered < MIN_HOURS_COVERED:
        return np.zeros(24)  # a curve fitted to part of the day would invent the rest
    low, high = np.quantile(logs, [0.01, 0.99])
    keep = (logs >= low) & (logs <= high)
    logs, hours = logs[keep], hours[keep]

    def design(h: np.ndarray) -> np.ndarray:
        angle = 2 * np.pi * h / 24
        return np.column_stack([np.ones_like(h), np.sin(angle), np.cos(angle), np.sin(2 * angle), np.cos(2 * angle)])

    coefficients, *_ = np.linalg.lstsq(design(hours), logs, rcond=None)
    curve = design(np.arange(24, dtype=np.float64)) @ coefficients
    return np.clip(curve - curve.mean(), -MAX_HOUR_EFFECT, MAX_HOUR_EFFECT)


@dataclass
class Decision:
    verdict: str
    requests: dict[str, int]
    latency: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "requests": self.requests,
            "latency": self.latency,
            "errors": self.errors,
            "reasons": self.reasons,
        }


def _adjusted_logs(sample: Sample, profile: np.ndarray | None) -> np.ndarray:
    ok = ~sample.failed & (sample.latency_ms > 0)
    logs = np.log(sample.latency_ms[ok])
    if profile is not None:
        logs = logs - profile[sample.hour[ok]]
    return logs


def _hodges_lehmann(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> float:
    """Median of all pairwise differences b - a (subsampled): the typical shift, robust to outliers."""
    if len(a) > HL_SAMPLE:
        a = rng.choice(a, HL_SAMPLE, replace=False)
    if len(b) > HL_SAMPLE:
        b = rng.choice(b, HL_SAMPLE, replace=False)
    return float(np.median(np.subtract.outer(b, a)))


def _one_sided_proportions(k_b: int, n_b: int, k_c: int, n_c: int) -> float:
    """p-value that the candidate's share is larger (pooled two-proportion z-test)."""
    pooled = (k_b + k_c) / (n_b + n_c)
    if pooled <= 0 or pooled >= 1:
        return 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_b + 1 / n_c))
    z = (k_c / n_c - k_b / n_b) / se
    return float(stats.norm.sf(z))


def compare(
    baseline: Sample,
    candidate: Sample,
    profile: np.ndarray | None = None,
    *,
    alpha: float = ALPHA,
    min_requests: int = MIN_REQUESTS,
    seed: int = 0,
) -> Decision:
    """Pass, fail or insufficient, with the effect sizes, p-values and sample sizes that decided it."""
    requests = {"baseline": len(baseline), "candidate": len(candidate)}
    if len(baseline) < min_requests or len(candidate) < min_requests:
        short = "baseline" if len(baseline) < min_requests else "candidate"
        return Decision(
            INSUFFICIENT,
            requests,
            reasons=[f"The {short} has {requests[short]} requests; at least {min_requests} are needed."],
        )
    rng = np.random.default_rng(seed)
    # The tail test gets half of alpha (it has the least power); the location and error tests a quarter each.
    location_alpha, tail_alpha, error_alpha = alpha / 4, alpha / 2, alpha / 4
    decision = Decision(PASS, requests)
    a, b = _adjusted_logs(baseline, profile), _adjusted_logs(candidate, profile)
    if len(a) >= min_requests // 2 and len(b) >= min_requests // 2:
        location = stats.mannwhitneyu(b, a, alternative="greater")
        shift = math.exp(_hodges_lehmann(a, b, rng))
        threshold = float(np.quantile(a, 0.95))
        above_a, above_b = int((a > threshold).sum()), int((b > threshold).sum())
        tail_p = _one_sided_proportions(above_a, len(a), above_b, len(b))
        p95_a, p95_b = float(np.exp(np.quantile(a, 0.95))), float(np.exp(np.quantile(b, 0.95)))
        raw = {q: (float(np.quantile(np.exp(a), q)), float(np.quantile(np.exp(b), q))) for q in (0.5, 0.95, 0.99)}
        decision.latency = {
            "p50_ms": {"baseline": round(raw[0.5][0], 2), "candidate": round(raw[0.5][1], 2)},
            "p95_ms": {"baseline": round(raw[0.95][0], 2), "candidate": round(raw[0.95][1], 2)},
            "p99_ms": {"baseline": round(raw[0.99][0], 2), "candidate": round(raw[0.99][1], 2)},
            "shift_ratio": round(shift, 4),
            "shift_p_value": float(location.pvalue),
            "p95_ratio": round(p95_b / p95_a, 4),
            "tail_share": {"baseline": round(above_a / len(a), 4), "candidate": round(above_b / len(b), 4)},
            "tail_p_value": tail_p,
            "hour_adjusted": profile is not None,
        }
        if location.pvalue < location_alpha and shift >= MIN_SHIFT:
            decision.verdict = FAIL
            decision.reasons.append(
                f"Requests are typically {100 * (shift - 1):.0f}% slower (Hodges-Lehmann shift, "
                f"Mann-Whitney p={location.pvalue:.1e}, {len(a)} vs {len(b)} requests)."
            )
        if tail_p < tail_alpha and p95_b / p95_a >= MIN_P95_RATIO:
            decision.verdict = FAIL
            decision.reasons.append(
                f"p95 {p95_a:,.0f} -> {p95_b:,.0f} ms ({100 * (p95_b / p95_a - 1):+.0f}%): "
                f"{100 * above_b / len(b):.1f}% of requests above the old p95 instead of "
                f"{100 * above_a / len(a):.1f}% (p={tail_p:.1e})."
            )
    k_a, k_b = int(baseline.failed.sum()), int(candidate.failed.sum())
    rate_a, rate_b = k_a / len(baseline), k_b / len(candidate)
    error_p = _one_sided_proportions(k_a, len(baseline), k_b, len(candidate))
    decision.errors = {
        "baseline_rate": round(rate_a, 5),
        "candidate_rate": round(rate_b, 5),
        "points": round(100 * (rate_b - rate_a), 3),
        "p_value": error_p,
    }
    if error_p < error_alpha and 100 * (rate_b - rate_a) >= MIN_ERROR_POINTS:
        decision.verdict = FAIL
        decision.reasons.append(
            f"Errors {100 * rate_a:.2f}% -> {100 * rate_b:.2f}% "
            f"({100 * (rate_b - rate_a):+.2f} points, p={error_p:.1e})."
        )
    if decision.verdict == PASS:
        decision.reasons.append(
            f"No significant slowdown or error increase ({len(baseline)} vs {len(candidate)} requests; "
            f"shift {100 * (decision.latency.get('shift_ratio', 1) - 1):+.1f}%, "
            f"p95 {100 * (decision.latency.get('p95_ratio', 1) - 1):+.1f}%, "
            f"errors {decision.errors['points']:+.2f} points)."
        )
    return decision
