"""Workers killed with SIGKILL in the middle of their work, then a fresh one: nothing half done, lost or doubled.

Real processes run against the pytest test database and a Redis broker database of their own (db 11 of
the REDIS_URL server, flushed before and after each test; bench/load.py uses 13, bench/metrics.py 14, CI 15):

- a rollup: a Celery worker runs `rollup_tick` over a few hours of late traces; the test holds a row lock
  on the rollup rows of one bucket three quarters of the way in, so the run commits the buckets before
  it and then waits. The test sees it waiting in pg_stat_activity, kills it, and a fresh worker with its
  beat finishes the job. Every 30-second bucket must then equal a count and sum of the raw traces, and
  a rebuild (`catch_up`) must change nothing.
- an alert notification: the worker sends a webhook to a listener on 127.0.0.1 that holds the request
  unanswered; the worker is killed while it waits for the answer, and a fresh worker sends it again.
  The receiver must have accepted the transition exactly once. A second case kills the worker after the
  receiver sent "200 OK" but before the worker could record it: delivery is at least once, so the same
  message (same dedupe_key) comes again; that figure is reported apart from the duplicates.
- a configuration apply: it runs in the web process (no Celery task applies configurations), so the
  killed worker is gunicorn's, stopped on a lock the test holds on the audit table after it inserted
  the new version. The version must not exist afterwards, the recommendation must still be open, and
  a retry on the fresh worker gunicorn starts must apply it once.
- two beat schedulers at once (two workers with --beat) for a bit over a minute while traces arrive:
  every alert transition recorded and notified once, rollups equal to the raw traces.

Each kill lands at a moment the test observes, never after a guessed delay. Two waits that are part of
the design are skipped by moving their clocks instead of waiting them out: the dead rollup run's lease
(rollup.LEASE_S) and the broker's visibility timeout, after which Redis hands a message that was never
acknowledged to another worker. Both are reported with the figures, in
test-output/security/faults_worker.json.

PostgreSQL and Redis only: the kills are timed with locks held from a second connection and
pg_stat_activity, and recovery relies on Redis's acks-late redelivery; CI's SQLite pass has no Redis.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from auditlog.models import LogEntry
from celery import Celery
from django.conf import settings
from django.db import connection
from django.utils import timezone

from interventions import configs
from interventions.models import AgentConfig, Recommendation
from perfops.access.models import AllowedHost
from perfops.metrics import rollup, storage
from perfops.metrics.levels import Grain, View
from perfops.metrics.models import DirtyBucket, Rollup, RollupState
from perfops.telemetry.models import Agent
from slos.models import AlertEvent, AlertRule, Delivery, NotificationChannel
from tests import factories
from tests.metrics.conftest import ingest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "security"
BROKER_DB = 11
# Every wait is bounded by this (a worker starts in a few seconds; a beat tick comes every 10 s).
STEP_LIMIT_S = 60.0
# Beat sends evaluate-alerts a minute after it starts: the two schedulers run at least that long.
TWO_BEATS_LIMIT_S = 110.0
VISIBILITY_TIMEOUT_S = int(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get("visibility_timeout", 3600))
SECRET = "fault-test-webhook-secret-" + "x" * 20

FIGURES: dict[str, dict[str, Any]] = {}

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    if not FIGURES:
        return
    summary = {
        "kills_done": sum(int(part.get("kills", 0)) for part in FIGURES.values()),
        "tasks_recovered": sum(int(part.get("recovered", 0)) for part in FIGURES.values()),
        "duplicates_found": sum(int(part.get("duplicates", 0)) for part in FIGURES.values()),
        "rollup_mismatch": sum(int(part.get("rollup_mismatched_buckets", 0)) for part in FIGURES.values()),
        # At-least-once delivery: a worker killed after the receiver's 2xx and before the attempt was recorded
        # sends the message again, with the same dedupe_key (the receiver drops it by that key).
        "same_message_redelivered_after_receipt": sum(
            int(part.get("same_message_received_again", 0)) for part in FIGURES.values()
        ),
        "time_to_recover_s": {
            name: part["time_to_recover_s"] for name, part in FIGURES.items() if "time_to_recover_s" in part
        },
        "waits_skipped_by_moving_the_clock_s": {
            "rollup_lease": rollup.LEASE_S,
            "broker_visibility_timeout": VISIBILITY_TIMEOUT_S,
        },
        "scenarios": FIGURES,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "faults_worker.json").write_text(json.dumps(summary, indent=2))
    print("\nworker faults:", json.dumps(summary, indent=2))


# --- Services and processes ----------------------------------------------------------------------


@pytest.fixture
def broker() -> Iterator[str]:
    """A Redis database of this module's own as the Celery broker (and cache) of every process it starts."""
    configured = os.environ.get("REDIS_URL")
    if connection.vendor != "postgresql" or not configured:
        pytest.skip(
            "worker faults run in the PostgreSQL + Redis pass: kills are timed by locks held from a second "
            "connection (seen in pg_stat_activity), and recovery is Redis's acks-late redelivery"
        )
    parts = urlsplit(configured)
    url = f"{parts.scheme}://{parts.netloc}/{BROKER_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"Redis at {parts.netloc} does not answer")
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def database_url() -> str:
    database = connection.settings_dict
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    host = database["HOST"] or "127.0.0.1"
    return f"postgres://{database['USER']}{password}@{host}:{database['PORT'] or 5432}/{database['NAME']}"


