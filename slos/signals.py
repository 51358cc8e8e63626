"""A new SLO brings its burn-rate alert rules, in the same transaction."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from slos.models import SLO


@receiver(post_save, sender=SLO)
def slo_saved(sender: type[SLO], instance: SLO, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        from slos.alerts import create_rules

        create_rules(instance)
