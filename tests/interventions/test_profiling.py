"""Time-boxed profiling: start, mark ingested traces, end at expiry without any scheduled task, report."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from interventions import profiling
from interventions.models import ProfilingSession
from interventions.tasks import sweep_profiling
from perfops.telemetry.models import Trace
from tests import factories

pytestmark = pytest.mark.django_db


def send(client: APIClient, records: list[dict]) -> None:
    response = client.post("/api/v1/traces", {"traces": records}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["accepted"] == len(records)


def at(minutes_ago: float) -> str:
    return factories.iso(datetime.now(UTC) - timedelta(minutes=minutes_ago))


def test_a_session_marks_the_agents_traces_and_tells_the_agent_to_send_everything(agent, engineer):
    client = factories.api_as(engineer, ["automation", "read", "ingest"])
    started = client.post(
        "/api/v1/profiling", {"agent": "pay-bot", "environment": "production", "duration_s": 600}, format="json"
    )
    assert started.status_code == 201, started.json()
    polled = client.get("/api/v1/agents/pay-bot/config").json()["profiling"]
    assert (polled["active"], polled["sampling_rate"], polled["detail"]) == (True, 1.0, "full")
    send(
        client,
        [
            factories.record(agent="pay-bot", started_at=at(0)),
            factories.record(agent="pay-bot", environment="staging", started_at=at(0)),
            factories.record(agent="pay-bot", started_at=at(30)),  # before the session began
        ],
    )
    marked = dict(
        Trace.objects.values_list("environment", "profiled").filter(
            started_at__gte=datetime.now(UTC) - timedelta(minutes=5)
        )
    )
    assert marked == {"production": True, "staging": False}
    assert not Trace.objects.get(started_at__lt=datetime.now(UTC) - timedelta(minutes=20)).profiled
    again = client.post(
        "/api/v1/profiling", {"agent": "pay-bot", "environment": "production", "duration_s": 600}, format="json"
    )
    assert again.status_code == 409


def test_it_ends_within_a_minute_of_expiry_with_no_task_scheduled_and_ending_twice_does_nothing(agent, engineer):
    session = profiling.start(agent, "production", 120, engineer)
    assert sweep_profiling.apply().get() == 0  # not yet
    later = session.expires_at + timedelta(seconds=30)  # the next beat tick after expiry
    assert profiling.sweep(later) == 1
    session.refresh_from_db()
    assert (session.status, session.end_reason, session.ended_by, session.ended_at) == (
        "ended",
        "expired",
        None,
        session.expires_at,
    )
    assert session.report_status == "ready"
    assert profiling.sweep(later) == 0
    assert profiling.end(session, user=engineer) is False
    session.refresh_from_db()
    assert session.end_reason == "expired"
    # Ended once, by the system: one audit entry for the conditional update, with no person as actor.
    from auditlog.models import LogEntry

    ended = LogEntry.objects.get_for_object(session).filter(action=LogEntry.Action.UPDATE).get()
    assert ended.actor is None
    assert ended.changes_dict["status"] == ["active", "ended"]


def test_the_report_compares_phases_and_calls_with_the_day_before(agent, engineer):
    ingest = factories.api_as(engineer, ["ingest"])
    # Baseline: the LLM phase about 700 ms. During the session it doubles.
    send(ingest, [factories.record(agent="pay-bot", started_at=at(120 + i)) for i in range(20)])
    session = profiling.start(agent, "production", 600, engineer)
    slow = {"auth": 12.0, "preprocess": 40.5, "llm": 1400.0, "postprocess": 30.0}
    calls = [{"name": "=HYPERLINK(1)", "kind": "tool", "start_ms": 5.0, "duration_ms": 9.0, "status": "ok"}]
    send(
        ingest,
        [
            factories.record(agent="pay-bot", started_at=at(0), latency_ms=1512.5, phases=slow, dependencies=calls)
            for _ in range(10)
        ],
    )
    client = factories.api_as(engineer, ["automation", "read"])
    assert client.get(f"/api/v1/profiling/{session.pk}/report").status_code == 404  # not ended yet
    stopped = client.post(f"/api/v1/profiling/{session.pk}/stop").json()
    assert (stopped["status"], stopped["end_reason"], stopped["ended_by"]) == ("ended", "stopped", "erin")
    report = client.get(f"/api/v1/profiling/{session.pk}/report").json()
    assert (report["traces"], report["baseline_traces"]) == (10, 20)
    llm = next(part for part in report["parts"] if part["name"] == "llm")
    assert (llm["p95_ms"], llm["baseline"]["p95_ms"], llm["p95_vs_baseline"]) == (1400.0, 700.0, 2.0)
    assert report["parts"][0]["name"] == "llm"  # the biggest share first
    assert report["summary"].startswith("llm (phase) takes 93% of the latency, p95 1,400 ms, 2.00x its baseline")
    assert report["overhead"] == pytest.approx(1512.5 / 812.5 - 1, abs=1e-3)
    assert report["slowest"][0]["latency_ms"] == 1512.5
    exported = client.get(f"/api/v1/profiling/{session.pk}/report.csv")
    rows = list(csv.reader(io.StringIO(exported.content.decode())))
    assert rows[0][:3] == ["kind", "name", "calls"]
    assert ["dependency:tool", "'=HYPERLINK(1)"] in [row[:2] for row in rows]


def test_viewers_cannot_profile_and_other_departments_do_not_see_sessions(agent, engineer, viewer, research):
    body = {"agent": "pay-bot", "environment": "production", "duration_s": 600}
    assert factories.api_as(viewer, ["automation"]).post("/api/v1/profiling", body, format="json").status_code == 403
    too_long = factories.api_as(engineer, ["automation"]).post(
        "/api/v1/profiling", body | {"duration_s": 7200}, format="json"
    )
    assert too_long.status_code == 400
    session = profiling.start(agent, "production", 600, engineer)
    outsider = factories.user("olga", "engineers", [research])
    client = factories.api_as(outsider, ["automation", "read"])
    assert client.get("/api/v1/profiling").json()["count"] == 0
    assert client.post(f"/api/v1/profiling/{session.pk}/stop").status_code == 404
    assert client.post("/api/v1/profiling", body, format="json").status_code == 400  # an unknown agent to them
    assert ProfilingSession.objects.get().status == "active"
