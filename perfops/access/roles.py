"""The three roles, as Django groups, and what each may do.

Managers configure (SLOs, alert rules, budgets, teams and agents of their departments),
engineers act (interventions, deployments, agent settings, alert rules), viewers read. Every role is
scoped to the departments the person is a member of; a superuser sees everything.
"""

from __future__ import annotations

from typing import Any

from django.db import models


class Role(models.TextChoices):
    MANAGER = "managers", "Manager"
    ENGINEER = "engineers", "Engineer"
    VIEWER = "viewers", "Viewer"


# Engineers and managers act on agents alike: configuration, profiling, regressions, load tests.
ACTING_ON_AGENTS = (
    "view_agentconfig",
    "add_agentconfig",
    "view_profilingsession",
    "add_profilingsession",
    "change_profilingsession",
    "view_regressionflag",
    "add_regressionflag",
    "change_regressionflag",
    "view_incident",
    "change_incident",
    "view_recommendation",
    "change_recommendation",
    "view_loadtest",
    "add_loadtest",
    "change_loadtest",
)

# Model permissions each role's group holds ("app_label.codename" without the action prefix).
ROLE_PERMISSIONS: dict[str, dict[str, tuple[str, ...]]] = {
    Role.VIEWER: {
        "telemetry": (
            "view_department",
            "view_team",
            "view_agent",
            "view_agentcapacity",
            "view_deployment",
            "view_trace",
        ),
        "slos": ("view_slo", "view_alertrule", "view_alertevent", "view_performancebudget"),
        "interventions": (
            "view_agentconfig",
            "view_profilingsession",
            "view_regressionflag",
            "view_incident",
            "view_recommendation",
            "view_loadtest",
        ),
        "access": ("view_apitoken", "add_apitoken", "change_apitoken"),
    },
    Role.ENGINEER: {
        "telemetry": (
            "view_department",
            "view_team",
            "view_agent",
            "change_agent",
            "view_agentcapacity",
            "add_agentcapacity",
            "change_agentcapacity",
            "delete_agentcapacity",
            "view_deployment",
            "add_deployment",
            "change_deployment",
            "view_trace",
        ),
        # Engineers (SREs) create and tune alert rules from the charts (A4.3) and pick their channels.
        "slos": (
            "view_slo",
            "view_alertrule",
            "add_alertrule",
            "change_alertrule",
            "delete_alertrule",
            "view_alertevent",
            "view_notificationchannel",
            "view_performancebudget",
        ),
        "interventions": ACTING_ON_AGENTS,
        "access": ("view_apitoken", "add_apitoken", "change_apitoken"),
    },
    Role.MANAGER: {
        "telemetry": (
            "view_department",
            "view_team",
            "add_team",
            "change_team",
            "delete_team",
            "view_agent",
            "add_agent",
            "change_agent",
            "delete_agent",
            "view_agentcapacity",
            "add_agentcapacity",
            "change_agentcapacity",
            "delete_agentcapacity",
            "view_deployment",
            "add_deployment",
            "change_deployment",
            "delete_deployment",
            "view_trace",
        ),
        "slos": (
            "view_slo",
            "add_slo",
            "change_slo",
            "delete_slo",
            "view_alertrule",
            "add_alertrule",
            "change_alertrule",
            "delete_alertrule",
            "view_alertevent",
            "view_notificationchannel",
            "add_notificationchannel",
            "change_notificationchannel",
            "delete_notificationchannel",
            "view_delivery",
            "view_performancebudget",
            "add_performancebudget",
            "change_performancebudget",
            "delete_performancebudget",
        ),
        "interventions": ACTING_ON_AGENTS,
        "access": ("view_apitoken", "add_apitoken", "change_apitoken"),
    },
}


def roles_of(user: Any) -> set[str]:
    """The role names of a user's groups (a superuser holds every role)."""
    if not user.is_authenticated or not user.is_active:
        return set()
    if getattr(user, "is_superuser", False):
        return {role.value for role in Role}
    cached: set[str] | None = getattr(user, "_perfops_roles", None)
    if cached is None:
        cached = set(user.groups.filter(name__in=Role.values).values_list("name", flat=True))
        user._perfops_roles = cached
    return cached


def can_act(user: Any) -> bool:
    """Engineers and managers act on agents (interventions, deployments); viewers only read."""
    return bool(roles_of(user) & {Role.ENGINEER, Role.MANAGER})


def sync_role_groups(**kwargs: object) -> None:
    """Create the role groups and give each exactly its permissions (post_migrate, idempotent)."""
    from django.contrib.auth.models import Group, Permission

    for role, by_app in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted: list[Permission] = []
        for app_label, codenames in by_app.items():
            wanted.extend(Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames))
        group.permissions.set(wanted)
