"""Anomalous error rates of the shown agents, per error type, for the error-patterns treemap (chart 4.12).

Reads 14 days of hourly rollups of the scope once (grouped by agent and error type), and asks
`anomaly.detect` about every (agent, error type) that failed in the last hours against its own history.
Cached per scope for 5 minutes.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.core.cache import cache

from perfops.access.scoping import department_ids_for
from perfops.analytics import anomaly
from perfops.metrics import cells as cellmod
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import Labels, MetricsQuery

HISTORY = timedelta(days=14)
HOUR = 3600
RECENT_HOURS = 3
TTL_S = 300


def _key(filters: MetricFilters, user: Any, now: datetime) -> str:
    ids = department_ids_for(user)
    who = "all" if ids is None else ",".join(map(str, sorted(ids)))
    where = sorted((k, v) for k, v in filters.normalised().items() if k not in ("range", "start", "end"))
    text = f"{where}|{who}|{int(now.timestamp()) // TTL_S}"
    return "analytics:error-anomalies:" + hashlib.sha256(text.encode()).hexdigest()[:32]


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


def anomalies(filters: MetricFilters, user: Any, now: datetime) -> dict[tuple[str, str], anomaly.Anomaly]:
    """(error type, agent slug) -> the anomaly found in its last hours, for the scope's agents."""
    key = _key(filters, user, now)
    found = cache.get(key)
    if found is not None:
        return dict(found)
    result: dict[tuple[str, str], anomaly.Anomaly] = {}
    series = hourly_failures(filters, user, now)
    if series is not None:
        failures, requests, first = series
        for (error_type, agent), failed in failures.items():
            if not failed[-RECENT_HOURS:].any():
                continue
            found_one = anomaly.detect(
                failed, requests[agent], first, recent_hours=RECENT_HOURS, label=f"{error_type} on {agent}"
            )
            if found_one is not None:
                result[(error_type, agent)] = found_one
    cache.set(key, result, TTL_S)
    return result
