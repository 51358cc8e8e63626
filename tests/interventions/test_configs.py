"""Versioned agent configuration: apply, revert, diff, the endpoint agents poll; roles and audit."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry

from interventions import configs
from interventions.models import AgentConfig
from tests import factories

pytestmark = pytest.mark.django_db


def test_apply_then_revert_returns_the_exact_earlier_config_and_both_are_audited(agent, engineer):
    first = configs.apply(agent, "production", {"model": "gpt-4o", "timeout_ms": 20_000}, engineer)
    second = configs.apply(
        agent, "production", {"timeout_ms": 45_000, "prompt_cache": True, "cache_ttl_s": 600}, engineer, note="tail"
    )
    assert (first.version, second.version) == (1, 2)
    assert second.diff(first) == [
        ("timeout_ms", 20_000, 45_000),
        ("prompt_cache", False, True),
        ("cache_ttl_s", 3600, 600),
    ]
    back = configs.revert(first, engineer)
    assert (back.version, back.source, back.restores) == (3, "revert", first)
    assert back.settings_dict() == first.settings_dict()
    assert configs.current(agent, "production") == back
    for version in (second, back):
        entry = LogEntry.objects.get_for_object(version).get()
        assert entry.action == LogEntry.Action.CREATE
    with pytest.raises(configs.NoChange):
        configs.revert(first, engineer)  # already current


def test_environments_keep_their_own_histories(agent, engineer):
    configs.apply(agent, "production", {"concurrency": 4}, engineer)
    staging = configs.apply(agent, "staging", {"concurrency": 32}, engineer)
    assert staging.version == 1
    production = configs.current(agent, "production")
    assert production is not None
    assert production.concurrency == 4


def test_the_agent_polls_its_config_with_an_etag(agent, engineer):
    configs.apply(agent, "production", {"model": "gpt-4o-mini", "response_cache": True}, engineer)
    client = factories.api_as(engineer, ["ingest"])
    first = client.get("/api/v1/agents/pay-bot/config?environment=production")
    assert first.status_code == 200
    body = first.json()
    assert (body["version"], body["settings"]["model"], body["caching"]["response_cache"]) == (1, "gpt-4o-mini", True)
    assert body["profiling"] == {
        "active": False,
        "session": None,
        "expires_at": None,
        "sampling_rate": None,
        "detail": "normal",
    }
    again = client.get("/api/v1/agents/pay-bot/config?environment=production", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    configs.apply(agent, "production", {"temperature": 0.0}, engineer)
    changed = client.get("/api/v1/agents/pay-bot/config?environment=production", HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200
    assert changed.json()["version"] == 2


def test_changes_over_the_api_need_automation_and_a_role_that_acts(agent, engineer, viewer, research):
    body = {"environment": "production", "timeout_ms": 15_000, "note": "timeouts cluster at 14 s"}
    assert (
        factories.api_as(engineer, ["read"]).post("/api/v1/agents/pay-bot/config", body, format="json").status_code
        == 403
    )
    assert (
        factories.api_as(viewer, ["automation"]).post("/api/v1/agents/pay-bot/config", body, format="json").status_code
        == 403
    )
    outsider = factories.user("olga", "engineers", [research])
    assert (
        factories.api_as(outsider, ["automation"])
        .post("/api/v1/agents/pay-bot/config", body, format="json")
        .status_code
        == 404
    )
    client = factories.api_as(engineer, ["automation", "read"])
    preview = client.post("/api/v1/agents/pay-bot/config", body | {"dry_run": True}, format="json").json()
    assert {"label": "timeout ms", "value": "30000 → 15000"} in preview["facts"]
    assert not AgentConfig.objects.exists()
    made = client.post("/api/v1/agents/pay-bot/config", body, format="json")
    assert made.status_code == 201
    assert (made.json()["version"], made.json()["source"], made.json()["created_by"]) == (1, "api", "erin")
    assert client.post("/api/v1/agents/pay-bot/config", body, format="json").status_code == 409
    bad = client.post("/api/v1/agents/pay-bot/config", {"temperature": 7}, format="json")
    assert bad.status_code == 400
    assert "temperature" in bad.json()
    history = client.get("/api/v1/agents/pay-bot/configs").json()
    assert [row["version"] for row in history["results"]] == [1]
    configs.apply(agent, "production", {"timeout_ms": 60_000}, engineer)
    reverted = client.post("/api/v1/agents/pay-bot/configs/1/revert?environment=production")
    assert reverted.status_code == 201
    assert reverted.json()["timeout_ms"] == 15_000
    assert LogEntry.objects.filter(actor=engineer).count() >= 2
