"""Run the OTLP pending-span sweep once, synchronously (what Celery beat does every minute)."""

from typing import Any

from django.core.management.base import BaseCommand

from perfops.telemetry.tasks import sweep_pending_spans


class Command(BaseCommand):
    help = "Merge OTLP child spans that came after their trace into it, and delete orphans past OTLP_ORPHAN_TTL_S."

    def handle(self, *args: Any, **options: Any) -> None:
        result = sweep_pending_spans()
        self.stdout.write(
            f"Merged {result['spans_merged']} late spans into {result['traces_updated']} traces, "
            f"discarded {result['spans_discarded']}, expired {result['orphans_expired']} orphans."
        )
