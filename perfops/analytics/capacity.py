"""The capacity outlook of a scope: its throughput forecast against its configured capacity (chart 4.11, alerts).

Reads 28 days of hourly throughput through the metrics engine, fits `forecast`, and sets it against
the summed capacity of the scope's agents (every agent in scope must have one: a partial sum would
understate the load on the rest). Cached per scope for 10 minutes: the fit moves with each hour.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db.models import Sum

from perfops.access.scoping import department_ids_for
from perfops.analytics import forecast
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery, resolve_scope
from perfops.telemetry.models import Agent, AgentCapacity

HISTORY = timedelta(days=28)
HOUR = 3600
SHOWN_DAYS = 7
LEVELS = (0.8, 1.0)
TTL_S = 600


@dataclass(frozen=True)
class Outlook:
    """The forecast of a scope with what capacity it is judged against and when it reaches it."""

    forecast: forecast.Forecast
    capacity_rps: float | None  # None: not every agent in scope has a capacity
    agents: int
    agents_with_capacity: int
    reaches: dict[float, datetime | None]  # share of capacity -> first forecast hour at or above it
    reaches_early: dict[float, datetime | None]  # the same for the band's upper edge (the earliest likely date)
    peak_rps_7d: float

    def utilization_7d(self) -> float | None:
        return None if not self.capacity_rps else self.peak_rps_7d / self.capacity_rps


def _key(filters: MetricFilters, user: Any, now: datetime) -> str:
    ids = department_ids_for(user)
    who = "all" if ids is None else ",".join(map(str, sorted(ids)))
    where = sorted((k, v) for k, v in filters.normalised().items() if k not in ("range", "start", "end"))
    text = f"{where}|{who}|{now:%Y%m%d%H}"
    return "analytics:capacity:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def hourly(filters: MetricFilters, user: Any, now: datetime) -> tuple[np.ndarray, datetime] | None:
    """Requests/s per complete hour over the last 28 days (oldest first), from the scope's first traffic on."""
    end = now.replace(minute=0, second=0, microsecond=0)
    window = replace(filters, range=None, start=end - HISTORY, end=end)
    result = MetricsQuery(window, user, now=now).series(qs=(), max_points=int(HISTORY.total_seconds() // HOUR) + 1)
    if result["window"]["bucket_s"] != HOUR or not result["series"]:
        return None
    points = [p for p in result["series"][0]["points"] if datetime.fromisoformat(p["t"].replace("Z", "+00:00")) < end]
    counts = np.array([p["count"] for p in points], dtype=float)
    seen = np.flatnonzero(counts)
    if not len(seen):
        return None
    first = int(seen[0])  # hours before an agent's first request are not zero traffic: it did not exist yet
    start = datetime.fromisoformat(points[first]["t"].replace("Z", "+00:00"))
    return counts[first:] / HOUR, start


def configured_capacity(filters: MetricFilters, user: Any) -> tuple[float, int, int]:
    """(summed requests/s of the agents in scope that have a capacity, agents in scope, agents with one)."""
    from perfops.dashboard.traces import agents_of

    scope = resolve_scope(filters, user)
    if scope.empty:
        return 0.0, 0, 0
    agents = Agent.objects.visible_to(user).filter(agents_of(scope, ""))
    capacities = AgentCapacity.objects.filter(environment__in=filters.environments, agent__in=agents)
    total = capacities.aggregate(rps=Sum("requests_per_s"))["rps"] or 0.0
    return float(total), agents.count(), capacities.values("agent").distinct().count()


def outlook(filters: MetricFilters, user: Any, now: datetime) -> Outlook | None:
    """The scope's forecast and capacity dates; None with under 3 days of traffic."""
    key = _key(filters, user, now)
    found = cache.get(key)
    if found is not None:
        return found or None
    result = _outlook(filters, user, now)
    cache.set(key, result or False, TTL_S)
    return result


def _outlook(filters: MetricFilters, user: Any, now: datetime) -> Outlook | None:
    series = hourly(filters, user, now)
    if series is None:
        return None
    fitted = forecast.fit(*series)
    if fitted is None:
        return None
    total, in_scope, configured = configured_capacity(filters, user)
    # A partial sum would understate the load on the agents that have a capacity: no dates then.
    capacity = total if total and configured == in_scope else None
    reaches: dict[float, datetime | None] = {}
    early: dict[float, datetime | None] = {}
    if capacity:
        reaches = {level: fitted.crossing(level * capacity) for level in LEVELS}
        early = {level: fitted.crossing(level * capacity, upper=True) for level in LEVELS}
    return Outlook(
        forecast=fitted,
        capacity_rps=capacity,
        agents=in_scope,
        agents_with_capacity=configured,
        reaches=reaches,
        reaches_early=early,
        peak_rps_7d=float(np.max(fitted.mean_rps[: SHOWN_DAYS * 24])),
    )


def days_until(filters: MetricFilters, user: Any, now: datetime, utilization: float) -> float | None:
    """Days until the forecast band's upper edge reaches `utilization` of capacity (a capacity rule's value).

    The upper edge, not the median: day-to-day noise makes the median's date uncertain by days, and a
    capacity warning is worth most early. Past the forecast's reach, the reach plus one day (shown as
    "not within 30 days"); None without a forecast or a capacity for every agent in scope.
    """
    found = outlook(filters, user, now)
    if found is None or not found.capacity_rps:
        return None
    at = found.reaches_early.get(utilization)
    if utilization not in found.reaches_early:
        at = found.forecast.crossing(utilization * found.capacity_rps, upper=True)
    reach_days = len(found.forecast.mean_rps) / 24
    if at is None:
        return reach_days + 1
    return max(0.0, (at - now).total_seconds() / 86400)
