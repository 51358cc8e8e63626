"""Periodic telemetry work: partitions ahead of time, and OTLP orphan expiry."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from perfops.telemetry import partitions
from perfops.telemetry.ingest.otlp import sweep_pending

logger = logging.getLogger(__name__)

DAYS_AHEAD = 3


@shared_task(time_limit=120, soft_time_limit=100)
def ensure_trace_partitions() -> int:
    """Make partitions for the raw retention window and the next days; analyse the days being written."""
    if not partitions.is_partitioned():
        return 0
    today = timezone.now().date()
    # The oldest day that can still hold an accepted trace (ingest refuses older ones; retention drops them).
    first = today - timedelta(days=settings.PERFOPS["RAW_RETENTION_DAYS"])
    created = partitions.ensure_partitions_between(first, today + timedelta(days=DAYS_AHEAD))
    if created:
        logger.info("created %d trace partitions (%s .. %s)", len(created), created[0], created[-1])
    # The days being written change fastest; fresh statistics keep the rollup's and pages' plans sane.
    partitions.analyze_recent([today - timedelta(days=1), today])
    return len(created)


@shared_task(time_limit=120, soft_time_limit=100)
def sweep_pending_spans() -> dict[str, int]:
    """Merge OTLP child spans that came after their trace into it, and expire orphans (every minute)."""
    return asdict(sweep_pending())
