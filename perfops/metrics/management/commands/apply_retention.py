"""Apply retention once, synchronously (what Celery beat does every hour)."""

from typing import Any

from django.core.management.base import BaseCommand

from perfops.metrics.retention import apply_retention


class Command(BaseCommand):
    help = (
        "Drop raw traces older than PERFOPS_RAW_RETENTION_DAYS (whole day partitions on PostgreSQL) and rollup "
        "rows older than their grain's retention."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = apply_retention()
        raw = (
            f"{result['raw_days_dropped']} day partitions"
            if result["raw_days_dropped"] or not result["raw_traces_deleted"]
            else f"{result['raw_traces_deleted']:,} traces"
        )
        self.stdout.write(f"Dropped {raw} of raw traces and {result['rollup_rows_deleted']:,} rollup rows.")
