"""Seed the demo fleet and its recent history (deterministic for a seed, ending now)."""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone

from perfops.metrics.models import RollupState
from perfops.metrics.rollup import catch_up
from perfops.telemetry.demo import fleet, loader
from perfops.telemetry.demo.plan import build_plan, from_us
from perfops.telemetry.demo.story import story_lines, watched_versions
from perfops.telemetry.demo.traffic import History

DEFAULT_TRACES = {"postgresql": 2_000_000, "sqlite": 600_000}
CHUNK_SIZE = 100_000


class Command(BaseCommand):
    help = (
        f"Create the demo fleet ({len(fleet.DEPARTMENTS)} departments, {sum(len(d.teams) for d in fleet.DEPARTMENTS)} "
        f"teams, {fleet.base_size()}+ agents with capacities) and N traces of history "
        "over the last --days up to now, in production, staging and development. The history holds: a latency "
        f"regression ({fleet.LATENCY_REGRESSION_AGENT} 2.3.0, fixed by 2.3.1), an error-rate regression "
        f"({fleet.ERROR_REGRESSION_AGENT} 3.1.0, fixed by 3.1.1), a 40-minute rate_limited burst "
        f"({fleet.RATE_LIMITED_AGENT}), a {fleet.department(fleet.OUTAGE_DEPARTMENT).api} outage across "
        f"{fleet.OUTAGE_DEPARTMENT}, a {fleet.SLOWDOWN_MODEL} slowdown with timeouts, a validation burst "
        f"({fleet.VALIDATION_AGENT}), a slow staging ({fleet.PARITY_AGENT}) and an agent near capacity "
        f"({fleet.NEAR_CAPACITY_AGENT}). The output prints when each happened."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        size = parser.add_mutually_exclusive_group()
        size.add_argument(
            "--traces",
            type=int,
            help="Traces in total (default: 2,000,000 on PostgreSQL, 600,000 on SQLite).",
        )
        size.add_argument("--per-day", type=int, help="Traces per day instead of a total.")
        parser.add_argument("--days", type=float, default=14, help="Days of history, ending now (default 14).")
        parser.add_argument(
            "--agents",
            type=int,
            default=fleet.base_size(),
            help=f"Agents in the fleet (default and minimum {fleet.base_size()}; regional copies beyond that).",
        )
        parser.add_argument("--seed", type=int, default=7, help="Random seed (default 7): same seed, same history.")
        parser.add_argument("--reset", action="store_true", help="Delete the existing demo fleet and its traces first.")
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing (successfully) when a demo fleet already exists."
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=None,
            help="Generator processes (default: the CPUs on PostgreSQL, CPUs - 1 on SQLite, at most 4; "
            "0 generates in this process).",
        )
        parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        days = float(options["days"])
        retention = settings.PERFOPS["RAW_RETENTION_DAYS"]
        if not 1 / 24 <= days <= retention:
            raise CommandError(f"--days must be between 1 hour and the raw retention ({retention} days).")
        agents = options["agents"]
        if not fleet.base_size() <= agents <= fleet.max_agents():
            raise CommandError(f"--agents must be between {fleet.base_size()} and {fleet.max_agents()}.")
        if options["per_day"] is not None:
            total = int(options["per_day"] * days)
        else:
            total = (
                options["traces"] if options["traces"] is not None else DEFAULT_TRACES.get(connection.vendor, 600_000)
            )
        if total < 1:
            raise CommandError("Seed at least one trace.")
        jobs = options["jobs"]
        if jobs is None:
            # On PostgreSQL each worker also COPYs its chunks, so all cores help; SQLite writes from here.
            cpus = os.cpu_count() or 2
            jobs = min(4, cpus if connection.vendor == "postgresql" else max(1, cpus - 1))

        existing = loader.inventory()
        if existing.exists:
            described = f"{existing.agents} agents"
            if options["if_empty"]:
                if RollupState.objects.filter(coarse_through__isnull=False).exists():
                    self.stdout.write(f"The demo fleet is already seeded ({described}); nothing to do.")
                else:
                    # Seeded before rollups existed (or they were reset): roll the history up once.
                    self.stdout.write(f"The demo fleet is already seeded ({described}); its history has no rollups.")
                    self._roll_up(jobs)
                return
            if not options["reset"]:
                raise CommandError(
                    f"A demo fleet is already seeded ({described}). Run with --reset to replace it "
                    "(or --if-empty to keep it)."
                )
            try:
                loader.reset()
            except loader.DemoError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"Deleted the demo fleet ({described} and their traces).")

        plan = build_plan(options["seed"], agents, days, timezone.now())
        history = History(plan, total, options["chunk_size"])
        capacities = loader.capacities_for(plan.agents, history.peak_rate_per_s())
        agent_ids = loader.ensure_fleet(plan.agents, capacities)
        teams = sum(len(d.teams) for d in fleet.DEPARTMENTS)
        self.stdout.write(
            f"Seeding the demo fleet: {len(fleet.DEPARTMENTS)} departments, {teams} teams, {len(agent_ids)} agents, "
            f"{len(capacities)} capacities; {total:,} traces over {days:g} days up to "
            f"{from_us(plan.end_us):%Y-%m-%d %H:%M} UTC (seed {options['seed']}, {connection.vendor}, "
            f"{jobs or 'no'} generator process{'es' if jobs != 1 else ''})."
        )

        chunks = history.chunks

        def progress(done: int, rows: int, chunk_rows: int, seconds: float) -> None:
            rate = rows / seconds if seconds else 0.0
            eta = (total - rows) / rate if rate else 0.0
            self.stdout.write(
                f"  chunk {done}/{chunks}: {rows:,} traces ({rows / total:.0%}), {rate:,.0f} traces/s, ETA {eta:.0f} s"
            )

        try:
            load = loader.load_history(
                plan,
                total,
                agent_ids=agent_ids,
                chunk_size=options["chunk_size"],
                jobs=jobs,
                watched=watched_versions(plan),
                progress=progress,
            )
        except KeyboardInterrupt:
            raise CommandError("Interrupted: the fleet is partly seeded; run again with --reset.") from None
        api, ingest = loader.create_deployments(plan, load, agent_ids)
        self.stdout.write(
            self.style.SUCCESS(
                f"Loaded {load.rows:,} traces in {load.seconds:.1f} s ({load.rows / max(load.seconds, 1e-9):,.0f} "
                f"traces/s); {api + ingest} deployments ({api} reported by deploy tools, {ingest} seen by ingest)."
            )
        )
        self._roll_up(jobs)
        self.stdout.write("What to look for:")
        for line in story_lines(plan, load):
            self.stdout.write(f"  {line}")

    def _roll_up(self, jobs: int) -> None:
        """Roll the whole raw window up, so the charts have the history at once."""
        now = timezone.now()
        since = now - timedelta(days=settings.PERFOPS["RAW_RETENTION_DAYS"])
        self.stdout.write("Rolling the history up for the charts:")

        last_line = -1.0

        def progress(done_s: int, total_s: int, traces: int, seconds: float) -> None:
            nonlocal last_line
            if total_s and (done_s == total_s or seconds - last_line >= 2):
                last_line = seconds
                self.stdout.write(f"  {done_s / total_s:.0%} of the window, {traces:,} traces, {seconds:.0f} s")

        # Worker processes only pay off on PostgreSQL (SQLite has one writer).
        workers = max(1, jobs) if connection.vendor == "postgresql" else 1
        result = catch_up(since, now=now, progress=progress, jobs=workers)
        rate = result.traces / result.seconds if result.seconds else 0.0
        self.stdout.write(
            self.style.SUCCESS(
                f"Rolled up {result.traces:,} traces into {result.rows:,} rollup rows in {result.seconds:.1f} s "
                f"({rate:,.0f} traces/s)."
            )
        )
