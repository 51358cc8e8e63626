"""The demo's SLOs, budget, alert rule and channel, set on the seeded history so the pages have something true to show.

Thresholds come from the history itself (a little above what the agents achieved over the last
week), so compliance is high but not perfect and the seeded regressions show as spent budget.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery
from perfops.telemetry.demo import fleet
from perfops.telemetry.models import Agent, Department, Team
from slos.models import SLO, AlertRule, NotificationChannel, PerformanceBudget

DEMO_CHANNEL = "demo on-call (email)"


def _nice(ms: float) -> float:
    """Round up to two significant digits: 1234 -> 1300."""
    if ms <= 0:
        return 100.0
    scale = 10 ** max(0, math.floor(math.log10(ms)) - 1)
    return float(math.ceil(ms / scale) * scale)


def _p95(user: Any, **scope: str) -> float | None:
    now = timezone.now()
    filters = MetricFilters(range=None, start=now - timedelta(days=7), end=now, **scope)
    return MetricsQuery(filters, user, now=now).summary(qs=(0.95,)).get("p95_ms")


@transaction.atomic
def seed(admin: Any) -> list[str]:
    """Create the demo objectives once (nothing when any SLO exists); returns what was made, in words."""
    if SLO.objects.exists():
        return []
    department = Department.objects.filter(slug=fleet.OUTAGE_DEPARTMENT).first()
    latency_agent = Agent.objects.filter(slug=fleet.LATENCY_REGRESSION_AGENT).first()
    team = latency_agent.team if latency_agent is not None else None
    if department is None or latency_agent is None or team is None:
        return []
    made = []
    channel = NotificationChannel.objects.create(
        name=DEMO_CHANNEL, department=department, kind=NotificationChannel.Kind.EMAIL, email_to="oncall@example.com"
    )
    p95 = _p95(admin, agent=latency_agent.slug) or 1000.0
    latency = SLO.objects.create(
        name=f"{latency_agent.slug} latency",
        scope=SLO.Scope.AGENT,
        agent=latency_agent,
        department=department,
        kind=SLO.Kind.LATENCY,
        threshold_ms=_nice(p95 * 1.1),
        target=0.95,
        window_days=7,
        created_by=admin,
    )
    availability = SLO.objects.create(
        name=f"{department.name} availability",
        scope=SLO.Scope.DEPARTMENT,
        department=department,
        kind=SLO.Kind.AVAILABILITY,
        target=0.99,
        window_days=28,
        created_by=admin,
    )
    for slo in (latency, availability):
        for rule in slo.alert_rules.filter(severity=AlertRule.Severity.PAGE):
            rule.channels.add(channel)
        made.append(f"SLO {slo.name}: {slo.objective}")
    team_p95 = _p95(admin, department=department.slug, team=team.slug) or 1000.0
    budget = PerformanceBudget.objects.create(
        name=f"{team.name} P95",
        scope=PerformanceBudget.Scope.TEAM,
        team=team,
        department=department,
        threshold_ms=_nice(team_p95 * 1.15),
        created_by=admin,
    )
    made.append(f"budget {budget.name}: {budget.objective}")
    second = Team.objects.filter(department=department).exclude(pk=team.pk).order_by("slug").first()
    if second is not None:
        rule = AlertRule.objects.create(
            name=f"{second.name} P99 over 8 s",
            metric=AlertRule.Metric.LATENCY,
            quantile=0.99,
            scope=AlertRule.Scope.TEAM,
            team=second,
            comparison=AlertRule.Comparison.GTE,
            threshold=8000,
            recovery_threshold=7000,
            window_s=900,
            pending_s=120,
            keep_firing_s=300,
            severity=AlertRule.Severity.TICKET,
            created_by=admin,
        )
        rule.channels.add(channel)
        made.append(f"alert rule {rule.name}")
    return made
