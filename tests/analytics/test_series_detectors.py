"""Error anomalies and change points on stored, rolled-up traffic: what the treemap, the timeline and the flags show."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from interventions import regressions
from interventions.models import RegressionFlag
from perfops.analytics import changes, errors
from perfops.analytics.models import ErrorAnomaly
from perfops.metrics.filters import MetricFilters
from perfops.metrics.rollup import catch_up
from tests import factories
from tests.metrics.conftest import ingest

pytestmark = pytest.mark.django_db

DAYS = 6


def hourly_traffic(
    agent: str, per_hour: int, shape: Callable[[float], tuple[float, float, str]], seed: int
) -> tuple[list[dict], datetime]:
    """`per_hour` requests an hour for 6 days; shape(hours ago) gives (latency median ms, failure share, error type)."""
    rng = np.random.default_rng(seed)
    now = timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0)
    records = []
    for h in range(DAYS * 24, -1, -1):
        start = end - timedelta(hours=h)
        median, failing, error_type = shape(h)
        n = int(rng.poisson(per_hour))
        for _ in range(n):
            at = start + timedelta(seconds=float(rng.uniform(0, 3600)))
            if at >= now - timedelta(seconds=5):
                continue
            failed = rng.random() < failing
            record = factories.record(
                agent=agent,
                started_at=factories.iso(at),
                latency_ms=round(float(rng.lognormal(np.log(median), 0.35)), 1),
                status="error" if failed else "ok",
                phases={},
                dependencies=[],
            )
            if failed:
                record["error_type"] = error_type
            records.append(record)
    return records, now


@pytest.fixture
def burst(agent, engineer, payments):
    """pay-bot fails 1% (validation) for 6 days, then 12% llm_error in the last 2 hours; calm-bot stays at 1%."""
    factories.agent("calm-bot", payments)
    burst_records, now = hourly_traffic(
        "pay-bot", 80, lambda h: (800.0, 0.12, "llm_error") if h <= 1 else (800.0, 0.01, "validation"), 1
    )
    calm_records, _ = hourly_traffic("calm-bot", 80, lambda h: (800.0, 0.01, "validation"), 2)
    ingest(burst_records + calm_records, engineer)
    catch_up(now - timedelta(days=DAYS + 1), now=now)
    return now


def test_an_error_burst_is_an_anomaly_with_its_numbers_and_steady_errors_are_not(burst, superuser):
    found = errors.detect(MetricFilters(environment="production", department="payments"), superuser, burst)
    assert set(found) == {("llm_error", "pay-bot")}
    anomaly = found[("llm_error", "pay-bot")]
    assert anomaly.rate > 0.05
    assert anomaly.expected_rate < 0.01
    assert f"{anomaly.failures}" in anomaly.reason


def test_the_background_pass_stores_the_findings_that_scopes_read(burst, manager, research):
    assert errors.detect_all(burst) == {"anomalies": 1}
    stored = ErrorAnomaly.objects.get()
    assert (stored.agent.slug, stored.environment, stored.error_type) == ("pay-bot", "production", "llm_error")
    filters = MetricFilters(environment="production")
    assert list(errors.anomalies(filters, manager, burst)) == [("llm_error", "pay-bot")]
    outsider = factories.user("olga", "engineers", [research])
    assert errors.anomalies(filters, outsider, burst) == {}
    # A stopped worker's findings go stale rather than standing forever.
    assert errors.anomalies(filters, manager, burst + timedelta(hours=1)) == {}


def test_the_treemap_marks_the_anomalous_box_and_says_why(burst, client, manager):
    errors.detect_all()
    client.force_login(manager)
    page = client.get(
        reverse("dashboard:panel", args=["error_patterns"]) + "?range=24h&environment=production",
        HTTP_HX_REQUEST="true",
    ).content.decode()
    # The figure's JSON escapes the mark; the notes under the chart give the reason in words.
    assert "pay-bot \\u26a0" in page
    assert "calm-bot \\u26a0" not in page
    assert "anomaly: llm_error on pay-bot" in page
    assert "⚠ llm_error on pay-bot" in page


@pytest.fixture
def step(agent, engineer):
    """pay-bot 1.4.0: p95 steady for 4.5 days, then 80% slower from 30 hours ago, without a new version."""
    records, now = hourly_traffic("pay-bot", 60, lambda h: (1440.0 if h < 30 else 800.0, 0.005, "other"), 3)
    ingest(records, engineer)
    catch_up(now - timedelta(days=DAYS + 1), now=now)
    return now


def test_a_step_in_latency_raises_one_suspected_flag_that_a_dismissal_keeps_down(step, agent, engineer):
    counts = changes.flag_recent(step)
    assert counts["flagged"] == 1
    flagged = RegressionFlag.objects.get()
    assert (flagged.version, flagged.source, flagged.status) == ("1.4.0", "analytics", "suspected")
    point = flagged.evidence["change_point"]
    assert point["metric"] == "p95"
    assert point["effect"] == pytest.approx(1.8, rel=0.2)
    assert abs(datetime.fromisoformat(point["at"]) - (step - timedelta(hours=30))) <= timedelta(hours=3)
    assert flagged.summary.startswith("P95")
    assert changes.flag_recent(step)["flagged"] == 0
    regressions.dismiss(flagged, engineer, "a planned model change")
    assert changes.flag_recent(step)["flagged"] == 0
    assert RegressionFlag.objects.count() == 1


def test_the_agents_timeline_shows_the_step_where_it_happened(step, client, manager):
    client.force_login(manager)
    page = client.get(
        reverse("dashboard:panel", args=["regressions"]) + "?range=7d&environment=production&agent=pay-bot",
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "step in p95 (production)" in page
    assert "P95 stepped from" in page
