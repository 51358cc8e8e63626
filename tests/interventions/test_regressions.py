"""Regression flags and incidents: evidence from the rollups, confirm opens an incident and notifies, dismiss."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from auditlog.models import LogEntry
from django.core import mail
from django.test import Client
from django.urls import reverse

from interventions import regressions
from interventions.models import Incident, RegressionFlag
from perfops.metrics.rollup import catch_up
from slos.models import Delivery, NotificationChannel
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def rolled(agent, engineer):
    """pay-bot 1.0.0 (800 ms, no errors) for a day, then 2.0.0 (1600 ms, 1 in 10 failing) for two hours."""
    now = datetime.now(UTC).replace(microsecond=0)
    old = [
        factories.record(
            agent="pay-bot",
            version="1.0.0",
            latency_ms=800.0,
            started_at=factories.iso(now - timedelta(hours=20, minutes=i)),
        )
        for i in range(60)
    ]
    new = [
        factories.record(
            agent="pay-bot",
            version="2.0.0",
            latency_ms=1600.0,
            status="error" if i % 10 == 0 else "ok",
            error_type="llm_error" if i % 10 == 0 else None,
            started_at=factories.iso(now - timedelta(minutes=110 - i)),
        )
        for i in range(100)
    ]
    for record in new:
        if record["error_type"] is None:
            record.pop("error_type")
    client = factories.api_as(engineer, ["ingest"])
    response = client.post("/api/v1/traces", {"traces": old + new}, format="json")
    assert response.json()["accepted"] == 160
    catch_up(now - timedelta(days=2), now=now + timedelta(minutes=1))
    return now


def test_the_evidence_compares_the_version_with_the_one_before(rolled, agent, engineer):
    found = regressions.evidence(agent, "production", "2.0.0", engineer)
    assert found["baseline_version"] == "1.0.0"
    assert (found["baseline"]["count"], found["candidate"]["count"]) == (60, 100)
    assert found["changes"]["p95_ms"] == pytest.approx(1.0, abs=0.02)
    assert found["changes"]["error_rate_points"] == pytest.approx(10.0)
    text = regressions.describe(found, "2.0.0")
    assert text.startswith("2.0.0 against 1.0.0: p95 ")
    assert "errors 0.00% → 10.00%" in text


def test_confirming_opens_an_incident_and_tells_the_channels_once(
    rolled, agent, engineer, payments, django_capture_on_commit_callbacks
):
    NotificationChannel.objects.create(name="oncall", department=payments, kind="email", email_to="oncall@example.com")
    flagged = regressions.flag(agent, "production", "2.0.0", engineer)
    assert flagged.status == "suspected"
    with pytest.raises(regressions.AlreadyFlagged):
        regressions.flag(agent, "production", "2.0.0", engineer)
    with django_capture_on_commit_callbacks(execute=True):
        incident = regressions.confirm(flagged, engineer)
    assert incident.title == "Regression in pay-bot 2.0.0 (production)"
    assert len(mail.outbox) == 1
    body = json.loads(str(mail.outbox[0].body))
    assert (body["event"], body["version"], body["baseline_version"]) == ("incident_opened", "2.0.0", "1.0.0")
    assert Delivery.objects.get().key == f"incident:{incident.pk}:opened"
    with pytest.raises(regressions.NotPending):
        regressions.confirm(flagged, engineer)
    assert Incident.objects.count() == 1
    assert LogEntry.objects.get_for_object(flagged).filter(action=LogEntry.Action.UPDATE).exists()


def test_a_false_positive_is_dismissed_with_a_reason_and_can_be_flagged_again(rolled, agent, engineer):
    flagged = regressions.flag(agent, "production", "2.0.0", engineer)
    with pytest.raises(ValueError, match="Say why"):
        regressions.dismiss(flagged, engineer, "  ")
    regressions.dismiss(flagged, engineer, "load test traffic")
    assert (flagged.status, flagged.dismiss_reason, flagged.decided_by) == ("dismissed", "load test traffic", engineer)
    again = regressions.flag(agent, "production", "2.0.0", engineer)
    assert again.pk != flagged.pk


def test_the_api_flags_with_a_dry_run_first_and_decides(rolled, agent, engineer, viewer):
    client = factories.api_as(engineer, ["automation", "read"])
    body = {"agent": "pay-bot", "environment": "production", "version": "2.0.0"}
    dry = client.post("/api/v1/regression-flags", body | {"dry_run": True}, format="json").json()
    assert dry["evidence"]["baseline_version"] == "1.0.0"
    assert not RegressionFlag.objects.exists()
    made = client.post("/api/v1/regression-flags", body, format="json")
    assert made.status_code == 201
    assert client.post("/api/v1/regression-flags", body, format="json").status_code == 409
    pk = made.json()["id"]
    assert factories.api_as(viewer, ["automation"]).post(f"/api/v1/regression-flags/{pk}/confirm").status_code == 403
    refused = client.post(f"/api/v1/regression-flags/{pk}/dismiss", {"reason": ""}, format="json")
    assert refused.status_code == 400
    confirmed = client.post(f"/api/v1/regression-flags/{pk}/confirm", {"title": "2.0.0 slow"}, format="json").json()
    assert (confirmed["status"], confirmed["decided_by"]) == ("confirmed", "erin")
    incident = client.get("/api/v1/incidents").json()["results"][0]
    assert incident["title"] == "2.0.0 slow"
    resolved = client.post(f"/api/v1/incidents/{incident['id']}/resolve").json()
    assert resolved["status"] == "resolved"


def test_flagged_from_the_version_chart_and_shown_on_the_regression_timeline(rolled, agent, engineer):
    client = Client()
    client.force_login(engineer)
    hx = {"HX-Request": "true"}
    versions = client.get(reverse("dashboard:panel", args=["versions"]), {"agent": "pay-bot"}, headers=hx)
    link = reverse("interventions:flag-new", args=["pay-bot"]) + "?environment=production"
    assert link in versions.content.decode()
    preview = client.post(link, {"version": "2.0.0"}).content.decode()
    assert "2.0.0 against 1.0.0" in preview
    assert "Yes, flag it" in preview
    client.post(link, {"version": "2.0.0", "_confirmed": "1"})
    flagged = RegressionFlag.objects.get()
    timeline = client.get(reverse("dashboard:panel", args=["regressions"]), {"agent": "pay-bot"}, headers=hx)
    assert "suspected: pay-bot 2.0.0" in timeline.content.decode()
    page = client.get(reverse("interventions:flag", args=[flagged.pk])).content.decode()
    assert "Confirm regression" in page
    dismiss = reverse("interventions:flag-dismiss", args=[flagged.pk])
    client.post(dismiss, {"reason": "canary noise"})
    assert RegressionFlag.objects.get().status == "suspected"  # not before the confirmation
    client.post(dismiss, {"reason": "canary noise", "_confirmed": "1"})
    assert RegressionFlag.objects.get().status == "dismissed"
    timeline = client.get(reverse("dashboard:panel", args=["regressions"]), {"agent": "pay-bot"}, headers=hx)
    assert "pay-bot 2.0.0" not in timeline.content.decode()
