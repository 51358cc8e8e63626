"""A small fleet with traffic, ingested through the real store, and the exact truth to compare with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.utils import timezone

from perfops.metrics.rollup import catch_up
from perfops.telemetry.ingest.records import Window, validate_record
from perfops.telemetry.ingest.store import store_records
from perfops.telemetry.models import Agent, Trace
from tests import factories

ENVIRONMENTS = ("production", "staging", "development")
ERROR_TYPES = ("validation", "llm_error", "dependency_error", "rate_limited", "other")
# Latencies that sit exactly on the tier edges, and a zero, next to lognormal ones.
EDGES = (0.0, 99.999, 100.0, 500.0, 1999.99, 2000.0)


def make_records(rng: np.random.Generator, n: int, now: datetime, agents: list[str]) -> list[dict]:
    """n varied records: most in the last hours (fine rollups), some days back (hourly ones only)."""
    recent = rng.random(n) < 0.7
    age_s = np.where(recent, rng.uniform(5, 11 * 3600, n), rng.uniform(11 * 3600, 9 * 86400, n))
    latency = np.round(rng.lognormal(6.2, 1.1, n), 2)
    on_edge = rng.random(n) < 0.05
    latency[on_edge] = rng.choice(EDGES, on_edge.sum())
    status = rng.choice(["ok", "error", "timeout"], n, p=[0.88, 0.08, 0.04])
    records = []
    for i in range(n):
        agent = agents[i % len(agents)]
        record = factories.record(
            agent=agent,
            environment=ENVIRONMENTS[int(rng.choice(3, p=[0.7, 0.2, 0.1]))],
            version=f"1.{int(rng.integers(0, 3))}.0",
            intent=("customer_support", "code_generation")[int(rng.integers(0, 2))],
            started_at=factories.iso(now - timedelta(seconds=float(age_s[i]))),
            latency_ms=float(latency[i]),
            status=str(status[i]),
            cache_hit=bool(rng.random() < 0.3),
        )
        if status[i] == "error":
            record["error_type"] = str(rng.choice(ERROR_TYPES))
        share = float(latency[i]) / 4
        record["phases"] = {"auth": round(share * 0.1, 3), "llm": round(share * 2, 3), "postprocess": round(share, 3)}
        record["dependencies"] = [
            {"name": "gpt-4o", "kind": "llm", "start_ms": 1.0, "duration_ms": round(share * 1.5, 3), "status": "ok"},
            {
                "name": "postgres",
                "kind": "db",
                "start_ms": 0.5,
                "duration_ms": round(share * 0.2, 3),
                "status": "error" if rng.random() < 0.05 else "ok",
            },
        ]
        if rng.random() < 0.2:
            record.pop("input_tokens")
            record.pop("output_tokens")
            record.pop("model")
        records.append(record)
    return records


def ingest(records: list[dict], user) -> int:
    """Validate and store records as the JSON API would (the real store: COPY on PostgreSQL)."""
    window = Window.around(timezone.now(), 30, 300)
    valid = []
    for index, raw in enumerate(records):
        record, errors = validate_record(raw, index, window)
        assert record is not None, errors
        valid.append(record)
    accepted = 0
    for start in range(0, len(valid), 1000):
        accepted += store_records(valid[start : start + 1000], user).accepted
    return accepted


@dataclass
class Truth:
    """The stored traces as arrays, to compute exact answers with numpy."""

    started_s: np.ndarray
    agent: np.ndarray
    department: np.ndarray
    team: np.ndarray
    environment: np.ndarray
    version: np.ndarray
    intent: np.ndarray
    latency: np.ndarray
    status: np.ndarray
    error_type: np.ndarray

    @classmethod
    def load(cls) -> Truth:
        rows = list(
            Trace.objects.order_by().values_list(
                "started_at",
                "agent_id",
                "agent__department_id",
                "agent__team_id",
                "environment",
                "version",
                "intent",
                "latency_ms",
                "status",
                "error_type",
            )
        )
        columns = list(zip(*rows, strict=True))
        return cls(
            started_s=np.array([moment.timestamp() for moment in columns[0]]),
            agent=np.array(columns[1]),
            department=np.array(columns[2]),
            team=np.array([t or 0 for t in columns[3]]),
            environment=np.array(columns[4], dtype=object),
            version=np.array(columns[5], dtype=object),
            intent=np.array(columns[6], dtype=object),
            latency=np.array(columns[7], dtype=np.float64),
            status=np.array(columns[8], dtype=object),
            error_type=np.array(columns[9], dtype=object),
        )


@dataclass
class Traffic:
    now: datetime
    agents: dict[str, Agent]
    count: int


@pytest.fixture
def traffic(db, payments, research, superuser) -> Traffic:
    """Four agents in two departments (three teams), 2,500 traces over nine days, ingested for real."""
    checkout, billing = factories.team(payments, "checkout"), factories.team(payments, "billing")
    lab = factories.team(research, "lab")
    agents = {
        "pay-bot": factories.agent("pay-bot", payments, team=checkout, intent_category="customer_support"),
        "refund-bot": factories.agent("refund-bot", payments, team=billing, intent_category="customer_support"),
        "ledger-bot": factories.agent("ledger-bot", payments, team=None, intent_category="code_generation"),
        "lab-bot": factories.agent("lab-bot", research, team=lab, intent_category="code_generation"),
    }
    now = datetime.now(UTC).replace(microsecond=0)
    rng = np.random.default_rng(20261130)
    count = ingest(make_records(rng, 2500, now, list(agents)), superuser)
    return Traffic(now=now, agents=agents, count=count)


@pytest.fixture
def rolled_up(traffic) -> Traffic:
    """The traffic, rolled up by a catch-up over the whole raw window."""
    catch_up(traffic.now - timedelta(days=30), now=traffic.now)
    return traffic
