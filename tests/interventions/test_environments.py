"""Environment comparison: deltas against production, gaps of 20% highlighted with advice naming numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse

from interventions import configs, environments
from perfops.metrics.rollup import catch_up
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def traffic(agent, engineer):
    """pay-bot: production at 800 ms, staging at 1,200 ms with 5% errors, development with 10 requests."""
    now = datetime.now(UTC).replace(microsecond=0)
    records = []
    for i in range(100):
        at = factories.iso(now - timedelta(minutes=5 + i))
        records.append(factories.record(agent="pay-bot", environment="production", latency_ms=800.0, started_at=at))
        failed = i % 20 == 0
        staging = factories.record(
            agent="pay-bot", environment="staging", latency_ms=1200.0, started_at=at, status="error" if failed else "ok"
        )
        if failed:
            staging["error_type"] = "llm_error"
        records.append(staging)
    records += [
        factories.record(
            agent="pay-bot", environment="development", started_at=factories.iso(now - timedelta(minutes=9))
        )
        for _ in range(10)
    ]
    assert (
        factories.api_as(engineer, ["ingest"])
        .post("/api/v1/traces", {"traces": records}, format="json")
        .json()["accepted"]
        == 210
    )
    catch_up(now - timedelta(days=1), now=now + timedelta(minutes=1))
    configs.apply(agent, "production", {"timeout_ms": 30000}, engineer)
    configs.apply(agent, "staging", {"timeout_ms": 10000}, engineer)
    return now


def test_staging_is_compared_with_production_and_its_gaps_explained(traffic, agent, engineer):
    reference, columns = environments.compare(agent, engineer, traffic + timedelta(minutes=1))
    assert reference == "production"
    by_env = {c.environment: c for c in columns}
    staging = by_env["staging"]
    assert staging.deltas["p95_ms"] == pytest.approx(0.5, abs=0.02)
    assert staging.deltas["error_rate"] == pytest.approx(5.0)
    assert set(staging.gaps) >= {"p50_ms", "p95_ms", "error_rate"}
    assert staging.advice[0].startswith("P95 is 50% slower than production (1,200 vs 800 ms)")
    assert "Settings that differ: timeout_ms 10000 vs 30000." in staging.advice[0]
    assert by_env["development"].advice == [
        "Only 10 requests in 7 days: too few to compare; run a load test there to get a fair sample."
    ]


def test_the_page_shows_the_side_by_side_table(traffic, engineer):
    client = Client()
    client.force_login(engineer)
    agent_page = client.get(reverse("dashboard:agent", args=["pay-bot"])).content.decode()
    assert reverse("interventions:environments", args=["pay-bot"]) in agent_page
    page = client.get(reverse("interventions:environments", args=["pay-bot"])).content.decode()
    assert 'production <span class="muted">(reference)</span>' in page
    assert "gap-cell" in page
    assert "timeout_ms 10000 vs 30000" in page


def test_the_api_gives_the_same_comparison(traffic, engineer):
    body = factories.api_as(engineer, ["read"]).get("/api/v1/agents/pay-bot/environments").json()
    assert body["reference"] == "production"
    staging = next(e for e in body["environments"] if e["environment"] == "staging")
    assert "p95_ms" in staging["gaps"]
