"""Periodic SLO work: burn-rate alert evaluation."""

from __future__ import annotations

from celery import shared_task

from slos import alerts


@shared_task(time_limit=55, soft_time_limit=50)
def evaluate_alerts() -> dict[str, int]:
    """Advance every enabled alert rule (every minute under beat; idempotent, safe to run twice)."""
    return alerts.evaluate_all()
