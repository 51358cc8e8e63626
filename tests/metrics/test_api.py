"""The REST metrics API: answers, bad parameters, scoping, the cache and the OpenAPI description."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from perfops.metrics.models import RollupState
from tests import factories
from tests.metrics.conftest import Truth


def client_for(user, scopes=("read",)) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.token(user, list(scopes))}")
    return client


@pytest.fixture
def reader(rolled_up, superuser) -> APIClient:
    return client_for(superuser)


@pytest.mark.django_db
def test_the_summary_gives_counts_percentiles_and_throughput(reader, rolled_up):
    response = reader.get("/api/v1/metrics/summary", {"range": "30d", "environment": "all"})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == rolled_up.count
    assert body["errors"] + body["timeouts"] == pytest.approx(body["error_rate"] * body["count"], abs=1)
    assert 0 < body["p50_ms"] <= body["p95_ms"] <= body["p99_ms"] <= body["max_ms"]
    assert body["throughput_rps"] > 0
    assert body["window"]["range"] == "30d"
    assert body["filters"] == {"range": "30d", "environment": "all"}


@pytest.mark.django_db
def test_the_series_has_one_point_per_bucket_and_groups_with_an_other(reader):
    response = reader.get("/api/v1/metrics/series", {"range": "7d", "group_by": "agent", "limit": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["window"]["bucket_s"] == 3600
    assert [line["key"] for line in body["series"]][-1] == "other"
    assert len(body["series"]) == 3
    points = body["series"][0]["points"]
    assert 168 <= len(points) <= 169
    assert {"t", "count", "p95_ms", "error_rate", "throughput_rps"} <= set(points[0])


@pytest.mark.django_db
def test_the_breakdown_by_dependency_names_each_call(reader):
    response = reader.get("/api/v1/metrics/breakdown", {"range": "30d", "by": "dependency"})
    assert response.status_code == 200
    rows = response.json()["rows"]
    assert {(row["kind"], row["name"]) for row in rows} == {("llm", "gpt-4o"), ("db", "postgres")}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "params", "field", "reason"),
    [
        ("summary", {"range": "2d"}, "range", "Must be one of 1h, 6h, 24h, 7d, 30d."),
        ("summary", {"range": "1h", "start": "2026-11-01T00:00:00Z"}, "range", "Give either range or start/end"),
        ("summary", {"environment": "prod"}, "environment", "Must be one of production"),
        ("summary", {"tier": "blazing"}, "tier", "Must be one of fast, normal, slow, critical."),
        ("summary", {"status": "failed"}, "status", "Must be one of success, errors, timeouts."),
        ("summary", {"start": "2026-11-29T10:00:00"}, "start", "Must carry a UTC offset"),
        ("summary", {"start": "yesterday"}, "start", "Must be an ISO 8601 date-time"),
        ("summary", {"end": "2026-11-29T10:00:00Z"}, "start", "Required with end."),
        ("summary", {"department": "Pay Ments"}, "department", "Must be a slug"),
        ("summary", {"department": "nope"}, "department", "No department 'nope' is visible to you."),
        ("summary", {"agent": "ghost"}, "agent", "No agent 'ghost' is visible to you."),
        ("summary", {"group_by": "agent"}, "group_by", "Unknown parameter."),
        ("summary", {"enviroment": "staging"}, "enviroment", "Unknown parameter."),
        ("series", {"group_by": "colour"}, "group_by", "Must be one of agent"),
        ("series", {"limit": "0"}, "limit", "Must be a whole number from 1 to 50."),
        ("series", {"limit": "ten"}, "limit", "Must be a whole number from 1 to 50."),
        ("breakdown", {}, "by", "Required."),
        ("breakdown", {"by": "moon"}, "by", "Must be one of"),
    ],
)
def test_a_bad_parameter_gets_400_naming_it_and_why(reader, path, params, field, reason):
    response = reader.get(f"/api/v1/metrics/{path}", params)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert field in errors
    assert any(reason in message for message in errors[field]), errors


@pytest.mark.django_db
def test_start_after_end_and_spans_under_a_minute_are_refused(reader):
    response = reader.get("/api/v1/metrics/summary", {"start": "2026-11-29T10:00:00Z", "end": "2026-11-29T10:00:30Z"})
    assert response.status_code == 400
    assert response.json()["errors"]["end"] == ["Must be at least one minute after start."]


@pytest.mark.django_db
def test_it_needs_a_read_token_or_a_session(rolled_up, engineer):
    assert APIClient().get("/api/v1/metrics/summary").status_code == 401
    ingest_only = client_for(engineer, ["ingest"])
    response = ingest_only.get("/api/v1/metrics/summary")
    assert response.status_code == 403
    assert "read" in response.json()["detail"]
    session = APIClient()
    session.force_login(engineer)
    assert session.get("/api/v1/metrics/summary").status_code == 200


@pytest.mark.django_db
def test_each_caller_sees_only_their_departments(rolled_up, engineer, outsider):
    truth = Truth.load()
    payments = truth.department[truth.agent == rolled_up.agents["pay-bot"].pk][0]
    research_traces = int((truth.department != payments).sum())
    theirs = client_for(outsider).get("/api/v1/metrics/summary", {"range": "30d", "environment": "all"}).json()
    assert theirs["count"] == research_traces
    mine = client_for(engineer).get("/api/v1/metrics/summary", {"range": "30d", "environment": "all"}).json()
    assert mine["count"] == rolled_up.count - research_traces
    # A department, team or agent of someone else's is refused exactly like one that does not exist.
    for params in ({"department": "payments"}, {"team": "checkout"}, {"agent": "pay-bot"}):
        response = client_for(outsider).get("/api/v1/metrics/series", params)
        assert response.status_code == 400
        assert "is visible to you" in next(iter(response.json()["errors"].values()))[0]
    by_agent = client_for(outsider).get("/api/v1/metrics/breakdown", {"range": "30d", "by": "agent"}).json()
    assert {row["key"] for row in by_agent["rows"]} == {"lab-bot"}


@pytest.mark.django_db
def test_answers_are_cached_until_the_rollup_writes_again(reader, rolled_up, django_assert_max_num_queries):
    params = {"range": "24h"}
    first = reader.get("/api/v1/metrics/summary", params).json()
    # A cache hit: the token, the scope and the rollup generation are all it reads.
    with django_assert_max_num_queries(4):
        again = reader.get("/api/v1/metrics/summary", params).json()
    assert again == first
    RollupState.objects.update(generation=RollupState.get().generation + 1)
    with django_assert_max_num_queries(20) as queries:
        reader.get("/api/v1/metrics/summary", params)
    assert any("metrics_rollup" in query["sql"] for query in queries.captured_queries)


@pytest.mark.django_db
def test_the_openapi_schema_documents_the_metrics_endpoints(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    for path in ("/api/v1/metrics/summary", "/api/v1/metrics/series", "/api/v1/metrics/breakdown"):
        operation = schema["paths"][path]["get"]
        names = {parameter["name"] for parameter in operation["parameters"]}
        assert {"range", "environment", "department", "tier", "status", "version", "intent"} <= names
        assert "400" in operation["responses"]
