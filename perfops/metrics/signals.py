"""Keep rollups attributed to an agent's current department and team.

Pre-merged views sum agents by department and team; when an agent moves, its rows are relabelled and
the views it feeds are rebuilt (a background task, after the move commits), so a department's charts
show exactly its agents' traffic, history included, and the old department no longer sees it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from perfops.telemetry.models import Agent


@receiver(pre_save, sender=Agent, dispatch_uid="perfops.metrics.agent_home_before")
def remember_home(sender: type[Agent], instance: Agent, **kwargs: Any) -> None:
    if instance.pk is None:
        instance._perfops_home = None
        return
    instance._perfops_home = (  # type: ignore[attr-defined]
        Agent.objects.filter(pk=instance.pk).values_list("department_id", "team_id").first()
    )


@receiver(post_save, sender=Agent, dispatch_uid="perfops.metrics.agent_home_after")
def reattribute_on_move(sender: type[Agent], instance: Agent, created: bool, **kwargs: Any) -> None:
    before = getattr(instance, "_perfops_home", None)
    if created or before is None or before == (instance.department_id, instance.team_id):
        return
    from perfops.metrics.tasks import reattribute_agent

    agent_id = instance.pk
    transaction.on_commit(lambda: reattribute_agent.delay(agent_id))
