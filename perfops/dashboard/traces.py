"""Single requests: the slow-request list (chart 4.4), one request's detail, and similar slow requests.

These read raw traces, not rollups: a list of requests is rows, not a merge. The filter set is
resolved by the metrics query layer (so a person sees exactly the agents the charts show them),
then turned into a queryset here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet

from perfops.metrics import cells as cellmod
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import Scope, resolve_scope
from perfops.metrics.sketch import TIER_EDGES_MS
from perfops.telemetry.models import Trace

SLOW_LIMIT = 50
# Columns of the slow-request table: key -> (heading, sort key on a row dict).
SLOW_COLUMNS: dict[str, str] = {
    "started_at": "Started (UTC)",
    "agent": "Agent",
    "environment": "Environment",
    "version": "Version",
    "intent": "Intent",
    "latency_ms": "Latency (ms)",
    "status": "Status",
    "error_type": "Error type",
    "model": "Model",
}
# Agents whose baseline one list computes on the spot when no stored one covers a request (each ~20 ms).
ON_DEMAND_BASELINES = 5
# Spreadsheet programs run a cell that starts with one of these as a formula.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def agents_of(scope: Scope, path: str = "agent__") -> Q:
    """The agents a resolved scope covers, as a filter on `path` (``agent__`` from traces, ``""`` on agents)."""
    q = Q()
    if scope.departments is not None:
        q &= Q(**{f"{path}department_id__in": scope.departments})
    if scope.teams is not None:
        q &= Q(**{f"{path}team_id__in": scope.teams})
    if scope.agents is not None:
        q &= Q(**{f"{path}id__in": scope.agents})
    return q


def traces_in_scope(scope: Scope, start: datetime, end: datetime) -> QuerySet[Trace]:
    """The raw traces that a resolved filter scope covers in [start, end)."""
    qs = Trace.objects.filter(started_at__gte=start, started_at__lt=end)
    if scope.empty:
        return qs.none()
    qs = qs.filter(agents_of(scope), environment__in=[cellmod.ENVIRONMENTS[code] for code in scope.environments])
    if scope.intent is not None:
        qs = qs.filter(intent=scope.intent)
    if scope.statuses is not None:
        qs = qs.filter(status__in=[cellmod.STATUSES[code] for code in scope.statuses])
    if scope.tiers is not None:
        edges = (0.0, *TIER_EDGES_MS, None)
        tier_q = Q()
        for tier in scope.tiers:
            low, high = edges[tier], edges[tier + 1]
            tier_q |= Q(latency_ms__gte=low) & (Q() if high is None else Q(latency_ms__lt=high))
        qs = qs.filter(tier_q)
    if scope.versions is not None:
        version_q = Q()
        for agent_id, environment, name, _since in scope.versions:
            version_q |= Q(agent_id=agent_id, environment=cellmod.ENVIRONMENTS[environment], version=name)
        qs = qs.filter(version_q) if scope.versions else qs.none()
    return qs


@dataclass(frozen=True)
class SlowRequests:
    """The slowest requests of a filter set, as plain rows (cacheable) with their phase split."""

    rows: list[dict[str, Any]]
    phase_names: list[str]


def slow_requests(filters: MetricFilters, user: Any, now: datetime, limit: int = SLOW_LIMIT) -> SlowRequests:
    """The `limit` slowest requests in the window, slowest first."""
    from perfops.analytics import causes

    scope = resolve_scope(filters, user)
    start, end = filters.window(now)
    found = (
        traces_in_scope(scope, start, end)
        .select_related("agent")
        .only(
            "trace_id",
            "agent__slug",
            "agent__name",
            "environment",
            "version",
            "intent",
            "started_at",
            "latency_ms",
            "status",
            "error_type",
            "model",
            "phases",
            "dependencies",
        )
        .order_by("-latency_ms")[:limit]
    )
    rows = []
    phase_names: dict[str, None] = {}
    slowest = list(found)
    stored = causes.stored_baselines(((t.agent_id, t.environment) for t in slowest), now)
    computed: set[tuple[int, str]] = set()
    for trace in slowest:
        phases = {str(k): float(v) for k, v in (trace.phases or {}).items() if isinstance(v, int | float)}
        for name in phases:
            phase_names.setdefault(name, None)
        pair = (trace.agent_id, trace.environment)
        known = stored.get(pair)
        cause = None
        if known is not None and known.covers(trace.started_at):
            cause = causes.request_cause(trace, known.baseline)
        elif pair in computed or len(computed) < ON_DEMAND_BASELINES:
            # No stored baseline covers it (a new agent, an old request): compute a few agents', cached, per list.
            computed.add(pair)
            cause = causes.request_cause(trace)
        rows.append(
            {
                "trace_id": trace.trace_id.hex,
                "agent": trace.agent.slug,
                "agent_name": trace.agent.name,
                "environment": trace.environment,
                "version": trace.version,
                "intent": trace.intent,
                "started_at": trace.started_at.isoformat(),
                "latency_ms": round(trace.latency_ms, 1),
                "status": trace.status,
                "error_type": trace.error_type,
                "model": trace.model,
                "phases": phases,
                "root_cause": "" if cause is None else cause.sentence,
            }
        )
    return SlowRequests(rows=rows, phase_names=list(phase_names))


def sort_rows(rows: list[dict[str, Any]], column: str, descending: bool) -> list[dict[str, Any]]:
    """Rows sorted by one column; empty values last whichever the direction."""
    if column not in SLOW_COLUMNS:
        column = "latency_ms"
    present = [r for r in rows if r.get(column) not in (None, "")]
    missing = [r for r in rows if r.get(column) in (None, "")]
    return sorted(present, key=lambda r: r[column], reverse=descending) + missing


def csv_safe(value: Any) -> str:
    """A cell that a spreadsheet shows as text, never runs as a formula (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_PREFIXES):
        return "'" + text
    return text


def slow_requests_csv(result: SlowRequests) -> str:
    """The slow-request table as CSV: one row per request, one column per phase."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trace_id", *SLOW_COLUMNS, *(f"phase_{name}_ms" for name in result.phase_names), "root_cause"])
    for row in result.rows:
        writer.writerow(
            [
                csv_safe(row["trace_id"]),
                *(csv_safe(row[key]) for key in SLOW_COLUMNS),
                *(csv_safe(row["phases"].get(name, "")) for name in result.phase_names),
                csv_safe(row.get("root_cause", "")),
            ]
        )
    return out.getvalue()


def similar_slow(trace: Trace, user: Any, limit: int = 10) -> Iterable[Trace]:
    """Requests of the same agent, environment and intent within a day of this one, at least as slow."""
    window = timedelta(hours=12)
    return (
        Trace.objects.visible_to(user)
        .filter(
            agent_id=trace.agent_id,
            environment=trace.environment,
            intent=trace.intent,
            started_at__gte=trace.started_at - window,
            started_at__lt=trace.started_at + window,
            latency_ms__gte=trace.latency_ms * 0.8,
        )
        .exclude(trace_id=trace.trace_id)
        .only("trace_id", "started_at", "latency_ms", "status", "version")
        .order_by("-latency_ms")[:limit]
    )
