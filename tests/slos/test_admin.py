"""SLOs in the admin: managers set them for their departments, nobody but a superuser for the fleet."""

from __future__ import annotations

from auditlog.models import LogEntry
from django.test import Client

from slos.models import SLO

ADD = "/admin/slos/slo/add/"


def form(**fields) -> dict:
    base = {"name": "p95 under 800", "scope": "department", "environment": "production", "kind": "latency"}
    inline = {"alert_rules-TOTAL_FORMS": "0", "alert_rules-INITIAL_FORMS": "0"}
    return base | {"threshold_ms": "800", "target": "0.95", "window_days": "30"} | inline | fields


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_manager_sets_an_slo_for_their_department_after_confirming_and_it_is_audited(manager, payments):
    client = client_for(manager)
    # First the confirmation: target, budget, and whether the rules would fire; nothing stored yet.
    preview = client.post(ADD, form(department=payments.pk))
    page = preview.content.decode()
    assert preview.status_code == 200
    for fact in ("95% good", "Error budget", "Budget remaining", "Would fire", "Yes, create it"):
        assert fact in page
    assert 'name="_confirmed"' in page
    assert not SLO.objects.exists()
    response = client.post(ADD, form(department=payments.pk, _confirmed="1"))
    assert response.status_code == 302, response.content.decode()[:2000]
    slo = SLO.objects.get()
    assert (slo.department, slo.created_by, slo.objective) == (
        payments,
        manager,
        "95% of requests succeed under 800 ms over 30 days",
    )
    entry = LogEntry.objects.get_for_object(slo).get()
    assert entry.actor == manager
    # Its four Workbook rules came with it.
    assert sorted(slo.alert_rules.values_list("severity", "threshold")) == [
        ("page", 6.0),
        ("page", 14.4),
        ("ticket", 1.0),
        ("ticket", 3.0),
    ]


def test_a_manager_cannot_set_a_fleet_slo_or_one_for_another_department(manager, research):
    client = client_for(manager)
    assert "Only a superuser may set a fleet-wide" in client.post(ADD, form(scope="fleet")).content.decode()
    refused = client.post(ADD, form(department=research.pk)).content.decode()
    assert "Select a valid choice" in refused
    assert not SLO.objects.exists()


def test_viewers_and_engineers_only_read_slos(viewer, engineer, payments):
    for person in (viewer, engineer):
        assert client_for(person).post(ADD, form(department=payments.pk)).status_code == 403
    assert not SLO.objects.exists()


def test_another_departments_slo_is_not_found(manager, research):
    slo = SLO.objects.create(
        name="lab", scope="department", department=research, kind="availability", target=0.99, window_days=7
    )
    assert client_for(manager).get(f"/admin/slos/slo/{slo.pk}/change/").status_code == 404
