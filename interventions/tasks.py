"""Timed interventions work under Celery beat."""

from __future__ import annotations

from celery import shared_task

from interventions import profiling


@shared_task(time_limit=120, soft_time_limit=100)
def sweep_profiling() -> int:
    """End profiling sessions past their expiry and write missing reports (every minute; idempotent)."""
    return profiling.sweep()
