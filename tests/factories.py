"""Test data builders, in one place."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, User

from perfops.access.models import ApiToken
from perfops.telemetry.models import Agent, Department, Team


def department(slug: str = "payments", name: str | None = None) -> Department:
    return Department.objects.get_or_create(slug=slug, defaults={"name": name or slug.title()})[0]


def team(dept: Department, slug: str = "checkout") -> Team:
    return Team.objects.get_or_create(department=dept, slug=slug, defaults={"name": slug.title()})[0]


def agent(slug: str = "support-bot", dept: Department | None = None, **fields: Any) -> Agent:
    dept = dept or department()
    defaults = {"name": slug.replace("-", " ").title(), "department": dept, **fields}
    return Agent.objects.get_or_create(slug=slug, defaults=defaults)[0]


def user(username: str, role: str | None = None, departments: list[Department] | None = None, **fields: Any) -> User:
    person = User.objects.create_user(username=username, password="pw-" + username, is_staff=True, **fields)
    if role:
        person.groups.add(Group.objects.get(name=role))
    for dept in departments or []:
        dept.members.add(person)
    return person


def token(owner: User, scopes: list[str], **fields: Any) -> str:
    """Issue a token and return its plaintext."""
    return ApiToken.issue(owner, name=f"{owner.username} {'+'.join(scopes)}", scopes=scopes, **fields)[1]


def api_as(owner: User, scopes: list[str]) -> Any:
    """A DRF test client that sends a new token of `owner` with `scopes`."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token(owner, scopes)}")
    return client


def new_trace_id() -> str:
    return secrets.token_hex(16)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def record(**overrides: Any) -> dict[str, Any]:
    """A valid JSON ingest record, a minute old."""
    base: dict[str, Any] = {
        "trace_id": new_trace_id(),
        "agent": "support-bot",
        "environment": "production",
        "version": "1.4.0",
        "intent": "customer_support",
        "started_at": iso(datetime.now(UTC) - timedelta(minutes=1)),
        "latency_ms": 812.5,
        "status": "ok",
        "phases": {"auth": 12.0, "preprocess": 40.5, "llm": 700.0, "postprocess": 30.0},
        "dependencies": [
            {"name": "gpt-4o", "kind": "llm", "start_ms": 55.0, "duration_ms": 690.0, "status": "ok"},
            {"name": "postgres", "kind": "db", "start_ms": 10.0, "duration_ms": 8.0, "status": "ok"},
        ],
        "model": "gpt-4o",
        "input_tokens": 1200,
        "output_tokens": 350,
        "cache_hit": False,
        "attributes": {"customer_tier": "gold", "retries": 0},
    }
    base.update(overrides)
    return base


def latency_slo(name: str, agent: Agent, owner: User) -> Any:
    """A p95-style latency SLO on one agent: 95% under 900 ms over 7 days."""
    from slos.models import SLO

    return SLO.objects.create(
        name=name,
        scope="agent",
        agent=agent,
        department=agent.department,
        kind="latency",
        threshold_ms=900,
        target=0.95,
        window_days=7,
        created_by=owner,
    )


def firing_rule(name: str, agent: Agent, owner: User, channel: Any, dedupe_key: str, now: datetime) -> tuple[Any, Any]:
    """A p95 latency rule on one agent notifying `channel`, with one firing event 5 minutes ago."""
    from slos.models import AlertEvent, AlertRule

    rule = AlertRule.objects.create(
        name=name,
        metric="latency",
        quantile=0.95,
        scope="agent",
        agent=agent,
        environment="production",
        comparison="gte",
        threshold=1500,
        window_s=600,
        severity="warning",
        created_by=owner,
    )
    rule.channels.add(channel)
    event = AlertEvent.objects.create(
        rule=rule, kind="firing", episode=1, at=now - timedelta(minutes=5), value=1700.0, dedupe_key=dedupe_key
    )
    return rule, event
