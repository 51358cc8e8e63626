"""The admin shows each person their departments only, keeps traces read-only, and audits changes."""

from __future__ import annotations

import orjson
import pytest
from auditlog.models import LogEntry

from perfops.telemetry.models import Agent, Trace
from tests import factories

pytestmark = pytest.mark.django_db


def agent_form(agent, **fields):
    """The agent change form as the admin posts it, with `fields` changed."""
    return {
        "slug": agent.slug,
        "name": agent.name,
        "department": agent.department_id,
        "team": "",
        "owner": "",
        "intent_category": "",
        "description": "",
        "endpoint_url": "",
        "capacities-TOTAL_FORMS": "0",
        "capacities-INITIAL_FORMS": "0",
        "deployments-TOTAL_FORMS": "0",
        "deployments-INITIAL_FORMS": "0",
        **fields,
    }


@pytest.fixture
def fleet(payments, research):
    team = factories.team(payments, "checkout")
    return {
        "support": factories.agent("support-bot", payments, team=team),
        "lab": factories.agent("lab-bot", research),
    }


def test_an_engineer_lists_only_their_departments_agents(client, engineer, fleet):
    client.force_login(engineer)
    response = client.get("/admin/telemetry/agent/")
    assert response.status_code == 200
    assert b"support-bot" in response.content
    assert b"lab-bot" not in response.content


def test_another_departments_agent_answers_404_in_the_admin(client, engineer, fleet):
    client.force_login(engineer)
    assert client.get(f"/admin/telemetry/agent/{fleet['support'].pk}/change/").status_code == 200
    assert client.get(f"/admin/telemetry/agent/{fleet['lab'].pk}/change/").status_code == 404


def test_the_department_choice_is_limited_to_the_persons_departments(client, manager, fleet):
    client.force_login(manager)
    response = client.get("/admin/telemetry/agent/add/")
    assert response.status_code == 200
    assert b">Payments<" in response.content
    assert b">Research<" not in response.content


def test_a_manager_cannot_move_an_agent_into_a_foreign_department(client, manager, fleet, research):
    client.force_login(manager)
    agent = fleet["support"]
    response = client.post(
        f"/admin/telemetry/agent/{agent.pk}/change/",
        agent_form(agent, department=research.pk),
    )
    assert response.status_code == 200  # the form comes back with an error
    assert b"Select a valid choice" in response.content
    agent.refresh_from_db()
    assert agent.department.slug == "payments"


def test_a_viewer_can_look_but_not_change(client, viewer, fleet):
    client.force_login(viewer)
    assert client.get("/admin/telemetry/agent/").status_code == 200
    response = client.get(f"/admin/telemetry/agent/{fleet['support'].pk}/change/")
    assert response.status_code == 200
    assert b'name="_save"' not in response.content


def test_an_admin_change_is_audited_with_the_actor_and_the_change(client, manager, fleet):
    client.force_login(manager)
    agent = fleet["support"]
    response = client.post(
        f"/admin/telemetry/agent/{agent.pk}/change/",
        agent_form(agent, name="Support Bot v2", team=agent.team_id, intent_category="customer_support"),
    )
    assert response.status_code == 302, response.content[:2000]
    entry = LogEntry.objects.get_for_object(agent).get(action=LogEntry.Action.UPDATE)
    assert entry.actor == manager
    assert entry.changes_dict["name"] == ["Support Bot", "Support Bot v2"]


def test_only_a_superuser_manages_departments(client, manager, superuser, fleet):
    client.force_login(manager)
    assert client.get("/admin/telemetry/department/add/").status_code == 403
    client.force_login(superuser)
    assert client.get("/admin/telemetry/department/add/").status_code == 200


