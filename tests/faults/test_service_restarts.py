"""PostgreSQL and Redis restarted under live ingest: 503 while the database is down, nothing accepted is lost.

The real stack runs in processes of its own: gunicorn with production settings (as `make serve` and
bench/ingest.py run it) against a private PostgreSQL cluster and a private redis-server, both on free
loopback ports (the shared servers on 5432 and 6379 are never touched). Client threads post batches of
fresh trace ids without pause, two as JSON to /api/v1/traces and one as OTLP/JSON to /v1/traces, and
retry a batch that was not answered 200, as a real sender does (after 0.2 s rather than Retry-After's
5 s, so that recovery is timed finely). Meanwhile PostgreSQL is stopped with `pg_ctl stop -m immediate`
(every backend killed, mid-transaction or not) and started again; later redis-server is killed and
started again.

Then: every request wholly inside the database outage was answered 503 with Retry-After; no request
was ever answered 500 or left without an answer; ingest answered 200 again within RECOVERY_LIMIT_S of
the database's return, without a restart of the app; every trace of a batch answered 200 is stored
exactly once, and the JSON traces stored are exactly as many as the server reported accepted. The
figures are printed and written to test-output/security/faults_services.json.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from django.db import connection

from tests.faults.services import PrivatePostgres, PrivateRedis, free_port, missing_binaries

ROOT = Path(__file__).resolve().parents[2]


def _bench_ingest() -> Any:
    """bench/ingest.py, the benchmark's database set-up (a script folder, imported by path: bench/run.py
    puts bench/ on sys.path and imports it as `ingest`, so `bench.ingest` would be the same file twice)."""
    spec = importlib.util.spec_from_file_location("perfops_bench_ingest", ROOT / "bench" / "ingest.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ingest = _bench_ingest()
AGENTS, bench_env, prepare_database = _ingest.AGENTS, _ingest.bench_env, _ingest.prepare_database
OUT = ROOT / "test-output" / "security"

BATCH = 100
CLIENTS = ("json", "json", "otlp")
PATHS = {"json": "/api/v1/traces", "otlp": "/v1/traces"}
RETRY_PAUSE_S = 0.2
# Ingest must answer 200 again this soon after PostgreSQL accepts connections, by itself.
RECOVERY_LIMIT_S = 15.0
# Each outage lasts at least this long, and until ingest has answered this many requests during it.
OUTAGE_MIN_S = 3.0
OUTAGE_MIN_ANSWERS = 6
# Every wait is bounded by this; the module takes about 30 s.
STEP_LIMIT_S = 30.0
# The last line of a logged traceback: "package.module.SomeError: message".
EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception)\b")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Answer:
    """One POST: when it was sent and answered (monotonic seconds), and what came back (status 0: none)."""

    endpoint: str
    began: float
    ended: float
    status: int
    retry_after: str | None = None
    accepted: int = 0  # JSON: "accepted"
    duplicates: int = 0  # JSON: "duplicates"
    rejected: int = 0  # JSON: records in "rejected"; OTLP: partialSuccess.rejectedSpans
    error: str = ""


def json_batch(ids: list[str], numbers: list[int], now: datetime) -> bytes:
    return orjson.dumps(
        {
            "traces": [
                {
                    "trace_id": trace_id,
                    "agent": f"bench-agent-{n % AGENTS:03d}",
                    "environment": "production",
                    "version": "1.0.0",
                    "intent": "customer_support",
                    "started_at": (now - timedelta(seconds=n % 60)).isoformat(),
                    "latency_ms": 250.0 + n % 700,
                    "status": "ok",
                    "phases": {"llm": 200.0},
                }
                for trace_id, n in zip(ids, numbers, strict=True)
            ]
        }
    )


def _attributes(**values: str) -> list[dict[str, Any]]:
    return [{"key": key.replace("__", "."), "value": {"stringValue": value}} for key, value in values.items()]


def otlp_batch(ids: list[str], numbers: list[int], now: datetime) -> bytes:
    """An OTLP/JSON export: per trace an invoke_agent span and an LLM call under it."""
    spans = []
    for trace_id, n in zip(ids, numbers, strict=True):
        agent = f"bench-agent-{n % AGENTS:03d}"
        start_ns = int((now - timedelta(seconds=n % 60)).timestamp() * 1e9)
        root = secrets.token_hex(8)
        spans.append(
            {
                "traceId": trace_id,
                "spanId": root,
                "name": f"invoke_agent {agent}",
                "kind": 2,
                "startTimeUnixNano": str(start_ns),
                "endTimeUnixNano": str(start_ns + 300_000_000),
                "attributes": _attributes(gen_ai__operation__name="invoke_agent", gen_ai__agent__name=agent),
                "status": {"code": 1},
            }
        )
        spans.append(
            {
                "traceId": trace_id,
                "spanId": secrets.token_hex(8),
                "parentSpanId": root,
                "name": "chat gpt-4o",
                "kind": 3,
                "startTimeUnixNano": str(start_ns + 10_000_000),
                "endTimeUnixNano": str(start_ns + 250_000_000),
                "attributes": _attributes(gen_ai__operation__name="chat", gen_ai__request__model="gpt-4o"),
            }
        )
    resource = _attributes(service__name="faults", deployment__environment__name="production", service__version="1.0.0")
    return orjson.dumps({"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"spans": spans}]}]})


@dataclass
class Traffic:
    """Client threads posting batches to the server until told to stop, recording every answer."""

    port: int
    token: str
    answers: list[Answer] = field(default_factory=list)
    acknowledged: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in PATHS})
    sent: set[str] = field(default_factory=set)
    # Batches still not answered 200 when the clients had to stop.
    abandoned: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in PATHS})
    stop: threading.Event = field(default_factory=threading.Event)
    deadline: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    numbers: Iterator[int] = field(default_factory=lambda: iter(range(10**9)))

    def batch(self, endpoint: str) -> tuple[list[str], bytes]:
        with self.lock:
            numbers = [next(self.numbers) for _ in range(BATCH)]
        ids = [secrets.token_hex(16) for _ in numbers]
        build = json_batch if endpoint == "json" else otlp_batch
        return ids, build(ids, numbers, datetime.now(UTC))

    def post(self, endpoint: str, body: bytes) -> Answer:
        began = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=STEP_LIMIT_S)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        try:
            conn.request("POST", PATHS[endpoint], body, headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return Answer(endpoint, began, time.monotonic(), 0, error=type(exc).__name__)
        finally:
            conn.close()
        answer = Answer(endpoint, began, time.monotonic(), response.status, response.getheader("Retry-After"))
        if response.status != 200:
            return answer
        result = orjson.loads(payload)
        if endpoint == "json":
            counts = result["accepted"], result["duplicates"], len(result["rejected"])
            return Answer(endpoint, answer.began, answer.ended, 200, None, *counts)
        rejected = int(result.get("partialSuccess", {}).get("rejectedSpans", 0))
        return Answer(endpoint, answer.began, answer.ended, 200, rejected=rejected)

    def client(self, endpoint: str) -> None:
        pending: tuple[list[str], bytes] | None = None
        while time.monotonic() < self.deadline:
            if pending is None:
                if self.stop.is_set():
                    return
                pending = self.batch(endpoint)
                with self.lock:
                    self.sent.update(pending[0])
            answer = self.post(endpoint, pending[1])
            with self.lock:
                self.answers.append(answer)
                if answer.status == 200:
                    self.acknowledged[endpoint].update(pending[0])
            if answer.status == 200 or 400 <= answer.status < 500:
                pending = None
            else:
                time.sleep(RETRY_PAUSE_S)  # pacing a retry, as a sender would
        if pending is not None:
            with self.lock:
                self.abandoned[endpoint].update(pending[0])

    def count(self, since: float, ok: bool | None = None) -> int:
        """Answers to requests sent at or after `since`: only 200s, only the others, or all."""
        with self.lock:
            return sum(1 for a in self.answers if a.began >= since and (ok is None or (a.status == 200) == ok))


def wait_until(what: str, ready: Callable[[], bool], limit_s: float = STEP_LIMIT_S) -> None:
    """Poll `ready` until it holds; fail after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {limit_s:.0f} s")
        time.sleep(0.05)


