from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

PASSES = ("versions", "steps", "recommendations", "baselines", "anomalies")


class Command(BaseCommand):
    help = (
        "Run the analytics passes that beat schedules, once: new versions against the one before them (every "
        "10 min), steps in each agent's latency and error series (hourly), configuration recommendations (hourly), "
        "agents' baselines for root causes (hourly) and error anomalies (every 5 min)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only", choices=PASSES, action="append", help="Run only this pass (repeatable).")

    def handle(self, *args: Any, **options: Any) -> None:
        from perfops.analytics import advisor, causes, changes, detect, errors

        run = {
            "versions": detect.check_new_versions,
            "steps": changes.flag_recent,
            "recommendations": advisor.recommend_all,
            "baselines": causes.refresh_baselines,
            "anomalies": errors.detect_all,
        }
        for name in options["only"] or PASSES:
            counts = run[name]()
            self.stdout.write(f"{name}: " + ", ".join(f"{key} {value}" for key, value in counts.items()))
