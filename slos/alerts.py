"""Alert rules: burn-rate rules created with an SLO, budget rules with a performance budget, and
standalone rules on latency, error rate and throughput; evaluated every minute, one event per state change.

Evaluation is safe to run twice at once or to retry: a transition is claimed with a conditional
update on the rule's (state, episode), and each event has a unique dedupe key (rule, episode, kind),
so two evaluators never record a transition twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from perfops.metrics.query import MetricsQuery, quantile_key
from slos import compliance, maths
from slos.models import SLO, AlertEvent, AlertRule, PerformanceBudget, format_value, span

logger = logging.getLogger(__name__)


def create_rules(slo: SLO, *, keep_channels: bool = False) -> list[AlertRule]:
    """The Workbook's four burn-rate rules for the SLO's window (replacing the burn-rate rules it had).

    `keep_channels`: each new rule notifies the channels the old rules of its severity notified.
    """
    old = slo.alert_rules.filter(metric=AlertRule.Metric.BURN_RATE)
    channels: dict[str, set[int]] = {}
    if keep_channels:
        for severity, channel_id in old.filter(channels__isnull=False).values_list("severity", "channels"):
            channels.setdefault(severity, set()).add(channel_id)
    old.delete()
    rules = []
    for rule in maths.rules_for(slo.window):
        long_s = int(rule.long_window.total_seconds())
        rules.append(
            AlertRule.objects.create(
                slo=slo,
                metric=AlertRule.Metric.BURN_RATE,
                name=f"{slo.name}: {rule.severity} at {rule.burn_rate:g}x over {span(long_s)}",
                severity=rule.severity,
                threshold=rule.burn_rate,
                window_s=long_s,
                short_window_s=int(rule.short_window.total_seconds()),
                created_by=slo.created_by,
            )
        )
        if channels.get(rule.severity):
            rules[-1].channels.set(channels[rule.severity])
    return rules


def create_budget_rules(budget: PerformanceBudget) -> list[AlertRule]:
    """A performance budget's two rules: close to it (warning, at `warn_at`) and breached (ticket, at 1.0)."""
    budget.alert_rules.all().delete()
    common = {
        "budget": budget,
        "metric": AlertRule.Metric.PERF_BUDGET,
        "window_s": budget.window_s,
        "created_by": budget.created_by,
    }
    return [
        AlertRule.objects.create(
            name=f"{budget.name}: close to the budget",
            severity=AlertRule.Severity.WARNING,
            threshold=budget.warn_at,
            recovery_threshold=round(budget.warn_at - 0.05, 4),
            **common,
        ),
        AlertRule.objects.create(
            name=f"{budget.name}: budget breached",
            severity=AlertRule.Severity.TICKET,
            threshold=1.0,
            recovery_threshold=0.95,
            **common,
        ),
    ]


def value_of(rule: AlertRule, user: Any, now: datetime) -> float | None:
    """What the rule watches, now: None when there is nothing to judge (no requests in the window)."""
    metric = AlertRule.Metric(rule.metric)
    window = timedelta(seconds=rule.window_s)
    if metric == AlertRule.Metric.BURN_RATE:
        assert rule.slo is not None
        windows = [window] + ([timedelta(seconds=rule.short_window_s)] if rule.short_window_s else [])
        return min(compliance.burn_rate(rule.slo, user, now, w) for w in windows)
    if metric == AlertRule.Metric.BUDGET_CONSUMED:
        assert rule.slo is not None
        remaining = compliance.budget(rule.slo, user, now).remaining
        return None if remaining is None else 1.0 - remaining
    if metric == AlertRule.Metric.PERF_BUDGET:
        assert rule.budget is not None
        from slos import budgets

        return budgets.status(rule.budget, user, now).consumed
    filters = rule.scope_filters(now - window, now, **rule.filters)
    if metric == AlertRule.Metric.CAPACITY:
        from perfops.analytics import capacity

        return capacity.days_until(filters, user, now, rule.utilization or 1.0)
    quantile = rule.quantile or 0.5
    summary = MetricsQuery(filters, user, now=now).summary(qs=(quantile,))
    if metric == AlertRule.Metric.THROUGHPUT:
        return float(summary["throughput_rps"] or 0.0)
    if not summary["count"]:
        return None
    if metric == AlertRule.Metric.ERROR_RATE:
        return float(summary["error_rate"])
    value = summary.get(quantile_key(quantile))
    return None if value is None else float(value)


