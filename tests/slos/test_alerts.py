"""Burn-rate rules: created with the SLO, one event per transition, no flapping, safe to run twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core.management import call_command

from slos import alerts
from slos.models import SLO, AlertEvent, AlertRule


def fake_burns(monkeypatch, values: list[float]) -> Iterator[float]:
    series = iter(values)
    monkeypatch.setattr(alerts, "value_of", lambda rule, user, now: next(series))
    return series


def test_an_slo_brings_the_workbook_rules_and_takes_them_away(slo):
    rules = list(
        slo.alert_rules.order_by("-threshold").values_list("severity", "threshold", "window_s", "short_window_s")
    )
    assert rules == [
        ("page", 14.4, 3600, 300),
        ("page", 6.0, 21600, 1800),
        ("ticket", 3.0, 86400, 7200),
        ("ticket", 1.0, 259200, 21600),
    ]
    slo.delete()
    assert not AlertRule.objects.exists()


def test_a_flapping_burn_notifies_once_per_episode(slo, superuser, monkeypatch):
    rule = slo.alert_rules.get(threshold=14.4)
    rule.keep_firing_s = 600
    rule.save()
    from django.utils import timezone

    start = timezone.now()
    # Above, below, above, below ... every minute for ten minutes, then quiet for eleven.
    values = [20.0, 1.0] * 5 + [1.0] * 11
    fake_burns(monkeypatch, values)
    for minute in range(len(values)):
        alerts.evaluate(rule, superuser, start + timedelta(minutes=minute))
    kinds = list(AlertEvent.objects.order_by("at").values_list("kind", "episode"))
    assert kinds == [("firing", 1), ("resolved", 1)]


def test_a_pending_period_holds_the_page_until_the_burn_lasts(slo, superuser, monkeypatch):
    from django.utils import timezone

    rule = slo.alert_rules.get(threshold=14.4)
    rule.pending_s = 180
    rule.save()
    start = timezone.now()
    fake_burns(monkeypatch, [20.0, 20.0, 1.0, 20.0, 20.0, 20.0, 20.0])
    events = [alerts.evaluate(rule, superuser, start + timedelta(minutes=m)) for m in range(7)]
    assert events == [None, None, None, None, None, None, "firing"]


def test_two_evaluators_record_one_transition(slo, superuser, monkeypatch):
    from django.utils import timezone

    rule = slo.alert_rules.get(threshold=14.4)
    stale = AlertRule.objects.get(pk=rule.pk)  # a second worker loaded the same rule
    fake_burns(monkeypatch, [20.0, 20.0])
    now = timezone.now()
    assert alerts.evaluate(rule, superuser, now) == "firing"
    assert alerts.evaluate(stale, superuser, now) is None
    assert AlertEvent.objects.count() == 1


def test_a_real_burn_pages_from_the_rollups(rolled_up, superuser):
    agent = rolled_up.agents["pay-bot"]
    slo = SLO.objects.create(
        name="pay-bot availability",
        scope="agent",
        agent=agent,
        department=agent.department,
        kind="availability",
        target=0.999,
        window_days=30,
    )
    # The traffic fails 12% of requests: 120x a 99.9% budget in every window with traffic. (Its last
    # five minutes hold a request or two of this agent, so the 1 h / 5 min page may or may not fire.)
    counts = alerts.evaluate_all(rolled_up.now)
    assert counts["rules"] == 4
    fired = dict(AlertEvent.objects.filter(rule__slo=slo).values_list("rule__threshold", "kind"))
    assert fired[6.0] == fired[3.0] == fired[1.0] == "firing"
    rule = slo.alert_rules.get(threshold=6.0)
    assert rule.state == "firing"
    assert rule.last_value == pytest.approx(120, rel=0.35)
    call_command("evaluate_alerts")  # nothing new: still firing, no second event
    assert AlertEvent.objects.filter(rule__slo=slo).count() == len(fired)
