"""POST /api/v1/traces: what a sender sees for good, retried and bad batches."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import msgspec
import orjson
import pytest
from django.test import override_settings

from perfops.telemetry.models import Agent, Department, Deployment, Trace
from tests import factories

URL = "/api/v1/traces"
pytestmark = pytest.mark.django_db


def post(client, payload, *, content_type="application/json", **extra):
    # msgspec encodes what orjson refuses (integers beyond 64 bits), as a sender might.
    body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    return client.generic("POST", URL, body, content_type=content_type, **extra)


@pytest.fixture
def support_bot(payments):
    return factories.agent("support-bot", payments, intent_category="customer_support")


def test_it_stores_every_field_of_a_record(ingest_api, support_bot):
    rec = factories.record(error_type=None, cache_hit=True)
    response = post(ingest_api, {"traces": [rec]})

    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    trace = Trace.objects.get(trace_id=rec["trace_id"])
    assert trace.agent == support_bot
    assert trace.environment == "production"
    assert trace.version == "1.4.0"
    assert trace.intent == "customer_support"
    assert trace.started_at == datetime.fromisoformat(rec["started_at"])
    assert trace.latency_ms == 812.5
    assert trace.status == "ok"
    assert trace.error_type == ""
    assert trace.phases == rec["phases"]
    assert trace.dependencies == rec["dependencies"]
    assert trace.model == "gpt-4o"
    assert (trace.input_tokens, trace.output_tokens) == (1200, 350)
    assert trace.cache_hit is True
    assert trace.profiled is False
    assert trace.attributes == {"customer_tier": "gold", "retries": 0}
    assert trace.received_at is not None


def test_a_retried_batch_is_not_counted_twice(ingest_api, support_bot):
    batch = {"traces": [factories.record() for _ in range(5)]}
    assert post(ingest_api, batch).json()["accepted"] == 5

    again = post(ingest_api, batch)

    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 5, "rejected": []}
    assert Trace.objects.count() == 5


def test_a_record_repeated_inside_one_batch_is_stored_once(ingest_api, support_bot):
    rec = factories.record()
    response = post(ingest_api, {"traces": [rec, rec]})
    assert response.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert Trace.objects.count() == 1


def test_valid_records_beside_invalid_ones_are_kept(ingest_api, support_bot):
    good = [factories.record(), factories.record()]
    bad = factories.record(latency_ms=-5)
    response = post(ingest_api, {"traces": [good[0], bad, good[1]]})

    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    assert body["rejected"] == [{"index": 1, "errors": {"latency_ms": ["Must not be negative."]}}]
    assert set(Trace.objects.values_list("trace_id", flat=True)) == {
        __import__("uuid").UUID(r["trace_id"]) for r in good
    }


def test_a_batch_with_nothing_valid_answers_400_with_every_reason(ingest_api, support_bot):
    response = post(ingest_api, {"traces": [factories.record(status="fine"), factories.record(trace_id="xyz")]})
    assert response.status_code == 400
    rejected = response.json()["rejected"]
    assert [item["index"] for item in rejected] == [0, 1]
    assert rejected[0]["errors"]["status"] == ["Must be one of ok, error, timeout."]
    assert rejected[1]["errors"]["trace_id"] == ["Must be 32 hexadecimal characters."]
    assert Trace.objects.count() == 0


NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("overrides", "field", "reason_part"),
    [
        ({"latency_ms": -1}, "latency_ms", "negative"),
        ({"latency_ms": "fast"}, "latency_ms", "finite number"),
        ({"latency_ms": True}, "latency_ms", "finite number"),
        ({"latency_ms": None}, "latency_ms", "required"),
        ({"latency_ms": 90_000_000}, "latency_ms", "one day"),
        ({"status": "failed"}, "status", "ok, error, timeout"),
        ({"status": "ok", "error_type": "timeout"}, "error_type", "Only failed requests"),
        ({"status": "error", "error_type": "kaboom"}, "error_type", "Must be one of"),
        ({"environment": "prod"}, "environment", "production, staging, development"),
        ({"trace_id": "0" * 32}, "trace_id", "all zeros"),
        ({"trace_id": "abc"}, "trace_id", "32 hexadecimal"),
        ({"trace_id": "g" * 32}, "trace_id", "32 hexadecimal"),
        ({"trace_id": 12}, "trace_id", "32 hexadecimal"),
        ({"agent": "Support Bot!"}, "agent", "slug"),
        ({"agent": ""}, "agent", "required"),
        ({"started_at": "yesterday"}, "started_at", "RFC 3339"),
        ({"started_at": "2026-01-31T12:00:00"}, "started_at", "time zone"),
        ({"started_at": factories.iso(NOW + timedelta(hours=1))}, "started_at", "future"),
        ({"started_at": factories.iso(NOW - timedelta(days=45))}, "started_at", "retention"),
        ({"phases": {"llm": 900.0}, "latency_ms": 800}, "phases", "more than the request"),
        ({"phases": {"llm": -3}}, "phases.llm", "non-negative"),
        ({"phases": ["llm"]}, "phases", "object"),
        ({"phases": {"LLM Call": 3}}, "phases", "Phase name"),
        (
            {"dependencies": [{"name": "db", "kind": "ftp", "duration_ms": 1}]},
            "dependencies[0].kind",
            "llm, db",
        ),
        (
            {"dependencies": [{"name": "db", "kind": "db", "start_ms": 800, "duration_ms": 100}]},
            "dependencies[0]",
            "after the request ended",
        ),
        ({"dependencies": [{"name": "db", "kind": "db"}]}, "dependencies[0].duration_ms", "required"),
        (
            {"dependencies": [{"name": "db", "kind": "db", "duration_ms": 1, "extra": 1}]},
            "dependencies[0]",
            "Unknown field",
        ),
        ({"dependencies": "db"}, "dependencies", "list"),
        ({"input_tokens": -1}, "input_tokens", "whole number"),
        ({"output_tokens": 1.5}, "output_tokens", "whole number"),
        ({"cache_hit": "yes"}, "cache_hit", "true or false"),
        ({"attributes": {f"k{i}": i for i in range(65)}}, "attributes", "At most 64"),
        ({"attributes": {"big": "x" * 1025}}, "attributes.big", "1024"),
        ({"attributes": {"nested": {"a": 1}}}, "attributes.nested", "no nesting"),
        ({"attributes": {"nul": "a\x00b"}}, "attributes.nul", "NUL"),
        ({"version": "1.0\n2"}, "version", "control characters"),
        ({"version": "v" * 65}, "version", "64"),
        ({"model": 5}, "model", "string"),
        ({"latency": 5}, "latency", "Unknown field"),
        ({"department": "No Such"}, "department", "slug"),
        ({"version": ["1", "2"]}, "version", "string"),
        ({"agent": {"slug": "support-bot"}}, "agent", "slug"),
        (
            {"dependencies": [{"name": ["x"], "kind": "db", "start_ms": 1.0, "duration_ms": 1.0, "status": "ok"}]},
            "dependencies[0].name",
            "string",
        ),
        ({"model": {"name": "gpt"}}, "model", "string"),
        ({"environment": []}, "environment", "production, staging, development"),
        ({"status": ["ok"]}, "status", "ok, error, timeout"),
        ({"status": "error", "error_type": {}}, "error_type", "Must be one of"),
        ({"dependencies": [{"name": "db", "kind": [], "duration_ms": 1}]}, "dependencies[0].kind", "llm, db"),
        (
            {"dependencies": [{"name": "db", "kind": "db", "duration_ms": 1, "status": ["x"]}]},
            "dependencies[0].status",
            "ok or error",
        ),
        ({"started_at": "9999-12-31T23:59:59-01:00"}, "started_at", "RFC 3339"),
        ({"started_at": "2026-W48-4T11:59:00Z"}, "started_at", "RFC 3339"),
        ({"attributes": {"huge": 10**23}}, "attributes.huge", "64-bit"),
    ],
)
def test_each_bad_field_is_refused_with_its_reason(ingest_api, support_bot, overrides, field, reason_part):
    # A valid record first, so the memo of known-good values is warm when the bad one arrives.
    post(ingest_api, {"traces": [factories.record()]})
    response = post(ingest_api, {"traces": [factories.record(**overrides)]})
    assert response.status_code == 400
    errors = response.json()["rejected"][0]["errors"]
    assert field in errors, errors
    assert any(reason_part in reason for reason in errors[field]), errors[field]


def test_a_record_that_is_not_an_object_is_refused(ingest_api, support_bot):
    response = post(ingest_api, {"traces": ["not a record", factories.record()]})
    assert response.status_code == 200
    assert response.json()["rejected"] == [{"index": 0, "errors": {"record": ["Must be a JSON object."]}}]


def test_nan_latency_refuses_only_that_record(ingest_api, support_bot):
    good = factories.record()
    text = json.dumps({"traces": [good, factories.record(latency_ms=float("nan"))]})
    assert "NaN" in text
    response = post(ingest_api, text.encode())
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"][0]["errors"] == {"latency_ms": ["Must be a finite number."]}


@pytest.mark.parametrize(
    ("body", "reason_part"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"traces": {}}', "list"),
        (b'{"traces": []}', "no records"),
        (b'{"records": []}', "Unknown field"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_a_bad_body_answers_400_with_the_reason(ingest_api, support_bot, body, reason_part):
    response = post(ingest_api, body)
    assert response.status_code == 400
    assert reason_part in response.json()["detail"]
    assert response.json()["accepted"] == 0


def test_the_wrong_content_type_answers_415(ingest_api, support_bot):
    response = post(ingest_api, b"traces=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_an_unsupported_content_encoding_answers_415(ingest_api, support_bot):
    response = post(ingest_api, {"traces": [factories.record()]}, HTTP_CONTENT_ENCODING="br")
    assert response.status_code == 415


def test_gzip_bodies_are_accepted(ingest_api, support_bot):
    body = gzip.compress(orjson.dumps({"traces": [factories.record() for _ in range(3)]}))
    response = post(ingest_api, body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert response.json()["accepted"] == 3


def test_a_truncated_gzip_body_answers_400(ingest_api, support_bot):
    body = gzip.compress(orjson.dumps({"traces": [factories.record()]}))[:-12]
    response = post(ingest_api, body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 400
    assert "gzip" in response.json()["detail"]


@override_settings(PERFOPS={**__import__("django.conf").conf.settings.PERFOPS, "INGEST_MAX_BYTES": 64 * 1024})
def test_a_gzip_bomb_is_refused_without_inflating_it(ingest_api, support_bot):
    bomb = gzip.compress(b"{" + b" " * (50 * 1024 * 1024) + b"}")
    assert len(bomb) < 64 * 1024
    response = post(ingest_api, bomb, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413
    assert "inflates" in response.json()["detail"]


def test_a_body_over_10_mib_answers_413(ingest_api, support_bot):
    body = b'{"traces": [' + b" " * (10 * 1024 * 1024) + b"]}"
    response = post(ingest_api, body)
    assert response.status_code == 413


def test_more_than_5000_records_answers_413(ingest_api, support_bot):
    response = post(ingest_api, {"traces": [{}] * 5001})
    assert response.status_code == 413
    assert "5000" in response.json()["detail"]


def test_without_a_token_it_answers_401(api, support_bot):
    response = post(api, {"traces": [factories.record()]})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_token_answers_401(api, support_bot):
    api.credentials(HTTP_AUTHORIZATION="Bearer pfo_nope")
    assert post(api, {"traces": [factories.record()]}).status_code == 401


def test_an_expired_token_answers_401(api, engineer, support_bot):
    plaintext = factories.token(engineer, ["ingest"], expires_at=datetime.now(UTC) + timedelta(seconds=1))
    from perfops.access.models import ApiToken

    ApiToken.objects.update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    response = post(api, {"traces": [factories.record()]})
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_a_revoked_token_answers_401(api, engineer, support_bot):
    plaintext = factories.token(engineer, ["ingest"])
    from perfops.access.models import ApiToken

    ApiToken.objects.get().revoke()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    response = post(api, {"traces": [factories.record()]})
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_a_read_only_token_answers_403(api, engineer, support_bot):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.token(engineer, ['read'])}")
    response = post(api, {"traces": [factories.record()]})
    assert response.status_code == 403
    assert "ingest" in response.json()["detail"]


def test_a_logged_in_person_cannot_ingest_without_a_token(api, engineer, support_bot):
    api.force_login(engineer)
    assert post(api, {"traces": [factories.record()]}).status_code == 403


def test_records_for_another_departments_agent_are_refused(ingest_api, research, support_bot):
    factories.agent("lab-bot", research)
    response = post(ingest_api, {"traces": [factories.record(agent="lab-bot"), factories.record()]})
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"] == [
        {
            "index": 0,
            "errors": {"agent": ["Agent 'lab-bot' is not one this token may write to."]},
        }
    ]
    assert not Trace.objects.filter(agent__slug="lab-bot").exists()


def test_an_unknown_agent_is_registered_in_the_named_department_and_team(ingest_api, payments):
    factories.team(payments, "checkout")
    rec = factories.record(agent="refund-helper", department="payments", team="checkout", intent="refunds")
    assert post(ingest_api, {"traces": [rec]}).json()["accepted"] == 1
    agent = Agent.objects.get(slug="refund-helper")
    assert agent.department.slug == "payments"
    assert agent.team is not None
    assert agent.team.slug == "checkout"
    assert agent.auto_registered is True
    assert agent.intent_category == "refunds"


def test_an_unknown_agent_without_a_department_lands_in_unassigned(ingest_api, payments):
    assert post(ingest_api, {"traces": [factories.record(agent="stray-bot")]}).json()["accepted"] == 1
    assert Agent.objects.get(slug="stray-bot").department.slug == Department.UNASSIGNED
    # ...and the same token keeps writing to it until someone assigns it a department.
    assert post(ingest_api, {"traces": [factories.record(agent="stray-bot")]}).json()["accepted"] == 1


def test_a_new_agent_in_a_department_outside_the_scope_is_refused(ingest_api, research):
    response = post(ingest_api, {"traces": [factories.record(agent="sneaky", department="research")]})
    assert response.status_code == 400
    assert "outside this token's scope" in response.json()["rejected"][0]["errors"]["agent"][0]
    assert not Agent.objects.filter(slug="sneaky").exists()


def test_a_new_agent_in_an_unknown_department_is_refused(ingest_api, payments):
    response = post(ingest_api, {"traces": [factories.record(agent="lost", department="nowhere")]})
    assert response.status_code == 400
    assert response.json()["rejected"][0]["errors"]["agent"] == [
        "Department 'nowhere' does not exist or is outside this token's scope."
    ]


def test_an_unknown_and_a_foreign_department_get_the_same_answer(ingest_api, research):
    foreign = post(ingest_api, {"traces": [factories.record(agent="a-bot", department="research")]})
    unknown = post(ingest_api, {"traces": [factories.record(agent="b-bot", department="nowhere")]})
    reasons = [r.json()["rejected"][0]["errors"]["agent"][0] for r in (foreign, unknown)]
    assert reasons[0].replace("research", "X") == reasons[1].replace("nowhere", "X")


def test_a_record_without_intent_takes_the_agents_intent(ingest_api, support_bot):
    rec = factories.record()
    del rec["intent"]
    post(ingest_api, {"traces": [rec]})
    assert Trace.objects.get().intent == "customer_support"


def test_a_failed_request_gets_a_default_error_type(ingest_api, support_bot):
    post(ingest_api, {"traces": [factories.record(status="timeout"), factories.record(status="error")]})
    assert sorted(Trace.objects.values_list("status", "error_type")) == [
        ("error", "other"),
        ("timeout", "timeout"),
    ]


def test_a_new_version_creates_a_deployment_with_its_first_sighting(ingest_api, support_bot):
    early = datetime.now(UTC) - timedelta(minutes=30)
    late = datetime.now(UTC) - timedelta(minutes=5)
    post(ingest_api, {"traces": [factories.record(version="2.0.0", started_at=factories.iso(late))]})
    post(ingest_api, {"traces": [factories.record(version="2.0.0", started_at=factories.iso(early))]})
    post(ingest_api, {"traces": [factories.record(version="2.0.0", started_at=factories.iso(late))]})

    deployment = Deployment.objects.get(agent=support_bot, environment="production", version="2.0.0")
    assert deployment.source == "ingest"
    assert deployment.first_seen_at is not None
    assert abs((deployment.first_seen_at - early).total_seconds()) < 0.001


def test_a_missing_version_is_stored_as_unversioned(ingest_api, support_bot):
    rec = factories.record()
    del rec["version"]
    post(ingest_api, {"traces": [rec]})
    assert Trace.objects.get().version == "unversioned"


def test_registering_an_agent_is_audited_with_the_senders_name(ingest_api, engineer, payments):
    from auditlog.models import LogEntry

    post(ingest_api, {"traces": [factories.record(agent="new-bot", department="payments")]})
    entry = LogEntry.objects.get_for_object(Agent.objects.get(slug="new-bot")).get()
    assert entry.action == LogEntry.Action.CREATE
    assert entry.actor == engineer


def test_zero_padding_after_a_gzip_body_is_tolerated(ingest_api, support_bot):
    body = gzip.compress(orjson.dumps({"traces": [factories.record()]})) + b"\x00" * 512
    response = post(ingest_api, body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