def start_gunicorn(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """The web process of perfops/deploy/Procfile, on loopback, its output kept in `log`."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(str(ROOT / ".venv/bin/gunicorn"), "perfops.wsgi:application", "--bind", f"127.0.0.1:{port}"),
                *("--workers", "2", "--timeout", "60", "--log-level", "warning"),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    wait_until("gunicorn answers /healthz", healthy)
    return process


def stored_rows(database_url: str) -> Counter[str]:
    """How many rows each trace id has in the private database."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT replace(trace_id::text, '-', ''), count(*) FROM telemetry_trace GROUP BY 1")
        return Counter({trace_id: int(n) for trace_id, n in rows.fetchall()})


@dataclass
class Run:
    """What happened, for the tests below: the answers and the moments of each fault (monotonic)."""

    traffic: Traffic
    stored: Counter[str]
    db_down: float  # pg_ctl stop returned: nothing reaches the database from here on
    db_starting: float  # pg_ctl start was called
    db_up: float  # pg_ctl start returned: PostgreSQL accepts connections
    recovered: float  # the first request sent after db_up and answered 200 was answered
    redis_down: float
    redis_up: float
    server_log: str

    def during(self, start: float, end: float) -> list[Answer]:
        """Requests sent and answered within [start, end]."""
        return [a for a in self.traffic.answers if a.began >= start and a.ended <= end]

    def overlapping(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.traffic.answers if a.ended >= start and a.began <= end]

    def server_errors(self) -> str:
        """The exceptions the server logged (the last of each traceback) and how often: for failure messages."""
        ends: Counter[str] = Counter()
        last = ""
        for line in [*self.server_log.splitlines(), "ERROR (end of log)"]:
            if "ERROR" in line and last:
                ends[last] += 1
                last = ""
            elif EXCEPTION_LINE.match(line):
                last = line[:200]
        return "server log: " + ("; ".join(f"{n} x {line}" for line, n in ends.most_common()) or "no exceptions")

    def figures(self) -> dict[str, Any]:
        answers = self.traffic.answers
        outage = self.during(self.db_down, self.db_starting)
        redis = self.overlapping(self.redis_down, self.redis_up)
        acknowledged = set().union(*self.traffic.acknowledged.values())
        return {
            "requests_sent": len(answers),
            "traces_per_request": BATCH,
            "by_endpoint": {
                name: dict(sorted(Counter(str(a.status) for a in answers if a.endpoint == name).items()))
                for name in PATHS
            },
            "server_errors_500": sum(1 for a in answers if a.status >= 500 and a.status != 503),
            "no_http_answer": dict(Counter(a.error for a in answers if a.status == 0)),
            "json_accepted": sum(a.accepted for a in answers),
            "json_duplicates_on_retry": sum(a.duplicates for a in answers),
            "acknowledged_traces": {name: len(ids) for name, ids in self.traffic.acknowledged.items()},
            "stored": sum(self.stored.values()),
            "lost": len(acknowledged - self.stored.keys()),
            "stored_more_than_once": sum(1 for n in self.stored.values() if n > 1),
            "abandoned_unanswered": sum(len(ids) for ids in self.traffic.abandoned.values()),
            "postgres": {
                "outage_s": round(self.db_up - self.db_down, 3),
                "restart_s": round(self.db_up - self.db_starting, 3),
                "recovery_s": round(self.recovered - self.db_up, 3),
                "answers_during_outage": dict(Counter(str(a.status) for a in outage)),
                "outage_503_with_retry_after": sum(1 for a in outage if a.status == 503 and a.retry_after),
            },
            "redis": {
                "outage_s": round(self.redis_up - self.redis_down, 3),
                "answers_overlapping_outage": dict(Counter(str(a.status) for a in redis)),
            },
        }


