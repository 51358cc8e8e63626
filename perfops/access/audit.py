"""Audit registration: people, their roles and their tokens (never a password or a token hash)."""

from typing import Any

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


def record_update(instance: Any, actor: Any, changes: dict[str, tuple[Any, Any]]) -> None:
    """One audit entry for a change written with a conditional `update()`, which auditlog's signals do not see.

    `actor` None (or not a saved user) records the system as the actor.
    """
    from auditlog.models import LogEntry

    LogEntry.objects.log_create(
        instance,
        force_log=True,
        action=LogEntry.Action.UPDATE,
        changes={field: [_text(before), _text(after)] for field, (before, after) in changes.items()},
        actor=actor if getattr(actor, "pk", None) else None,
    )


def _text(value: Any) -> str:
    if value is None:
        return "None"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def record_access(instance: Any, actor: Any, what: str) -> None:
    """An audit entry for something a person generated or looked at that changes nothing (A4.9)."""
    from auditlog.models import LogEntry

    LogEntry.objects.log_create(
        instance,
        force_log=True,
        action=LogEntry.Action.ACCESS,
        changes={"generated": ["", what]},
        actor=actor if getattr(actor, "pk", None) else None,
    )