class Process:
    """A child process in a process group of its own, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("w") as log:
            self.handle = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.handle.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.handle.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group (the worker and its embedded beat): nothing gets to clean up."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.handle.pid, signal.SIGKILL)
        self.handle.wait(timeout=10)

    def stop(self) -> None:
        """A warm shutdown, bounded; SIGKILL if it does not end in time."""
        if self.alive():
            try:
                os.killpg(self.handle.pid, signal.SIGTERM)
                self.handle.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill()


class Spawner:
    """Starts workers and web servers for one test, and kills every one of them at its end."""

    def __init__(self, tmp_path: Path, broker_url: str) -> None:
        self.tmp_path = tmp_path
        self.broker_url = broker_url
        self.started: list[Process] = []

    def environment(self, name: str) -> dict[str, str]:
        var_dir = self.tmp_path / name
        var_dir.mkdir(exist_ok=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
        env.update(
            DJANGO_SETTINGS_MODULE="perfops.settings",
            DATABASE_URL=database_url(),
            REDIS_URL=self.broker_url,
            PERFOPS_VAR_DIR=str(var_dir),  # each process its own beat schedule file
            PERFOPS_ROLLUP_SETTLE_S="0",
            PERFOPS_HTTPS="0",
            LOG_LEVEL="INFO",
        )
        return env

    def worker(self, name: str, *, beat: bool = False) -> Process:
        """A Celery worker as production runs one (solo pool: the task runs in the process that is killed)."""
        args = [sys.executable, "-m", "celery", "-A", "perfops", "worker", "--pool", "solo", "--loglevel", "INFO"]
        args += ["-n", f"{name}@%h", "--without-mingle", "--without-gossip"] + (["--beat"] if beat else [])
        return self._start(name, args)

    def web(self, name: str, port: int) -> Process:
        """gunicorn with one worker, as perfops/deploy/Procfile runs it."""
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        args = [gunicorn, "perfops.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        args += ["--timeout", "60", "--log-level", "info"]
        return self._start(name, args)

    def _start(self, name: str, args: list[str]) -> Process:
        process = Process(name, args, self.environment(name), self.tmp_path / f"{name}.log")
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


@pytest.fixture
def spawn(tmp_path: Path, broker: str) -> Iterator[Spawner]:
    spawner = Spawner(tmp_path, broker)
    try:
        yield spawner
    finally:
        spawner.stop_all()


def wait_for(what: str, check: Callable[[], T], *, watch: Sequence[Process] = (), limit_s: float = STEP_LIMIT_S) -> T:
    """Poll `check` until it returns something true; fail after `limit_s`, or as soon as a watched process dies."""
    deadline = time.monotonic() + limit_s
    while True:
        value = check()
        if value:
            return value
        for process in watch:
            if not process.alive():
                raise AssertionError(f"{process.name} exited while waiting for {what}:\n{process.log()[-3000:]}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log()[-2000:]}" for p in watch)
            raise AssertionError(f"gave up after {limit_s:g} s waiting for {what}\n{logs}")
        time.sleep(0.1)


def send_task(broker_url: str, name: str) -> None:
    """Put a task on the broker as beat would."""
    producer = Celery("faults", broker=broker_url, set_as_current=False)
    try:
        producer.send_task(name)
    finally:
        producer.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- PostgreSQL: a lock held from a second connection, and who waits on it --------------------------


class Holder:
    """A second database connection holding a lock in an open transaction until `release`."""

    def __init__(self) -> None:
        self.connection = psycopg.connect(database_url().replace("postgres://", "postgresql://", 1))

    def hold(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = self.connection.execute(sql, params)
        return cursor.rowcount

    def release(self) -> None:
        if not self.connection.closed:
            self.connection.rollback()
            self.connection.close()


def waiting_on_lock(fragment: str, also_holding: str | None = None) -> int:
    """The backend (pid; 0: none) waiting on a lock in a statement with `fragment`, holding a write lock on a table."""
    sql = (
        "SELECT a.pid FROM pg_stat_activity a WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
        "AND a.wait_event_type = 'Lock' AND a.query ILIKE %s"
    )
    params: list[Any] = [f"%{fragment}%"]
    if also_holding:
        sql += (
            " AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted "
            "AND l.mode = 'RowExclusiveLock' AND l.relation = %s::regclass)"
        )
        params.append(also_holding)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def backend_gone(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return int(cursor.fetchone()[0]) == 0


# --- Rollups against the raw traces ---------------------------------------------------------------

Totals = dict[int, tuple[int, int, float]]  # bucket -> (traces, errors, latency sum)


def raw_totals() -> Totals:
    """Per 30-second bucket, straight from the raw trace rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (floor(extract(epoch FROM started_at) / 30) * 30)::bigint, count(*), "
            "count(*) FILTER (WHERE status = 'error'), sum(latency_ms) FROM telemetry_trace GROUP BY 1"
        )
        return {int(b): (int(n), int(e), float(s)) for b, n, e, s in cursor.fetchall()}


