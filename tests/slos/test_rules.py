"""Standalone alert rules (latency, error rate, throughput) and performance budgets, on real rollups."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery
from slos import alerts, budgets, confirm
from slos.models import AlertEvent, AlertRule, PerformanceBudget
from tests.slos.test_alerts import fake_burns


def rule(**fields) -> AlertRule:
    base = {
        "name": "rule",
        "scope": "agent",
        "environment": "production",
        "severity": "ticket",
        "window_s": 86400,
    }
    made = AlertRule(**(base | fields))
    made.full_clean()
    made.save()
    return made


def summary(rolled_up, superuser, **filters) -> dict:
    now = rolled_up.now
    params = MetricFilters(range=None, start=now - timedelta(days=1), end=now, **filters)
    return MetricsQuery(params, superuser, now=now).summary(qs=(0.95,))


def test_a_latency_rule_reads_the_percentile_the_dashboard_shows_and_fires_over_it(rolled_up, superuser):
    agent = rolled_up.agents["pay-bot"]
    p95 = summary(rolled_up, superuser, agent="pay-bot")["p95_ms"]
    low = rule(metric="latency", quantile=0.95, agent=agent, threshold=p95 * 0.8, name="too slow")
    high = rule(metric="latency", quantile=0.95, agent=agent, threshold=p95 * 1.5, name="fine")
    assert low.department == agent.department  # scoping follows the agent
    assert alerts.evaluate(low, superuser, rolled_up.now) == "firing"
    assert alerts.evaluate(high, superuser, rolled_up.now) is None
    low.refresh_from_db()
    assert low.last_value == pytest.approx(p95)
    assert low.value_text.endswith(" ms")
    assert AlertEvent.objects.get().rule == low


def test_an_error_rate_rule_honours_its_version_filter(rolled_up, superuser):
    agent = rolled_up.agents["refund-bot"]
    expected = summary(rolled_up, superuser, agent="refund-bot", version="1.1.0")["error_rate"]
    everything = summary(rolled_up, superuser, agent="refund-bot")["error_rate"]
    assert expected != everything
    made = rule(metric="error_rate", agent=agent, filters={"version": "1.1.0"}, threshold=0.01)
    assert alerts.value_of(made, superuser, rolled_up.now) == pytest.approx(expected)


def test_a_throughput_floor_fires_when_traffic_drops(rolled_up, superuser, payments):
    rate = summary(rolled_up, superuser, department="payments")["throughput_rps"]
    floor = rule(metric="throughput", scope="department", department=payments, comparison="lte", threshold=rate * 2)
    assert alerts.evaluate(floor, superuser, rolled_up.now) == "firing"
    assert floor.last_value == pytest.approx(rate, rel=1e-3)


def test_a_recovery_threshold_keeps_one_episode_around_the_line(db, payments, superuser, monkeypatch):
    from django.utils import timezone

    made = rule(
        metric="latency",
        quantile=0.95,
        scope="department",
        department=payments,
        threshold=800,
        recovery_threshold=700,
    )
    values = [850.0, 790.0, 810.0, 760.0, 720.0, 690.0, 805.0]
    fake_burns(monkeypatch, values)
    start = timezone.now()
    events = [alerts.evaluate(made, superuser, start + timedelta(minutes=m)) for m in range(len(values))]
    assert events == ["firing", None, None, None, None, "resolved", "firing"]
    assert list(AlertEvent.objects.order_by("at").values_list("kind", "episode")) == [
        ("firing", 1),
        ("resolved", 1),
        ("firing", 2),
    ]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"metric": "latency"}, "quantile", "percentile"),
        ({"metric": "error_rate", "filters": {"region": "eu"}}, "filters", "Unknown filter"),
        ({"metric": "error_rate", "filters": {"tier": "glacial"}}, "filters", "tier"),
        ({"metric": "error_rate", "recovery_threshold": 0.5}, "recovery_threshold", "at or below the threshold"),
        ({"metric": "burn_rate"}, "slo", "belongs to an SLO"),
        ({"metric": "perf_budget"}, "budget", "belongs to a budget"),
        ({"metric": "throughput", "scope": "team"}, "team", "needs its team"),
    ],
)
def test_a_rule_that_cannot_work_is_refused_with_the_reason(db, payments, fields, field, message):
    base = {"name": "bad", "scope": "department", "department": payments, "severity": "ticket"}
    candidate = AlertRule(**(base | {"window_s": 600, "threshold": 0.1} | fields))
    with pytest.raises(ValidationError) as refused:
        candidate.full_clean()
    assert message in " ".join(refused.value.message_dict[field])


def test_a_team_budget_averages_its_agents_percentiles_and_alerts_when_breached(rolled_up, superuser):
    checkout = rolled_up.agents["pay-bot"].team
    budget = PerformanceBudget.objects.create(
        name="checkout p95", scope="team", team=checkout, department=checkout.department, threshold_ms=10_000
    )
    assert sorted(budget.alert_rules.values_list("severity", "threshold")) == [("ticket", 1.0), ("warning", 0.9)]
    status = budgets.status(budget, superuser, rolled_up.now)
    own = summary(rolled_up, superuser, agent="pay-bot")["p95_ms"]
    assert [use.agent for use in status.agents] == ["pay-bot"]  # the only agent of the team with traffic
    assert status.value_ms == pytest.approx(own)
    assert status.state == "ok"
    # Tighten it below today's P95: breached, and both rules fire once.
    budget.threshold_ms = own / 2
    budget.save()
    assert budgets.status(budget, superuser, rolled_up.now).state == "breached"
    counts = alerts.evaluate_all(rolled_up.now)
    assert counts["firing"] == 2
    history = budgets.history(budget, superuser, rolled_up.now, days=9)
    assert len(history) == 10
    days_with_traffic = [point for point in history if point["consumed"] is not None]
    assert days_with_traffic
    assert all(point["consumed"] > 0 for point in days_with_traffic)


def test_every_agents_budget_is_judged_by_the_slowest(rolled_up, superuser, payments):
    budget = PerformanceBudget.objects.create(
        name="payments max", scope="department", department=payments, aggregate="max", threshold_ms=1000
    )
    status = budgets.status(budget, superuser, rolled_up.now)
    assert status.value_ms == max(use.latency_ms for use in status.agents)
    assert {use.agent for use in status.agents} == {"pay-bot", "refund-bot", "ledger-bot"}
    assert status.over == [use for use in status.agents if use.latency_ms > 1000]


def test_the_confirmation_of_a_rule_says_whether_it_would_fire_today(rolled_up, superuser):
    agent = rolled_up.agents["pay-bot"]
    p95 = summary(rolled_up, superuser, agent="pay-bot")["p95_ms"]
    unsaved = AlertRule(
        name="p95",
        metric="latency",
        quantile=0.95,
        scope="agent",
        agent=agent,
        severity="page",
        threshold=p95 / 2,
        window_s=86400,
    )
    preview = confirm.describe(unsaved, superuser, rolled_up.now)
    assert preview.rules[0]["fires"] is True
    assert preview.warnings == ["This rule would fire on today's data: notifications may go out within a minute."]
    assert not AlertRule.objects.exists()
