"""The analytics on the metrics benchmark's data (10M demo traces, 200 agents, 30 days).

    python bench/run.py analytics [--reuse]

Times what beat runs (the version checks every 10 minutes; the change-point flags, the
recommendations and the baselines hourly; the error anomalies every 5 minutes), the capacity outlook
and the fleet panels that show analytics (cold), and reports the capacity forecast's backtest error
(MAPE, fitted without the last 7 days and scored on them) on this demo data: the fleet and its 30
busiest agents. "Now" is the newest trace, so an old seeding is still measured as if live.
Everything written is rolled back.
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
# Beat runs the hourly passes with a 20-minute limit and the version checks with a 10-minute one.
TARGET_HOURLY_S = 600.0
TARGET_MAPE = 0.15


def run(args: argparse.Namespace) -> dict[str, Any]:
    database_url = getattr(args, "metrics_database_url", None) or metrics.DATABASE
    print(f"== analytics: detectors, forecasts and recommendations on {database_url}", flush=True)
    env = metrics.prepare(database_url, reuse=True)
    import dashboard

    if not dashboard._rolled_up(database_url):
        metrics.catch_up(env, database_url)
    metrics._manage(env, "collectstatic", "--no-input", "--verbosity", "0")  # pages link hashed assets
    return metrics.run_inner(str(Path(__file__).resolve()), env, "analytics")


def _timed(label: str, call: Any) -> tuple[float, Any]:
    import time

    began = time.perf_counter()
    result = call()
    elapsed = time.perf_counter() - began
    print(f"   {label}: {elapsed:.1f} s {result if isinstance(result, dict) else ''}", flush=True)
    return elapsed, result


def _superuser() -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-only-password")


def _inner() -> None:
    from datetime import timedelta

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.db import transaction
    from django.db.models import Count, Max
    from django.test import Client

    from perfops.analytics import advisor, capacity, causes, changes, detect, errors, forecast
    from perfops.metrics.filters import MetricFilters
    from perfops.telemetry.models import Agent, Trace

    newest = Trace.objects.aggregate(at=Max("started_at"))["at"]
    assert newest is not None, "the benchmark database has no traces"
    now = newest + timedelta(minutes=1)
    system = detect.SYSTEM
    out: dict[str, Any] = {"now": now.isoformat()}
    with transaction.atomic():
        cache.clear()
        out["version_checks_s"], out["version_checks"] = _timed(
            "version checks", lambda: detect.check_new_versions(now)
        )
        out["change_points_s"], out["change_points"] = _timed("change-point flags", lambda: changes.flag_recent(now))
        out["recommendations_s"], out["recommendations"] = _timed("recommendations", lambda: advisor.recommend_all(now))
        out["baselines_s"], out["baselines"] = _timed("baselines", lambda: causes.refresh_baselines(now))
        out["error_anomaly_pass_s"], out["error_anomaly_pass"] = _timed(
            "error anomalies, all environments", lambda: errors.detect_all(now)
        )
        fleet = MetricFilters(environment="production")
        out["capacity_fleet_cold_s"], found = _timed(
            "fleet capacity outlook (cold)", lambda: capacity.outlook(fleet, system, now)
        )
        out["error_anomalies_read_s"], anomalies = _timed(
            "fleet error anomalies, read", lambda: errors.anomalies(fleet, system, now)
        )
        out["error_anomalies_found"] = len(anomalies)
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(get_user_model().objects.filter(is_superuser=True).first() or _superuser())
        for name in ("slow", "error_patterns", "capacity", "phases"):
            cache.clear()
            out[f"panel_{name}_ms"], response = _timed(
                f"fleet panel {name} (24h, cold)",
                lambda name=name: client.get(
                    f"/dashboard/performance/panels/{name}?environment=production", HTTP_HX_REQUEST="true"
                ),
            )
            assert response.status_code == 200, response.status_code
            out[f"panel_{name}_ms"] = round(out[f"panel_{name}_ms"] * 1000, 1)
        out["fleet_forecast"] = None if found is None else found.forecast.explanation
        transaction.set_rollback(True)

    def mape(filters: MetricFilters) -> float | None:
        series = capacity.hourly(filters, system, now)
        return None if series is None else forecast.backtest(*series)

    out["mape_fleet"] = mape(fleet)
    busiest = (
        Trace.objects.filter(environment="production", started_at__gte=now - timedelta(days=1))
        .values("agent_id")
        .annotate(n=Count("trace_id"))
        .order_by("-n")[:30]
    )
    slugs = dict(Agent.objects.filter(pk__in=[row["agent_id"] for row in busiest]).values_list("pk", "slug"))
    per_agent = [
        value
        for row in busiest
        if (value := mape(MetricFilters(environment="production", agent=slugs[row["agent_id"]]))) is not None
    ]
    out["mape_agents"] = {
        "agents": len(per_agent),
        "median": round(statistics.median(per_agent), 4) if per_agent else None,
        "max": round(max(per_agent), 4) if per_agent else None,
    }
    print(
        f"   capacity forecast backtest MAPE: fleet {out['mape_fleet']:.1%}, 30 busiest agents median "
        f"{out['mape_agents']['median']:.1%} (max {out['mape_agents']['max']:.1%}); target {TARGET_MAPE:.0%}",
        flush=True,
    )
    slowest = max(out["change_points_s"], out["recommendations_s"])
    verdict = "within" if slowest <= TARGET_HOURLY_S else "OVER"
    print(f"   slowest hourly pass {slowest:.0f} s: {verdict} the {TARGET_HOURLY_S:.0f} s budget", flush=True)
    print(json.dumps(out, default=str))


if __name__ == "__main__" and "--inner" in sys.argv:
    sys.path.insert(0, str(ROOT))
    _inner()
