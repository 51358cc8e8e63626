"""Run the rollup once, synchronously: the beat tick, or a catch-up over a range (backfill)."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from perfops.metrics.rollup import catch_up, catch_up_window, tick

_AGO = re.compile(r"\A(\d+(?:\.\d+)?)([mhd])\Z")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def moment(text: str, now: datetime) -> datetime:
    """'30d', '6h', '90m' ago, or an ISO 8601 date-time with an offset."""
    match = _AGO.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    parsed = parse_datetime(text.strip())
    if parsed is None or parsed.tzinfo is None:
        raise CommandError(f"'{text}' is neither a span like 30d / 6h / 90m nor an ISO 8601 time with an offset.")
    return parsed


class Command(BaseCommand):
    help = (
        "Without --since: one rollup tick (recompute the dirty buckets ingest marked, build closed coarse buckets), "
        "as Celery beat runs every 10 s. With --since: recompute every bucket from then on from the raw traces "
        "(backfill and catch-up; safe to repeat, it replaces rows and never adds to them)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="Recompute from this moment: 30d, 6h, 90m ago, or an ISO 8601 time.")
        parser.add_argument("--until", help="...up to this moment (default: now).")
        parser.add_argument(
            "--jobs",
            type=int,
            default=None,
            help="Worker processes for --since (default: the CPUs on PostgreSQL, at most 4; 1 on SQLite).",
        )
        parser.add_argument(
            "--all", action="store_true", help="Without --since: also claim marks that are still settling."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        if not options["since"]:
            if options["until"]:
                raise CommandError("--until needs --since.")
            result = tick(now, settle_s=0 if options["all"] else None, limit=10**9 if options["all"] else 2880)
            if result.skipped:
                raise CommandError(f"Not run: {result.skipped}.")
            self.stdout.write(
                f"Recomputed {result.buckets} buckets from {result.traces:,} traces and built {result.coarse} "
                f"coarse buckets ({result.rows:,} rows) in {result.seconds:.2f} s; {result.marks_left} marks wait."
            )
            return
        since = moment(options["since"], now)
        until = moment(options["until"], now) if options["until"] else None
        if until is not None and until <= since:
            raise CommandError("--until must be after --since.")
        jobs = options["jobs"]
        if jobs is None:
            jobs = min(4, os.cpu_count() or 1) if connection.vendor == "postgresql" else 1
        if jobs < 1:
            raise CommandError("--jobs must be at least 1.")
        start_s, end_s = catch_up_window(since, until, now)
        self.stdout.write(
            f"Rolling up {datetime.fromtimestamp(start_s, tz=now.tzinfo):%Y-%m-%d %H:%M} to "
            f"{datetime.fromtimestamp(end_s, tz=now.tzinfo):%Y-%m-%d %H:%M:%S} UTC with {jobs} "
            f"process{'es' if jobs != 1 else ''} (whole hours, within the raw retention)."
        )
        last_line = -1.0

        def progress(done_s: int, total_s: int, traces: int, seconds: float) -> None:
            nonlocal last_line
            if total_s and (done_s >= total_s or seconds - last_line >= 2):
                last_line = seconds
                rate = traces / seconds if seconds else 0.0
                self.stdout.write(f"  {min(done_s / total_s, 1):.0%}: {traces:,} traces, {rate:,.0f} traces/s")

        result = catch_up(since, until, now=now, progress=progress, jobs=jobs)
        if result.skipped:
            raise CommandError(f"Not run: {result.skipped}.")
        rate = result.traces / result.seconds if result.seconds else 0.0
        self.stdout.write(
            self.style.SUCCESS(
                f"Rolled up {result.traces:,} traces into {result.rows:,} rows in {result.seconds:.1f} s "
                f"({rate:,.0f} traces/s)."
            )
        )
