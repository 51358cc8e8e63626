"""Ingest throughput through the HTTP API on PostgreSQL: JSON batches of 1,000 and OTLP protobuf.

A fresh scratch database, gunicorn with N worker processes on loopback, bodies built before the
clock starts, several client threads posting them; traces/s = accepted traces / wall time, and
the stored row count is checked against what the server said it accepted.
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BATCH = 1000
AGENTS = 200
CLIENT_THREADS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a benchmarked process: production settings on `database_url`, no Redis."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", *extra)}
    env.update(
        DATABASE_URL=database_url,
        PERFOPS_HTTPS="0",
        DEBUG="0",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="perfops.settings",
        **extra,
    )
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare_database(database_url: str) -> tuple[dict[str, str], str]:
    """Drop and recreate the scratch database, migrate, register the agents, issue an ingest token."""
    name = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    env = bench_env(database_url)
    _manage(env, "migrate", "--no-input", "--verbosity", "0")
    script = (
        "from django.contrib.auth.models import User;"
        "from perfops.telemetry.models import Agent, Department;"
        "from perfops.access.models import ApiToken;"
        "d=Department.objects.create(slug='bench', name='Bench');"
        "Agent.objects.bulk_create([Agent(slug=f'bench-agent-{i:03d}', name=f'Bench {i}', department=d)"
        f" for i in range({AGENTS})]);"
        "u=User.objects.create_superuser('bench', 'b@example.com', None);"
        "print(ApiToken.issue(u, 'bench', ['ingest'])[1])"
    )
    token = _manage(env, "shell", "-c", script).strip().splitlines()[-1]
    return env, token


def _record(i: int, now: datetime) -> dict[str, Any]:
    latency = 200.0 + (i * 37) % 1800
    return {
        "trace_id": secrets.token_hex(16),
        "agent": f"bench-agent-{i % AGENTS:03d}",
        "environment": "production",
        "version": f"1.{(i % AGENTS) % 5}.0",
        "intent": "customer_support",
        "started_at": (now - timedelta(seconds=(i % 3000))).isoformat(),
        "latency_ms": latency,
        "status": "ok" if i % 50 else "error",
        "error_type": None if i % 50 else "llm_error",
        "phases": {"auth": 5.0, "preprocess": 20.0, "llm": latency * 0.8, "postprocess": 15.0},
        "dependencies": [
            {"name": "gpt-4o", "kind": "llm", "start_ms": 25.0, "duration_ms": latency * 0.8, "status": "ok"},
            {"name": "postgres", "kind": "db", "start_ms": 5.0, "duration_ms": 4.0, "status": "ok"},
            {"name": "search-api", "kind": "http", "start_ms": 10.0, "duration_ms": 9.0, "status": "ok"},
        ],
        "model": "gpt-4o",
        "input_tokens": 900 + i % 500,
        "output_tokens": 200 + i % 300,
        "cache_hit": i % 7 == 0,
        "attributes": {"customer_tier": "gold", "region": "eu-west-1"},
    }


def json_bodies(count: int) -> list[bytes]:
    now = datetime.now(UTC)
    return [orjson.dumps({"traces": [_record(b * BATCH + i, now) for i in range(BATCH)]}) for b in range(count)]


def otlp_bodies(count: int) -> list[bytes]:
    """ExportTraceServiceRequest bodies of 1,000 traces each: an invoke_agent root and three children."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    def kv(key: str, value: Any) -> KeyValue:
        if isinstance(value, bool):
            return KeyValue(key=key, value=AnyValue(bool_value=value))
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=str(value)))

    now_ns = time.time_ns()
    bodies = []
    for b in range(count):
        request = ExportTraceServiceRequest()
        per_agent: dict[int, Any] = {}
        for i in range(BATCH):
            n = b * BATCH + i
            agent = n % AGENTS
            if agent not in per_agent:
                resource_spans = request.resource_spans.add()
                resource_spans.resource.attributes.extend(
                    [
                        kv("service.name", "bench"),
                        kv("deployment.environment.name", "production"),
                        kv("service.version", f"1.{agent % 5}.0"),
                    ]
                )
                per_agent[agent] = resource_spans.scope_spans.add()
            spans = per_agent[agent].spans
            trace_id = secrets.token_bytes(16)
            root_id = secrets.token_bytes(8)
            start = now_ns - (n % 3000) * 1_000_000_000
            latency_ns = int((200 + (n * 37) % 1800) * 1e6)
            spans.append(
                Span(
                    trace_id=trace_id,
                    span_id=root_id,
                    name=f"invoke_agent bench-agent-{agent:03d}",
                    kind=Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + latency_ns,
                    attributes=[
                        kv("gen_ai.operation.name", "invoke_agent"),
                        kv("gen_ai.agent.name", f"bench-agent-{agent:03d}"),
                        kv("gen_ai.request.model", "gpt-4o"),
                        kv("gen_ai.usage.input_tokens", 900),
                        kv("gen_ai.usage.output_tokens", 200),
                        kv("perfops.intent", "customer_support"),
                    ],
                    status=Status(code=Status.STATUS_CODE_OK),
                )
            )
            children = [
                (
                    "chat gpt-4o",
                    [
                        kv("gen_ai.operation.name", "chat"),
                        kv("gen_ai.request.model", "gpt-4o"),
                        kv("perfops.phase", "llm"),
                    ],
                    0.1,
                    0.8,
                ),
                (
                    "execute_tool lookup",
                    [kv("gen_ai.operation.name", "execute_tool"), kv("gen_ai.tool.name", "lookup")],
                    0.02,
                    0.05,
                ),
                ("SELECT orders", [kv("db.system.name", "postgresql")], 0.01, 0.01),
            ]
            for name, attrs, offset, share in children:
                spans.append(
                    Span(
                        trace_id=trace_id,
                        span_id=secrets.token_bytes(8),
                        parent_span_id=root_id,
                        name=name,
                        kind=Span.SPAN_KIND_CLIENT,
                        start_time_unix_nano=start + int(latency_ns * offset),
                        end_time_unix_nano=start + int(latency_ns * (offset + share)),
                        attributes=attrs,
                    )
                )
        bodies.append(request.SerializeToString())
    return bodies


