"""The read API and deployment reports: scoped to the caller's departments, 404 for the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from perfops.telemetry.models import Deployment
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(payments, research):
    return {
        "support": factories.agent("support-bot", payments, intent_category="customer_support"),
        "refunds": factories.agent("refund-helper", payments),
        "lab": factories.agent("lab-bot", research),
    }


def client_for(api, person, scopes):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.token(person, scopes)}")
    return api


def test_agents_list_shows_only_the_callers_departments(api, engineer, fleet):
    response = client_for(api, engineer, ["read"]).get("/api/v1/agents")
    assert response.status_code == 200
    assert [agent["slug"] for agent in response.json()["results"]] == ["refund-helper", "support-bot"]


def test_a_superuser_sees_every_agent(api, superuser, fleet):
    response = client_for(api, superuser, ["read"]).get("/api/v1/agents")
    assert response.json()["count"] == 3


def test_another_departments_agent_answers_404(api, engineer, fleet):
    client = client_for(api, engineer, ["read"])
    assert client.get("/api/v1/agents/support-bot").status_code == 200
    assert client.get("/api/v1/agents/lab-bot").status_code == 404


def test_agents_can_be_filtered_by_department(api, superuser, fleet):
    response = client_for(api, superuser, ["read"]).get("/api/v1/agents", {"department": "research"})
    assert [agent["slug"] for agent in response.json()["results"]] == ["lab-bot"]


def test_reading_needs_the_read_scope(api, engineer, fleet):
    assert client_for(api, engineer, ["ingest"]).get("/api/v1/agents").status_code == 403


def test_a_logged_in_person_reads_with_their_session(api, viewer, fleet):
    api.force_login(viewer)
    assert api.get("/api/v1/agents").json()["count"] == 2


def test_a_deploy_tool_reports_a_deployment(api, engineer, fleet):
    deployed_at = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    response = client_for(api, engineer, ["ingest"]).post(
        "/api/v1/deployments",
        {"agent": "support-bot", "environment": "production", "version": "2.0.0", "deployed_at": deployed_at},
        format="json",
    )
    assert response.status_code == 201, response.content
    deployment = Deployment.objects.get()
    assert (deployment.agent.slug, deployment.version, deployment.source) == ("support-bot", "2.0.0", "api")
    assert deployment.deployed_at == deployed_at


def test_reporting_a_version_ingest_already_saw_sets_its_deploy_time(api, ingest_api, engineer, fleet):
    rec = factories.record(version="2.1.0")
    ingest_api.generic("POST", "/api/v1/traces", orjson.dumps({"traces": [rec]}), content_type="application/json")
    deployed_at = datetime.now(UTC) - timedelta(minutes=10)
    response = client_for(api, engineer, ["automation"]).post(
        "/api/v1/deployments",
        {"agent": "support-bot", "environment": "production", "version": "2.1.0", "deployed_at": deployed_at},
        format="json",
    )
    assert response.status_code == 200
    deployment = Deployment.objects.get()
    assert deployment.deployed_at == deployed_at
    assert deployment.first_seen_at is not None


def test_a_deployment_for_a_foreign_agent_is_refused_as_unknown(api, engineer, fleet):
    response = client_for(api, engineer, ["ingest"]).post(
        "/api/v1/deployments", {"agent": "lab-bot", "environment": "production", "version": "1"}, format="json"
    )
    assert response.status_code == 400
    assert "does not exist" in response.json()["agent"][0]
    assert not Deployment.objects.exists()


def test_a_deployment_with_a_bad_environment_is_refused(api, engineer, fleet):
    response = client_for(api, engineer, ["ingest"]).post(
        "/api/v1/deployments", {"agent": "support-bot", "environment": "prod", "version": "1"}, format="json"
    )
    assert response.status_code == 400
    assert "environment" in response.json()


def test_a_viewer_cannot_report_deployments_even_with_an_ingest_token(api, viewer, fleet):
    Deployment.objects.create(agent=fleet["support"], environment="production", version="2.0.0")
    response = client_for(api, viewer, ["ingest"]).post(
        "/api/v1/deployments",
        {"agent": "support-bot", "environment": "production", "version": "2.0.0", "notes": "rolled back"},
        format="json",
    )
    assert response.status_code == 403
    assert Deployment.objects.get().notes == ""


def test_a_reported_deployment_is_audited_with_the_token_owner(api, engineer, fleet):
    from auditlog.models import LogEntry

    client_for(api, engineer, ["ingest"]).post(
        "/api/v1/deployments", {"agent": "support-bot", "environment": "production", "version": "3"}, format="json"
    )
    assert LogEntry.objects.get_for_object(Deployment.objects.get()).get().actor == engineer


def test_a_read_token_cannot_report_deployments(api, engineer, fleet):
    response = client_for(api, engineer, ["read"]).post(
        "/api/v1/deployments", {"agent": "support-bot", "environment": "production", "version": "1"}, format="json"
    )
    assert response.status_code == 403


def test_deployments_list_is_scoped_and_filterable(api, superuser, engineer, fleet):
    for agent in fleet.values():
        Deployment.objects.create(agent=agent, environment="production", version="1.0")
    Deployment.objects.create(agent=fleet["support"], environment="staging", version="1.1")
    client = client_for(api, engineer, ["read"])
    assert client.get("/api/v1/deployments").json()["count"] == 3
    staged = client.get("/api/v1/deployments", {"environment": "staging"}).json()["results"]
    assert [(d["agent"], d["version"]) for d in staged] == [("support-bot", "1.1")]


def test_one_trace_can_be_read_by_its_id(api, ingest_api, engineer, fleet):
    rec = factories.record()
    ingest_api.generic("POST", "/api/v1/traces", orjson.dumps({"traces": [rec]}), content_type="application/json")
    response = client_for(api, engineer, ["read"]).get(f"/api/v1/traces/{rec['trace_id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["trace_id"] == rec["trace_id"]
    assert body["phases"] == rec["phases"]
    assert body["dependencies"] == rec["dependencies"]


def test_a_foreign_or_malformed_trace_id_answers_404(api, ingest_api, outsider, fleet):
    rec = factories.record()
    ingest_api.generic("POST", "/api/v1/traces", orjson.dumps({"traces": [rec]}), content_type="application/json")
    client = client_for(api, outsider, ["read"])
    assert client.get(f"/api/v1/traces/{rec['trace_id']}").status_code == 404
    assert client.get("/api/v1/traces/not-an-id").status_code == 404
    # bytes.fromhex would skip the spaces and hand a short id to the database.
    assert client.get("/api/v1/traces/4bf92f3577b34da6a3ce929d0e0e%2047%20").status_code == 404


def test_the_openapi_schema_documents_ingest(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = orjson.loads(response.content)
    operation = schema["paths"]["/api/v1/traces"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "403", "413", "415", "503"}
    record = schema["components"]["schemas"]["TraceRecordInRequest"]
    assert {"trace_id", "agent", "environment", "started_at", "latency_ms", "status"} <= set(record["required"])


def test_health_reports_database_and_cache(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "ok"}