def _skip_reason() -> str | None:
    if connection.vendor == "sqlite":
        return "runs in the PostgreSQL pass"
    return missing_binaries()


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    postgres = PrivatePostgres()
    redis = PrivateRedis()
    var_dir = Path(tempfile.mkdtemp(prefix="perfops-faults-var-"))
    log = var_dir / "gunicorn.log"
    server: subprocess.Popen[bytes] | None = None
    traffic: Traffic | None = None
    threads: list[threading.Thread] = []
    try:
        postgres.init()
        postgres.start()
        redis.start()
        database_url = postgres.url("perfops_faults")
        _, token = prepare_database(database_url)
        env = bench_env(database_url, REDIS_URL=redis.url(), PERFOPS_VAR_DIR=str(var_dir))
        port = free_port()
        server = start_gunicorn(env, port, log)

        traffic = Traffic(port, token, deadline=time.monotonic() + 4 * STEP_LIMIT_S)
        threads = [threading.Thread(target=traffic.client, args=(name,), daemon=True) for name in CLIENTS]
        for thread in threads:
            thread.start()
        wait_until("ingest answers 200 before any fault", lambda: traffic.count(0, ok=True) >= 2 * len(CLIENTS))

        postgres.stop("immediate")
        db_down = time.monotonic()
        wait_until(
            "ingest answers while PostgreSQL is down",
            lambda: time.monotonic() - db_down >= OUTAGE_MIN_S and traffic.count(db_down) >= OUTAGE_MIN_ANSWERS,
        )
        db_starting = time.monotonic()
        postgres.start()
        db_up = time.monotonic()
        wait_until("ingest answers 200 after PostgreSQL is back", lambda: traffic.count(db_up, ok=True) >= 1)
        recovered = min(a.ended for a in traffic.answers if a.began >= db_up and a.status == 200)
        wait_until("ingest keeps answering 200", lambda: traffic.count(db_up, ok=True) >= 4 * len(CLIENTS))

        redis.kill()
        redis_down = time.monotonic()
        wait_until(
            "ingest answers while Redis is down",
            lambda: time.monotonic() - redis_down >= OUTAGE_MIN_S and traffic.count(redis_down) >= OUTAGE_MIN_ANSWERS,
        )
        redis.start()
        redis_up = time.monotonic()
        wait_until(
            "ingest answers 200 after Redis is back", lambda: traffic.count(redis_up, ok=True) >= 4 * len(CLIENTS)
        )

        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=STEP_LIMIT_S)
        assert not any(thread.is_alive() for thread in threads), "a client thread did not finish"
        stored = stored_rows(database_url)
        yield Run(traffic, stored, db_down, db_starting, db_up, recovered, redis_down, redis_up, log.read_text())
    finally:
        if traffic is not None:
            traffic.stop.set()
            traffic.deadline = 0.0
        for thread in threads:
            thread.join(timeout=STEP_LIMIT_S)
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=STEP_LIMIT_S)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=STEP_LIMIT_S)
        redis.destroy()
        postgres.destroy()
        shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def figures(run: Run) -> dict[str, Any]:
    found = run.figures()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "faults_services.json").write_text(json.dumps(found, indent=2))
    print("\nservice restarts under ingest:", json.dumps(found, indent=1))
    return found


