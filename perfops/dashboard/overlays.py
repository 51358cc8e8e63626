"""Where later work plugs into the dashboard: SLO overlays and the analytics.

Every panel that shows an SLO line, an SLO colour, a forecast, an anomaly, a change point or a
root cause reads it through one function here. The SLO functions read the slos app; until the
analytics exist theirs return nothing, and the panels show nothing for them (never a made-up
line): each panel says in its footnote what will appear there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from perfops.metrics.filters import MetricFilters


@dataclass(frozen=True)
class SloLine:
    """A latency objective to draw: `quantile` of requests under `threshold_ms` (e.g. 0.95 under 500 ms)."""

    name: str
    quantile: float
    threshold_ms: float
    environment: str


@dataclass(frozen=True)
class SloStatus:
    """One agent's compliance with its SLO over the window (chart 4.10, and the colour of its bar in 4.5)."""

    agent: str
    slo: str
    compliance: float  # share of good events, 0..1
    target: float
    budget_remaining: float  # share of the error budget left, may be negative


@dataclass(frozen=True)
class Marker:
    """A point on the time axis that analytics wants a person to look at (a change point, an anomaly)."""

    at: datetime
    label: str
    evidence: str


def generation() -> str:
    """Changes to what the overlays draw (SLOs, flags, configurations): part of the panels' cache key, so a
    new SLO or a dismissed flag shows at the next load rather than after the chart's TTL."""
    from django.db.models import Count, Max

    from interventions.models import AgentConfig, RegressionFlag
    from slos.models import SLO

    slos = SLO.objects.aggregate(n=Count("pk"), at=Max("updated_at"))
    flags = RegressionFlag.objects.aggregate(n=Count("pk"), at=Max("flagged_at"), decided=Max("decided_at"))
    configs = AgentConfig.objects.aggregate(n=Count("pk"))
    return f"{slos['n']}:{slos['at']}:{flags['n']}:{flags['at']}:{flags['decided']}:{configs['n']}"


def config_changes(filters: MetricFilters, user: Any, start_iso: str, end_iso: str) -> list[tuple[str, str]]:
    """(time, "config v3: note") of the agent's configuration versions in the window (agent level only)."""
    from datetime import datetime as dt

    from interventions.models import AgentConfig

    if not filters.agent:
        return []
    start = dt.fromisoformat(start_iso.replace("Z", "+00:00"))
    end = dt.fromisoformat(end_iso.replace("Z", "+00:00"))
    versions = (
        AgentConfig.objects.visible_to(user)
        .filter(
            agent__slug=filters.agent, environment__in=filters.environments, created_at__gte=start, created_at__lt=end
        )
        .order_by("created_at")[:20]
    )
    return [
        (v.created_at.isoformat(), f"config v{v.version}" + (f": {v.note[:40]}" if v.note else "")) for v in versions
    ]


def slo_lines(filters: MetricFilters, user: Any) -> list[SloLine]:
    """Latency SLOs that apply to the filtered scope (chart 4.1, 4.13)."""
    from slos.compliance import applicable
    from slos.models import SLO

    return [
        SloLine(
            name=f"{slo.name}: {slo.target * 100:g}% < {slo.threshold_ms:g} ms",
            quantile=slo.target,
            threshold_ms=float(slo.threshold_ms),
            environment=slo.environment,
        )
        for slo in applicable(filters, user)
        if slo.kind == SLO.Kind.LATENCY and slo.threshold_ms is not None
    ]


def slo_statuses(filters: MetricFilters, user: Any) -> dict[str, SloStatus]:
    """Per agent slug, its most specific SLO's compliance over the SLO's own window (charts 4.5, 4.10)."""
    from django.utils import timezone

    from slos.compliance import agent_statuses, applicable

    now = timezone.now()
    out = {}
    for agent, (slo, spent) in agent_statuses(applicable(filters, user), user, now).items():
        if spent.compliance is None or spent.remaining is None:
            continue
        out[agent] = SloStatus(
            agent=agent,
            slo=slo.objective,
            compliance=spent.compliance,
            target=slo.target,
            budget_remaining=spent.remaining,
        )
    return out


@dataclass(frozen=True)
class BudgetBurn:
    """The burn rate of an availability SLO's error budget per time bucket (chart 4.2)."""

    slo: str
    target: float
    points: list[tuple[str, float | None]]


def error_budget_burn(filters: MetricFilters, user: Any, points: list[dict[str, Any]]) -> BudgetBurn | None:
    """How fast the shown traffic spends the budget of the most specific availability SLO covering it.

    `points` are the chart's own buckets (count, errors, timeouts), so the line needs no second read:
    burn = failed share / (1 - target); at 1x the budget lasts exactly the SLO window.
    """
    from slos.compliance import applicable
    from slos.models import SLO

    slo = next((s for s in applicable(filters, user) if s.kind == SLO.Kind.AVAILABILITY), None)
    if slo is None:
        return None
    allowed = 1.0 - slo.target
    burns = [
        (p["t"], round((p["errors"] + p["timeouts"]) / p["count"] / allowed, 3) if p["count"] else None) for p in points
    ]
    return BudgetBurn(slo=slo.name, target=slo.target, points=burns)


