"""Anomalous error rates of the shown agents, per error type, for the error-patterns treemap (chart 4.12).

Beat runs `detect_all` every 5 minutes: per environment, 14 days of hourly rollups of the whole fleet
read once (grouped by agent and error type), and `anomaly.detect` asked about every (agent, error
type) that failed in the last hours, against its own history. The findings are ErrorAnomaly rows; the
treemap reads those of its scope (a fleet-wide pass takes seconds: never while someone waits).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from perfops.analytics import anomaly
from perfops.metrics import cells as cellmod
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import Labels, MetricsQuery

HISTORY = timedelta(days=14)
HOUR = 3600
RECENT_HOURS = 3
# Findings older than this are not shown (the pass runs every 5 minutes; a stopped worker shows none).
STALE_AFTER = timedelta(minutes=20)


def hourly_failures(
    filters: MetricFilters, user: Any, now: datetime
) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, np.ndarray], datetime] | None:
    """({(error type, agent): failures per hour}, {agent: requests per hour}, first hour) over 14 days."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    window = replace(filters, range=None, start=end - HISTORY, end=now)
    query = MetricsQuery(window, user, now=now)
    the_plan = query.plan(("agent", "error_type"), max_points=int(HISTORY.total_seconds() // HOUR) + 1)
    if the_plan.width_s != HOUR:
        return None
    found = query.fetch(the_plan)
    if not len(found.count):
        return None
    hours = the_plan.points
    hour = np.clip((found.bucket - the_plan.start_s) // HOUR, 0, hours - 1)
    agent_code, agents = Labels.for_cells(found, "agent")
    requests = np.bincount(agent_code * hours + hour, weights=found.count, minlength=len(agents) * hours)
    requests = requests.reshape(len(agents), hours)
    failed = found.errors + found.timeouts
    rows = failed > 0
    pair = agent_code[rows] * len(cellmod.ERROR_TYPES) + found.error_type[rows]
    failures: dict[tuple[str, str], np.ndarray] = {}
    for code in np.unique(pair).tolist():
        mine = pair == code
        a, e = divmod(code, len(cellmod.ERROR_TYPES))
        series = np.bincount(hour[rows][mine], weights=failed[rows][mine], minlength=hours)
        failures[(cellmod.ERROR_TYPES[e] or "none", agents[a])] = series
    first = datetime.fromtimestamp(the_plan.start_s, UTC)
    return failures, {slug: requests[i] for i, slug in enumerate(agents)}, first


def detect(filters: MetricFilters, user: Any, now: datetime) -> dict[tuple[str, str], anomaly.Anomaly]:
    """(error type, agent slug) -> the anomaly found in its last hours, for the scope's agents (computed now)."""
    result: dict[tuple[str, str], anomaly.Anomaly] = {}
    series = hourly_failures(filters, user, now)
    if series is None:
        return result
    failures, requests, first = series
    for (error_type, agent), failed in failures.items():
        if not failed[-RECENT_HOURS:].any():
            continue
        found = anomaly.detect(
            failed, requests[agent], first, recent_hours=RECENT_HOURS, label=f"{error_type} on {agent}"
        )
        if found is not None:
            result[(error_type, agent)] = found
    return result


def detect_all(now: datetime | None = None) -> dict[str, int]:
    """The whole fleet, environment by environment, into ErrorAnomaly rows (beat, every 5 minutes)."""
    from django.db import transaction
    from django.utils import timezone

    from perfops.analytics.detect import SYSTEM
    from perfops.analytics.models import ErrorAnomaly
    from perfops.telemetry.choices import Environment
    from perfops.telemetry.models import Agent

    now = now or timezone.now()
    rows: list[ErrorAnomaly] = []
    for environment in Environment.values:
        found = detect(MetricFilters(environment=environment), SYSTEM, now)
        agents = dict(Agent.objects.filter(slug__in={agent for _, agent in found}).values_list("slug", "pk"))
        rows.extend(
            ErrorAnomaly(
                agent_id=agents[agent],
                environment=environment,
                error_type=error_type,
                at=item.at,
                failures=item.failures,
                requests=item.requests,
                rate=item.rate,
                expected_rate=item.expected_rate,
                score=item.score,
                reason=item.reason[:400],
                detected_at=now,
            )
            for (error_type, agent), item in found.items()
            if agent in agents
        )
    with transaction.atomic():
        ErrorAnomaly.objects.all().delete()
        ErrorAnomaly.objects.bulk_create(rows)
    return {"anomalies": len(rows)}


def anomalies(filters: MetricFilters, user: Any, now: datetime) -> dict[tuple[str, str], str]:
    """(error type, agent slug) -> why, for the scope's agents: the latest background pass's findings."""
    from perfops.analytics.models import ErrorAnomaly
    from perfops.dashboard.traces import agents_of
    from perfops.metrics.query import resolve_scope
    from perfops.telemetry.models import Agent

    scope = resolve_scope(filters, user)
    if scope.empty:
        return {}
    agents = Agent.objects.visible_to(user).filter(agents_of(scope, ""))
    found = ErrorAnomaly.objects.filter(
        agent__in=agents, environment__in=filters.environments, detected_at__gte=now - STALE_AFTER
    ).values_list("error_type", "agent__slug", "reason")
    return {(error_type, slug): reason for error_type, slug, reason in found}
