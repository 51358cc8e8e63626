"""Interventions in the admin: each through a confirmation page, scoped to the person's departments."""

from __future__ import annotations

import pytest
from django.test import Client

from interventions import configs, regressions
from interventions.models import AgentConfig, ProfilingSession, Recommendation, RegressionFlag

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def config_form(agent, **changes) -> dict:
    form: dict = {"agent": agent.pk, "environment": "production", "note": "admin"}
    for name, value in (AgentConfig().settings_dict() | changes).items():
        if isinstance(value, bool):
            if value:
                form[name] = "on"
        else:
            form[name] = str(value)
    return form


def test_a_configuration_version_is_added_after_a_confirmation_and_never_edited(agent, engineer):
    client = client_for(engineer)
    url = "/admin/interventions/agentconfig/add/"
    preview = client.post(url, config_form(agent, timeout_ms=15000)).content.decode()
    assert "30000 → 15000" in preview
    assert not AgentConfig.objects.exists()
    assert client.post(url, config_form(agent, timeout_ms=15000) | {"_confirmed": "1"}).status_code == 302
    made = AgentConfig.objects.get()
    assert (made.version, made.timeout_ms, made.created_by) == (1, 15000, engineer)
    page = client.get(f"/admin/interventions/agentconfig/{made.pk}/change/").content.decode()
    assert 'name="_save"' not in page  # history is append-only


def test_profiling_starts_from_the_admin_after_a_confirmation(agent, engineer, research):
    from tests import factories

    client = client_for(engineer)
    url = "/admin/interventions/profilingsession/add/"
    form = {"agent": agent.pk, "environment": "production", "duration_s": "900", "reason": "slow"}
    assert "100% sampling" in client.post(url, form).content.decode()
    client.post(url, form | {"_confirmed": "1"})
    session = ProfilingSession.objects.get()
    assert (session.duration_s, session.started_by) == (900, engineer)
    outsider = factories.user("olga", "engineers", [research])
    assert client_for(outsider).get(f"/admin/interventions/profilingsession/{session.pk}/change/").status_code == 404


def test_flags_are_dismissed_with_a_reason_and_recommendations_applied_from_the_admin(agent, engineer):
    flagged = regressions.flag(agent, "production", "9.9.9", engineer, found={"candidate": {}})
    client = client_for(engineer)
    changelist = "/admin/interventions/regressionflag/"
    action = {"action": "dismiss_flags", "_selected_action": [flagged.pk]}
    assert 'name="reason"' in client.post(changelist, action).content.decode()
    client.post(changelist, action | {"_confirmed": "1", "reason": ""})
    assert RegressionFlag.objects.get().status == "suspected"  # no reason, no dismissal
    client.post(changelist, action | {"_confirmed": "1", "reason": "synthetic traffic"})
    assert RegressionFlag.objects.get().dismiss_reason == "synthetic traffic"
    configs.apply(agent, "production", {"timeout_ms": 20000}, engineer)
    item = Recommendation.objects.create(
        agent=agent,
        environment="production",
        title="Raise timeout",
        rationale="Timeouts at 19.8 s.",
        changes={"timeout_ms": 25000},
    )
    action = {"action": "apply_selected", "_selected_action": [item.pk]}
    recommendations = "/admin/interventions/recommendation/"
    assert "Raise timeout" in client.post(recommendations, action).content.decode()
    client.post(recommendations, action | {"_confirmed": "1"})
    current = configs.current(agent, "production")
    assert current is not None
    assert (current.timeout_ms, current.source) == (25000, "recommendation")
