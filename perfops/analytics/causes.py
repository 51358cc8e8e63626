"""Root causes read from the database: a request against its agent's baseline, a scope against its past.

The statistics are in `rootcause`; this module only fetches what they need. Baselines (an agent's
medians over a day, which move slowly) are refreshed hourly by beat into AgentBaseline rows, so the
slow-request list reads the baselines of all its agents in one query; a request page, or an agent
without a stored baseline yet, computes its own (cached per hour).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache

from perfops.analytics import rootcause, samples
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery
from perfops.telemetry.models import Trace

BASELINE_WINDOW = timedelta(hours=24)
BASELINE_REQUESTS = 2000  # the newest successful requests before the moment asked about
BASELINE_TTL_S = 600
STORED_FRESH = timedelta(hours=2)  # beat refreshes hourly; older rows are a stopped worker's
COVERS = timedelta(days=2)


def agent_baseline(agent_id: int, environment: str, at: datetime, *, cached: bool = True) -> rootcause.Baseline | None:
    """The agent's typical successful request in the day before `at` (cached per hour)."""
    hour = at.replace(minute=0, second=0, microsecond=0)
    key = f"analytics:baseline:{agent_id}:{environment}:{hour:%Y%m%d%H}"
    found = cache.get(key) if cached else None
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


def stored_baselines(pairs: Iterable[tuple[int, str]], now: datetime) -> dict[tuple[int, str], StoredBaseline]:
    """The fresh stored baselines of these (agent id, environment) pairs, in one query."""
    from perfops.analytics.models import AgentBaseline

    pairs = set(pairs)
    rows = AgentBaseline.objects.filter(
        agent_id__in={agent for agent, _ in pairs}, computed_at__gte=now - STORED_FRESH
    ).values_list("agent_id", "environment", "computed_at", "requests", "latency_p50_ms", "phase_p50_ms", "call_p50_ms")
    return {
        (agent, environment): StoredBaseline(
            at, rootcause.Baseline(requests=n, latency_p50_ms=p50, phase_p50_ms=phases, call_p50_ms=calls)
        )
        for agent, environment, at, n, p50, phases, calls in rows
        if (agent, environment) in pairs
    }


@dataclass(frozen=True)
class StoredBaseline:
    computed_at: datetime
    baseline: rootcause.Baseline

    def covers(self, moment: datetime) -> bool:
        """Whether it stands for the agent at `moment` (within the two days before it was computed)."""
        return self.computed_at - COVERS <= moment <= self.computed_at + STORED_FRESH


def refresh_baselines(now: datetime | None = None) -> dict[str, int]:
    """Every agent and environment with requests in the last day: its baseline, stored (beat, hourly)."""
    from django.utils import timezone

    from perfops.analytics.models import AgentBaseline

    now = now or timezone.now()
    stored = 0
    for agent, environment in samples.busy(now, rootcause.MIN_BASELINE, status="ok"):
        base = agent_baseline(agent.pk, environment, now, cached=False)
        if base is None:
            continue
        AgentBaseline.objects.update_or_create(
            agent=agent,
            environment=environment,
            defaults={
                "computed_at": now,
                "requests": base.requests,
                "latency_p50_ms": base.latency_p50_ms,
                "phase_p50_ms": base.phase_p50_ms,
                "call_p50_ms": base.call_p50_ms,
            },
        )
        stored += 1
    return {"baselines": stored}


def request_cause(trace: Trace, base: rootcause.Baseline | None = None) -> rootcause.Cause | None:
    """Why this request was slow, or None when its agent has too little recent history to say."""
    base = base or agent_baseline(trace.agent_id, trace.environment, trace.started_at)
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
