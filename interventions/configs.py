"""Versioned agent configuration: apply, revert, diff, and what the agent's config endpoint serves.

Versions are append-only. Applying settings adds a version; reverting adds a version that copies
an earlier one exactly (and names it in `restores`), so the history always shows what ran when,
and "apply then revert" returns the exact earlier settings.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Max

from interventions.models import AgentConfig, ProfilingSession
from perfops.telemetry.models import Agent


class NoChange(Exception):
    """The settings are those of the current version: nothing to apply."""


def current(agent: Agent, environment: str) -> AgentConfig | None:
    return AgentConfig.objects.filter(agent=agent, environment=environment).order_by("-version").first()


def apply(
    agent: Agent,
    environment: str,
    settings: dict[str, Any],
    user: Any,
    *,
    source: str = AgentConfig.Source.MANUAL,
    note: str = "",
    restores: AgentConfig | None = None,
) -> AgentConfig:
    """A new version with `settings` over the current ones; NoChange when nothing would differ.

    The agent row is locked for the version number, so two people applying at once get two
    consecutive versions rather than a collision.
    """
    unknown = sorted(set(settings) - set(AgentConfig.SETTINGS))
    if unknown:
        raise ValueError(f"Unknown setting(s): {', '.join(unknown)}.")
    with transaction.atomic():
        Agent.objects.select_for_update().filter(pk=agent.pk).first()
        base = current(agent, environment)
        values = base.settings_dict() if base is not None else AgentConfig().settings_dict()
        values |= settings
        if base is not None and base.settings_dict() == values:
            raise NoChange("These are the current settings.")
        latest = AgentConfig.objects.filter(agent=agent, environment=environment).aggregate(v=Max("version"))["v"]
        config = AgentConfig(
            agent=agent,
            environment=environment,
            version=(latest or 0) + 1,
            source=source if base is not None or source != AgentConfig.Source.MANUAL else AgentConfig.Source.INITIAL,
            restores=restores,
            note=note,
            created_by=user if getattr(user, "pk", None) else None,
            **values,
        )
        config.full_clean(exclude=["version"])
        config.save()
    return config


def revert(to: AgentConfig, user: Any, note: str = "") -> AgentConfig:
    """Make an earlier version current again, as a new version with exactly its settings."""
    return apply(
        to.agent,
        to.environment,
        to.settings_dict(),
        user,
        source=AgentConfig.Source.REVERT,
        note=note or f"revert to v{to.version}",
        restores=to,
    )


def previous(config: AgentConfig) -> AgentConfig | None:
    return (
        AgentConfig.objects.filter(agent=config.agent, environment=config.environment, version__lt=config.version)
        .order_by("-version")
        .first()
    )


def payload(agent: Agent, environment: str, now: datetime) -> dict[str, Any]:
    """What an agent polls: its current settings and whether it is being profiled (then: send everything)."""
    config = current(agent, environment)
    session = ProfilingSession.objects.active(now).filter(agent=agent, environment=environment).first()
    body: dict[str, Any] = {
        "agent": agent.slug,
        "environment": environment,
        "version": config.version if config else 0,
        "settings": (config or AgentConfig()).settings_dict(),
        "profiling": {
            "active": session is not None,
            "session": session.pk if session else None,
            "expires_at": session.expires_at.isoformat() if session else None,
            "sampling_rate": 1.0 if session else None,
            "detail": "full" if session else "normal",
        },
    }
    caching = {key: body["settings"].pop(key) for key in list(body["settings"]) if "cache" in key}
    body["caching"] = caching
    return body


def etag(body: dict[str, Any]) -> str:
    """A strong ETag of the served body: agents send it back and get a 304 while nothing changed."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return f'"{digest}"'


def apply_recommendation(recommendation: Any, user: Any) -> AgentConfig:
    """Apply an open recommendation as a new version (source: recommendation) and mark it applied."""
    from django.utils import timezone

    from interventions.models import Recommendation
    from perfops.access.audit import record_update

    with transaction.atomic():
        locked = Recommendation.objects.select_for_update().get(pk=recommendation.pk)
        if locked.status != Recommendation.Status.OPEN:
            raise NoChange("This recommendation was already decided.")
        made = apply(
            locked.agent,
            locked.environment,
            dict(locked.changes),
            user,
            source=AgentConfig.Source.RECOMMENDATION,
            note=locked.title[:300],
        )
        now = timezone.now()
        Recommendation.objects.filter(pk=locked.pk).update(
            status=Recommendation.Status.APPLIED, decided_by=user, decided_at=now, applied_config=made
        )
        locked.refresh_from_db()
        record_update(
            locked,
            user,
            {
                "status": ("open", "applied"),
                "decided_by": (None, user),
                "decided_at": (None, now),
                "applied_config": (None, made),
            },
        )
    return made


def dismiss_recommendation(recommendation: Any, user: Any) -> bool:
    from django.utils import timezone

    from interventions.models import Recommendation
    from perfops.access.audit import record_update

    changed = Recommendation.objects.filter(pk=recommendation.pk, status=Recommendation.Status.OPEN).update(
        status=Recommendation.Status.DISMISSED, decided_by=user, decided_at=timezone.now()
    )
    if changed:
        recommendation.refresh_from_db()
        record_update(
            recommendation,
            user,
            {
                "status": ("open", "dismissed"),
                "decided_by": (None, user),
                "decided_at": (None, recommendation.decided_at),
            },
        )
    return bool(changed)
