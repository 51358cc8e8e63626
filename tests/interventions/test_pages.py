"""The agent's configuration and profiling page: change, revert and profile, each after a confirmation."""

from __future__ import annotations

from auditlog.models import LogEntry
from django.test import Client
from django.urls import reverse

from interventions import configs, profiling
from interventions.models import AgentConfig, ProfilingSession


def client_for(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def settings_form(agent, **changes) -> dict:
    values = AgentConfig().settings_dict()
    values |= changes
    form = {"agent": agent.pk, "environment": "production", "note": "tail latency"}
    for name, value in values.items():
        if isinstance(value, bool):
            if value:
                form[name] = "on"
        else:
            form[name] = str(value)
    return form


def test_a_change_is_confirmed_with_its_diff_then_applied_and_audited(agent, engineer):
    client = client_for(engineer)
    page = client.get(reverse("dashboard:agent", args=["pay-bot"])).content.decode()
    home = reverse("interventions:agent", args=["pay-bot"]) + "?environment=production"
    assert home in page
    url = reverse("interventions:change-config", args=["pay-bot"]) + "?environment=production"
    assert client.get(url).status_code == 200
    preview = client.post(url, settings_form(agent, timeout_ms=45000, prompt_cache=True)).content.decode()
    assert "30000 → 45000" in preview
    assert "off → on" in preview
    assert not AgentConfig.objects.exists()
    done = client.post(url, settings_form(agent, timeout_ms=45000, prompt_cache=True) | {"_confirmed": "1"})
    assert done.status_code == 302
    made = AgentConfig.objects.get()
    assert (made.version, made.timeout_ms, made.prompt_cache, made.created_by) == (1, 45000, True, engineer)
    assert LogEntry.objects.get_for_object(made).get().actor == engineer
    history = client.get(home).content.decode()
    assert "v1" in history
    assert "<code>timeout_ms</code> 30000 → 45000" in history


def test_revert_from_the_history_restores_the_earlier_version(agent, engineer):
    first = configs.apply(agent, "production", {"timeout_ms": 20000}, engineer)
    configs.apply(agent, "production", {"timeout_ms": 90000}, engineer)
    client = client_for(engineer)
    url = reverse("interventions:revert-config", args=["pay-bot", first.version])
    preview = client.post(url, {"environment": "production"}).content.decode()
    assert "90000 → 20000" in preview
    assert "Yes, revert to v1" in preview
    client.post(url, {"environment": "production", "_confirmed": "1"})
    current = configs.current(agent, "production")
    assert current is not None
    assert (current.version, current.timeout_ms, current.restores) == (3, 20000, first)


def test_profiling_is_started_and_stopped_from_the_page_after_confirmations(agent, engineer, viewer):
    client = client_for(engineer)
    start = reverse("interventions:start-profiling", args=["pay-bot"])
    preview = client.post(start, {"environment": "production", "minutes": "30", "reason": "p95 doubled"})
    assert "100% sampling" in preview.content.decode()
    assert not ProfilingSession.objects.exists()
    client.post(start, {"environment": "production", "minutes": "30", "reason": "p95 doubled", "_confirmed": "1"})
    session = ProfilingSession.objects.get()
    assert (session.duration_s, session.started_by, session.reason) == (1800, engineer, "p95 doubled")
    assert client_for(viewer).post(reverse("interventions:stop-profiling", args=[session.pk])).status_code == 403
    stop = reverse("interventions:stop-profiling", args=[session.pk])
    assert "Yes, stop it" in client.post(stop).content.decode()
    client.post(stop, {"_confirmed": "1"})
    session.refresh_from_db()
    assert (session.status, session.end_reason, session.report_status) == ("ended", "stopped", "ready")
    report = client.get(reverse("interventions:profiling", args=[session.pk])).content.decode()
    assert "Bottleneck report" in report
    assert "No phase or dependency timing arrived during the session." in report


def test_another_departments_agent_is_not_found_and_viewers_only_read(agent, viewer, research):
    from tests import factories

    outsider = factories.user("olga", "engineers", [research])
    assert client_for(outsider).get(reverse("interventions:agent", args=["pay-bot"])).status_code == 404
    page = client_for(viewer).get(reverse("interventions:agent", args=["pay-bot"])).content.decode()
    assert "Change…" not in page
    assert "Review and start" not in page
    assert client_for(viewer).get(reverse("interventions:change-config", args=["pay-bot"])).status_code == 403
    session = profiling.start(agent, "production", 600, None)
    dashboard = client_for(viewer).get(reverse("dashboard:agent", args=["pay-bot"])).content.decode()
    assert f"being profiled in production until {session.expires_at:%H:%M} UTC" in dashboard
    assert (
        "profiling</span> since"
        in client_for(viewer).get(reverse("interventions:agent", args=["pay-bot"])).content.decode()
    )


def test_config_changes_are_marked_on_the_agents_latency_chart_and_panels_offer_actions(rolled_up, engineer):

    agent = rolled_up.agents["pay-bot"]
    configs.apply(agent, "production", {"timeout_ms": 12000}, engineer, note="tighter timeout")
    client = client_for(engineer)
    hx = {"HX-Request": "true"}
    latency = client.get(reverse("dashboard:panel", args=["latency"]), {"agent": "pay-bot"}, headers=hx)
    body = latency.content.decode()
    assert "config v1: tighter timeout" in body
    assert "Purple dotted lines: configuration changes" in body
    phases = client.get(reverse("dashboard:panel", args=["phases"]), {"agent": "pay-bot"}, headers=hx).content.decode()
    assert "Cache hits: " in phases
    assert "Profile this agent for up to an hour" in phases
    capacity = client.get(reverse("dashboard:panel", args=["capacity"]), {"agent": "pay-bot"}, headers=hx)
    assert "Schedule a load test" in capacity.content.decode()
