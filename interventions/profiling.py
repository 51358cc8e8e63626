"""Time-boxed profiling (A4.2): start, stop, end by itself, mark the traces, write the bottleneck report.

Ending is a conditional update (active -> ended), so the sweeper, a stop and a retried task can all
try at once and exactly one ends the session and writes its report. The sweeper runs every minute
under beat and ends every session past `expires_at`; nothing relies on a broker countdown, which
Redis may redeliver or lose.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from interventions.models import ProfilingSession
from perfops.access.audit import record_update
from perfops.telemetry.models import Agent, Trace

logger = logging.getLogger(__name__)

# The report reads at most this many of the session's traces (the newest), and as many before it.
REPORT_TRACES = 20_000
BASELINE = timedelta(hours=24)
TOP_SLOW = 10


class AlreadyActive(Exception):
    """The agent is already being profiled in that environment."""


def start(agent: Agent, environment: str, duration_s: int, user: Any, reason: str = "") -> ProfilingSession:
    now = timezone.now()
    session = ProfilingSession(
        agent=agent,
        environment=environment,
        duration_s=duration_s,
        reason=reason,
        started_by=user if getattr(user, "pk", None) else None,
        started_at=now,
        expires_at=now + timedelta(seconds=duration_s),
    )
    session.full_clean(validate_constraints=False)  # one active session: the database decides, below
    try:
        with transaction.atomic():
            session.save()
    except IntegrityError as exc:
        raise AlreadyActive(f"{agent.slug} is already being profiled in {environment}.") from exc
    forget_active()
    return session


def end(session: ProfilingSession, *, user: Any = None, now: datetime | None = None) -> bool:
    """End the session (stopped by `user`, or expired when no user); True when this call ended it."""
    now = now or timezone.now()
    reason = ProfilingSession.EndReason.STOPPED if user is not None else ProfilingSession.EndReason.EXPIRED
    ended_at = min(now, session.expires_at)
    ended_by = user if getattr(user, "pk", None) else None
    changed = ProfilingSession.objects.filter(pk=session.pk, status=ProfilingSession.Status.ACTIVE).update(
        status=ProfilingSession.Status.ENDED, ended_at=ended_at, ended_by=ended_by, end_reason=reason
    )
    if not changed:
        return False
    forget_active()
    session.refresh_from_db()
    record_update(
        session,
        user,
        {
            "status": ("active", "ended"),
            "end_reason": ("", reason),
            "ended_at": (None, ended_at),
            "ended_by": (None, ended_by),
        },
    )
    write_report(session)
    return True


def sweep(now: datetime | None = None) -> int:
    """End every active session past its expiry (the beat task, every minute); how many this ended."""
    now = now or timezone.now()
    ended = 0
    for session in ProfilingSession.objects.filter(status=ProfilingSession.Status.ACTIVE, expires_at__lte=now):
        ended += end(session, now=now)
    # A session ended by a call that died before its report: write it now.
    for session in ProfilingSession.objects.filter(
        status=ProfilingSession.Status.ENDED, report_status=ProfilingSession.ReportStatus.NONE
    ):
        write_report(session)
    return ended


# --- ingest marks profiled traces ------------------------------------------------------------------

# Active sessions are kept in the Django cache (Redis in production) for a few seconds, so ingest does
# not query for them per request; starting or ending a session drops the entry at once.
ACTIVE_KEY = "interventions:profiling:active"
ACTIVE_TTL_S = 10


def forget_active() -> None:
    cache.delete(ACTIVE_KEY)


def active_windows() -> dict[tuple[int, str], list[tuple[datetime, datetime]]]:
    """{(agent id, environment): [(start, end)]} of active sessions (cached for ACTIVE_TTL_S)."""
    # The cache only saves a query: while Redis is down it misses (perfops.cache) and ingest asks the database.
    found: dict[tuple[int, str], list[tuple[datetime, datetime]]] | None = cache.get(ACTIVE_KEY)
    if found is not None:
        return found
    windows: dict[tuple[int, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    for agent_id, environment, started, expires in ProfilingSession.objects.filter(
        status=ProfilingSession.Status.ACTIVE
    ).values_list("agent_id", "environment", "started_at", "expires_at"):
        windows[(agent_id, environment)].append((started, expires))
    found = dict(windows)
    cache.set(ACTIVE_KEY, found, ACTIVE_TTL_S)
    return found


def profiled(agent_id: int, environment: str, started_at: datetime) -> bool:
    """Whether a trace belongs to an active profiling session (ingest sets Trace.profiled by this)."""
    windows = active_windows()
    if not windows:
        return False
    return any(start <= started_at <= end for start, end in windows.get((agent_id, environment), ()))


# --- the bottleneck report ---------------------------------------------------------------------------


def write_report(session: ProfilingSession) -> None:
    """Compute and store the report; a failure is recorded on the session (and logged), never raised."""
    try:
        report = build_report(session)
        status = ProfilingSession.ReportStatus.READY
    except Exception:
        logger.exception("profiling report for session %s failed", session.pk)
        report, status = None, ProfilingSession.ReportStatus.FAILED
    ProfilingSession.objects.filter(pk=session.pk).update(report=report, report_status=status)
    session.report, session.report_status = report, status


def _traces(agent: Agent, environment: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows = (
        Trace.objects.filter(agent=agent, environment=environment, started_at__gte=start, started_at__lt=end)
        .order_by("-started_at")
        .values("trace_id", "started_at", "latency_ms", "status", "phases", "dependencies", "model", "cache_hit")
    )
    return [dict(row) for row in rows[:REPORT_TRACES]]


def _spread(values: Iterable[float]) -> dict[str, float | None]:
    array = np.asarray(list(values), dtype=np.float64)
    if not len(array):
        return {"p50_ms": None, "p95_ms": None, "mean_ms": None}
    return {
        "p50_ms": round(float(np.percentile(array, 50)), 2),
        "p95_ms": round(float(np.percentile(array, 95)), 2),
        "mean_ms": round(float(array.mean()), 2),
    }


def _parts(traces: list[dict[str, Any]]) -> dict[tuple[str, str], list[float]]:
    """Milliseconds per phase and per dependency call, over the traces: {(kind, name): [ms, ...]}."""
    parts: dict[tuple[str, str], list[float]] = defaultdict(list)
    for trace in traces:
        for name, ms in (trace["phases"] or {}).items():
            if isinstance(ms, int | float):
                parts[("phase", str(name))].append(float(ms))
        for call in trace["dependencies"] or []:
            if isinstance(call, dict) and isinstance(call.get("duration_ms"), int | float):
                parts[(f"dependency:{call.get('kind', '?')}", str(call.get("name", "?")))].append(
                    float(call["duration_ms"])
                )
    return parts


def build_report(session: ProfilingSession) -> dict[str, Any]:
    """Per phase and dependency: p50 / p95 and share of latency, against the 24 h before the session."""
    start, end = session.started_at, session.window_end
    during = _traces(session.agent, session.environment, start, end)
    before = _traces(session.agent, session.environment, start - BASELINE, start)
    latency_during = sum(t["latency_ms"] for t in during)
    latency_before = sum(t["latency_ms"] for t in before)
    parts_during, parts_before = _parts(during), _parts(before)
    rows: list[dict[str, Any]] = []
    for (kind, name), values in parts_during.items():
        now_stats = _spread(values)
        base_stats = _spread(parts_before.get((kind, name), []))
        share = sum(values) / latency_during if latency_during else None
        base_share = sum(parts_before.get((kind, name), [])) / latency_before if latency_before else None
        change = (
            round(now_stats["p95_ms"] / base_stats["p95_ms"], 3)
            if now_stats["p95_ms"] and base_stats["p95_ms"]
            else None
        )
        rows.append(
            {
                "kind": kind,
                "name": name,
                "calls": len(values),
                **now_stats,
                "share_of_latency": None if share is None else round(share, 4),
                "baseline": {**base_stats, "share_of_latency": None if base_share is None else round(base_share, 4)},
                "p95_vs_baseline": change,
            }
        )
    rows.sort(key=lambda row: -(row["share_of_latency"] or 0.0))
    overall = _spread(t["latency_ms"] for t in during)
    baseline = _spread(t["latency_ms"] for t in before)
    slow = sorted(during, key=lambda t: -t["latency_ms"])[:TOP_SLOW]
    overhead = (
        round(overall["mean_ms"] / baseline["mean_ms"] - 1.0, 4) if overall["mean_ms"] and baseline["mean_ms"] else None
    )
    bottleneck: dict[str, Any] | None = rows[0] if rows else None
    summary = (
        f"{bottleneck['name']} ({bottleneck['kind']}) takes {bottleneck['share_of_latency'] * 100:.0f}% of the "
        f"latency, p95 {bottleneck['p95_ms']:,.0f} ms"
        + (f", {bottleneck['p95_vs_baseline']:.2f}x its baseline" if bottleneck["p95_vs_baseline"] else "")
        if bottleneck and bottleneck["share_of_latency"] is not None
        else "No phase or dependency timing arrived during the session."
    )
    return {
        "session": session.pk,
        "agent": session.agent.slug,
        "environment": session.environment,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "baseline_window": {"start": (start - BASELINE).isoformat(), "end": start.isoformat()},
        "traces": len(during),
        "baseline_traces": len(before),
        "sampled": len(during) >= REPORT_TRACES,
        "latency": overall,
        "baseline_latency": baseline,
        "errors": sum(1 for t in during if t["status"] != "ok"),
        "cache_hit_rate": round(sum(1 for t in during if t["cache_hit"]) / len(during), 4) if during else None,
        "overhead": overhead,
        "summary": summary,
        "parts": rows,
        "slowest": [
            {
                "trace_id": str(t["trace_id"]),
                "started_at": t["started_at"].isoformat(),
                "latency_ms": t["latency_ms"],
                "status": t["status"],
                "model": t["model"],
            }
            for t in slow
        ],
    }


def report_csv_rows(report: dict[str, Any]) -> list[list[Any]]:
    """The report's parts as a table (the CSV export; cells are made formula-safe by the writer)."""
    header = [
        "kind",
        "name",
        "calls",
        "p50_ms",
        "p95_ms",
        "mean_ms",
        "share_of_latency",
        "baseline_p50_ms",
        "baseline_p95_ms",
        "baseline_share_of_latency",
        "p95_vs_baseline",
    ]
    rows: list[list[Any]] = [header]
    for part in report.get("parts", []):
        base = part["baseline"]
        rows.append(
            [
                part["kind"],
                part["name"],
                part["calls"],
                part["p50_ms"],
                part["p95_ms"],
                part["mean_ms"],
                part["share_of_latency"],
                base["p50_ms"],
                base["p95_ms"],
                base["share_of_latency"],
                part["p95_vs_baseline"],
            ]
        )
    return rows
