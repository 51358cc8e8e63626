"""Configuration recommendations from an agent's own requests, each with its evidence and expected effect.

Pure: arrays in, proposals out. Three rules, each a claim that the numbers must support:

- Prompt caching: the LLM dominates latency (its median share of a request >= 60%) and few requests
  hit a cache (< 15%), with prompt caching off, over at least 300 successful requests. The expected
  effect is measured from the agent's own cached and uncached requests when it has at least 30 of
  each; otherwise it says it cannot be.
- Timeout: timeouts are frequent (>= 0.5% of requests, >= 20) and cluster at one cut-off (the middle
  half of their latencies within 5% of their median), and the successful requests run right up to it, as a
  continuous tail would: a lognormal fitted to all requests (timeouts as right-censored at the cut-off)
  predicts how many requests finish between the cut-off and a higher one. When requests stop well
  before the cut-off (timeouts are hangs, not a tail: the fit predicts under a third of the observed
  requests just below it), a longer timeout would only hold them longer, and nothing is proposed.
- Concurrency: latency rises with throughput (hourly P95 against requests/s: Spearman rho >= 0.6,
  p < 0.001, busy-hour P95 >= 1.3x the quiet hours'). Little's law gives the requests in flight at
  each hour; the proposed limit is the in-flight level of the busiest hours that were still as fast
  as quiet ones (the knee), when that is below both the current limit and what busy hours reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

PROMPT_CACHE, TIMEOUT, CONCURRENCY = "prompt_cache", "timeout", "concurrency"

LLM_SHARE = 0.6
LOW_HIT_RATE = 0.15
MIN_CACHE_REQUESTS = 300
MIN_CACHE_GROUP = 30
MIN_TIMEOUTS = 20
TIMEOUT_SHARE = 0.005
CLUSTER = 0.05
MIN_HOURS = 48
MIN_HOUR_REQUESTS = 20
RHO = 0.6
BUSY_RATIO = 1.3
MAX_TIMEOUT_MS = 600_000


@dataclass(frozen=True)
class Proposal:
    """A configuration change the evidence supports (the fields of a Recommendation row)."""

    kind: str
    title: str
    rationale: str
    expected_effect: str
    changes: dict[str, Any]
    evidence: dict[str, Any] = field(default_factory=dict)


def _s(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:,.0f} ms"


def prompt_caching(
    latency_ms: np.ndarray, llm_ms: np.ndarray, cache_hit: np.ndarray, *, prompt_cache_on: bool
) -> Proposal | None:
    """Successful requests' latency, the time each spent in LLM calls, and whether each hit a cache."""
    latency_ms, llm_ms, cache_hit = (
        np.asarray(latency_ms, float),
        np.asarray(llm_ms, float),
        np.asarray(cache_hit, bool),
    )
    if prompt_cache_on or len(latency_ms) < MIN_CACHE_REQUESTS:
        return None
    share = float(np.median(np.clip(llm_ms / np.maximum(latency_ms, 1e-9), 0.0, 1.0)))
    hit_rate = float(cache_hit.mean())
    if share < LLM_SHARE or hit_rate >= LOW_HIT_RATE:
        return None
    p50 = float(np.median(latency_ms))
    evidence: dict[str, Any] = {
        "requests": len(latency_ms),
        "llm_share_p50": round(share, 3),
        "cache_hit_rate": round(hit_rate, 4),
        "latency_p50_ms": round(p50, 1),
    }
    hits, misses = latency_ms[cache_hit], latency_ms[~cache_hit]
    if len(hits) >= MIN_CACHE_GROUP and len(misses) >= MIN_CACHE_GROUP:
        hit_p50, miss_p50 = float(np.median(hits)), float(np.median(misses))
        evidence |= {"cached_p50_ms": round(hit_p50, 1), "uncached_p50_ms": round(miss_p50, 1)}
        if hit_p50 < miss_p50:
            # If half the requests hit: the median moves about halfway between the two groups' medians.
            expected = (
                f"Measured on this agent: cached requests take {_s(hit_p50)} at p50 against {_s(miss_p50)} "
                f"uncached ({1 - hit_p50 / miss_p50:.0%} less); at a 50% hit rate the p50 would fall by about "
                f"{_s((miss_p50 - hit_p50) / 2)}."
            )
        else:
            expected = (
                f"Not supported by this agent's own requests: cached ones take {_s(hit_p50)} at p50, "
                f"uncached {_s(miss_p50)}. Apply only to test it, and watch the cache hit rate."
            )
    else:
        expected = (
            f"Cannot be measured yet ({len(hits)} cached requests); the LLM's {share:.0%} of the "
            f"{_s(p50)} p50 is the most it could save. Watch the cache hit rate and P50 after applying."
        )
    return Proposal(
        PROMPT_CACHE,
        "Enable prompt caching",
        f"The LLM takes {share:.0%} of a typical request ({_s(share * p50)} of {_s(p50)} at p50) and only "
        f"{hit_rate:.1%} of {len(latency_ms):,} requests hit a cache; prompt caching is off.",
        expected,
        {"prompt_cache": True},
        evidence,
    )


