"""Change points in each agent's hourly latency and error series: regressions not tied to a known deploy.

`changepoint` finds the steps; this module reads the series (7 days of hourly rollups per agent and
environment), shows recent steps on the agent's regression timeline (chart 4.14), and once an hour
raises a suspected RegressionFlag for a step of the last two days, against the version that served
most requests in its first hour (a step inside one version is a dependency, a model or a load
change; the flag's evidence says which series moved and by how much). A step is flagged once: a flag
of that version raised after the step (suspected, confirmed or dismissed) stands.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db.models import Count
from django.utils import timezone

from perfops.analytics import changepoint, samples
from perfops.analytics.detect import SYSTEM, raise_flag
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery
from perfops.telemetry.models import Agent, Trace

logger = logging.getLogger(__name__)

HISTORY = timedelta(days=7)
HOUR = 3600
RECENT = timedelta(hours=48)
MIN_REQUESTS = 200  # in the last day, for an agent to be looked at
TTL_S = 600


def series(agent: Agent, environment: str, user: Any, now: datetime) -> dict[str, Any] | None:
    """Hourly p95, requests and failures of one agent in one environment over 7 days (oldest first)."""
    end = now.replace(minute=0, second=0, microsecond=0)
    filters = MetricFilters(range=None, start=end - HISTORY, end=end, environment=environment, agent=agent.slug)
    result = MetricsQuery(filters, user, now=now).series(qs=(0.95,), max_points=int(HISTORY.total_seconds() // HOUR))
    if result["window"]["bucket_s"] != HOUR or not result["series"]:
        return None
    points = result["series"][0]["points"]
    return {
        "first": datetime.fromisoformat(points[0]["t"].replace("Z", "+00:00")).astimezone(UTC),
        "p95_ms": np.array([np.nan if p["p95_ms"] is None else p["p95_ms"] for p in points], dtype=float),
        "requests": np.array([p["count"] for p in points], dtype=float),
        "failures": np.array([p["errors"] + p["timeouts"] for p in points], dtype=float),
    }


def detect(agent: Agent, environment: str, user: Any, now: datetime) -> list[changepoint.ChangePoint]:
    """The agent's upward steps in p95 and error rate over the last 7 days, most recent first (cached)."""
    key = f"analytics:changes:{agent.pk}:{environment}:{now:%Y%m%d%H}"
    found = cache.get(key)
    if found is not None:
        return list(found)
    hourly = series(agent, environment, user, now)
    steps: list[changepoint.ChangePoint] = []
    if hourly is not None and hourly["requests"].sum():
        steps = changepoint.latency(hourly["p95_ms"], hourly["requests"], hourly["first"]) + changepoint.errors(
            hourly["failures"], hourly["requests"], hourly["first"]
        )
        steps.sort(key=lambda step: step.at, reverse=True)
    cache.set(key, steps, TTL_S)
    return steps


def version_at(agent: Agent, environment: str, at: datetime) -> str | None:
    """The version that served most of the agent's requests in the hour from `at`."""
    row = (
        Trace.objects.filter(
            agent=agent, environment=environment, started_at__gte=at, started_at__lt=at + timedelta(hours=1)
        )
        .values("version")
        .annotate(n=Count("trace_id"))
        .order_by("-n")
        .first()
    )
    return None if row is None else row["version"]


def flag_recent(now: datetime | None = None) -> dict[str, int]:
    """Raise a suspected flag for each step of the last 48 hours (beat, hourly)."""
    from interventions.models import RegressionFlag

    now = now or timezone.now()
    counts = {"series": 0, "steps": 0, "flagged": 0}
    for agent, environment in samples.busy(now, MIN_REQUESTS):
        counts["series"] += 1
        for step in detect(agent, environment, SYSTEM, now):
            if step.at < now - RECENT:
                continue
            counts["steps"] += 1
            version = version_at(agent, environment, step.at)
            if version is None:
                continue
            if RegressionFlag.objects.filter(
                agent=agent, environment=environment, version=version, flagged_at__gte=step.at
            ).exists():
                continue  # already flagged since the step (and perhaps dismissed): it stands
            evidence = {
                "change_point": {
                    "metric": step.metric,
                    "at": step.at.isoformat(),
                    "before": step.before,
                    "after": step.after,
                    "effect": step.effect,
                    "confidence": step.confidence,
                }
            }
            counts["flagged"] += raise_flag(agent, environment, version, step.reason, evidence, now)
    if counts["steps"]:
        logger.info("change points: %s", counts)
    return counts
