"""Live traffic for the demo fleet through the real ingest API, plus simulated agents to load test."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import threading
import time
from datetime import timedelta
from types import FrameType
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from perfops.access.models import ApiToken, Scope
from perfops.telemetry.demo import fleet, loader
from perfops.telemetry.demo.agents_server import RunningAgents, start_agents
from perfops.telemetry.demo.live import LiveTraffic
from perfops.telemetry.demo.plan import live_plan, to_us
from perfops.telemetry.demo.sender import BatchSender
from perfops.telemetry.demo.traffic import TrafficModel
from perfops.telemetry.models import Agent, Department, Trace

TOKEN_NAME = "simulate (temporary)"  # noqa: S105  (a label, not a secret)
# Traces/s when there is no seeded history to continue.
DEFAULT_RATE = 5.0


class Command(BaseCommand):
    help = (
        "Send live traffic for the demo fleet to perfops' ingest API (POST /api/v1/traces, gzip JSON batches "
        "about every second), shaped like the seeded history, with an occasional incident; and serve three "
        f"simulated agents ({', '.join(fleet.SERVED_AGENTS)}) on 127.0.0.1 (POST /invoke, GET /health) whose "
        "requests are reported too. Runs until Ctrl-C / SIGTERM, or for --duration seconds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rate",
            type=float,
            default=None,
            help="Traces per second on weekly average (default: the seeded history's average over the last "
            f"7 days, so live data continues it; {DEFAULT_RATE:g} when there is no history).",
        )
        parser.add_argument("--duration", type=float, default=None, help="Stop after this many seconds.")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="perfops base URL.")
        parser.add_argument(
            "--token", default=None, help="An ingest token (default: the PERFOPS_INGEST_TOKEN environment variable)."
        )
        parser.add_argument(
            "--create-token-for",
            metavar="USERNAME",
            default=None,
            help="Issue a temporary ingest token for this user (created if missing, added to the demo "
            "departments), revoked on exit.",
        )
        parser.add_argument(
            "--agents-port", type=int, default=8101, help="First port of the simulated agents (default 8101)."
        )
        parser.add_argument("--no-agents", action="store_true", help="Do not start the simulated agents.")
        parser.add_argument("--seed", type=int, default=None, help="Random seed (default: a random one).")
        parser.add_argument("--status-every", type=float, default=10.0, help=argparse.SUPPRESS)
        parser.add_argument("--batch-interval", type=float, default=1.0, help=argparse.SUPPRESS)
        parser.add_argument("--agent-latency-scale", type=float, default=1.0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        rate = options["rate"] if options["rate"] is not None else self._history_rate()
        if not 0 < rate <= 20_000:
            raise CommandError("--rate must be above 0 and at most 20,000 traces/s.")
        if options["duration"] is not None and options["duration"] <= 0:
            raise CommandError("--duration must be positive.")
        seed = options["seed"] if options["seed"] is not None else secrets.randbits(32)
        token = options["token"] or os.environ.get("PERFOPS_INGEST_TOKEN", "")
        if not token and not options["create_token_for"]:
            raise CommandError(
                "No ingest token: pass --token, set PERFOPS_INGEST_TOKEN, or use --create-token-for USERNAME."
            )
        agents = self._fleet(rate)
        issued: ApiToken | None = None
        if options["create_token_for"]:
            # After the fleet exists: the token's user joins the demo departments it will write to.
            issued, token = self._issue_token(options["create_token_for"])
        try:
            self._run(options, agents, rate, seed, token)
        finally:
            if issued is not None:
                issued.revoke()

    def _history_rate(self) -> float:
        """The demo fleet's average traces/s over the last 7 days (what the seeded charts show)."""
        since = timezone.now() - timedelta(days=7)
        count = Trace.objects.filter(started_at__gte=since, agent__in=loader.demo_agents()).count()
        if count == 0:
            return DEFAULT_RATE
        return round(max(count / (7 * 86_400), 0.05), 2)

    def _issue_token(self, username: str) -> tuple[ApiToken, str]:
        """A temporary ingest token for `username` (an ingest-only account, created if missing)."""
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save()
        for department in Department.objects.filter(slug__in=fleet.DEPARTMENT_SLUGS):
            department.members.add(user)
        token, plaintext = ApiToken.issue(
            user, name=TOKEN_NAME, scopes=[Scope.INGEST], expires_at=timezone.now() + timedelta(days=1)
        )
        self.stdout.write(f"Issued a temporary ingest token for {username} ({token.prefix}…), revoked on exit.")
        return token, plaintext

    def _fleet(self, rate: float) -> list[fleet.AgentSpec]:
        """The demo agents in the database (the whole base fleet is created first if none is)."""
        known = set(loader.demo_agents().values_list("slug", flat=True))
        agents = [agent for agent in fleet.catalog() if agent.slug in known]
        if not agents:
            agents = fleet.catalog(fleet.base_size())
            peaks = TrafficModel(live_plan(agents, {}, timezone.now())).live_peak_rate_per_s(rate)
            loader.ensure_fleet(agents, loader.capacities_for(agents, peaks))
            self.stdout.write(f"Created the demo fleet ({len(agents)} agents, no history: run seed_demo for that).")
        return agents

    def _run(self, options: dict[str, Any], agents: list[fleet.AgentSpec], rate: float, seed: int, token: str) -> None:
        plan = live_plan(agents, loader.current_versions(), timezone.now())
        live = LiveTraffic(plan, rate, seed, announce=lambda message: self.stdout.write(message))
        stop = threading.Event()
        try:
            sender = BatchSender(options["url"], token, interval_s=options["batch_interval"], on_fatal=stop.set)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        sender.start()
        running: RunningAgents | None = None
        previous = self._install_signals(stop, sender)
        try:
            if not options["no_agents"]:
                running = self._start_agents(live, sender, options, seed)
            shape = live.shape_at(to_us(timezone.now()))
            self.stdout.write(
                f"Sending ~{rate:g} traces/s on weekly average (x{shape:.2f} at this time of day) for {len(agents)} "
                f"agents to {sender.endpoint}"
                + (f" for {options['duration']:g} s." if options["duration"] else "; Ctrl-C stops.")
            )
            self._loop(live, sender, running, stop, options)
        finally:
            if running is not None:
                running.stop()
            final = sender.stop(flush_timeout_s=10.0)
            self._restore_signals(previous)
            served = f", agent requests {running.served:,}" if running else ""
            self.stdout.write(f"simulate stopped: {final.line()}{served}")
        if sender.fatal:
            raise CommandError(sender.fatal)

    def _start_agents(
        self, live: LiveTraffic, sender: BatchSender, options: dict[str, Any], seed: int
    ) -> RunningAgents:
        slugs = [slug for slug in fleet.SERVED_AGENTS if any(a.slug == slug for a in live.model.plan.agents)]
        try:
            running = start_agents(
                live.model,
                slugs,
                options["agents_port"],
                sender.submit,
                seed=seed,
                latency_scale=options["agent_latency_scale"],
            )
        except OSError as exc:
            raise CommandError(
                f"Cannot serve the simulated agents from port {options['agents_port']}: {exc}. "
                "Pass another --agents-port, or --no-agents."
            ) from None
        for server in running.servers:
            url = f"{server.url}/invoke"
            agent = Agent.objects.get(slug=server.agent.slug)
            if agent.endpoint_url != url:
                # Saved (not update()d) so the audit log shows where the endpoint came from.
                agent.endpoint_url = url
                agent.save(update_fields=["endpoint_url", "updated_at"])
            self.stdout.write(f"Simulated agent {server.agent.slug}: POST {url}, GET {server.url}/health")
        return running

    def _loop(
        self,
        live: LiveTraffic,
        sender: BatchSender,
        running: RunningAgents | None,
        stop: threading.Event,
        options: dict[str, Any],
    ) -> None:
        started = time.monotonic()
        deadline = started + options["duration"] if options["duration"] else None
        next_status = started + options["status_every"]
        tick_s = min(1.0, options["duration"] or 1.0)
        t0 = to_us(timezone.now())
        while not stop.is_set() and sender.fatal is None:
            wait = tick_s if deadline is None else min(tick_s, max(deadline - time.monotonic(), 0.0))
            stop.wait(wait)
            t1 = to_us(timezone.now())
            sender.submit(live.tick(t0, t1))
            t0 = t1
            now = time.monotonic()
            if now >= next_status:
                served = f", agent requests {running.served:,}" if running else ""
                self.stdout.write(f"[{now - started:5.0f} s] {sender.stats.line()}{served}")
                next_status = now + options["status_every"]
            if deadline is not None and now >= deadline:
                break

    def _install_signals(self, stop: threading.Event, sender: BatchSender) -> dict[int, Any]:
        """SIGINT and SIGTERM end the run cleanly, a second one skips the final flush (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: FrameType | None) -> None:
            if stop.is_set():
                sender.give_up()
            stop.set()

        previous: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
