"""Samples of a version's requests from the raw traces, for the regression detector and the deploy gate."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

from perfops.analytics.regression import Sample
from perfops.telemetry.models import Agent, Trace

# The newest requests of each version that a decision reads (enough for the tests' power, bounded in cost).
PER_VERSION = 5000
HISTORY = 20_000
WINDOW = timedelta(days=7)


def sample(agent: Agent, environment: str, version: str, now: datetime, limit: int = PER_VERSION) -> Sample:
    rows = list(
        Trace.objects.filter(
            agent=agent, environment=environment, version=version, started_at__gte=now - WINDOW, started_at__lt=now
        )
        .order_by("-started_at")
        .values_list("latency_ms", "status", "started_at")[:limit]
    )
    return _of(rows)


def history(agent: Agent, environment: str, version: str, now: datetime) -> Sample:
    """The baseline version's requests over the week: its hour-of-day curve."""
    return sample(agent, environment, version, now, HISTORY)


def _of(rows: list[tuple[Any, ...]]) -> Sample:
    if not rows:
        return Sample.of(np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64))
    latency, status, started = zip(*rows, strict=True)
    return Sample.of(latency, [s != "ok" for s in status], [moment.hour for moment in started])


def busy(now: datetime, min_requests: int, *, status: str | None = None) -> list[tuple[Agent, str]]:
    """(agent, environment) pairs with at least `min_requests` requests (of `status`) in the day before `now`."""
    from django.db.models import Count

    traces = Trace.objects.filter(started_at__gte=now - timedelta(days=1), started_at__lt=now)
    if status is not None:
        traces = traces.filter(status=status)
    rows = list(traces.values_list("agent_id", "environment").annotate(n=Count("trace_id")).filter(n__gte=min_requests))
    agents = Agent.objects.in_bulk({agent for agent, _, _ in rows})
    return [(agents[agent], environment) for agent, environment, _ in rows if agent in agents]
