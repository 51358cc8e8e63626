"""A new SLO brings its burn-rate alert rules and a new budget its two rules, in the same transaction."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from slos.models import SLO, PerformanceBudget


@receiver(post_save, sender=SLO)
def slo_saved(sender: type[SLO], instance: SLO, created: bool, raw: bool = False, **kwargs: Any) -> None:
    from slos.alerts import create_rules

    if raw:
        return
    if created:
        create_rules(instance)
    else:
        # The rules watch the SLO's scope; a changed scope or environment moves them along.
        for rule in instance.alert_rules.all():
            rule.save()


@receiver(post_save, sender=PerformanceBudget)
def budget_saved(
    sender: type[PerformanceBudget], instance: PerformanceBudget, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    from slos.alerts import create_budget_rules

    if raw:
        return
    if created:
        create_budget_rules(instance)
    else:
        for rule in instance.alert_rules.all():
            rule.save()
