"""Retention: raw traces for PERFOPS_RAW_RETENTION_DAYS, rollups for their grain's window.

On PostgreSQL raw traces go a whole day partition at a time (instant, and the disk is given back);
on SQLite they are deleted in batches so the database is never locked for long. Rollups are deleted
in batches by grain and age on both.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from perfops.metrics import storage
from perfops.metrics.levels import Grain, View, kept_from
from perfops.telemetry import partitions
from perfops.telemetry.choices import Environment

logger = logging.getLogger(__name__)

BATCH = 10_000


def raw_cutoff(now: datetime) -> datetime:
    """Traces that started before this are past retention."""
    return now - timedelta(days=settings.PERFOPS["RAW_RETENTION_DAYS"])


def apply_retention(now: datetime | None = None) -> dict[str, int]:
    """Drop what is past retention; returns what went (days or traces, and rollup rows)."""
    now = now or timezone.now()
    cutoff = raw_cutoff(now)
    result = {"raw_days_dropped": 0, "raw_traces_deleted": 0, "rollup_rows_deleted": 0}
    if partitions.is_partitioned():
        # A day goes once all of it is past the cutoff.
        result["raw_days_dropped"] = len(partitions.drop_partitions_before(cutoff.date()))
    else:
        stamp = cutoff.strftime("%Y-%m-%d %H:%M:%S.%f")
        result["raw_traces_deleted"] = _delete_in_batches(
            "DELETE FROM telemetry_trace WHERE rowid IN "
            "(SELECT rowid FROM telemetry_trace WHERE started_at < %s LIMIT %s)",
            [stamp],
        )
    for grain in Grain:
        result["rollup_rows_deleted"] += _delete_rollups(grain, kept_from(grain, now))
    storage.analyze()
    if any(result.values()):
        logger.info("retention: %s", result)
    return result


def _delete_rollups(grain: int, before_s: int) -> int:
    """Delete one grain's rows older than before_s, view by view and environment by environment (index ranges)."""
    row = "id" if connection.vendor == "postgresql" else "rowid"
    sql = (
        f"DELETE FROM metrics_rollup WHERE {row} IN (SELECT {row} FROM metrics_rollup "  # noqa: S608
        "WHERE view = %s AND grain_s = %s AND environment = %s AND bucket_epoch_s < %s LIMIT %s)"
    )
    return sum(
        _delete_in_batches(sql, [int(view), grain, environment, before_s])
        for view in View
        for environment in range(len(Environment.values))
    )


def _delete_in_batches(sql: str, params: list[Any]) -> int:
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [*params, BATCH])
            count = cursor.rowcount
        deleted += count
        if count < BATCH:
            return deleted
