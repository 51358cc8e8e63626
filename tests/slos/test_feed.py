"""The alert feed: own departments only, acknowledge and silence by engineers and managers, audited, CSRF."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from slos import alerts
from slos.models import AlertEvent, AlertRule


@pytest.fixture
def fired(slo) -> AlertEvent:
    rule = slo.alert_rules.get(threshold=14.4)
    AlertRule.objects.filter(pk=rule.pk).update(state="firing", state_since=timezone.now(), last_value=20.0)
    key = f"rule:{rule.pk}:episode:1:firing"
    return AlertEvent.objects.create(rule=rule, kind="firing", episode=1, at=timezone.now(), value=20.0, dedupe_key=key)


def client_for(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def test_the_feed_shows_own_departments_events_and_the_dashboard_says_what_fires(fired, viewer, outsider):
    page = client_for(viewer).get(reverse("slos:feed")).content.decode()
    assert "pay-bot availability: page at 14.4x over 1 h" in page
    assert "acknowledge" not in page  # viewers read
    assert "pay-bot availability" not in client_for(outsider).get(reverse("slos:feed")).content.decode()
    dashboard = client_for(viewer).get(reverse("dashboard:performance")).content.decode()
    assert "Firing:</strong> pay-bot availability: page at 14.4x over 1 h" in dashboard


def test_an_engineer_acknowledges_once_and_it_is_audited(fired, engineer, outsider, viewer):
    url = reverse("slos:acknowledge", args=[fired.pk])
    assert client_for(viewer).post(url).status_code == 403
    assert client_for(outsider).post(url).status_code == 404
    assert client_for(engineer).post(url).status_code == 302
    fired.refresh_from_db()
    assert fired.acknowledged_by == engineer
    acks = LogEntry.objects.get_for_object(fired).filter(action=LogEntry.Action.UPDATE)
    assert acks.get().actor == engineer
    client_for(engineer).post(url)
    assert acks.count() == 1


def test_a_silenced_rule_records_events_but_notifies_nobody(
    fired, engineer, monkeypatch, django_capture_on_commit_callbacks
):
    rule = fired.rule
    response = client_for(engineer).post(reverse("slos:silence", args=[rule.pk]), {"hours": "4"})
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.silenced_until is not None
    assert client_for(engineer).post(reverse("slos:silence", args=[rule.pk]), {"hours": "7"}).status_code == 400
    sent: list[tuple[int, list[int]]] = []
    monkeypatch.setattr(alerts, "_notify", lambda event_id, channel_ids: sent.append((event_id, channel_ids)))
    monkeypatch.setattr(alerts, "value_of", lambda *args: 0.0)
    with django_capture_on_commit_callbacks(execute=True):
        assert alerts.evaluate(rule, engineer) == "resolved"
    assert sent == [(AlertEvent.objects.get(kind="resolved").pk, [])]


def test_a_post_without_a_csrf_token_is_refused(fired, engineer):
    client = client_for(engineer, enforce_csrf_checks=True)
    assert client.post(reverse("slos:acknowledge", args=[fired.pk])).status_code == 403
    fired.refresh_from_db()
    assert fired.acknowledged_at is None
