"""The dashboard's page and panel server times on the metrics benchmark's data (10M traces, 200 agents, 30 days).

    python bench/run.py dashboard [--reuse]

Uses the metrics benchmark's database (seeding and rolling it up first if it is not there). For
each filter set, every panel of the page is requested through Django's test client, cold: the
per-chart cache is cleared before each request, so each figure is computed from the rollups (or,
for the slow-request table, the raw traces). Reported: the median of three cold requests per panel,
the page frame, and every panel over the 150 ms target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import metrics

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TARGET_MS = 150.0
RUNS = 3
# (label, query string, page): the default fleet, long ranges, each kind of filter, an agent page.
FILTER_SETS = (
    ("fleet, defaults (24h, production)", "", "fleet"),
    ("fleet, 30d", "range=30d", "fleet"),
    ("fleet, 7d, all environments", "range=7d&environment=all", "fleet"),
    ("department, 30d", "range=30d&department=customer-experience", "fleet"),
    ("version=latest, 7d", "range=7d&version=latest", "fleet"),
    ("errors only, 24h", "status=errors", "fleet"),
    ("tier=slow, 30d", "range=30d&tier=slow", "fleet"),
    ("intent, 30d", "range=30d&intent=customer_support", "fleet"),
    ("agent page, 30d", "range=30d", "agent"),
)


def run(args: argparse.Namespace) -> dict[str, Any]:
    database_url = getattr(args, "metrics_database_url", None) or metrics.DATABASE
    print(f"== dashboard: panel server times, cold, on {database_url}", flush=True)
    env = metrics.prepare(database_url, reuse=True)
    if not _rolled_up(database_url):
        metrics.catch_up(env, database_url)
    metrics._manage(env, "collectstatic", "--no-input", "--verbosity", "0")  # the page links hashed assets
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE")  # as autovacuum leaves a database (it is off on some machines)
    return metrics.run_inner(str(Path(__file__).resolve()), env, "dashboard")


def _rolled_up(database_url: str) -> bool:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM metrics_rollup WHERE view = 6").fetchone()
    return bool(row and row[0])


def _inner() -> None:
    import time

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.db.models import Sum
    from django.test import Client

    from perfops.dashboard.panels import AGENT_LAYOUT, FLEET_LAYOUT
    from perfops.metrics.levels import View
    from perfops.metrics.models import Rollup
    from perfops.telemetry.models import Agent

    user_model = get_user_model()
    user = user_model.objects.filter(is_superuser=True).first() or user_model.objects.create_superuser(
        "bench", "bench@example.com", "bench-only-password"
    )
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    # The busiest agent: the heaviest agent page.
    busiest = (
        Rollup.objects.filter(view=View.AGENT_TOTAL, grain_s=86400)
        .values("agent_id")
        .annotate(n=Sum("count"))
        .order_by("-n")
        .first()
    )
    assert busiest is not None, "no rollups: run the metrics benchmark first"
    agent = Agent.objects.get(pk=busiest["agent_id"]).slug
    results: dict[str, Any] = {}
    over: list[str] = []
    for label, query, page in FILTER_SETS:
        layout = AGENT_LAYOUT if page == "agent" else FLEET_LAYOUT
        params = query + (f"&agent={agent}" if page == "agent" else "")
        page_url = (
            f"/dashboard/performance/agents/{agent}?{query}" if page == "agent" else f"/dashboard/performance/?{query}"
        )
        timings: dict[str, float] = {}
        began = time.perf_counter()
        response = client.get(page_url)
        assert response.status_code == 200, (page_url, response.status_code)
        timings["(page)"] = (time.perf_counter() - began) * 1000
        for name in layout:
            runs = []
            for _ in range(RUNS):
                cache.clear()
                began = time.perf_counter()
                response = client.get(f"/dashboard/performance/panels/{name}?{params}", headers={"HX-Request": "true"})
                runs.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200, (name, params, response.status_code)
            timings[name] = statistics.median(runs)
        slowest = max((v, k) for k, v in timings.items() if k != "(page)")
        line = ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
        print(f"   {label:36} slowest {slowest[1]} {slowest[0]:.0f} ms | {line}", flush=True)
        over += [f"{label}: {k} {v:.0f} ms" for k, v in timings.items() if v > TARGET_MS]
        results[label] = {k: round(v, 1) for k, v in timings.items()}
    print(f"   panels over {TARGET_MS:.0f} ms: {len(over)}" + ("".join(f"\n     {o}" for o in over) if over else ""))
    print(json.dumps({"panels_ms": results, "over_target": over}))


if __name__ == "__main__" and "--inner" in sys.argv:
    sys.path.insert(0, str(ROOT))
    _inner()
