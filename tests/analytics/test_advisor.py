"""Recommendations written from an agent's stored requests, applied through the configuration flow; root causes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from interventions import configs
from interventions.models import AgentConfig, Recommendation
from perfops.analytics import advisor
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def slow_llm_agent(agent, engineer):
    """pay-bot over the last 20 hours: the LLM call is ~75% of each request, 2% cache hits, timeouts at 20 s."""
    rng = np.random.default_rng(11)
    now = datetime.now(UTC).replace(microsecond=0)
    records = []
    for i in range(1500):
        llm = float(rng.lognormal(np.log(6000), 0.6))
        rest = float(rng.lognormal(np.log(1500), 0.3))
        latency = llm + rest
        hit = bool(rng.random() < 0.02)
        status = "timeout" if latency >= 20_000 else "ok"
        if status == "timeout":
            latency = 20_000 + float(rng.uniform(0, 20))
        at = now - timedelta(hours=20) + timedelta(seconds=i * 45)
        records.append(
            factories.record(
                agent="pay-bot",
                latency_ms=round(latency, 1),
                status=status,
                error_type="timeout" if status == "timeout" else "",
                cache_hit=hit,
                started_at=factories.iso(at),
                phases={"auth": 20.0, "retrieval": round(rest - 20, 1), "llm": round(latency - rest, 1)},
                dependencies=[
                    {"name": "gpt-x", "kind": "llm", "start_ms": rest, "duration_ms": round(latency - rest - 5, 1)}
                ],
            )
        )
    client = factories.api_as(engineer, ["ingest"])
    for start in range(0, len(records), 500):
        response = client.post("/api/v1/traces", {"traces": records[start : start + 500]}, format="json")
        assert response.json()["accepted"] == len(records[start : start + 500]), response.json()["rejected"][:1]
    return now


def test_the_advisor_proposes_caching_and_a_longer_timeout_once(slow_llm_agent, agent):
    written = advisor.recommend_for(agent, "production")
    kinds = {r.kind: r for r in written}
    assert set(kinds) == {"prompt_cache", "timeout"}
    caching, longer = kinds["prompt_cache"], kinds["timeout"]
    assert caching.changes == {"prompt_cache": True}
    assert caching.rationale.startswith("The LLM takes ")
    assert caching.evidence["cache_hit_rate"] < 0.05
    assert longer.changes["timeout_ms"] > 20_000
    assert "timed out, clustered at 20.01 s (the middle half within " in longer.rationale
    # Open recommendations are not written again.
    assert advisor.recommend_for(agent, "production") == []
    assert Recommendation.objects.count() == 2


def test_an_applied_recommendation_becomes_a_revertible_configuration_version(slow_llm_agent, agent, manager):
    first = configs.apply(agent, "production", {"timeout_ms": 20_000}, manager)
    written = {r.kind: r for r in advisor.recommend_for(agent, "production")}
    assert "timed out, clustered at 20.01 s (configured 20.00 s)" in written["timeout"].rationale
    config = configs.apply_recommendation(written["timeout"], manager)
    assert (config.version, config.source) == (2, AgentConfig.Source.RECOMMENDATION)
    assert config.timeout_ms == written["timeout"].changes["timeout_ms"] > 20_000
    written["timeout"].refresh_from_db()
    assert written["timeout"].status == Recommendation.Status.APPLIED
    reverted = configs.revert(first, manager)
    assert (reverted.version, reverted.timeout_ms) == (3, 20_000)
    # A decided kind is not proposed again for a week, even though the evidence is unchanged.
    assert [r.kind for r in advisor.recommend_for(agent, "production")] == []


def test_the_hourly_pass_covers_busy_agents_only(slow_llm_agent, agent):
    factories.agent("quiet-bot", agent.department)
    counts = advisor.recommend_all()
    assert counts == {"agents": 1, "written": 2}


def test_the_recommendation_shows_its_evidence_on_the_agents_page(slow_llm_agent, agent, client, manager):
    advisor.recommend_for(agent, "production")
    client.force_login(manager)
    page = client.get(reverse("interventions:agent", args=[agent.slug]) + "?environment=production")
    text = page.content.decode()
    assert "Enable prompt caching" in text
    assert "Expected effect:" in text
    assert "found by the analytics" in text


def test_a_slow_request_page_and_the_slow_list_name_the_cause(slow_llm_agent, agent, client, manager):
    from perfops.telemetry.models import Trace

    slowest = Trace.objects.filter(status="ok").order_by("-latency_ms").first()
    assert slowest is not None
    client.force_login(manager)
    page = client.get(reverse("dashboard:request", args=[slowest.trace_id.hex])).content.decode()
    assert "LLM call gpt-x" in page
    assert "x its p50 of" in page
    listing = client.get(
        reverse("dashboard:panel", args=["slow"]) + "?range=24h&environment=production", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "LLM call gpt-x" in listing


def test_the_slow_list_reads_stored_baselines_in_one_query(
    slow_llm_agent, agent, superuser, django_assert_max_num_queries
):
    from perfops.analytics import causes
    from perfops.dashboard import traces
    from perfops.metrics.filters import MetricFilters

    assert causes.refresh_baselines() == {"baselines": 1}
    filters = MetricFilters(range="24h", environment="production")
    with django_assert_max_num_queries(4):
        rows = traces.slow_requests(filters, superuser, timezone.now()).rows
    assert rows
    assert all("p50 of" in row["root_cause"] for row in rows)
