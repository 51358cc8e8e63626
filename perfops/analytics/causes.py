"""Root causes read from the database: a request against its agent's baseline, a scope against its past.

The statistics are in `rootcause`; this module only fetches what they need, and caches the baselines
(an agent's medians over a day move slowly; the slow-request list asks for a dozen agents at once).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache

from perfops.analytics import rootcause
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery
from perfops.telemetry.models import Trace

BASELINE_WINDOW = timedelta(hours=24)
BASELINE_REQUESTS = 2000  # the newest successful requests before the moment asked about
BASELINE_TTL_S = 600


def agent_baseline(agent_id: int, environment: str, at: datetime) -> rootcause.Baseline | None:
    """The agent's typical successful request in the day before `at` (cached per hour)."""
    hour = at.replace(minute=0, second=0, microsecond=0)
    key = f"analytics:baseline:{agent_id}:{environment}:{hour:%Y%m%d%H}"
    found = cache.get(key)
    if found is not None:
        return found or None  # False: looked, too few requests
    rows = (
        Trace.objects.filter(
            agent_id=agent_id,
            environment=environment,
            status="ok",
            started_at__gte=hour + timedelta(hours=1) - BASELINE_WINDOW,
            started_at__lt=hour + timedelta(hours=1),
        )
        .order_by("-started_at")
        .values_list("latency_ms", "phases", "dependencies")[:BASELINE_REQUESTS]
    )
    base = rootcause.baseline(rows)
    cache.set(key, base or False, BASELINE_TTL_S)
    return base


def request_cause(trace: Trace) -> rootcause.Cause | None:
    """Why this request was slow, or None when its agent has too little recent history to say."""
    base = agent_baseline(trace.agent_id, trace.environment, trace.started_at)
    if base is None:
        return None
    return rootcause.explain(
        trace.latency_ms, trace.phases, trace.dependencies, base, model=trace.model, status=trace.status
    )


def scope_shift(filters: MetricFilters, user: Any, now: datetime) -> str | None:
    """Why the filtered scope is slower than in the window of the same length just before (None if it is not)."""
    start, end = filters.window(now)
    span = end - start
    before = replace(filters, range=None, start=start - span, end=start)
    current, previous = MetricsQuery(filters, user, now=now), MetricsQuery(before, user, now=now)
    mean_now = current.summary(qs=())["mean_ms"]
    mean_before = previous.summary(qs=())["mean_ms"]
    if not mean_now or not mean_before:
        return None

    def per_request(query: MetricsQuery, by: str) -> dict[str, float]:
        out = {}
        for row in query.timing_breakdown(by)["rows"]:
            name = row["name"] if by == "phase" else f"{row['kind']}: {row['name']}"
            out[name] = float(row["per_trace_ms"] or 0.0)
        return out

    return rootcause.explain_shift(
        float(mean_now),
        float(mean_before),
        (per_request(current, "phase"), per_request(previous, "phase")),
        (per_request(current, "dependency"), per_request(previous, "dependency")),
        f"in the {_span_text(span)} before",
    )


def _span_text(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:.0f} days"
    if hours >= 1:
        return f"{hours:.0f} hours" if round(hours) != 1 else "hour"
    return f"{span.total_seconds() / 60:.0f} minutes"