def test_traces_are_read_only_and_searchable_by_id(client, engineer, ingest_api, fleet):
    rec = factories.record()
    ingest_api.generic("POST", "/api/v1/traces", orjson.dumps({"traces": [rec]}), content_type="application/json")
    trace = Trace.objects.get()
    client.force_login(engineer)
    listing = client.get("/admin/telemetry/trace/", {"q": rec["trace_id"].upper()})
    assert listing.status_code == 200
    assert rec["trace_id"].encode() in listing.content
    detail = client.get(f"/admin/telemetry/trace/{trace.pk}/change/")
    assert detail.status_code == 200
    assert b"gpt-4o" in detail.content
    assert b'name="_save"' not in detail.content
    assert client.get("/admin/telemetry/trace/add/").status_code == 403


def test_the_trace_list_does_not_leak_other_departments(client, outsider, ingest_api, fleet):
    ingest_api.generic(
        "POST", "/api/v1/traces", orjson.dumps({"traces": [factories.record()]}), content_type="application/json"
    )
    client.force_login(outsider)
    response = client.get("/admin/telemetry/trace/")
    assert response.status_code == 200
    assert b"support-bot" not in response.content


def test_the_trace_list_runs_a_bounded_number_of_queries(
    client, superuser, ingest_api, fleet, django_assert_max_num_queries
):
    ingest_api.generic(
        "POST",
        "/api/v1/traces",
        orjson.dumps({"traces": [factories.record() for _ in range(60)]}),
        content_type="application/json",
    )
    client.force_login(superuser)
    with django_assert_max_num_queries(12):
        response = client.get("/admin/telemetry/trace/")
    assert response.status_code == 200


def test_the_agent_list_runs_a_bounded_number_of_queries(client, superuser, payments, django_assert_max_num_queries):
    for number in range(30):
        factories.agent(f"agent-{number}", payments)
    client.force_login(superuser)
    with django_assert_max_num_queries(12):
        response = client.get("/admin/telemetry/agent/")
    assert response.status_code == 200
    assert Agent.objects.count() == 30


def test_list_filters_offer_only_the_persons_own_departments_and_teams(client, engineer, fleet, research):
    factories.team(research, "secret-lab")
    client.force_login(engineer)
    for url in ("/admin/telemetry/agent/", "/admin/telemetry/deployment/", "/admin/telemetry/team/"):
        response = client.get(url)
        assert response.status_code == 200
        assert b"Research" not in response.content, url
        assert b"Secret-Lab" not in response.content, url


def test_an_owner_is_chosen_among_the_persons_departments(client, manager, engineer, outsider, fleet):
    client.force_login(manager)
    form = client.get(f"/admin/telemetry/agent/{fleet['support'].pk}/change/")
    assert f'value="{engineer.pk}"'.encode() in form.content
    assert f'value="{outsider.pk}"'.encode() not in form.content
    agent = fleet["support"]
    response = client.post(
        f"/admin/telemetry/agent/{agent.pk}/change/",
        agent_form(agent, owner=outsider.pk),
    )
    assert b"Select a valid choice" in response.content
    agent.refresh_from_db()
    assert agent.owner is None


def test_role_and_superuser_changes_are_audited(client, superuser, viewer):
    from django.contrib.auth.models import Group

    client.force_login(superuser)
    engineers = Group.objects.get(name="engineers")
    response = client.post(
        f"/admin/auth/user/{viewer.pk}/change/",
        {
            "username": viewer.username,
            "is_active": "on",
            "is_staff": "on",
            "groups": [engineers.pk],
            "last_login_0": "",
            "last_login_1": "",
            "date_joined_0": "2026-11-01",
            "date_joined_1": "10:00:00",
            "initial-date_joined_0": "2026-11-01",
            "initial-date_joined_1": "10:00:00",
        },
    )
    assert response.status_code == 302, response.content[:3000]
    entries = LogEntry.objects.get_for_object(viewer)
    assert any(entry.actor == superuser and "groups" in entry.changes_dict for entry in entries)
    assert all("password" not in entry.changes_dict for entry in entries)
