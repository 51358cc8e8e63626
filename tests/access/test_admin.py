"""Tokens in the admin: the secret appears once, only the hash is kept, revocation is audited."""

from __future__ import annotations

import re

import pytest
from auditlog.models import LogEntry

from perfops.access.models import ApiToken, hash_token
from tests import factories

pytestmark = pytest.mark.django_db


def test_issuing_a_token_shows_the_secret_once_and_stores_only_its_hash(client, engineer):
    client.force_login(engineer)
    response = client.post("/admin/access/apitoken/add/", {"name": "collector", "scopes": ["ingest"]})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    plaintext = re.search(rb"pfo_[A-Za-z0-9_-]{43}", response.content).group().decode()  # type: ignore[union-attr]
    token = ApiToken.objects.get()
    assert token.user == engineer
    assert token.token_hash == hash_token(plaintext)

    change_page = client.get(f"/admin/access/apitoken/{token.pk}/change/")
    assert plaintext.encode() not in change_page.content
    assert token.token_hash.encode() not in change_page.content


def test_a_viewer_cannot_issue_an_automation_token(client, viewer):
    client.force_login(viewer)
    response = client.post("/admin/access/apitoken/add/", {"name": "x", "scopes": ["automation"]})
    assert b"needs an engineer or a manager" in response.content
    assert not ApiToken.objects.exists()


def test_people_see_only_their_own_tokens(client, engineer, viewer):
    factories.token(viewer, ["read"])
    client.force_login(engineer)
    response = client.get("/admin/access/apitoken/")
    assert b"victor" not in response.content


def test_revoking_tokens_is_audited_one_entry_each(client, superuser, engineer):
    factories.token(engineer, ["read"])
    factories.token(engineer, ["ingest"])
    client.force_login(superuser)
    ids = list(ApiToken.objects.values_list("pk", flat=True))
    response = client.post("/admin/access/apitoken/", {"action": "revoke_tokens", "_selected_action": ids}, follow=True)
    assert b"Revoked 2 token(s)." in response.content
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 0
    for token in ApiToken.objects.all():
        updates = LogEntry.objects.get_for_object(token).filter(action=LogEntry.Action.UPDATE)
        assert updates.count() == 1
        assert updates.get().actor == superuser
        assert "token_hash" not in updates.get().changes_dict


def test_the_role_groups_exist_with_their_permissions(db):
    from django.contrib.auth.models import Group

    viewers = Group.objects.get(name="viewers")
    engineers = Group.objects.get(name="engineers")
    managers = Group.objects.get(name="managers")
    assert viewers.permissions.filter(codename="view_agent").exists()
    assert not viewers.permissions.filter(codename="change_agent").exists()
    assert engineers.permissions.filter(codename="change_agent").exists()
    assert not engineers.permissions.filter(codename="delete_agent").exists()
    assert managers.permissions.filter(codename="delete_agent").exists()
