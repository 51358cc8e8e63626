"""Dirty buckets: ingest marks the 30-second buckets it wrote to; the rollup recomputes them.

A mark is written in the same transaction as the traces, so a committed trace always has a mark
until a rollup that saw it has committed. Each new write bumps the mark's version; the rollup
deletes a mark only if its version is still the one it read before reading the raw rows
(perfops.metrics.rollup), so a batch that lands during a recompute keeps its mark.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from perfops.metrics.levels import BASE


def bucket_start_s(moment: datetime) -> int:
    """The epoch second at which the 30-second bucket holding `moment` starts."""
    return int(moment.timestamp()) // BASE * BASE


def mark_dirty(started_ats: Iterable[datetime]) -> None:
    """Mark the buckets of these trace starts for a recompute (inside the caller's transaction)."""
    buckets = sorted({bucket_start_s(moment) for moment in started_ats})
    if not buckets:
        return
    now = timezone.now()
    stamp = now if connection.vendor == "postgresql" else now.strftime("%Y-%m-%d %H:%M:%S.%f")
    # Sorted: concurrent batches lock the same marks in the same order and cannot deadlock.
    values = ", ".join(["(%s, %s, 1)"] * len(buckets))
    params: list[Any] = []
    for bucket in buckets:
        params.extend([bucket, stamp])
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO metrics_dirtybucket (bucket_epoch_s, marked_at, version) "  # noqa: S608
            f"VALUES {values} ON CONFLICT (bucket_epoch_s) DO UPDATE "
            "SET version = metrics_dirtybucket.version + 1",
            params,
        )
