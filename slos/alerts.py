"""Burn-rate alert rules: created with an SLO, evaluated every minute, one event per state change.

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

from slos import compliance, maths
from slos.models import SLO, AlertEvent, AlertRule

logger = logging.getLogger(__name__)


def create_rules(slo: SLO) -> list[AlertRule]:
    """The Workbook's four burn-rate rules for the SLO's window (replacing any it had)."""
    slo.alert_rules.all().delete()
    rules = []
    for rule in maths.rules_for(slo.window):
        rules.append(
            AlertRule.objects.create(
                slo=slo,
                name=f"{slo.name}: {rule.severity} at {rule.burn_rate:g}x over {_span(rule.long_window)}",
                severity=rule.severity,
                burn_rate=rule.burn_rate,
                long_window_s=int(rule.long_window.total_seconds()),
                short_window_s=int(rule.short_window.total_seconds()),
            )
        )
    return rules


def _span(window: timedelta) -> str:
    hours = window.total_seconds() / 3600
    return f"{hours / 24:g} d" if hours >= 24 else f"{hours:g} h"


def burn(rule: AlertRule, user: Any, now: datetime) -> float:
    """The rule's value: the smaller burn rate of its two windows (both must reach the threshold)."""
    rates = []
    for seconds in (rule.long_window_s, rule.short_window_s):
        spent = compliance.budget(rule.slo, user, now, timedelta(seconds=seconds))
        ratio = spent.bad / spent.total if spent.total else 0.0
        rates.append(maths.burn_rate(ratio, rule.slo.target))
    return min(rates)


def evaluate(rule: AlertRule, user: Any, now: datetime | None = None) -> str | None:
    """Advance one rule's state; returns the event kind recorded ("firing", "resolved") or None."""
    now = now or timezone.now()
    value = burn(rule, user, now)
    holds = value >= rule.burn_rate
    state, episode = rule.state, rule.episode
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
        logger.info("alert %s: %s (burn %.2fx, threshold %.2fx)", rule, event, value, rule.burn_rate)
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
        "slo", "slo__department", "slo__team", "slo__agent"
    ):
        counts["rules"] += 1
        event = evaluate(rule, system, now)
        if event:
            counts[event] += 1
    return counts
