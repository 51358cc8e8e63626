"""Environment comparison (A4.9): one agent in development, staging and production, side by side.

Each environment's figures come from the rollups over the same window; each differs from production
(or from staging when production has no traffic) by a relative delta, and a gap of 20% or more is
highlighted with a short recommendation that names its numbers, and the configuration settings that
differ between the two environments when there are any.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from interventions import configs
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery
from perfops.telemetry.choices import Environment
from perfops.telemetry.models import Agent

GAP = 0.20
MIN_REQUESTS = 50
ORDER = (Environment.DEVELOPMENT, Environment.STAGING, Environment.PRODUCTION)
FIGURES = (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("error_rate", "error rate"))


@dataclass
class Column:
    environment: str
    figures: dict[str, Any]
    deltas: dict[str, float | None] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def compare(agent: Agent, user: Any, now: datetime, days: int = 7) -> tuple[str | None, list[Column]]:
    """(the reference environment, one column per environment with traffic or configuration)."""
    filters = MetricFilters(range=None, start=now - timedelta(days=days), end=now, environment="all", agent=agent.slug)
    rows = {row["key"]: row for row in MetricsQuery(filters, user, now=now).breakdown("environment")["rows"]}
    columns = []
    for environment in ORDER:
        config = configs.current(agent, environment)
        if environment not in rows and config is None:
            continue
        figures = rows.get(environment, {"count": 0})
        columns.append(Column(environment, figures, settings=config.settings_dict() if config else {}))
    with_traffic = [c for c in columns if c.figures.get("count", 0) >= MIN_REQUESTS]
    reference = next(
        (c for c in reversed(with_traffic) if c.environment in (Environment.PRODUCTION, Environment.STAGING)), None
    )
    if reference is None:
        return None, columns
    for column in columns:
        if column is reference:
            continue
        if column.figures.get("count", 0) < MIN_REQUESTS:
            column.advice.append(
                f"Only {column.figures.get('count', 0)} requests in {days} days: too few to compare; "
                "run a load test there to get a fair sample."
            )
            continue
        _judge(column, reference)
    return reference.environment, columns


def _judge(column: Column, reference: Column) -> None:
    for key, _label in FIGURES:
        mine, theirs = column.figures.get(key), reference.figures.get(key)
        if mine is None or theirs is None:
            column.deltas[key] = None
            continue
        if key == "error_rate":
            column.deltas[key] = round((mine - theirs) * 100, 3)  # percentage points
            if abs(mine - theirs) >= 0.01 and (theirs == 0 or abs(mine / theirs - 1) >= GAP):
                column.gaps.append(key)
            continue
        delta = mine / theirs - 1 if theirs else None
        column.deltas[key] = None if delta is None else round(delta, 4)
        if delta is not None and abs(delta) >= GAP:
            column.gaps.append(key)
    differing = sorted(
        name
        for name in set(column.settings) | set(reference.settings)
        if column.settings.get(name) != reference.settings.get(name)
    )
    settings_note = (
        " Settings that differ: "
        + ", ".join(f"{name} {column.settings.get(name)} vs {reference.settings.get(name)}" for name in differing)
        + "."
        if differing
        else ""
    )
    if "p95_ms" in column.gaps or "p99_ms" in column.gaps:
        key = "p95_ms" if "p95_ms" in column.gaps else "p99_ms"
        direction = "slower" if (column.deltas[key] or 0) > 0 else "faster"
        column.advice.append(
            f"{key[:3].upper()} is {abs(column.deltas[key] or 0) * 100:.0f}% {direction} than {reference.environment} "
            f"({column.figures[key]:,.0f} vs {reference.figures[key]:,.0f} ms): "
            + (
                "align its configuration, or profile both to see which phase differs."
                if differing
                else "the configuration is the same; profile both to see which phase or dependency differs."
            )
            + settings_note
        )
    if "error_rate" in column.gaps:
        column.advice.append(
            f"Errors {column.figures['error_rate'] * 100:.2f}% vs {reference.figures['error_rate'] * 100:.2f}% in "
            f"{reference.environment}: compare its error types on the dashboard before the next promotion."
            + settings_note
        )