def _censored_lognormal(ok: np.ndarray, cutoff: float, censored: int) -> tuple[float, float]:
    """(mu, sigma) of log latency, the timeouts counted as lasting at least `cutoff` (maximum likelihood)."""
    logs = np.log(np.maximum(ok, 1e-3))
    log_cut = math.log(cutoff)

    def negative(params: np.ndarray) -> float:
        mu, log_sigma = params
        sigma = math.exp(log_sigma)
        return -float(stats.norm.logpdf(logs, mu, sigma).sum() + censored * stats.norm.logsf(log_cut, mu, sigma))

    start = np.array([float(np.mean(logs)), math.log(max(float(np.std(logs)), 1e-3))])
    found = optimize.minimize(negative, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-4})
    return float(found.x[0]), math.exp(float(found.x[1]))


def timeout(latency_ms: np.ndarray, timed_out: np.ndarray, *, timeout_ms: int | None) -> Proposal | None:
    """All requests' latency and whether each timed out; `timeout_ms` is the configured one, if any."""
    latency_ms, timed_out = np.asarray(latency_ms, float), np.asarray(timed_out, bool)
    n, censored = len(latency_ms), int(timed_out.sum())
    if censored < MIN_TIMEOUTS or censored < TIMEOUT_SHARE * n:
        return None
    cut = latency_ms[timed_out]
    cutoff = float(np.median(cut))
    low, high = np.quantile(cut, [0.25, 0.75])
    if (high - low) > CLUSTER * cutoff:
        return None  # timeouts at many different times: no single cut-off to move
    ok = latency_ms[~timed_out & (latency_ms < cutoff)]
    if len(ok) < 100:
        return None
    mu, sigma = _censored_lognormal(ok, cutoff, censored)
    dist = stats.lognorm(s=sigma, scale=math.exp(mu))
    # Do requests run up to the cut-off, as the fitted tail says they should?
    near = int(((ok >= 0.8 * cutoff) & (ok < cutoff)).sum())
    expected_near = n * float(dist.cdf(cutoff) - dist.cdf(0.8 * cutoff))
    if expected_near <= 0 or near < expected_near / 3:
        return None
    beyond = float(dist.sf(cutoff))
    target = float(dist.isf(0.1 * beyond))  # where 90% of the would-be timeouts have finished
    proposed = int(min(MAX_TIMEOUT_MS, math.ceil(min(max(target, 1.25 * cutoff), 3 * cutoff) / 1000) * 1000))
    if proposed <= cutoff or (timeout_ms is not None and proposed <= timeout_ms):
        return None
    finish = (beyond - float(dist.sf(proposed))) / beyond if beyond > 0 else 0.0
    recovered = round(finish * censored)
    share = censored / n
    configured = f" (configured {_s(timeout_ms)})" if timeout_ms else ""
    return Proposal(
        TIMEOUT,
        f"Raise the timeout to {_s(proposed)}",
        f"{censored:,} of {n:,} requests ({share:.1%}) timed out, clustered at {_s(cutoff)}{configured} (the "
        f"middle half within {high - low:,.0f} ms of each other), "
        f"and {near:,} successful requests finished in the last 20% before it ({expected_near:,.0f} expected "
        "from the fitted tail): requests are cut off while still running, not hung.",
        f"About {recovered:,} of the {censored:,} timeouts ({finish:.0%}) would finish within {_s(proposed)}, "
        f"so failures fall by about {recovered / n:.2%} of requests; those requests take up to "
        f"{_s(proposed)} instead of failing at {_s(cutoff)}.",
        {"timeout_ms": proposed},
        {
            "requests": n,
            "timeouts": censored,
            "cutoff_ms": round(cutoff, 1),
            "near_cutoff": near,
            "near_cutoff_expected": round(expected_near, 1),
            "lognormal_mu": round(mu, 4),
            "lognormal_sigma": round(sigma, 4),
            "recovered": recovered,
        },
    )


