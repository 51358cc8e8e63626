"""SLIs, budgets and burn rates of SLOs, computed as good / total event counts through the metrics query layer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q

from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery
from slos import maths
from slos.models import SLO, percent, until

# At most this many SLOs are evaluated for one dashboard panel (the most specific first).
MAX_SLOS_PER_VIEW = 20
_SPECIFICITY = {SLO.Scope.AGENT: 0, SLO.Scope.TEAM: 1, SLO.Scope.DEPARTMENT: 2, SLO.Scope.FLEET: 3}


def _threshold(slo: SLO) -> float | None:
    return slo.threshold_ms if slo.kind == SLO.Kind.LATENCY else None


def budget(slo: SLO, user: Any, now: datetime, window: timedelta | None = None) -> maths.Budget:
    """The SLO's good and total events over its window (or `window`)."""
    query = MetricsQuery(slo.filters(now, window), user, now=now)
    counts = query.good_events(_threshold(slo)).get("all", {"good": 0, "total": 0})
    return maths.Budget(slo.target, counts["good"], counts["total"])


def budgets_by_agent(slo: SLO, user: Any, now: datetime) -> dict[str, maths.Budget]:
    """The SLO applied to each agent of its scope: {agent slug: budget over the SLO window}."""
    query = MetricsQuery(slo.filters(now), user, now=now)
    return {
        agent: maths.Budget(slo.target, counts["good"], counts["total"])
        for agent, counts in query.good_events(_threshold(slo), by="agent").items()
    }


def burn_rate(slo: SLO, user: Any, now: datetime, window: timedelta) -> float:
    """How fast the SLO's budget burned over the last `window` (0 without requests)."""
    spent = budget(slo, user, now, window)
    return maths.burn_rate(spent.bad / spent.total if spent.total else 0.0, slo.target)


# The "current" burn rate of a report: the fastest page rule's long window.
CURRENT_BURN_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class RuleCheck:
    """One burn-rate rule against today's data: would it fire now?"""

    severity: str
    threshold: float
    long_window: timedelta
    short_window: timedelta
    long_burn: float
    short_burn: float

    @property
    def fires(self) -> bool:
        return self.long_burn >= self.threshold and self.short_burn >= self.threshold


@dataclass(frozen=True)
class Report:
    """An SLO's error budget now (A4.1): allowed and spent bad events, what is left, how fast it goes."""

    slo: SLO
    budget: maths.Budget
    current_burn: float
    exhaustion: timedelta | None  # at the current burn rate; None when it is not being spent
    rules: list[RuleCheck]

    @property
    def firing(self) -> list[RuleCheck]:
        return [rule for rule in self.rules if rule.fires]

    @property
    def compliance_text(self) -> str:
        return percent(self.budget.compliance, 5, none="no traffic")

    @property
    def remaining_text(self) -> str:
        return percent(self.budget.remaining, 4, none="no traffic")

    @property
    def exhaustion_text(self) -> str:
        return until(self.exhaustion)


def report(slo: SLO, user: Any, now: datetime, *, with_rules: bool = True) -> Report:
    """The budget, current burn rate, projected exhaustion and, per Workbook rule, whether it fires today.

    Works on an unsaved SLO too: the confirmation step shows this before anything is stored.
    """
    spent = budget(slo, user, now)
    burns: dict[timedelta, float] = {}

    def burn(window: timedelta) -> float:
        if window not in burns:
            burns[window] = burn_rate(slo, user, now, window)
        return burns[window]

    checks = []
    if with_rules:
        for rule in maths.rules_for(slo.window):
            checks.append(
                RuleCheck(
                    rule.severity,
                    rule.burn_rate,
                    rule.long_window,
                    rule.short_window,
                    burn(rule.long_window),
                    burn(rule.short_window),
                )
            )
    current = burn(CURRENT_BURN_WINDOW)
    return Report(slo, spent, current, maths.exhaustion(spent.remaining, current, slo.window), checks)


def covering(filters: MetricFilters) -> Q:
    """Scoped rows (SLOs, rules) that cover the agents a filter set shows: its own scope and every wider one."""
    scope = Q(scope=SLO.Scope.FLEET)
    if filters.agent:
        scope |= Q(agent__slug=filters.agent) | Q(scope=SLO.Scope.TEAM, team__agents__slug=filters.agent)
        scope |= Q(scope=SLO.Scope.DEPARTMENT, department__agents__slug=filters.agent)
    elif filters.team:
        scope |= Q(team__slug=filters.team) | Q(scope=SLO.Scope.DEPARTMENT, department__teams__slug=filters.team)
        scope |= Q(agent__team__slug=filters.team)
    elif filters.department:
        scope |= Q(department__slug=filters.department)
    else:
        scope = Q()
    return scope & Q(environment__in=filters.environments)


def applicable(filters: MetricFilters, user: Any) -> list[SLO]:
    """SLOs that cover the agents a filter set shows, in its environments, most specific first."""
    slos = SLO.objects.visible_to(user).select_related("department", "team", "agent")
    found = list(slos.filter(covering(filters)).distinct())
    found.sort(key=lambda slo: (_SPECIFICITY[SLO.Scope(slo.scope)], slo.name))
    return found[:MAX_SLOS_PER_VIEW]


def agent_statuses(slos: Iterable[SLO], user: Any, now: datetime) -> dict[str, tuple[SLO, maths.Budget]]:
    """Each agent's most specific SLO and its budget (an agent covered by several takes the narrowest)."""
    out: dict[str, tuple[SLO, maths.Budget]] = {}
    for slo in slos:
        for agent, spent in budgets_by_agent(slo, user, now).items():
            out.setdefault(agent, (slo, spent))
    return out
