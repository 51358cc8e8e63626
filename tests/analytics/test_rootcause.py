"""Root cause of slow requests and slower scopes, on seeded requests where the slow part is known."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from perfops.analytics import rootcause
from tests.analytics.test_regression import OUT

PHASES = ("auth", "retrieval", "llm", "postprocess")
CALLS = {"retrieval": "db: orders", "llm": "llm: gpt-x"}
P50 = {"auth": 40.0, "retrieval": 220.0, "llm": 1300.0, "postprocess": 60.0}


def request(rng: np.random.Generator, slow: str | None = None, extra_ms: float = 0.0) -> tuple[float, dict, list]:
    """One request: each phase lognormal around its p50, one call inside retrieval and llm carrying most of it.

    `slow` names a phase (its own work, outside its call, takes `extra_ms` more) or a call (it does).
    """
    phases, calls, start = {}, [], 0.0
    for name in PHASES:
        ms = P50[name] * float(rng.lognormal(0.0, 0.2))
        call_ms = None
        if name in CALLS:
            call_ms = ms * 0.85
            if slow == CALLS[name]:
                call_ms += extra_ms
                ms += extra_ms
            kind, call_name = CALLS[name].split(": ")
            calls.append({"kind": kind, "name": call_name, "start_ms": start, "duration_ms": call_ms})
        if slow == name:
            ms += extra_ms
        phases[name] = ms
        start += ms
    return sum(phases.values()), phases, calls


@pytest.fixture
def base() -> rootcause.Baseline:
    rng = np.random.default_rng(1)
    found = rootcause.baseline(request(rng) for _ in range(400))
    assert found is not None
    return found


def test_the_baseline_is_the_medians_of_the_agents_requests(base):
    assert base.requests == 400
    assert base.phase_p50_ms["llm"] == pytest.approx(1300, rel=0.05)
    assert base.call_p50_ms["llm: gpt-x"] == pytest.approx(1300 * 0.85, rel=0.05)
    assert base.latency_p50_ms == pytest.approx(sum(P50.values()), rel=0.05)


def test_too_few_requests_give_no_baseline():
    rng = np.random.default_rng(2)
    assert rootcause.baseline(request(rng) for _ in range(rootcause.MIN_BASELINE - 1)) is None


def test_a_slow_llm_call_is_named_with_its_model_and_numbers(base):
    phases = {"auth": 40.0, "retrieval": 220.0, "llm": 3300.0, "postprocess": 60.0}
    calls = [
        {"kind": "llm", "name": "gpt-x", "duration_ms": 3100.0},
        {"kind": "db", "name": "orders", "duration_ms": 187},
    ]
    cause = rootcause.explain(sum(phases.values()), phases, calls, base, model="gpt-x")
    assert cause.part == "llm: gpt-x"
    ratio = 3100 / base.call_p50_ms["llm: gpt-x"]
    assert cause.sentence.startswith(f"LLM call gpt-x 3.10 s, {ratio:.1f}x its p50 of ")
    assert re.search(r"\d+% of the [\d.,]+ s this request spent over the agent's p50 of [\d.,]+ s", cause.sentence)
    assert cause.share > 0.8


def test_a_slow_phase_without_a_slow_call_names_the_phase(base):
    phases = {"auth": 900.0, "retrieval": 220.0, "llm": 1300.0, "postprocess": 60.0}
    calls = [{"kind": "llm", "name": "gpt-x", "duration_ms": 1100.0}]
    cause = rootcause.explain(sum(phases.values()), phases, calls, base)
    assert cause.part == "auth"
    assert cause.sentence.startswith("Auth phase 900 ms, ")


def test_a_call_the_agent_rarely_makes_is_all_excess(base):
    phases = {"auth": 40.0, "retrieval": 2220.0, "llm": 1300.0, "postprocess": 60.0}
    calls = [{"kind": "http", "name": "inventory", "duration_ms": 2000.0}]
    cause = rootcause.explain(sum(phases.values()), phases, calls, base)
    assert cause.part == "http: inventory"
    assert cause.sentence.startswith(
        "HTTP call inventory 2.00 s, usually absent or instant (the retrieval phase took 2.22 s)"
    )


def test_a_request_near_the_median_is_not_called_slow(base):
    cause = rootcause.explain(base.latency_p50_ms * 1.1, {}, [], base)
    assert cause.part is None
    assert cause.sentence.startswith("Not slow for this agent")
    assert f"{base.requests:,} recent requests" in cause.sentence


def test_time_outside_the_recorded_phases_is_said_so(base):
    cause = rootcause.explain(base.latency_p50_ms * 3, dict(P50), [], base, status="timeout")
    assert cause.part is None
    assert "outside the recorded phases" in cause.sentence
    assert cause.sentence.endswith("It timed out.")


def test_the_injected_slow_part_is_found(base):
    """Known truth: each request is made slow in one phase or call by 0.5x to 2.5x the agent's p50 latency.

    The natural spread of the other parts (a 1.3 s LLM call varies by a few hundred ms) is the noise the
    attribution has to see through.
    """
    rng = np.random.default_rng(7)
    parts = [*PHASES, *CALLS.values()]
    right, total = 0, 0
    for i in range(600):
        truth = parts[i % len(parts)]
        extra = float(rng.uniform(0.5, 2.5)) * base.latency_p50_ms
        latency, phases, calls = request(rng, truth, extra)
        total += 1
        cause = rootcause.explain(latency, phases, calls, base)
        right += cause.part == truth
    accuracy = right / total
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rootcause.json").write_text(json.dumps({"slow_requests": total, "attributed_right": accuracy}))
    print(f"\nroot cause: {accuracy:.1%} of {total} slow requests attributed to the injected part")
    assert accuracy >= 0.95


def test_a_slower_scope_names_the_phase_and_call_that_carry_the_increase():
    before = {"auth": 40.0, "llm": 1200.0}
    now = {"auth": 42.0, "llm": 2000.0}
    sentence = rootcause.explain_shift(
        2100.0, 1300.0, (now, before), ({"llm: gpt-x": 1900.0}, {"llm: gpt-x": 1100.0}), "in the 24 hours before"
    )
    assert sentence == (
        "Mean latency 2.10 s against 1.30 s in the 24 hours before (+62%): llm: gpt-x carries 100% of the "
        "increase (1.90 s per request against 1.10 s, 1.7x)."
    )


def test_a_scope_that_is_not_slower_has_no_shift_sentence():
    assert rootcause.explain_shift(1350.0, 1300.0, ({}, {}), ({}, {}), "before") is None
