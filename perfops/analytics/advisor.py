"""Write configuration recommendations for every busy agent from its own evidence (beat, hourly).

Reads an agent's requests of the last day (latency, status, cache hits, time in LLM calls) and its
hourly series of the last week, asks `recommend` what the numbers support, and writes each proposal
as an open Recommendation, which a person applies (a new configuration version, revertible) or
dismisses on the agent's page, the admin or the API. A kind of proposal is not made again while one
is open, nor within a week of a person deciding one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.db.models import Q
from django.utils import timezone

from interventions import configs
from interventions.models import Recommendation
from perfops.analytics import recommend, samples
from perfops.analytics.detect import SYSTEM
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery
from perfops.telemetry.models import Agent, Trace

logger = logging.getLogger(__name__)

RECENT = timedelta(hours=24)
SERIES = timedelta(days=7)
SAMPLE = 5000
MIN_REQUESTS = 200
QUIET_AFTER_DECISION = timedelta(days=7)


def _llm_ms(phases: Any, calls: Any) -> float:
    """Time in LLM calls (summed), or the "llm" phase when the trace names no calls."""
    total = sum(
        float(c.get("duration_ms") or 0.0) for c in (calls or []) if isinstance(c, dict) and c.get("kind") == "llm"
    )
    if total > 0:
        return total
    value = (phases or {}).get("llm") if isinstance(phases, dict) else None
    return float(value) if isinstance(value, int | float) else 0.0


def proposals(agent: Agent, environment: str, now: datetime) -> list[recommend.Proposal]:
    """What this agent's evidence supports now (nothing is written)."""
    rows = list(
        Trace.objects.filter(agent=agent, environment=environment, started_at__gte=now - RECENT, started_at__lt=now)
        .order_by("-started_at")
        .values_list("latency_ms", "status", "cache_hit", "phases", "dependencies")[:SAMPLE]
    )
    if len(rows) < MIN_REQUESTS:
        return []
    latency = np.array([r[0] for r in rows], dtype=float)
    status = np.array([r[1] for r in rows])
    hits = np.array([r[2] for r in rows], dtype=bool)
    ok = status == "ok"
    llm = np.array([_llm_ms(r[3], r[4]) for r in rows], dtype=float)
    config = configs.current(agent, environment)
    found = []
    caching = recommend.prompt_caching(
        latency[ok], llm[ok], hits[ok], prompt_cache_on=bool(config and config.prompt_cache)
    )
    limit = recommend.timeout(latency, status == "timeout", timeout_ms=config.timeout_ms if config else None)
    series = MetricsQuery(
        MetricFilters(range=None, start=now - SERIES, end=now, environment=environment, agent=agent.slug),
        SYSTEM,
        now=now,
    ).series(qs=(0.95,), max_points=int(SERIES.total_seconds() // 3600) + 1)
    points = series["series"][0]["points"] if series["series"] else []
    contention = recommend.concurrency(
        np.array([p["throughput_rps"] or 0.0 for p in points]),
        np.array([np.nan if p["p95_ms"] is None else p["p95_ms"] for p in points]),
        np.array([np.nan if p["mean_ms"] is None else p["mean_ms"] for p in points]),
        np.array([p["count"] for p in points]),
        current=config.concurrency if config else None,
    )
    for proposal in (caching, limit, contention):
        if proposal is not None:
            found.append(proposal)
    return found


def recommend_for(agent: Agent, environment: str, now: datetime | None = None) -> list[Recommendation]:
    """Write the agent's new proposals as open recommendations; returns those written."""
    now = now or timezone.now()
    taken = set(
        Recommendation.objects.filter(agent=agent, environment=environment)
        .filter(Q(status=Recommendation.Status.OPEN) | Q(decided_at__gte=now - QUIET_AFTER_DECISION))
        .exclude(kind="")
        .values_list("kind", flat=True)
    )
    written = []
    for proposal in proposals(agent, environment, now):
        if proposal.kind in taken:
            continue
        written.append(
            Recommendation.objects.create(
                agent=agent,
                environment=environment,
                kind=proposal.kind,
                title=proposal.title,
                rationale=proposal.rationale,
                expected_effect=proposal.expected_effect,
                changes=proposal.changes,
                evidence=proposal.evidence,
            )
        )
    return written


def recommend_all(now: datetime | None = None) -> dict[str, int]:
    """Every agent and environment with enough requests in the last day (beat, hourly)."""
    now = now or timezone.now()
    counts = {"agents": 0, "written": 0}
    for agent, environment in samples.busy(now, MIN_REQUESTS):
        counts["agents"] += 1
        counts["written"] += len(recommend_for(agent, environment, now))
    if counts["written"]:
        logger.info("recommendations: %s", counts)
    return counts
