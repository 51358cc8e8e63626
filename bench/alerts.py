"""Alert evaluation on the metrics benchmark's data (10M traces, 200 agents, 30 days).

    python bench/run.py alerts [--reuse]

Beat evaluates every enabled rule once a minute, so one pass must finish well inside a minute (the
task's hard limit is 55 s). The benchmark sets what a large installation would have: a latency SLO
on every agent and an availability SLO on every department (each with its four burn-rate rules), a
standalone P95 rule and a performance budget (two rules) on every team. It then times full passes of
`slos.alerts.evaluate_all`, the first one cold, and the SLO list page and an SLO's confirmation
preview. Everything it creates is rolled back afterwards.
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
TARGET_S = 30.0
PASSES = 3


def run(args: argparse.Namespace) -> dict[str, Any]:
    database_url = getattr(args, "metrics_database_url", None) or metrics.DATABASE
    print(f"== alerts: rule evaluation passes on {database_url}", flush=True)
    env = metrics.prepare(database_url, reuse=True)
    import dashboard

    if not dashboard._rolled_up(database_url):
        metrics.catch_up(env, database_url)
    metrics._manage(env, "collectstatic", "--no-input", "--verbosity", "0")  # the SLO page links hashed assets
    return metrics.run_inner(str(Path(__file__).resolve()), env, "alerts")


def _inner() -> None:
    import time

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.test import Client
    from django.utils import timezone

    from perfops.telemetry.models import Agent, Department, Team
    from slos import alerts, confirm
    from slos.models import SLO, AlertRule, PerformanceBudget

    user_model = get_user_model()
    user = user_model.objects.filter(is_superuser=True).first() or user_model.objects.create_superuser(
        "bench", "bench@example.com", "bench-only-password"
    )
    out: dict[str, Any] = {}
    with transaction.atomic():
        for agent in Agent.objects.select_related("department"):
            SLO.objects.create(
                name=f"{agent.slug} latency",
                scope="agent",
                agent=agent,
                department=agent.department,
                kind="latency",
                threshold_ms=1500,
                target=0.95,
            )
        for department in Department.objects.filter(agents__isnull=False).distinct():
            SLO.objects.create(
                name=f"{department.slug} availability",
                scope="department",
                department=department,
                kind="availability",
                target=0.99,
                window_days=28,
            )
        for team in Team.objects.filter(agents__isnull=False).distinct():
            AlertRule.objects.create(
                name=f"{team.slug} p95",
                metric="latency",
                quantile=0.95,
                scope="team",
                team=team,
                threshold=3000,
                window_s=600,
                severity="ticket",
            )
            PerformanceBudget.objects.create(name=f"{team.slug} budget", scope="team", team=team, threshold_ms=1500)
        counts = {metric: AlertRule.objects.filter(metric=metric).count() for metric in AlertRule.Metric.values}
        rules = sum(counts.values())
        print(f"   {rules} rules: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v), flush=True)
        passes = []
        for number in range(PASSES):
            began = time.perf_counter()
            result = alerts.evaluate_all(timezone.now())
            passes.append(time.perf_counter() - began)
            print(
                f"   pass {number + 1}: {passes[-1]:.1f} s ({passes[-1] / rules * 1000:.1f} ms per rule), "
                f"{result['firing']} fired, {result['resolved']} resolved",
                flush=True,
            )
        slo = SLO.objects.filter(scope="agent").first()
        assert slo is not None
        began = time.perf_counter()
        confirm.describe_slo(slo, user, timezone.now())
        preview_ms = (time.perf_counter() - began) * 1000
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(user)
        began = time.perf_counter()
        response = client.get("/slos/")
        list_ms = (time.perf_counter() - began) * 1000
        assert response.status_code == 200
        slos = SLO.objects.count()
        print(f"   SLO confirmation preview {preview_ms:.0f} ms; SLO list page ({slos} SLOs) {list_ms:.0f} ms")
        out = {
            "rules": rules,
            "by_metric": counts,
            "passes_s": [round(p, 2) for p in passes],
            "median_pass_s": round(statistics.median(passes), 2),
            "target_s": TARGET_S,
            "slo_preview_ms": round(preview_ms, 1),
            "slo_list_ms": round(list_ms, 1),
        }
        transaction.set_rollback(True)
    verdict = "within" if out["median_pass_s"] <= TARGET_S else "OVER"
    print(f"   median pass {out['median_pass_s']} s: {verdict} the {TARGET_S:.0f} s target")
    print(json.dumps(out))


if __name__ == "__main__" and "--inner" in sys.argv:
    sys.path.insert(0, str(ROOT))
    _inner()
