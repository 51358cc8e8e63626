"""Configuration recommendations on seeded requests whose truth is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perfops.analytics import recommend
from tests.analytics.test_regression import OUT


def llm_heavy(rng: np.random.Generator, n: int, hit_rate: float, cached_speedup: float = 0.4):
    """Requests where the LLM takes ~70% of the time; a cache hit cuts the LLM part by `cached_speedup`."""
    llm = rng.lognormal(np.log(1400), 0.3, n)
    rest = rng.lognormal(np.log(500), 0.3, n)
    hit = rng.random(n) < hit_rate
    llm = np.where(hit, llm * (1 - cached_speedup), llm)
    return llm + rest, llm, hit


def test_prompt_caching_is_proposed_when_the_llm_dominates_and_hits_are_rare():
    rng = np.random.default_rng(1)
    latency, llm, hit = llm_heavy(rng, 3000, hit_rate=0.05)
    proposal = recommend.prompt_caching(latency, llm, hit, prompt_cache_on=False)
    assert proposal is not None
    assert proposal.changes == {"prompt_cache": True}
    assert proposal.rationale.startswith("The LLM takes 7")  # ~70-75% of a typical request
    assert f"{hit.mean():.1%} of 3,000 requests hit a cache" in proposal.rationale
    cached, uncached = np.median(latency[hit]), np.median(latency[~hit])
    assert proposal.evidence["cached_p50_ms"] == pytest.approx(cached, abs=0.1)
    assert "Measured on this agent: cached requests take" in proposal.expected_effect
    assert f"{1 - cached / uncached:.0%} less" in proposal.expected_effect


def test_prompt_caching_without_cached_requests_says_the_effect_cannot_be_measured():
    rng = np.random.default_rng(2)
    latency, llm, hit = llm_heavy(rng, 1000, hit_rate=0.0)
    proposal = recommend.prompt_caching(latency, llm, hit, prompt_cache_on=False)
    assert proposal is not None
    assert proposal.expected_effect.startswith("Cannot be measured yet (0 cached requests)")


@pytest.mark.parametrize(
    ("hit_rate", "llm_scale", "cache_on"),
    [(0.05, 1.0, True), (0.4, 1.0, False), (0.05, 0.1, False)],
    ids=["already on", "hits already common", "llm not dominant"],
)
def test_prompt_caching_is_not_proposed_without_the_evidence(hit_rate, llm_scale, cache_on):
    rng = np.random.default_rng(3)
    latency, llm, hit = llm_heavy(rng, 2000, hit_rate=hit_rate)
    llm = llm * llm_scale
    assert recommend.prompt_caching(latency, llm, hit, prompt_cache_on=cache_on) is None


def cut_at(latency: np.ndarray, cutoff: float, rng: np.random.Generator):
    timed_out = latency >= cutoff
    observed = np.where(timed_out, cutoff + rng.uniform(0, 25, len(latency)), latency)
    return observed, timed_out


def test_a_timeout_that_cuts_a_continuous_tail_is_raised_and_its_effect_matches_the_truth():
    rng = np.random.default_rng(4)
    truth = rng.lognormal(np.log(8000), 0.6, 5000)
    observed, timed_out = cut_at(truth, 20_000, rng)
    proposal = recommend.timeout(observed, timed_out, timeout_ms=20_000)
    assert proposal is not None
    new = proposal.changes["timeout_ms"]
    assert 25_000 <= new <= 60_000
    # Known truth: how many of the timed-out requests would have finished under the new timeout.
    actual = int(((truth >= 20_000) & (truth < new)).sum())
    predicted = proposal.evidence["recovered"]
    (OUT / "recommend_timeout.json").parent.mkdir(parents=True, exist_ok=True)
    (OUT / "recommend_timeout.json").write_text(
        json.dumps({"timeouts": int(timed_out.sum()), "proposed_ms": new, "predicted": predicted, "actual": actual})
    )
    print(f"\ntimeout {new} ms: {predicted} predicted to finish, {actual} would have")
    assert predicted == pytest.approx(actual, rel=0.25)
    assert proposal.title == f"Raise the timeout to {new / 1000:.2f} s"
    assert f"{int(timed_out.sum()):,} of 5,000 requests" in proposal.rationale
    assert f"About {predicted:,} of the {int(timed_out.sum()):,} timeouts" in proposal.expected_effect


def test_hung_requests_do_not_make_a_longer_timeout():
    """Requests finish in about a second, and 2% hang until the 20 s cut-off: waiting longer saves none."""
    rng = np.random.default_rng(5)
    truth = rng.lognormal(np.log(1000), 0.3, 5000)
    hung = rng.random(5000) < 0.02
    truth = np.where(hung, 60_000, truth)
    observed, timed_out = cut_at(truth, 20_000, rng)
    assert recommend.timeout(observed, timed_out, timeout_ms=20_000) is None


def test_timeouts_at_scattered_times_have_no_cut_off_to_move():
    rng = np.random.default_rng(6)
    latency = rng.lognormal(np.log(8000), 0.6, 5000)
    timed_out = rng.random(5000) < 0.03
    assert recommend.timeout(latency, timed_out, timeout_ms=None) is None


def hourly(rng: np.random.Generator, saturating: bool, hours: int = 168):
    """A week of hours with a daily cycle; when saturating, latency grows once more than 8 are in flight."""
    t = np.arange(hours)
    rps = 6.0 + 4.0 * np.sin(2 * np.pi * (t % 24) / 24) + rng.normal(0, 0.2, hours)
    base = 1200.0
    mean = np.full(hours, base) * rng.lognormal(0, 0.03, hours)
    if saturating:
        offered = rps * base / 1000  # in flight at the unloaded latency
        mean = mean * (1 + np.maximum(0.0, offered - 8) / 3)
    p95 = mean * 2.2 * rng.lognormal(0, 0.03, hours)
    counts = (rps * 3600).astype(int)
    return rps, p95, mean, counts


def test_latency_that_rises_with_throughput_lowers_concurrency_to_the_knee():
    rng = np.random.default_rng(7)
    rps, p95, mean, counts = hourly(rng, saturating=True)
    proposal = recommend.concurrency(rps, p95, mean, counts, current=32)
    assert proposal is not None
    assert 8 <= proposal.changes["concurrency"] <= 11  # the knee of the seeded curve is 8 in flight
    assert proposal.evidence["spearman_rho"] >= 0.6
    assert "P95 rises with traffic over 168 hours (Spearman rho 0." in proposal.rationale


@pytest.mark.parametrize(
    ("saturating", "current"), [(False, 32), (True, 6)], ids=["flat latency", "limit already lower"]
)
def test_concurrency_is_left_alone_without_contention_or_room(saturating, current):
    rng = np.random.default_rng(8)
    rps, p95, mean, counts = hourly(rng, saturating=saturating)
    assert recommend.concurrency(rps, p95, mean, counts, current=current) is None


def test_too_few_hours_give_no_concurrency_advice():
    rng = np.random.default_rng(9)
    rps, p95, mean, counts = hourly(rng, saturating=True, hours=30)
    assert recommend.concurrency(rps, p95, mean, counts, current=32) is None