def evaluate(rule: AlertRule, user: Any, now: datetime | None = None) -> str | None:
    """Advance one rule's state; returns the event kind recorded ("firing", "resolved") or None."""
    now = now or timezone.now()
    value = value_of(rule, user, now)
    state, episode = rule.state, rule.episode
    holds = rule.holds(value, recovering=state == AlertRule.State.FIRING)
    changes: dict[str, Any] = {"last_value": value, "last_evaluated_at": now}
    event: str | None = None
    fire = {"state": AlertRule.State.FIRING, "state_since": now, "last_true_at": now, "episode": episode + 1}
    if state == AlertRule.State.NORMAL and holds:
        if rule.pending_s:
            changes |= {"state": AlertRule.State.PENDING, "state_since": now}
        else:
            changes |= fire
            event = AlertEvent.Kind.FIRING
    elif state == AlertRule.State.PENDING:
        if not holds:
            changes |= {"state": AlertRule.State.NORMAL, "state_since": now}
        elif rule.state_since and now - rule.state_since >= timedelta(seconds=rule.pending_s):
            changes |= fire
            event = AlertEvent.Kind.FIRING
    elif state == AlertRule.State.FIRING:
        if holds:
            changes["last_true_at"] = now
        elif rule.last_true_at is None or now - rule.last_true_at >= timedelta(seconds=rule.keep_firing_s):
            changes |= {"state": AlertRule.State.NORMAL, "state_since": now}
            event = AlertEvent.Kind.RESOLVED
    with transaction.atomic():
        claimed = AlertRule.objects.filter(pk=rule.pk, state=state, episode=episode).update(**changes)
        if not claimed:
            return None  # another evaluator moved this rule first
        if event is not None:
            number = changes.get("episode", episode)
            try:
                with transaction.atomic():
                    created = AlertEvent.objects.create(
                        rule=rule,
                        kind=event,
                        episode=number,
                        at=now,
                        value=value,
                        dedupe_key=f"rule:{rule.pk}:episode:{number}:{event}",
                    )
            except IntegrityError:
                return None
            silenced = rule.silenced_until is not None and rule.silenced_until > now
            channel_ids = [] if silenced else list(rule.channels.values_list("pk", flat=True))
            transaction.on_commit(lambda: _notify(created.pk, channel_ids))
    for key, changed in changes.items():
        setattr(rule, key, changed)
    if event:
        logger.info("alert %s: %s (%s: %s)", rule, event, rule.condition, format_value(rule.metric, value))
    return event


def _notify(event_id: int, channel_ids: list[int]) -> None:
    from slos.tasks import deliver_event

    for channel_id in channel_ids:
        deliver_event.delay(event_id, channel_id)


def evaluate_all(now: datetime | None = None) -> dict[str, int]:
    """Every enabled rule once (the beat task and `manage.py evaluate_alerts`)."""
    from types import SimpleNamespace

    now = now or timezone.now()
    # The system evaluates with every department in view (a superuser's scope).
    system = SimpleNamespace(is_authenticated=True, is_active=True, is_superuser=True)
    counts = {"rules": 0, "firing": 0, "resolved": 0}
    for rule in AlertRule.objects.filter(enabled=True).select_related(
        "department",
        "team",
        "agent",
        "slo",
        "slo__department",
        "slo__team",
        "slo__agent",
        "budget",
        "budget__department",
        "budget__team",
    ):
        counts["rules"] += 1
        event = evaluate(rule, system, now)
        if event:
            counts[event] += 1
    return counts
