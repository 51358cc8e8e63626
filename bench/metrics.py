"""The metrics engine on PostgreSQL: rollup catch-up, dashboard queries against percentile_cont, accuracy,
and the rollup keeping up with ingest.

    python bench/run.py metrics [--reuse] [--seconds 20]

Data: `seed_demo --traces 10000000 --agents 200 --days 29.9` in a scratch database (kept between runs
with --reuse), vacuumed and analysed as autovacuum would leave it. Then:
- catch-up: `manage.py rollup --since 31d` over empty rollup tables, traces/s and peak memory;
- queries: each filter set over 30 days through the query layer with no result cache (first run and
  the median of five), beside percentile_cont over the raw rows for the same window, and every
  percentile checked against percentile_disc (the exact nearest-rank value);
- steady state: the ingest benchmark's load for --seconds with a Celery worker and beat rolling up,
  then how long the rollup needs to drain, and whether the rollups count exactly the stored traces.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from ingest import bench_env

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TRACES = 10_000_000
AGENTS = 200
DAYS = 29.9
DATABASE = "postgres://postgres@127.0.0.1:5432/perfops_bench_metrics"
QUERY_RUNS = 5


def _env(database_url: str, **extra: str) -> dict[str, str]:
    return bench_env(database_url, PERFOPS_VAR_DIR=str(ROOT / "var" / "bench"), **extra)


def _manage(env: dict[str, str], *args: str, echo: bool = False) -> str:
    process = subprocess.Popen(
        [PY, "manage.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if echo:
            print(f"     {line.rstrip()}", flush=True)
    if process.wait():
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{''.join(lines)[-4000:]}")
    return "".join(lines)


def _seeded(database_url: str) -> bool:
    try:
        with psycopg.connect(database_url) as conn:
            agents = conn.execute("SELECT count(*) FROM telemetry_agent").fetchone()
            traces = conn.execute("SELECT count(*) FROM telemetry_trace").fetchone()
    except psycopg.Error:
        return False
    return bool(agents and traces and agents[0] >= AGENTS and traces[0] >= TRACES)


def prepare(database_url: str, reuse: bool) -> dict[str, str]:
    env = _env(database_url)
    (ROOT / "var" / "bench").mkdir(parents=True, exist_ok=True)
    if reuse and _seeded(database_url):
        print("   reusing the seeded database", flush=True)
        _manage(env, "migrate", "--no-input", "--verbosity", "0")
        return env
    name = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    _manage(env, "migrate", "--no-input", "--verbosity", "0")
    print(f"   seeding {TRACES:,} traces, {AGENTS} agents, {DAYS} days ...", flush=True)
    began = time.perf_counter()
    # --days a little under 30 keeps every trace inside the 30-day raw retention while the bench runs.
    _manage(env, "seed_demo", "--traces", str(TRACES), "--agents", str(AGENTS), "--days", str(DAYS))
    print(f"   seeded in {time.perf_counter() - began:.0f} s", flush=True)
    return env


def catch_up(env: dict[str, str], database_url: str) -> dict[str, Any]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE metrics_rollup, metrics_dirtybucket")
        conn.execute("UPDATE metrics_rollupstate SET coarse_through = NULL, lease_owner = '', lease_until = NULL")
        # What autovacuum would have done by now (it is off on some machines): hint bits, visibility, statistics.
        conn.execute("VACUUM ANALYZE telemetry_trace")
    jobs = min(4, os.cpu_count() or 1)
    began = time.perf_counter()
    # manage.py rollup, then the peak memory of it and of its worker processes (all its children).
    runner = (
        "import resource, runpy, sys; "
        f"sys.argv = ['manage.py', 'rollup', '--since', '31d', '--jobs', '{jobs}']; "
        "runpy.run_path('manage.py', run_name='__main__'); "
        "usage = resource.getrusage; "
        "print('PEAK_RSS_KB', max(usage(resource.RUSAGE_SELF).ru_maxrss, usage(resource.RUSAGE_CHILDREN).ru_maxrss))"
    )
    done = subprocess.run([PY, "-c", runner], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"manage.py rollup failed:\n{done.stdout}\n{done.stderr}")
    output = done.stdout
    wall = time.perf_counter() - began
    peak = re.search(r"PEAK_RSS_KB (\d+)", output)
    peak_mb = int(peak.group(1)) / 1024 if peak else float("nan")
    match = re.search(r"Rolled up ([\d,]+) traces into ([\d,]+) rows in ([\d.]+) s \(([\d,]+) traces/s\)", output)
    if not match:
        raise SystemExit(f"unexpected rollup output:\n{output}")
    traces, rows, seconds, rate = (float(g.replace(",", "")) for g in match.groups())
    print(
        f"   catch-up: {traces:,.0f} traces -> {rows:,.0f} rollup rows in {seconds:.1f} s = {rate:,.0f} traces/s "
        f"({jobs} processes; command wall {wall:.1f} s, peak RSS of a process {peak_mb:,.0f} MB)",
        flush=True,
    )
    return {
        "traces": traces,
        "rows": rows,
        "seconds": seconds,
        "traces_per_s": rate,
        "jobs": jobs,
        "peak_rss_mb": peak_mb,
    }


def run_inner(script: str, env: dict[str, str], what: str) -> dict[str, Any]:
    """Run `script --inner` inside Django, echo its lines and return the JSON of its last line."""
    output = subprocess.run([PY, script, "--inner"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if output.returncode:
        raise SystemExit(f"{what} benchmark failed:\n{output.stdout[-3000:]}\n{output.stderr[-3000:]}")
    for line in output.stdout.splitlines():
        if not line.startswith("{"):
            print(line, flush=True)
    return json.loads(output.stdout.splitlines()[-1])


def queries(env: dict[str, str]) -> dict[str, Any]:
    return run_inner(str(Path(__file__).resolve()), env, "query")


# --- inside Django: the query measurements ------------------------------------------------------------


def _inner() -> None:
    import django

    django.setup()
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Count
    from django.utils import timezone

    from perfops.metrics.filters import TIERS, parse_filters
    from perfops.metrics.query import MetricsQuery
    from perfops.metrics.rollup import catch_up_window
    from perfops.metrics.sketch import TIER_EDGES_MS
    from perfops.telemetry.models import Agent, Department, Deployment

    user = get_user_model().objects.filter(is_superuser=True).first()
    if user is None:
        user = get_user_model().objects.create_superuser("bench-metrics", "b@example.com", None)
    biggest = (
        Department.objects.filter(agents__isnull=False)
        .annotate(n=Count("agents"))
        .order_by("-n")
        .values_list("slug", flat=True)
        .first()
    )
    common_version = (
        Deployment.objects.filter(environment="production")
        .values("version")
        .annotate(n=Count("id"))
        .order_by("-n")
        .values_list("version", flat=True)
        .first()
    )
    agent = Agent.objects.order_by("slug").values_list("slug", flat=True)[len(Agent.objects.all()) // 3]
    cases: list[tuple[str, dict[str, str]]] = [
        ("fleet, default filters", {}),
        (f"department={biggest}", {"department": str(biggest)}),
        (f"version={common_version}", {"version": str(common_version)}),
        ("version=latest", {"version": "latest"}),
        ("intent=customer_support", {"intent": "customer_support"}),
        ("tier=slow", {"tier": "slow"}),
        ("status=errors", {"status": "errors"}),
        (f"agent={agent}", {"agent": agent}),
    ]
    # The catch-up skipped the hour that the raw retention cuts through: compare from where it started.
    now = timezone.now()
    rolled_from = catch_up_window(now - timedelta(days=31), None, now)[0]
    results: dict[str, Any] = {}
    for label, extra in cases:
        params: dict[str, str] = {"range": "30d", **extra}
        timings = []
        for _ in range(QUERY_RUNS):
            began = time.perf_counter()
            query = MetricsQuery(parse_filters(params), user)
            summary = query.summary()
            series = query.series()
            timings.append(1000 * (time.perf_counter() - began))
        plan = query.plan()
        where, args = _raw_where(params, plan, query, TIERS, TIER_EDGES_MS, rolled_from)
        baseline, exact_summary, exact_points = _raw(connection, where, args, plan)
        errors = _errors(summary, series, exact_summary, exact_points)
        results[label] = {
            "first_ms": timings[0],
            "median_ms": statistics.median(timings),
            "percentile_cont_ms": baseline,
            "speedup": baseline / statistics.median(timings),
            "count": summary["count"],
            "points": len(series["series"][0]["points"]),
            "max_relative_error": errors,
            "bucket_s": plan.width_s,
        }
        print(
            f"   {label:<28} {statistics.median(timings):7.1f} ms (first {timings[0]:7.1f})  percentile_cont "
            f"{baseline:8.1f} ms  x{baseline / statistics.median(timings):6.1f}  {summary['count']:>10,} traces, "
            f"{len(series['series'][0]['points'])} points, worst percentile error {100 * errors:.3f}%",
            flush=True,
        )
    print(json.dumps(results))


def _raw_where(
    params: dict[str, str], plan: Any, query: Any, tiers: dict[str, int], edges: tuple[float, ...], rolled_from: int
) -> tuple[str, list[Any]]:
    """The same filter set as SQL over the raw traces (independent of the rollups)."""
    from datetime import UTC, datetime

    clauses = ["t.started_at >= %s", "t.started_at < %s", "t.environment = 'production'"]
    args: list[Any] = [
        datetime.fromtimestamp(max(plan.start_s, rolled_from), tz=UTC),
        datetime.fromtimestamp(min(plan.end_s, plan.now_s), tz=UTC),
    ]
    if "department" in params:
        clauses.append(
            "t.agent_id IN (SELECT a.id FROM telemetry_agent a JOIN telemetry_department d "
            "ON d.id = a.department_id WHERE d.slug = %s)"
        )
        args.append(params["department"])
    if "agent" in params:
        clauses.append("t.agent_id = (SELECT id FROM telemetry_agent WHERE slug = %s)")
        args.append(params["agent"])
    if "intent" in params:
        clauses.append("t.intent = %s")
        args.append(params["intent"])
    if "status" in params:
        clauses.append("t.status = %s")
        args.append({"success": "ok", "errors": "error", "timeouts": "timeout"}[params["status"]])
    if "tier" in params:
        bounds = (0.0, *edges, float("inf"))
        tier = tiers[params["tier"]]
        clauses.append("t.latency_ms >= %s AND t.latency_ms < %s")
        args.extend([bounds[tier], bounds[tier + 1]])
    version = params.get("version")
    if version == "latest":
        # The agent and version pairs the query layer resolved (tests check that resolution on its own).
        latest = [(a, v) for a, e, v, _ in query.scope.versions or () if e == 0]
        clauses.append("(t.agent_id, t.version) IN (SELECT * FROM unnest(%s::bigint[], %s::text[]))")
        args.extend([[a for a, _ in latest], [v for _, v in latest]])
    elif version:
        clauses.append("t.version = %s")
        args.append(version)
    return " AND ".join(clauses), args


def _raw(connection: Any, where: str, args: list[Any], plan: Any) -> tuple[float, list[float], dict[int, list[float]]]:
    """percentile_cont's time (summary + series) and the exact nearest-rank values (percentile_disc)."""
    base = f"FROM telemetry_trace t WHERE {where}"
    bucket = f"floor((extract(epoch FROM t.started_at) - {plan.start_s}) / {plan.width_s})::int"
    with connection.cursor() as cursor:
        began = time.perf_counter()
        cursor.execute(
            f"SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms) {base}", args
        )
        cursor.fetchall()
        cursor.execute(
            f"SELECT {bucket}, percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms) "
            f"{base} GROUP BY 1",
            args,
        )
        cursor.fetchall()
        baseline = 1000 * (time.perf_counter() - began)
        cursor.execute(
            f"SELECT percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms) {base}", args
        )
        exact_summary = cursor.fetchone()[0] or []
        cursor.execute(
            f"SELECT {bucket}, percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms) "
            f"{base} GROUP BY 1",
            args,
        )
        exact_points = {row[0]: row[1] for row in cursor.fetchall()}
    return baseline, exact_summary, exact_points