def post_all(port: int, path: str, token: str, bodies: list[bytes], content_type: str) -> dict[str, Any]:
    """Post every body from CLIENT_THREADS threads; return wall time, request latencies and outcomes."""
    work: queue.Queue[bytes] = queue.Queue()
    for body in bodies:
        work.put(body)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted = [0]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            try:
                body = work.get_nowait()
            except queue.Empty:
                break
            began = time.perf_counter()
            conn.request("POST", path, body, {"Content-Type": content_type, "Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            payload = response.read()
            took = time.perf_counter() - began
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                latencies.append(took)
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if content_type == "application/json" and response.status == 200:
                    accepted[0] += orjson.loads(payload)["accepted"]
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENT_THREADS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    latencies.sort()
    return {
        "wall_s": wall,
        "requests": len(latencies),
        "statuses": statuses,
        "accepted": accepted[0],
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p95_ms": 1000 * latencies[int(len(latencies) * 0.95)],
    }


def _count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM telemetry_trace").fetchone()
        return int(row[0]) if row else 0


def _server(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/gunicorn"),
            "perfops.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--timeout",
            "120",
        ],
        cwd=ROOT,
        env=env,
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("gunicorn did not start")


def run(args: argparse.Namespace) -> dict[str, Any]:
    print(f"== ingest: gunicorn x{args.workers}, batches of {BATCH}, PostgreSQL {args.database_url}")
    env, token = prepare_database(args.database_url)
    port = _free_port()
    server = _server(env, port, args.workers)
    results: dict[str, Any] = {"workers": args.workers, "batch": BATCH}
    try:
        # Warm up: connections, imports, partitions.
        post_all(port, "/api/v1/traces", token, json_bodies(4), "application/json")
        target = int(args.seconds * 55)  # ~55 batches/s at the 55k traces/s we aim for
        print(f"   building {target} JSON bodies ...", flush=True)
        bodies = json_bodies(target)
        before = _count(args.database_url)
        outcome = post_all(port, "/api/v1/traces", token, bodies, "application/json")
        stored = _count(args.database_url) - before
        rate = outcome["accepted"] / outcome["wall_s"]
        results["json"] = {**outcome, "traces": outcome["accepted"], "stored": stored, "traces_per_s": rate}
        print(
            f"   JSON batches:  {rate:>9,.0f} traces/s  ({outcome['accepted']:,} accepted, {stored:,} stored, "
            f"{outcome['requests']} requests, p50 {outcome['p50_ms']:.0f} ms, p95 {outcome['p95_ms']:.0f} ms, "
            f"statuses {outcome['statuses']})"
        )
        if stored != outcome["accepted"]:
            print("   !! stored rows differ from accepted records")

        otlp_count = max(4, int(args.seconds * 15))
        print(f"   building {otlp_count} OTLP bodies ...", flush=True)
        otlp = otlp_bodies(otlp_count)
        before = _count(args.database_url)
        outcome = post_all(port, "/v1/traces", token, otlp, "application/x-protobuf")
        stored = _count(args.database_url) - before
        rate = stored / outcome["wall_s"]
        results["otlp"] = {**outcome, "traces": stored, "traces_per_s": rate, "spans_per_trace": 4}
        print(
            f"   OTLP protobuf: {rate:>9,.0f} traces/s  ({stored:,} stored of {otlp_count * BATCH:,} sent, "
            f"{4 * rate:,.0f} spans/s, p50 {outcome['p50_ms']:.0f} ms, p95 {outcome['p95_ms']:.0f} ms, "
            f"statuses {outcome['statuses']})"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return results