def rolled_totals(view: View) -> Totals:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bucket_epoch_s, sum(count), sum(errors), sum(latency_sum_ms) FROM metrics_rollup "
            "WHERE grain_s = %s AND view = %s GROUP BY 1",
            [int(Grain.S30), int(view)],
        )
        return {int(b): (int(n), int(e), float(s)) for b, n, e, s in cursor.fetchall()}


def same(a: tuple[int, int, float] | None, b: tuple[int, int, float] | None) -> bool:
    if a is None or b is None:
        return a == b
    return a[:2] == b[:2] and abs(a[2] - b[2]) <= 1e-9 * max(1.0, abs(a[2]))


def mismatched(expected: Totals, actual: Totals) -> list[int]:
    return sorted(b for b in set(expected) | set(actual) if not same(expected.get(b), actual.get(b)))


def s30_rows() -> list[tuple[Any, ...]]:
    """Every 30-second rollup row: its cell exactly (counts, sketch), its float sums rounded."""
    floats = {"latency_sum_ms", "latency_min_ms", "latency_max_ms"}
    columns = [c for c in storage.COLUMNS if c != "timings"]
    rows = []
    for row in Rollup.objects.filter(grain_s=Grain.S30).values_list(*columns):
        rows.append(
            tuple(
                bytes(value) if isinstance(value, memoryview) else round(value, 6) if name in floats else value
                for name, value in zip(columns, row, strict=True)
            )
        )
    return sorted(rows)