def _errors(
    summary: dict[str, Any], series: dict[str, Any], exact_summary: list[float], exact_points: dict[int, list[float]]
) -> float:
    keys = ("p50_ms", "p95_ms", "p99_ms")
    worst = 0.0
    pairs = list(zip((summary[k] for k in keys), exact_summary, strict=False))
    for index, point in enumerate(series["series"][0]["points"]):
        if index in exact_points:
            pairs.extend(zip((point[k] for k in keys), exact_points[index], strict=True))
    for estimate, exact in pairs:
        if exact:
            worst = max(worst, abs(estimate - exact) / exact)
    return worst


# --- steady state: ingest with the rollup running ----------------------------------------------------


def steady(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ingest

    database_url = args.database_url.rsplit("/", 1)[0] + "/perfops_bench"
    env, token = ingest.prepare_database(database_url)
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    worker_env = {**env, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING", "PERFOPS_VAR_DIR": str(ROOT / "var" / "bench")}
    subprocess.run(["redis-cli", "-u", redis_url, "FLUSHDB"], check=False, capture_output=True)
    port = ingest._free_port()
    server = ingest._server(env, port, args.workers)
    worker = subprocess.Popen(
        [PY, "-m", "celery", "-A", "perfops", "worker", "--beat", "--concurrency", "1", "--loglevel", "WARNING"],
        cwd=ROOT,
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ingest.post_all(port, "/api/v1/traces", token, ingest.json_bodies(4), "application/json")
        count = int(args.seconds * 55)
        bodies = _recent_bodies(count)
        outcome = ingest.post_all(port, "/api/v1/traces", token, bodies, "application/json")
        rate = outcome["accepted"] / outcome["wall_s"]
        ended = time.perf_counter()
        drained = None
        with psycopg.connect(database_url, autocommit=True) as conn:

            def scalar(sql: str) -> int:
                row = conn.execute(sql).fetchone()
                return int(row[0]) if row else 0

            while time.perf_counter() - ended < 600:
                if not scalar("SELECT count(*) FROM metrics_dirtybucket"):
                    drained = time.perf_counter() - ended
                    break
                time.sleep(1)
            stored = scalar("SELECT count(*) FROM telemetry_trace")
            rolled = scalar("SELECT coalesce(sum(count), 0) FROM metrics_rollup WHERE view = 5 AND grain_s = 30")
    finally:
        worker.terminate()
        server.terminate()
        worker.wait(timeout=60)
        server.wait(timeout=30)
    print(
        f"   steady state: ingest {rate:,.0f} traces/s with the rollup running (p95 {outcome['p95_ms']:.0f} ms, "
        f"statuses {outcome['statuses']}); rollup drained "
        f"{f'in {drained:.0f} s' if drained is not None else 'NOT within 600 s'} after the load; "
        f"rolled up {rolled:,} of {stored:,} stored traces",
        flush=True,
    )
    return {
        "ingest_traces_per_s": rate,
        "ingest_p95_ms": outcome["p95_ms"],
        "drain_s": drained,
        "stored": stored,
        "rolled_up": rolled,
    }


def _recent_bodies(count: int) -> list[bytes]:
    """Like the ingest benchmark's bodies, but each trace started about when its batch is sent (live traffic)."""
    from datetime import UTC, datetime, timedelta

    import orjson

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ingest

    start = datetime.now(UTC) + timedelta(seconds=5)
    bodies = []
    for b in range(count):
        sent_at = start + timedelta(seconds=b / 55)
        records = [ingest._record(b * ingest.BATCH + i, sent_at) for i in range(ingest.BATCH)]
        for i, record in enumerate(records):
            record["started_at"] = (sent_at - timedelta(seconds=(i % 20))).isoformat()
        bodies.append(orjson.dumps({"traces": records}))
    return bodies


def run(args: argparse.Namespace) -> dict[str, Any]:
    database_url = getattr(args, "metrics_database_url", None) or DATABASE
    print(f"== metrics: {TRACES:,} traces, {AGENTS} agents, 30 days, PostgreSQL {database_url}", flush=True)
    env = prepare(database_url, getattr(args, "reuse", False))
    results = {"catch_up": catch_up(env, database_url), "queries": queries(env)}
    results["steady_state"] = steady(args)
    return results


if __name__ == "__main__" and "--inner" in sys.argv:
    sys.path.insert(0, str(ROOT))
    _inner()
