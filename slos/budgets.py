"""Performance budgets (A4.10): a department's or team's latency limit, how much of it is used, over time.

Consumption is the budget's aggregate (the mean of its agents' percentiles, or the slowest agent's)
divided by the limit: 0.8 is 80% of the budget, above 1.0 is a breach. Each agent's percentile comes
from its merged sketches, never from averaging percentiles over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from perfops.metrics.query import MetricsQuery, quantile_key
from slos.models import PerformanceBudget

HISTORY_DAYS = 30


@dataclass(frozen=True)
class AgentUse:
    agent: str
    latency_ms: float
    requests: int

    def share(self, budget: PerformanceBudget) -> float:
        return self.latency_ms / budget.threshold_ms


@dataclass(frozen=True)
class Status:
    """A budget over its window now: the aggregate, the share of the limit used, and each agent's part."""

    budget: PerformanceBudget
    value_ms: float | None
    agents: list[AgentUse]  # slowest first

    @property
    def consumed(self) -> float | None:
        return None if self.value_ms is None else self.value_ms / self.budget.threshold_ms

    @property
    def state(self) -> str:
        """ok, close or breached (no data: unknown)."""
        consumed = self.consumed
        if consumed is None:
            return "unknown"
        if consumed > 1.0:
            return "breached"
        return "close" if consumed >= self.budget.warn_at else "ok"

    @property
    def over(self) -> list[AgentUse]:
        """Agents whose own percentile is over the limit."""
        return [use for use in self.agents if use.latency_ms > self.budget.threshold_ms]


def aggregate(budget: PerformanceBudget, values: list[float]) -> float | None:
    if not values:
        return None
    if budget.aggregate == PerformanceBudget.Aggregate.MAX:
        return max(values)
    return sum(values) / len(values)


def status(budget: PerformanceBudget, user: Any, now: datetime) -> Status:
    """The budget over its window ending now."""
    window = timedelta(seconds=budget.window_s)
    query = MetricsQuery(budget.scope_filters(now - window, now), user, now=now)
    key = quantile_key(budget.q)
    rows = query.breakdown("agent", qs=(budget.q,))["rows"]
    agents = [AgentUse(row["key"], float(row[key]), row["count"]) for row in rows if row["count"] and row[key]]
    agents.sort(key=lambda use: -use.latency_ms)
    return Status(budget, aggregate(budget, [use.latency_ms for use in agents]), agents)


def history(budget: PerformanceBudget, user: Any, now: datetime, days: int = HISTORY_DAYS) -> list[dict[str, Any]]:
    """Consumption per UTC day over the last `days` whole days and today so far: [{t, value_ms, consumed}]."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days)
    query = MetricsQuery(budget.scope_filters(start, now), user, now=now)
    key = quantile_key(budget.q)
    result = query.series("agent", limit=10_000, qs=(budget.q,), max_points=days + 1)
    # Every day of the window, with or without requests.
    first = datetime.fromisoformat(result["window"]["start"].replace("Z", "+00:00"))
    step = timedelta(seconds=result["window"]["bucket_s"])
    by_time: dict[str, list[float]] = {}
    day = first
    while day < now:
        by_time[day.isoformat().replace("+00:00", "Z")] = []
        day += step
    for series in result["series"]:
        for point in series["points"]:
            values = by_time.setdefault(point["t"], [])
            if point["count"] and point[key] is not None:
                values.append(float(point[key]))
    out = []
    for moment in sorted(by_time):
        value = aggregate(budget, by_time[moment])
        out.append(
            {
                "t": moment,
                "value_ms": value,
                "consumed": None if value is None else round(value / budget.threshold_ms, 4),
            }
        )
    return out