def records(agents: Sequence[str], count: int, now: datetime, oldest_s: float, newest_s: float, seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        status = rng.choices(["ok", "error", "timeout"], [0.9, 0.07, 0.03])[0]
        latency_ms = round(rng.lognormvariate(6.0, 0.9), 3)
        record = factories.record(
            agent=agents[i % len(agents)],
            started_at=factories.iso(now - timedelta(seconds=rng.uniform(newest_s, oldest_s))),
            latency_ms=latency_ms,
            status=status,
            phases={"llm": round(latency_ms * 0.8, 3)},
            dependencies=[],
        )
        if status == "error":
            record["error_type"] = "llm_error"
        out.append(record)
    return out


def test_a_rollup_killed_half_way_is_finished_by_a_fresh_worker_and_equals_the_raw_traces(
    spawn, broker, superuser, payments, research
):
    factories.agent("pay-bot", payments)
    factories.agent("lab-bot", research)
    now = datetime.now(UTC).replace(microsecond=0)
    assert ingest(records(["pay-bot", "lab-bot"], 2000, now, 9 * 3600, 60, seed=1), superuser) == 2000
    rollup.catch_up(now - timedelta(hours=10), now=now)
    assert not DirtyBucket.objects.exists()
    before = rolled_totals(View.AGENT)
    # Late traces for three hours: about 360 dirty buckets, recomputed in runs of up to an hour each.
    assert ingest(records(["pay-bot", "lab-bot"], 1500, now, 5 * 3600, 2 * 3600, seed=2), superuser) == 1500
    dirty = sorted(set(DirtyBucket.objects.values_list("bucket_epoch_s", flat=True)))
    target = next(b for b in dirty[len(dirty) * 3 // 4 :] if b in before)
    generation = RollupState.get().generation

    holder = Holder()
    try:
        assert holder.hold(
            "SELECT id FROM metrics_rollup WHERE grain_s = 30 AND bucket_epoch_s = %s FOR UPDATE", [target]
        )
        send_task(broker, "perfops.metrics.tasks.rollup_tick")
        worker = spawn.worker("rollup-first")
        blocked = wait_for(
            "the rollup to reach the locked bucket",
            lambda: waiting_on_lock("DELETE FROM metrics_rollup"),
            watch=[worker],
        )
        state = RollupState.get()
        assert state.lease_owner.split(":")[1] == str(worker.pid), "the lease is the killed worker's"
        commits_before_kill = state.generation - generation
        assert commits_before_kill >= 1, "some buckets were written before the kill"
        worker.kill()
        killed_at = time.monotonic()
    finally:
        holder.release()
    wait_for("the killed worker's database session to end", lambda: backend_gone(blocked))

    # What the dead run left: the buckets it committed are recomputed, the rest are as before with their notes.
    pending = set(DirtyBucket.objects.values_list("bucket_epoch_s", flat=True))
    assert target in pending
    assert len(pending) < len(dirty)
    raw, now_rolled = raw_totals(), rolled_totals(View.AGENT)
    half_done = [
        b for b in set(raw) | set(before) if not same((before if b in pending else raw).get(b), now_rolled.get(b))
    ]
    assert half_done == []

    # The dead run's lease would run out after LEASE_S; move its clock rather than wait.
    RollupState.objects.filter(lease_owner=state.lease_owner).update(lease_until=timezone.now() - timedelta(seconds=1))
    fresh = spawn.worker("rollup-fresh", beat=True)
    wait_for(
        "the fresh worker's beat to roll up every pending bucket",
        lambda: not DirtyBucket.objects.exists() and RollupState.get().lease_owner == "",
        watch=[fresh],
    )
    recovered_s = time.monotonic() - killed_at
    fresh.stop()
    assert "perfops.metrics.tasks.rollup_tick" in fresh.log()

    raw = raw_totals()
    mismatches = {view.name: mismatched(raw, rolled_totals(view)) for view in (View.TOTAL, View.FLEET, View.AGENT)}
    rows = s30_rows()
    rollup.catch_up(now - timedelta(hours=10))
    rebuilt_differs = rows != s30_rows()
    FIGURES["rollup"] = {
        "kills": 1,
        "recovered": 1,
        "traces": sum(n for n, _, _ in raw.values()),
        "dirty_buckets_at_start": len(dirty),
        "write_transactions_committed_before_kill": commits_before_kill,
        "buckets_left_pending_by_the_kill": len(pending),
        "buckets_half_written": len(half_done),
        "buckets_checked_per_view": len(raw),
        "rollup_mismatched_buckets": sum(len(found) for found in mismatches.values()) + int(rebuilt_differs),
        "rows_changed_by_a_rebuild": int(rebuilt_differs),
        "time_to_recover_s": round(recovered_s, 2),
    }
    assert mismatches == {"TOTAL": [], "FLEET": [], "AGENT": []}
    assert not rebuilt_differs, "a rebuild from the raw traces changed the 30-second rollups"


# --- Notifications ----------------------------------------------------------------------------------


class Listener:
    """A webhook receiver on 127.0.0.1 counting requests per dedupe key (answered: a 2xx status was sent).

    `mode` "answer" replies at once; "hold" never answers; "stall" sends "200 OK" and its headers (the
    receiver has taken the message) but holds back the body the sender is still reading.
    """

    def __init__(self) -> None:
        self.mode = "answer"
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.received: list[str] = []
        self.answered: list[str] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = str(json.loads(body or b"{}").get("dedupe_key"))
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                with listener.lock:
                    listener.received.append(key)
                    listener.bad_signatures += self.headers.get("X-Perfops-Signature") != expected
                mode = listener.mode
                if mode != "hold":
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.flush()
                    with listener.lock:
                        listener.answered.append(key)
                if mode == "answer":
                    self.wfile.write(b"ok")
                    return
                listener.arrived.set()
                listener.released.wait(30)
                self.close_connection = True  # the sender is dead by now

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def answer_again(self) -> None:
        self.mode = "answer"
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener(db) -> Iterator[Listener]:
    receiver = Listener()
    AllowedHost.objects.create(host="127.0.0.1", allow_private=True, note="the fault tests' webhook listener")
    try:
        yield receiver
    finally:
        receiver.close()


def firing_rules(listener: Listener, count: int) -> list[AlertRule]:
    """Rules that fire at their first evaluation (fleet throughput at or above 0), each notifying the listener."""
    channel = NotificationChannel.objects.create(
        name="fault hook", kind=NotificationChannel.Kind.WEBHOOK, url=listener.url, secret=SECRET
    )
    made = []
    for i in range(count):
        rule = AlertRule.objects.create(
            name=f"fleet throughput {i}",
            metric=AlertRule.Metric.THROUGHPUT,
            scope=AlertRule.Scope.FLEET,
            severity=AlertRule.Severity.TICKET,
            comparison=AlertRule.Comparison.GTE,
            threshold=0.0,
            window_s=600,
        )
        rule.channels.add(channel)
        made.append(rule)
    return made


def unacknowledged(client: Any) -> list[bytes]:
    """The messages a worker took but never acknowledged (kombu's Redis transport keeps them for redelivery)."""
    return [bytes(message) for message in client.hvals("unacked")]


def age_unacknowledged(client: Any, seconds: int) -> int:
    """Move the delivery time of every unacknowledged message back: as if `seconds` had passed since."""
    taken = client.zrange("unacked_index", 0, -1, withscores=True)
    for tag, score in taken:
        client.zadd("unacked_index", {tag: float(score) - seconds})
    return len(taken)


def queued(client: Any, task: str) -> int:
    """Messages for `task` waiting in the queue or taken and unacknowledged."""
    waiting = [bytes(m) for m in client.lrange("celery", 0, -1)]
    return sum(task.encode() in message for message in waiting + unacknowledged(client))


def redeliver_after_kill(
    spawn: Spawner,
    broker: str,
    listener: Listener,
    name: str,
    kill_when: Callable[[], Any],
) -> dict[str, Any]:
    """Evaluate a firing rule on a worker, kill it once `kill_when` holds, then let a fresh worker redeliver."""
    (rule,) = firing_rules(listener, 1)
    client = redis.Redis.from_url(broker)
    try:
        send_task(broker, "slos.tasks.evaluate_alerts")
        worker = spawn.worker(f"{name}-first")
        wait_for("the send to reach the point of the kill", kill_when, watch=[worker])
        worker.kill()  # within the send's 5 s timeout: the worker is waiting for the answer
        killed_at = time.monotonic()
        listener.answer_again()
        event = AlertEvent.objects.get(rule=rule)
        recorded_at_kill = Delivery.objects.count()
        assert queued(client, "slos.tasks.deliver_event") == 1, "the send was taken but not acknowledged"
        # Redis hands an unacknowledged message to another worker after the visibility timeout.
        aged = age_unacknowledged(client, VISIBILITY_TIMEOUT_S)
        fresh = spawn.worker(f"{name}-fresh", beat=True)
        wait_for(
            "the fresh worker to deliver the notice",
            lambda: Delivery.objects.filter(key=event.dedupe_key, ok=True).exists(),
            watch=[fresh],
        )
        recovered_s = time.monotonic() - killed_at
        wait_for("no send left in the broker", lambda: queued(client, "slos.tasks.deliver_event") == 0, watch=[fresh])
        fresh.stop()
    finally:
        client.close()
    received, answered = Counter(listener.received), Counter(listener.answered)
    return {
        "key": event.dedupe_key,
        "kills": 1,
        "recovered": int(answered[event.dedupe_key] >= 1),
        "alert_transitions": AlertEvent.objects.count(),
        "delivery_rows_at_kill": recorded_at_kill,
        "delivery_rows": list(Delivery.objects.order_by("attempt").values_list("key", "attempt", "ok")),
        "requests_received": dict(received),
        "requests_answered": dict(answered),
        "messages_redelivered_by_the_broker": aged,
        "bad_signatures": listener.bad_signatures,
        "time_to_recover_s": round(recovered_s, 2),
    }


def test_a_notification_killed_in_flight_is_delivered_once_by_a_fresh_worker(spawn, broker, listener):
    listener.mode = "hold"  # the request arrives and is never answered: the worker waits (5 s at most)
    seen = redeliver_after_kill(spawn, broker, listener, "notify", listener.arrived.is_set)
    key = seen["key"]
    FIGURES["notification"] = {
        **{name: value for name, value in seen.items() if name not in ("key", "delivery_rows")},
        "requests_received": seen["requests_received"].get(key, 0),
        "requests_answered": seen["requests_answered"].get(key, 0),
        "duplicates": sum(max(0, n - 1) for n in seen["requests_answered"].values()),
    }
    assert seen["alert_transitions"] == 1
    assert seen["delivery_rows_at_kill"] == 0
    assert seen["requests_answered"] == {key: 1}, "the receiver accepted the transition once"
    assert seen["requests_received"] == {key: 2}, "once cut off by the kill, once delivered"
    assert seen["delivery_rows"] == [(key, 1, True)]
    assert seen["bad_signatures"] == 0


def test_a_notification_killed_after_the_receiver_answered_comes_again_with_the_same_dedupe_key(
    spawn, broker, listener
):
    """The window no sender can close: the receiver said 200, the worker died before it could record that.

    Delivery is at least once, so the message is sent again. It carries the same dedupe_key and signature,
    by which the receiver drops the second copy; nothing else is doubled.
    """
    listener.mode = "stall"
    seen = redeliver_after_kill(spawn, broker, listener, "notify-answered", listener.arrived.is_set)
    key = seen["key"]
    FIGURES["notification_after_receipt"] = {
        **{name: value for name, value in seen.items() if name not in ("key", "delivery_rows")},
        "requests_received": seen["requests_received"].get(key, 0),
        "requests_answered": seen["requests_answered"].get(key, 0),
        "same_message_received_again": seen["requests_answered"].get(key, 0) - 1,
        "distinct_messages_per_transition": len(seen["requests_answered"]),
    }
    assert seen["alert_transitions"] == 1
    assert seen["delivery_rows_at_kill"] == 0, "the killed worker recorded nothing"
    assert seen["requests_answered"] == {key: 2}, "one transition, one dedupe key, taken twice by the receiver"
    assert seen["delivery_rows"] == [(key, 1, True)]
    assert seen["bad_signatures"] == 0


# --- Configuration apply ----------------------------------------------------------------------------


def call(port: int, method: str, path: str, token: str, timeout_s: float = 30.0) -> tuple[int, Any]:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        client.request(
            method, path, body=b"" if method == "POST" else None, headers={"Authorization": f"Bearer {token}"}
        )
        reply = client.getresponse()
        body = reply.read()
        return reply.status, json.loads(body) if body.startswith(b"{") else body
    finally:
        client.close()


def healthy(port: int) -> bool:
    try:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        client.request("GET", "/healthz")
        return client.getresponse().status == 200
    except OSError:
        return False


def gunicorn_workers(web: Process) -> list[int]:
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", web.log())]


def config_state(agent: Agent, recommendation: Recommendation) -> dict[str, Any]:
    recommendation.refresh_from_db()
    versions = list(
        AgentConfig.objects.filter(agent=agent, environment="production")
        .order_by("version")
        .values_list("version", flat=True)
    )
    current = configs.current(agent, "production")
    config_ids = [str(pk) for pk in AgentConfig.objects.filter(agent=agent).values_list("pk", flat=True)]
    return {
        "versions": versions,
        "current": current.settings_dict() if current else None,
        "recommendation": recommendation.status,
        "applied_config": recommendation.applied_config.version if recommendation.applied_config else None,
        "config_audit_entries": LogEntry.objects.filter(
            content_type__model="agentconfig", object_pk__in=config_ids
        ).count(),
        "recommendation_audit_entries": LogEntry.objects.filter(
            content_type__model="recommendation", object_pk=str(recommendation.pk), action=LogEntry.Action.UPDATE
        ).count(),
    }


def test_a_config_apply_killed_mid_transaction_leaves_the_previous_version_and_a_retry_applies_it_once(
    spawn, broker, engineer, payments
):
    agent = factories.agent("pay-bot", payments)
    before = {"prompt_cache": False, "timeout_ms": 30_000}
    configs.apply(agent, "production", before, engineer)
    recommendation = Recommendation.objects.create(
        agent=agent,
        environment="production",
        title="Turn on prompt caching",
        rationale="Most of the time is spent in the LLM with a repeated prompt.",
        changes={"prompt_cache": True, "timeout_ms": 12_000},
    )
    token = factories.token(engineer, ["automation", "read"])
    applied_before = config_state(agent, recommendation)
    port = free_port()
    web = spawn.web("web", port)
    wait_for("gunicorn to answer", lambda: healthy(port), watch=[web])
    first_worker = gunicorn_workers(web)[-1]
    path = f"/api/v1/recommendations/{recommendation.pk}/apply"

    outcome: dict[str, Any] = {}

    def apply_request() -> None:
        try:
            outcome["status"] = call(port, "POST", path, token)[0]
        except OSError as exc:
            outcome["error"] = type(exc).__name__

    holder = Holder()
    request = threading.Thread(target=apply_request, daemon=True)
    try:
        holder.hold("LOCK TABLE auditlog_logentry IN EXCLUSIVE MODE")
        request.start()
        blocked = wait_for(
            "the apply to insert the new version and wait on the audit table",
            lambda: waiting_on_lock("auditlog_logentry", also_holding="interventions_agentconfig"),
            watch=[web],
        )
        os.kill(first_worker, signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        holder.release()
    request.join(timeout=30)
    assert not request.is_alive()
    assert "status" not in outcome, "the killed worker answered nothing"
    wait_for("the killed worker's database session to end", lambda: backend_gone(blocked))

    after_kill = config_state(agent, recommendation)
    assert after_kill == applied_before, "the previous version, the recommendation still open, nothing audited"

    wait_for("gunicorn to boot a fresh worker", lambda: len(gunicorn_workers(web)) >= 2, watch=[web])
    wait_for("the fresh worker to answer", lambda: healthy(port), watch=[web])
    status, body = call(port, "POST", path, token)
    recovered_s = time.monotonic() - killed_at
    assert status == 200, body
    again, _ = call(port, "POST", path, token)
    served_status, served = call(port, "GET", "/api/v1/agents/pay-bot/config?environment=production", token)
    applied = config_state(agent, recommendation)

    FIGURES["config_apply"] = {
        "kills": 1,
        "recovered": int(status == 200 and applied["versions"] == [1, 2]),
        "killed_request_outcome": outcome.get("error", "answered"),
        "versions_after_kill": after_kill["versions"],
        "recommendation_after_kill": after_kill["recommendation"],
        "versions_after_retry": applied["versions"],
        "second_retry_status": again,
        "duplicates": len(applied["versions"]) - len(set(applied["versions"])) + int(again != 409),
        "time_to_recover_s": round(recovered_s, 2),
    }
    assert applied["versions"] == [1, 2]
    assert applied["current"] == applied_before["current"] | {"prompt_cache": True, "timeout_ms": 12_000}
    assert (applied["recommendation"], applied["applied_config"]) == ("applied", 2)
    assert applied["config_audit_entries"] == applied_before["config_audit_entries"] + 1
    assert applied["recommendation_audit_entries"] == applied_before["recommendation_audit_entries"] + 1
    assert again == 409, "a retry after success applies nothing twice"
    assert served_status == 200
    assert (served["version"], served["caching"]["prompt_cache"]) == (2, True)


# --- Two beat schedulers ------------------------------------------------------------------------------


def beat_sends(log: str, entry: str) -> int:
    return log.count(f"Sending due task {entry} ")


def results(logs: Sequence[str], task: str) -> list[str]:
    """The printed results of every successful run of `task` in these worker logs."""
    pattern = re.compile(rf"Task {re.escape(task)}\[[^\]]+\] succeeded in [\d.e-]+s: (.*)")
    return [match for log in logs for match in pattern.findall(log)]


def test_two_beat_schedulers_at_once_do_each_periodic_job_once(spawn, broker, listener, superuser, payments):
    factories.agent("pay-bot", payments)
    rules = firing_rules(listener, 3)
    now = datetime.now(UTC)
    ingested = ingest(records(["pay-bot"], 300, now, 3600, 30, seed=3), superuser)
    first, second = spawn.worker("beat-a", beat=True), spawn.worker("beat-b", beat=True)
    logs: Callable[[], list[str]] = lambda: [first.log(), second.log()]  # noqa: E731
    started = time.monotonic()
    batch = 0

    def evaluated_twice_with_traffic() -> bool:
        nonlocal ingested, batch
        # Traffic keeps arriving while both schedulers run: each tick has fresh marks to claim.
        if time.monotonic() - started > 2 * batch:
            batch += 1
            ingested += ingest(records(["pay-bot"], 20, datetime.now(UTC), 40, 1, seed=100 + batch), superuser)
        return len(results(logs(), "slos.tasks.evaluate_alerts")) >= 2

    wait_for(
        "both schedulers' alert evaluations",
        evaluated_twice_with_traffic,
        watch=[first, second],
        limit_s=TWO_BEATS_LIMIT_S,
    )
    wait_for(
        "the notices of the transitions",
        lambda: Delivery.objects.filter(ok=True).count() >= len(rules) and not DirtyBucket.objects.exists(),
        watch=[first, second],
    )
    ran_s = time.monotonic() - started
    first.stop()
    second.stop()

    logs_text = logs()
    ticks = results(logs_text, "perfops.metrics.tasks.rollup_tick")
    evaluations = [json.loads(r.replace("'", '"')) for r in results(logs_text, "slos.tasks.evaluate_alerts")]
    events = list(AlertEvent.objects.values_list("rule_id", "episode", "kind"))
    received, answered = Counter(listener.received), Counter(listener.answered)
    raw = raw_totals()
    mismatches = {view.name: mismatched(raw, rolled_totals(view)) for view in (View.TOTAL, View.FLEET, View.AGENT)}
    duplicates = (
        len(events)
        - len(set(events))
        + sum(max(0, n - 1) for n in received.values())
        + sum(max(0, n - 1) for n in Counter(Delivery.objects.filter(ok=True).values_list("key", flat=True)).values())
    )
    FIGURES["two_beats"] = {
        "schedulers": 2,
        "seconds": round(ran_s, 1),
        "evaluate_alerts_sent": [beat_sends(log, "evaluate-alerts") for log in logs_text],
        "rollup_ticks_sent": [beat_sends(log, "rollup-tick") for log in logs_text],
        "rollup_ticks_run": len(ticks),
        "rollup_ticks_skipped_for_the_lease": sum("another rollup run holds the lease" in t for t in ticks),
        "transitions_recorded_per_evaluation": [e["firing"] for e in evaluations],
        "alert_events": len(events),
        "notifications_received": sum(received.values()),
        "notifications_answered": sum(answered.values()),
        "traces_ingested": ingested,
        "duplicates": duplicates,
        "rollup_mismatched_buckets": sum(len(found) for found in mismatches.values()),
    }
    assert all(beat_sends(log, "evaluate-alerts") >= 1 for log in logs_text), "both schedulers sent the evaluation"
    assert all(beat_sends(log, "rollup-tick") >= 2 for log in logs_text)
    assert sum(e["firing"] for e in evaluations) == len(rules), "each transition recorded by one evaluation"
    assert sorted(events) == sorted((rule.pk, 1, AlertEvent.Kind.FIRING) for rule in rules)
    assert duplicates == 0
    assert sorted(answered.values()) == [1] * len(rules)
    assert ingested == sum(n for n, _, _ in raw.values())
    assert mismatches == {"TOTAL": [], "FLEET": [], "AGENT": []}
