"""Audit registration: people, their roles and their tokens (never a password or a token hash)."""

from auditlog.registry import auditlog
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from perfops.access.models import AllowedHost, ApiToken

auditlog.register(ApiToken, exclude_fields=["token_hash", "last_used_at"])
# Who holds which role, and who is a superuser, decides what everyone else may see and do.
auditlog.register(get_user_model(), m2m_fields={"groups"}, exclude_fields=["password", "last_login"])
auditlog.register(Group, m2m_fields={"permissions"})
# Which hosts perfops may call is a security decision.
auditlog.register(AllowedHost)
