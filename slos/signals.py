"""A new SLO brings its burn-rate alert rules and a new budget its two rules, in the same transaction.

A changed SLO window replaces the burn-rate rules (the Workbook's thresholds depend on the window),
whatever changed it: a page, the API, the admin or an OpenSLO import.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from slos.models import SLO, PerformanceBudget


@receiver(pre_save, sender=SLO)
def slo_saving(sender: type[SLO], instance: SLO, raw: bool = False, **kwargs: Any) -> None:
    if raw or instance.pk is None:
        return
    before = SLO.objects.filter(pk=instance.pk).values_list("window_days", flat=True).first()
    instance._window_changed = before is not None and before != instance.window_days  # type: ignore[attr-defined]


@receiver(post_save, sender=SLO)
def slo_saved(sender: type[SLO], instance: SLO, created: bool, raw: bool = False, **kwargs: Any) -> None:
    from slos.alerts import create_rules

    if raw:
        return
    if created:
        create_rules(instance)
    elif instance.__dict__.pop("_window_changed", False):
        create_rules(instance, keep_channels=True)
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
