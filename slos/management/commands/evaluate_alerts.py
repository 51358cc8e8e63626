from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from slos import alerts


class Command(BaseCommand):
    help = "Evaluate every enabled SLO burn-rate alert rule once (what beat runs every minute)."

    def handle(self, *args: Any, **options: Any) -> None:
        counts = alerts.evaluate_all()
        self.stdout.write(
            f"Evaluated {counts['rules']} rules: {counts['firing']} fired, {counts['resolved']} resolved."
        )