@dataclass(frozen=True)
class AlertState:
    """A rule that is firing or about to (pending) for the scope a panel shows."""

    name: str
    state: str
    severity: str
    value: str
    url: str


# Which rules a panel shows, by what it plots: latency, errors or throughput.
PANEL_METRICS = {
    "latency": ("latency", "perf_budget"),
    "errors": ("error_rate",),
    "throughput": ("throughput",),
    "capacity": ("capacity",),
}


def alert_states(filters: MetricFilters, user: Any) -> dict[str, list[AlertState]]:
    """Firing and pending rules that cover the filtered scope, grouped as panels plot them.

    Burn-rate and error-budget rules go with latency or errors by their SLO's kind.
    """
    from django.urls import reverse

    from slos.compliance import covering
    from slos.models import SLO, AlertRule

    rules = (
        AlertRule.objects.visible_to(user)
        .filter(covering(filters), enabled=True, state__in=[AlertRule.State.FIRING, AlertRule.State.PENDING])
        .select_related("slo")
        .distinct()
        .order_by("state", "name")[:50]
    )
    out: dict[str, list[AlertState]] = {}
    for rule in rules:
        if rule.slo is not None:
            group = "latency" if rule.slo.kind == SLO.Kind.LATENCY else "errors"
        else:
            group = next((g for g, metrics in PANEL_METRICS.items() if rule.metric in metrics), "latency")
        out.setdefault(group, []).append(
            AlertState(
                rule.name, rule.state, rule.severity, rule.value_text, reverse("slos:rule-detail", args=[rule.pk])
            )
        )
    return out


def capacity_forecast(filters: MetricFilters, user: Any, now: datetime) -> Any:
    """The throughput forecast with its band and the dates 80% / 100% of capacity are reached (chart 4.11).

    A `perfops.analytics.capacity.Outlook`, or None with under 3 days of traffic.
    """
    from perfops.analytics.capacity import outlook

    return outlook(filters, user, now)


def error_anomalies(filters: MetricFilters, user: Any, now: datetime) -> dict[tuple[str, str], str]:
    """(error type, agent slug) -> why its error rate of the last hours is anomalous for that agent (chart 4.12)."""
    from perfops.analytics.errors import anomalies

    return anomalies(filters, user, now)


def change_points(filters: MetricFilters, user: Any) -> list[Marker]:
    """Regression flags (suspected and confirmed) of the shown agents in the window (chart 4.14).

    Each sits where its version went out (or where it was flagged, if perfops never saw the version
    arrive). On an agent's page the change points detected in its hourly latency and error series join
    them, where the step is.
    """
    from django.db.models import F
    from django.db.models.functions import Coalesce
    from django.utils import timezone

    from interventions.models import RegressionFlag
    from perfops.metrics.query import resolve_scope
    from perfops.telemetry.models import Deployment

    start, end = filters.window(timezone.now())
    scope = resolve_scope(filters, user)
    flags = (
        RegressionFlag.objects.visible_to(user)
        .exclude(status=RegressionFlag.Status.DISMISSED)
        .filter(environment__in=filters.environments)
        .select_related("agent")
    )
    if scope.agents is not None:
        flags = flags.filter(agent_id__in=scope.agents)
    elif scope.teams is not None:
        flags = flags.filter(agent__team_id__in=scope.teams)
    elif scope.departments is not None:
        flags = flags.filter(agent__department_id__in=scope.departments)
    markers = []
    for flagged in flags[:50]:
        deployed = (
            Deployment.objects.filter(agent=flagged.agent, environment=flagged.environment, version=flagged.version)
            .annotate(at=Coalesce(F("deployed_at"), F("first_seen_at")))
            .values_list("at", flat=True)
            .first()
        )
        at = deployed or flagged.flagged_at
        if start <= at <= end:
            label = f"{flagged.status}: {flagged.agent.slug} {flagged.version}"
            markers.append(Marker(at=at, label=label, evidence=flagged.summary))
    if filters.agent:
        from perfops.analytics import changes
        from perfops.telemetry.models import Agent

        agent = Agent.objects.visible_to(user).filter(slug=filters.agent).first()
        for environment in filters.environments:
            for step in changes.detect(agent, environment, user, timezone.now()) if agent is not None else []:
                if start <= step.at <= end:
                    what = "p95" if step.metric == "p95" else "errors"
                    markers.append(Marker(at=step.at, label=f"step in {what} ({environment})", evidence=step.reason))
    return sorted(markers, key=lambda m: m.at)


def root_cause(trace: Any) -> str | None:
    """One sentence on why this request was slow (the root-cause column of 4.4), against its agent's baseline."""
    from perfops.analytics.causes import request_cause

    cause = request_cause(trace)
    return None if cause is None else cause.sentence


def slowdown(filters: MetricFilters, user: Any, now: datetime) -> str | None:
    """Why the scope is slower than in the window before, by phase and call (the phase breakdown's note)."""
    from perfops.analytics.causes import scope_shift

    return scope_shift(filters, user, now)