def concurrency(
    rps: np.ndarray, p95_ms: np.ndarray, mean_ms: np.ndarray, counts: np.ndarray, *, current: int | None
) -> Proposal | None:
    """Hourly throughput (req/s), P95, mean latency and request counts of one agent; `current` the limit."""
    rps, p95_ms, mean_ms, counts = (np.asarray(a, float) for a in (rps, p95_ms, mean_ms, counts))
    keep = (counts >= MIN_HOUR_REQUESTS) & np.isfinite(p95_ms) & np.isfinite(mean_ms)
    rps, p95_ms, mean_ms = rps[keep], p95_ms[keep], mean_ms[keep]
    if len(rps) < MIN_HOURS:
        return None
    rho, p_value = stats.spearmanr(rps, p95_ms)
    if not (rho >= RHO and p_value < 0.001):
        return None
    quiet = rps <= np.median(rps)
    busy = rps >= np.quantile(rps, 0.75)
    quiet_p95, busy_p95 = float(np.median(p95_ms[quiet])), float(np.median(p95_ms[busy]))
    if busy_p95 < BUSY_RATIO * quiet_p95:
        return None
    in_flight = rps * mean_ms / 1000.0  # Little's law: arrivals per second x seconds each stays
    fast = p95_ms <= 1.1 * quiet_p95
    if not fast.any():
        return None
    knee = float(np.quantile(in_flight[fast], 0.9))
    busiest = float(in_flight.max())
    proposed = max(1, math.ceil(knee * 1.1))
    if proposed >= busiest or (current is not None and proposed >= current):
        return None
    top = int(np.argmax(rps))
    return Proposal(
        CONCURRENCY,
        f"Lower concurrency to {proposed}",
        f"P95 rises with traffic over {len(rps)} hours (Spearman rho {rho:.2f}): {_s(busy_p95)} in the busiest "
        f"quarter of hours against {_s(quiet_p95)} in the quieter half. Requests in flight (throughput x mean "
        f"latency) reach {busiest:.1f}; up to {knee:.1f} in flight, P95 stayed within 10% of quiet hours.",
        f"Busy-hour P95 closer to {_s(quiet_p95)}: beyond {proposed} requests in flight, work waits in the "
        f"queue instead of contending (at the busiest hour, {rps[top]:.2f} req/s, about {in_flight[top]:.1f} "
        "were in flight). Watch P95 and the error rate at the next peak.",
        {"concurrency": proposed},
        {
            "hours": len(rps),
            "spearman_rho": round(float(rho), 3),
            "quiet_p95_ms": round(quiet_p95, 1),
            "busy_p95_ms": round(busy_p95, 1),
            "knee_in_flight": round(knee, 2),
            "max_in_flight": round(busiest, 2),
        },
    )
