"""API tokens: issued once, stored hashed, limited by scope, role, expiry and revocation."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command

from perfops.access.models import ApiToken, hash_token
from tests import factories

pytestmark = pytest.mark.django_db


def test_the_command_prints_only_the_new_token(engineer):
    out = io.StringIO()
    call_command("create_api_token", "erin", "--scopes", "ingest,read", stdout=out)
    plaintext = out.getvalue().strip()
    assert plaintext.startswith("pfo_")
    assert "\n" not in plaintext
    token = ApiToken.objects.get()
    assert token.scopes == ["ingest", "read"]
    assert token.user == engineer


def test_only_the_hash_is_stored(engineer):
    out = io.StringIO()
    call_command("create_api_token", "erin", "--scopes", "read", stdout=out)
    plaintext = out.getvalue().strip()
    token = ApiToken.objects.get()
    assert token.token_hash == hash_token(plaintext)
    assert plaintext not in {str(value) for value in ApiToken.objects.values().get().values()}


def test_the_command_refuses_unknown_scopes_and_users(engineer):
    with pytest.raises(CommandError, match="Unknown scope"):
        call_command("create_api_token", "erin", "--scopes", "admin", stdout=io.StringIO())
    with pytest.raises(CommandError, match="No user"):
        call_command("create_api_token", "nobody", "--scopes", "read", stdout=io.StringIO())


def test_a_viewer_cannot_get_an_automation_token(viewer):
    with pytest.raises(CommandError, match="automation"):
        call_command("create_api_token", "victor", "--scopes", "automation", stdout=io.StringIO())


def test_the_command_sets_an_expiry(engineer):
    call_command("create_api_token", "erin", "--scopes", "read", "--expires-in-days", "7", stdout=io.StringIO())
    expires_at = ApiToken.objects.get().expires_at
    assert expires_at is not None
    assert timedelta(days=6, hours=23) < expires_at - datetime.now(UTC) <= timedelta(days=7)


def test_a_token_stops_working_when_it_expires(api, engineer):
    plaintext = factories.token(engineer, ["read"], expires_at=datetime.now(UTC) + timedelta(hours=1))
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api.get("/api/v1/agents").status_code == 200
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=2)):
        response = api.get("/api/v1/agents")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_use_is_recorded_at_most_once_a_minute(api, engineer):
    plaintext = factories.token(engineer, ["read"])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        api.get("/api/v1/agents")
        first = ApiToken.objects.get().last_used_at
        api.get("/api/v1/agents")
        assert ApiToken.objects.get().last_used_at == first
    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        api.get("/api/v1/agents")
    assert ApiToken.objects.get().last_used_at == start + timedelta(minutes=2)


def test_an_inactive_users_token_is_refused(api, engineer):
    plaintext = factories.token(engineer, ["read"])
    engineer.is_active = False
    engineer.save()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api.get("/api/v1/agents").status_code == 401


def test_a_malformed_authorization_header_answers_401(api, engineer):
    api.credentials(HTTP_AUTHORIZATION="Bearer two parts")
    assert api.get("/api/v1/agents").status_code == 401


@pytest.fixture
def a_second_later(monkeypatch):
    """Move the token memo's clock past its time to live."""
    from perfops.access import authentication

    def advance() -> None:
        start = authentication._clock()
        monkeypatch.setattr(authentication, "_clock", lambda: start + authentication.TOKEN_MEMO_TTL_S + 0.1)

    return advance


def test_a_revoked_token_stops_working_within_a_second(api, engineer, a_second_later):
    plaintext = factories.token(engineer, ["read"])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api.get("/api/v1/agents").status_code == 200
    ApiToken.objects.get().revoke()
    a_second_later()
    response = api.get("/api/v1/agents")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_an_automation_token_of_a_demoted_user_loses_automation(api, engineer, payments, a_second_later):
    factories.agent("support-bot", payments)
    plaintext = factories.token(engineer, ["automation"])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    deployment = {"agent": "support-bot", "environment": "production", "version": "2.0.0"}
    assert api.post("/api/v1/deployments", deployment, format="json").status_code == 201

    engineer.groups.clear()  # now nothing more than a department member: no role that can act
    a_second_later()
    response = api.post("/api/v1/deployments", {**deployment, "version": "2.0.1"}, format="json")

    assert response.status_code == 403
