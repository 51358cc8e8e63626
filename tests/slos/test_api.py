"""The SLO API: scopes and roles, department scoping, model validation, previews, write-only secrets, audit."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.utils import timezone

from slos.models import SLO, AlertEvent, AlertRule, NotificationChannel, PerformanceBudget
from tests import factories

pytestmark = pytest.mark.django_db


def slo_body(**fields) -> dict:
    base = {"name": "pay-bot p95", "scope": "agent", "agent": "pay-bot", "kind": "latency"}
    return base | {"threshold_ms": 800, "target": 0.95, "window_days": 28} | fields


def test_a_manager_creates_an_slo_with_a_configure_token_and_it_is_audited(manager, agent):
    response = factories.api_as(manager, ["configure"]).post("/api/v1/slos", slo_body(), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["department"], body["objective"]) == ("payments", "95% of requests succeed under 800 ms over 28 days")
    assert len(body["alert_rules"]) == 4
    slo = SLO.objects.get()
    assert slo.created_by == manager
    assert LogEntry.objects.get_for_object(slo).get().actor == manager


@pytest.mark.parametrize(
    ("who", "scopes", "code"),
    [("manager", ["read"], 403), ("engineer", ["configure"], 403), ("viewer", ["configure"], 403)],
)
def test_writing_needs_the_configure_scope_and_a_managers_role(who, scopes, code, request, agent):
    person = request.getfixturevalue(who)
    assert factories.api_as(person, scopes).post("/api/v1/slos", slo_body(), format="json").status_code == code
    assert not SLO.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"threshold_ms": None}, "threshold_ms"),
        ({"target": 1.2}, "target"),
        ({"window_days": 14}, "window_days"),
        ({"scope": "team"}, "team"),
        ({"agent": "lab-bot"}, "agent"),  # another department's agent does not exist for this caller
        ({"scope": "fleet", "agent": None}, "scope"),
    ],
)
def test_a_bad_slo_is_refused_with_the_field_and_reason(manager, agent, research, fields, field):
    factories.agent("lab-bot", research)
    response = factories.api_as(manager, ["configure"]).post("/api/v1/slos", slo_body(**fields), format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not SLO.objects.exists()


def test_the_preview_says_whether_the_rules_would_fire_and_stores_nothing(manager, agent):
    response = factories.api_as(manager, ["read"]).post("/api/v1/slos/preview", slo_body(), format="json")
    assert response.status_code == 200
    body = response.json()
    labels = [fact["label"] for fact in body["facts"]]
    assert {"Objective", "Error budget", "Budget remaining", "Burn rate (last hour)"} <= set(labels)
    assert [rule["fires"] for rule in body["rules"]] == [False] * 4
    assert not SLO.objects.exists()


def test_lists_and_lookups_are_confined_to_the_callers_departments(manager, agent, research):
    outsider = factories.user("rita", "managers", [research])
    slo = SLO.objects.create(
        name="mine", scope="agent", agent=agent, department=agent.department, kind="availability", target=0.99
    )
    client = factories.api_as(outsider, ["read", "configure"])
    assert client.get("/api/v1/slos").json()["count"] == 0
    assert client.get(f"/api/v1/slos/{slo.pk}").status_code == 404
    assert client.get(f"/api/v1/slos/{slo.pk}/budget").status_code == 404
    assert client.get("/api/v1/alert-rules").json()["count"] == 0
    assert client.delete(f"/api/v1/slos/{slo.pk}").status_code == 404
    assert factories.api_as(manager, ["read"]).get("/api/v1/alert-rules").json()["count"] == 4


def test_an_engineer_adds_a_standalone_rule_and_cannot_point_it_at_a_foreign_channel(engineer, agent, research):
    foreign = NotificationChannel.objects.create(name="lab", department=research, kind="email", email_to="a@b.c")
    body = {
        "name": "pay-bot errors",
        "metric": "error_rate",
        "scope": "agent",
        "agent": "pay-bot",
        "threshold": 0.05,
        "window_s": 600,
        "severity": "ticket",
        "filters": {"version": "2.0.0"},
        "channels": [foreign.pk],
    }
    client = factories.api_as(engineer, ["configure"])
    refused = client.post("/api/v1/alert-rules", body, format="json")
    assert refused.status_code == 400
    assert "channels" in refused.json()
    created = client.post("/api/v1/alert-rules", body | {"channels": []}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["condition"] == "error rate at or above 5% over 10 min"
    rule = AlertRule.objects.get()
    assert (rule.department, rule.filters) == (agent.department, {"version": "2.0.0"})
    # State is the evaluator's, never the client's.
    client.patch(f"/api/v1/alert-rules/{rule.pk}", {"state": "firing", "threshold": 0.1}, format="json")
    rule.refresh_from_db()
    assert (rule.state, rule.threshold) == ("normal", 0.1)


def test_a_channels_secret_is_write_only_and_its_url_must_be_allowed(manager):
    client = factories.api_as(manager, ["configure", "read"])
    forbidden = {"name": "hook", "department": "payments", "kind": "webhook", "url": "http://169.254.169.254/latest"}
    response = client.post("/api/v1/notification-channels", forbidden | {"secret": "s3cret"}, format="json")
    assert response.status_code == 400
    assert "url" in response.json()
    email = {"name": "oncall", "department": "payments", "kind": "email", "email_to": "oncall@example.com"}
    created = client.post("/api/v1/notification-channels", email | {"secret": "s3cret"}, format="json")
    assert created.status_code == 201
    listed = client.get("/api/v1/notification-channels").content.decode()
    assert "s3cret" not in listed
    assert '"has_secret":true' in listed


def test_a_budget_over_the_api_brings_its_rules_and_reports_its_status(manager, payments):
    team = factories.team(payments, "checkout")
    client = factories.api_as(manager, ["configure", "read"])
    body = {"name": "checkout", "scope": "team", "team": "checkout", "threshold_ms": 600}
    created = client.post("/api/v1/budgets", body, format="json")
    assert created.status_code == 201, created.json()
    budget = PerformanceBudget.objects.get()
    assert (budget.department, budget.team, len(created.json()["alert_rules"])) == (payments, team, 2)
    status = client.get(f"/api/v1/budgets/{budget.pk}/status").json()
    assert (status["state"], status["consumed"], len(status["history"])) == ("unknown", None, 31)
    rule = budget.alert_rules.get(severity="ticket")
    assert client.delete(f"/api/v1/alert-rules/{rule.pk}").status_code == 400


def test_events_are_listed_and_acknowledged_once_by_automation_tokens(slo, engineer, viewer):
    rule = slo.alert_rules.first()
    event = AlertEvent.objects.create(
        rule=rule, kind="firing", episode=1, at=timezone.now(), value=20.0, dedupe_key="k1"
    )
    assert factories.api_as(viewer, ["read"]).get("/api/v1/alert-events").json()["count"] == 1
    assert factories.api_as(viewer, ["read"]).post(f"/api/v1/alert-events/{event.pk}/acknowledge").status_code == 403
    assert factories.api_as(engineer, ["read"]).post(f"/api/v1/alert-events/{event.pk}/acknowledge").status_code == 403
    done = factories.api_as(engineer, ["read", "automation"]).post(f"/api/v1/alert-events/{event.pk}/acknowledge")
    assert done.json()["acknowledged_by"] == "erin"


def test_openslo_round_trips_through_the_api_with_a_dry_run_first(manager, agent):
    client = factories.api_as(manager, ["configure", "read"])
    assert client.post("/api/v1/slos", slo_body(), format="json").status_code == 201
    exported = client.get("/api/v1/slos/openslo")
    assert exported["Content-Type"].startswith("application/yaml")
    text = exported.content.decode()
    assert "apiVersion: openslo/v1" in text
    SLO.objects.all().delete()
    dry = client.post("/api/v1/slos/openslo/import?dry_run=true", text, content_type="application/yaml")
    assert dry.status_code == 200, dry.json()
    assert [item["action"] for item in dry.json()["plan"]] == ["create"]
    assert not SLO.objects.exists()
    done = client.post("/api/v1/slos/openslo/import", text, content_type="application/yaml")
    assert done.status_code == 200, done.json()
    slo = SLO.objects.get()
    assert (slo.agent, slo.threshold_ms, slo.target, slo.window_days) == (agent, 800, 0.95, 28)
    assert slo.alert_rules.count() == 4
    broken = client.post("/api/v1/slos/openslo/import", "apiVersion: [", content_type="application/yaml")
    assert broken.status_code == 400
    assert "line" in broken.json()["errors"][0]


def test_changing_the_window_over_the_api_rescales_the_burn_rate_rules_and_keeps_their_channels(manager, agent):
    client = factories.api_as(manager, ["configure"])
    created = client.post("/api/v1/slos", slo_body(), format="json").json()
    slo = SLO.objects.get(pk=created["id"])
    hook = NotificationChannel.objects.create(name="pager", kind="email", email_to="p@example.com")
    page_rules = slo.alert_rules.filter(severity="page")
    for rule in page_rules:
        rule.channels.add(hook)
    assert sorted(slo.alert_rules.values_list("threshold", flat=True)) == [0.9333, 2.8, 5.6, 13.44]

    response = client.patch(f"/api/v1/slos/{slo.pk}", {"window_days": 7}, format="json")
    assert response.status_code == 200, response.json()
    after = slo.alert_rules.all()
    assert after.count() == 4
    # The Workbook's burn rates scale with the SLO window: 28 days -> 7 days is a quarter.
    assert sorted(after.values_list("threshold", flat=True)) == [0.2333, 0.7, 1.4, 3.36]
    assert all(rule.channels.filter(pk=hook.pk).exists() for rule in after.filter(severity="page"))
    assert not any(rule.channels.exists() for rule in after.exclude(severity="page"))