def test_ingest_never_answers_500_through_both_restarts(run, figures):
    assert figures["server_errors_500"] == 0, run.server_errors()


def test_every_request_gets_an_http_answer(run, figures):
    # A reset connection leaves the sender guessing whether its batch was stored.
    assert figures["no_http_answer"] == {}, run.server_errors()


def test_ingest_answers_503_with_retry_after_while_postgresql_is_down(run):
    outage = run.during(run.db_down, run.db_starting)
    assert {a.endpoint for a in outage} == set(PATHS)
    assert {a.status for a in outage} == {503}, run.server_errors()
    assert all(a.retry_after and int(a.retry_after) > 0 for a in outage)


def test_ingest_recovers_by_itself_once_postgresql_is_back(run, figures):
    assert figures["postgres"]["recovery_s"] <= RECOVERY_LIMIT_S
    # From then until Redis is stopped, the database is up: nothing but 200 will do.
    after = run.during(run.recovered, run.redis_down)
    assert {a.endpoint for a in after} == set(PATHS)
    assert {a.status for a in after} == {200}, run.server_errors()


def test_ingest_keeps_answering_while_redis_restarts(run):
    around = run.overlapping(run.redis_down, run.redis_up)
    assert len(around) >= OUTAGE_MIN_ANSWERS
    assert {a.status for a in around} <= {200, 503}, run.server_errors()


def test_every_acknowledged_trace_is_stored_exactly_once(run, figures):
    assert all(run.traffic.acknowledged.values())
    assert figures["lost"] == 0
    assert figures["stored_more_than_once"] == 0
    assert set(run.stored) <= run.traffic.sent
    assert all(a.rejected == 0 for a in run.traffic.answers)


def test_the_json_traces_stored_are_exactly_those_reported_accepted(run, figures):
    # A batch answered 503 whose commit went through anyway is reported as duplicates when retried, not
    # accepted twice; only a batch still unanswered when the clients stopped may be stored unreported.
    abandoned = run.traffic.abandoned["json"]
    sent_as_json = run.traffic.acknowledged["json"] | abandoned
    stored_json = sum(n for trace_id, n in run.stored.items() if trace_id in sent_as_json)
    unreported = len(set(run.stored) & abandoned)
    assert stored_json == figures["json_accepted"] + unreported
