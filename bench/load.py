"""Ingest under load for minutes while people read the dashboard, with the rollups and alert evaluation running.

    python bench/run.py load [--load-seconds 300] [--load-rate N] [--load-readers 3] [--workers 2]

The issue asks for "twice the benchmark rate". The benchmark rate is 55,000 traces/s: the 55 batches
of 1,000 a second that bench/ingest.py and the metrics steady state send (the ingest target is 50,000),
and that rate is this 2-core machine's ceiling (bench/ingest.py sends as fast as the server answers).
Twice it cannot be sustained here, so the benchmark measures it, and the sustained load, apart:

- probe: the ingest benchmark's closed loop (each of four clients sends its next batch when the last
  is answered) for a short while, with everything else running: what the server takes in these conditions;
- sustained: an open loop (Poisson arrivals at a fixed mean rate, not slowed by slow answers) at
  --load-rate, by default 80% of what the probe measured, for --load-seconds;
- overload: the same open loop at twice the benchmark rate (110,000 traces/s) for --load-seconds.
  Both open loops send from 64 connections (a fleet's exporters): an arrival waits at the client for
  a free one, and those still waiting when the window closes are counted as never sent.

All of it through real processes on 127.0.0.1: gunicorn (--workers), a Celery worker (concurrency 2)
and Celery beat on a Redis database of its own, a scratch PostgreSQL database holding the alerts
benchmark's rule set (a latency SLO on each of the 200 agents, an availability SLO and a P95 rule on
the department), and dashboard readers: viewers who log in and load the fleet page and every htmx
panel on it, again and again. Each batch is 1,000 live records (started in the last 20 s) with
fresh trace ids. Where the server's autovacuum is off (this machine's), a stand-in does its work (see
Autovacuum). After each phase the load stops and the benchmark waits for the queues to drain:
no dirty rollup buckets and no task waiting in Redis. Reported per phase: offered, sent and accepted
rates, request latency (from sending; and from the scheduled arrival, which includes waiting for a
connection), the status histogram, accepted against stored rows, the rollup's count against stored,
the dashboard's statuses and latency, the drain time, peak RSS, and the cores each part used (and
what else ran on the machine meanwhile).
"""

from __future__ import annotations

import argparse
import html
import http.client
import itertools
import math
import os
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
import requests
from ingest import (
    AGENTS,
    BATCH,
    CLIENT_THREADS,
    _count,
    _free_port,
    _manage,
    _record,
    _server,
    post_all,
    prepare_database,
)

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DATABASE = "postgres://postgres@127.0.0.1:5432/perfops_bench_load"
REDIS = "redis://127.0.0.1:6379/13"
VAR_DIR = ROOT / "var" / "bench-load"
BENCHMARK_RATE = 55_000  # traces/s: the 55 batches of 1,000 a second of bench/ingest.py and the steady state
SUSTAINED_SHARE = 0.8  # of the probe's rate, when --load-rate is not given
PROBE_S = 30.0
CONNECTIONS = 64  # client connections (an agent fleet's exporters): at most this many requests in flight
READERS = 3
READER_PAUSE_S = 2.0  # between page loads of one reader
READER_QUERIES = ("", "range=1h", "department=bench")
DRAIN_LIMIT_S = 600.0
ID_MARKER = b"d0d0cafef00dbeef"  # the first half of every trace id in a template, replaced per batch
READER_PASSWORD = secrets.token_urlsafe(16)  # the viewers of this run


def _percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 / p95 / p99 / max in milliseconds (nearest rank)."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)

    return {"p50_ms": rank(0.5), "p95_ms": rank(0.95), "p99_ms": rank(0.99), "max_ms": round(1000 * ordered[-1], 1)}


# --- the batches ----------------------------------------------------------------------------------------


class Batches:
    """Bodies of 1,000 live records: a few templates, rebuilt every few seconds, each batch with fresh trace ids.

    Building a batch takes ~15 ms of Python; stamping a template's ids takes ~0.3 ms, so the client
    stays a small share of the two cores it shares with the server.
    """

    TEMPLATES = 4
    REFRESH_S = 5.0

    def __init__(self) -> None:
        self._nonce = secrets.randbits(32)
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._templates: list[bytes] = []
        self._built_at = -math.inf

    def _build(self) -> None:
        now = datetime.now(UTC)
        templates = []
        for t in range(self.TEMPLATES):
            records = [_record(t * BATCH + i, now) for i in range(BATCH)]
            for i, record in enumerate(records):
                record["trace_id"] = f"{ID_MARKER.decode()}{i:016x}"
                record["started_at"] = (now - timedelta(seconds=i % 20)).isoformat()
            templates.append(orjson.dumps({"traces": records}))
        self._templates = templates
        self._built_at = time.monotonic()

    def next(self) -> bytes:
        with self._lock:
            if time.monotonic() - self._built_at > self.REFRESH_S:
                self._build()
            number = next(self._numbers)
            template = self._templates[number % self.TEMPLATES]
        return template.replace(ID_MARKER, b"%08x%08x" % (self._nonce, number))


# --- ingest clients -------------------------------------------------------------------------------------


@dataclass
class Sent:
    """What the ingest clients of one phase saw."""

    latencies: list[float] = field(default_factory=list)  # from sending to the answer
    lags: list[float] = field(default_factory=list)  # from the scheduled arrival to the answer
    statuses: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


def _post(port: int, token: str, body: bytes) -> tuple[int, bytes]:
    """One batch on a connection of its own (gunicorn's sync workers close each connection after answering)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(
            "POST", "/api/v1/traces", body, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def offer(
    port: int, token: str, batches: Batches, rate: float | None, seconds: float, connections: int
) -> dict[str, Any]:
    """Send batches for `seconds`: Poisson arrivals at `rate` traces/s (open loop), or back to back when None."""
    rng = random.Random(secrets.randbits(32))
    arrivals: list[float] = []
    if rate is not None:
        mean_gap = BATCH / rate
        moment = rng.expovariate(1 / mean_gap)
        while moment < seconds:
            arrivals.append(moment)
            moment += rng.expovariate(1 / mean_gap)
    sent = Sent()
    lock = threading.Lock()
    indexes = itertools.count()
    began = time.perf_counter()

    def client() -> None:
        while True:
            index = next(indexes)
            if rate is None:
                due = time.perf_counter()
            else:
                if index >= len(arrivals):
                    return
                due = began + arrivals[index]
                if due > time.perf_counter():
                    time.sleep(due - time.perf_counter())
            if time.perf_counter() - began >= seconds:
                return  # the window closed with this arrival still waiting for a connection
            body = batches.next()
            start = time.perf_counter()
            try:
                status, payload = _post(port, token, body)
            except OSError as exc:
                status, payload = 0, type(exc).__name__.encode()
            end = time.perf_counter()
            with lock:
                sent.latencies.append(end - start)
                sent.lags.append(end - due)
                sent.statuses[str(status) if status else f"no answer ({payload.decode()})"] += 1
                if status == 200:
                    result = orjson.loads(payload)
                    sent.accepted += result["accepted"]
                    sent.duplicates += result["duplicates"]
                    sent.rejected += len(result["rejected"])

    threads = [
        threading.Thread(target=client, daemon=True) for _ in range(CLIENT_THREADS if rate is None else connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    requests_sent = len(sent.latencies)
    offered = len(arrivals) if rate is not None else requests_sent
    server_errors = sum(n for code, n in sent.statuses.items() if code.startswith("5"))
    return {
        "offered_traces_per_s": rate,
        "seconds": round(wall, 1),
        "batches_offered": offered,
        "batches_sent": requests_sent,
        "batches_not_sent": offered - requests_sent,
        "sent_traces_per_s": round(requests_sent * BATCH / wall),
        "accepted_traces_per_s": round(sent.accepted / wall),
        "accepted": sent.accepted,
        "duplicates": sent.duplicates,
        "rejected": sent.rejected,
        "statuses": dict(sorted(sent.statuses.items())),
        "server_errors": server_errors,
        "latency": _percentiles(sent.latencies),
        "latency_from_arrival": _percentiles(sent.lags),
    }


# --- dashboard readers ----------------------------------------------------------------------------------


class Readers:
    """Viewers who log in and load the fleet page and each of its htmx panels in a loop, tagged by phase."""

    def __init__(self, port: int, count: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.phase = "setup"
        self.samples: list[tuple[str, str, str, float]] = []  # (phase, page or panel, status, seconds)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, args=(n, READER_QUERIES[n % len(READER_QUERIES)]), daemon=True)
            for n in range(count)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=150)

    def _get(self, session: requests.Session, kind: str, url: str, **headers: str) -> requests.Response | None:
        began = time.perf_counter()
        response = None
        try:
            response = session.get(url, headers=headers, timeout=120)
            status = str(response.status_code)
        except requests.RequestException as exc:
            status = f"no answer ({type(exc).__name__})"
        self._record(kind, status, time.perf_counter() - began)
        return response

    def _record(self, kind: str, status: str, seconds: float) -> None:
        with self._lock:
            self.samples.append((self.phase, kind, status, seconds))

    def _login(self, number: int) -> requests.Session:
        session = requests.Session()
        form = session.get(f"{self.base}/admin/login/", timeout=120)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, "no CSRF token on the login page"
        answer = session.post(
            f"{self.base}/admin/login/?next=/dashboard/performance/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": f"reader-{number}",
                "password": READER_PASSWORD,
                "next": "/dashboard/performance/",
            },
            allow_redirects=False,
            timeout=120,
        )
        assert answer.status_code == 302, f"reader-{number} could not log in: {answer.status_code}"
        return session

    def _read(self, number: int, query: str) -> None:
        try:
            session = self._login(number)
        except (AssertionError, requests.RequestException) as exc:
            self._record("login", f"login failed ({exc})", 0.0)
            return
        while not self._stop.is_set():
            page = self._get(session, "page", f"{self.base}/dashboard/performance/?{query}")
            if page is not None and page.status_code == 200:
                for url in re.findall(r'hx-get="([^"]*/panels/[^"]*)"', page.text):
                    self._get(session, "panel", self.base + html.unescape(url), **{"HX-Request": "true"})
            self._stop.wait(READER_PAUSE_S)

    def summary(self, phase: str) -> dict[str, Any]:
        with self._lock:
            rows = [row for row in self.samples if row[0] == phase]
        out: dict[str, Any] = {"requests": len(rows), "statuses": dict(sorted(Counter(r[2] for r in rows).items()))}
        out["server_errors"] = sum(n for code, n in out["statuses"].items() if code.startswith("5"))
        for kind in ("page", "panel"):
            out[kind] = {
                "requests": sum(1 for r in rows if r[1] == kind),
                **_percentiles([r[3] for r in rows if r[1] == kind]),
            }
        return out


# --- the processes and the machine ----------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, CPU ticks) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return table


def _descendants(root: int, table: dict[int, tuple[int, str, int]]) -> set[int]:
    found = {root}
    grew = True
    while grew:
        more = {pid for pid, (parent, _, _) in table.items() if parent in found} - found
        grew = bool(more)
        found |= more
    return found


def _peak_rss_mb(pid: int) -> float:
    """The peak resident memory of a process (the kernel's VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the machine."""
    numbers = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = numbers[3] + numbers[4]
    return sum(numbers) - idle, sum(numbers)


class Monitor:
    """Once a second: the rollup backlog, the Celery queue, and CPU by role (ours, PostgreSQL, others)."""

    def __init__(self, database_url: str, broker: redis.Redis, roots: dict[str, int]) -> None:
        self.database_url = database_url
        self.database = database_url.rsplit("/", 1)[1]
        self.broker = broker
        self.roots = roots  # role -> root pid (gunicorn master, celery worker, beat, this client)
        self.phase = "setup"
        self.samples: list[dict[str, Any]] = []
        self._cpu: dict[str, dict[int, list[int]]] = {}  # phase -> pid -> [first ticks seen, last ticks seen]
        self._roles: dict[str, dict[int, str]] = {}
        self._names: dict[int, str] = {}
        self._machine: dict[str, list[tuple[int, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def backlog(self, conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
        """(dirty rollup buckets, tasks waiting in Redis, tasks taken but not acknowledged)."""
        row = conn.execute("SELECT count(*) FROM metrics_dirtybucket").fetchone()
        waiting = sum(int(self.broker.llen(key)) for key in self.broker.scan_iter("celery*", _type="list"))
        return int(row[0]) if row else 0, waiting, int(self.broker.hlen("unacked"))

    def _run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self._stop.is_set():
                self._sample(conn)
                self._stop.wait(1.0)

    def _sample(self, conn: psycopg.Connection[Any]) -> None:
        phase = self.phase
        table = _proc_table()
        ours = {pid for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.database])}
        # The client is this process alone: the server, worker and beat are its children.
        roles: dict[int, str] = {os.getpid(): "client"}
        for role, root in self.roots.items():
            for pid in _descendants(root, table) if root != os.getpid() else ():
                roles[pid] = role
        for pid, (_, name, _) in table.items():
            if pid not in roles:
                roles[pid] = (
                    "postgres (this database)"
                    if pid in ours
                    else "postgres (other databases, shared)"
                    if name == "postgres"
                    else "other processes"
                )
        cpu = self._cpu.setdefault(phase, {})
        role_of = self._roles.setdefault(phase, {})
        for pid, (_, name, ticks) in table.items():
            # A process seen first in this phase started in it (or the phase began): count it from its first sample.
            cpu.setdefault(pid, [ticks, ticks])[1] = ticks
            role_of[pid] = roles[pid]
            self._names[pid] = name
        self._machine.setdefault(phase, []).append(_machine_ticks())
        dirty, waiting, unacked = self.backlog(conn)
        self.samples.append({"t": time.time(), "phase": phase, "dirty": dirty, "queued": waiting, "unacked": unacked})

    def cpu(self, phase: str) -> dict[str, Any]:
        """Cores used by each role during a phase, and the machine's busy share."""
        machine = self._machine.get(phase, [])
        if len(machine) < 2:
            return {}
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        wall_ticks = (machine[-1][1] - machine[0][1]) / (os.cpu_count() or 1)
        by_role: Counter[str] = Counter()
        others: Counter[str] = Counter()  # what else ran on the machine, by command name
        for pid, (first, last) in self._cpu[phase].items():
            by_role[self._roles[phase][pid]] += last - first
            if self._roles[phase][pid] == "other processes":
                others[self._names[pid]] += last - first
        busy = (machine[-1][0] - machine[0][0]) / (machine[-1][1] - machine[0][1])
        return {
            "cores_used": {role: round(ticks / wall_ticks, 2) for role, ticks in by_role.most_common() if ticks},
            "other_commands": {name: round(ticks / wall_ticks, 2) for name, ticks in others.most_common(4) if ticks},
            "machine_busy": round(busy, 3),
            "seconds": round(wall_ticks / ticks_per_s, 1),
        }

    def peaks(self, phase: str) -> dict[str, int]:
        rows = [s for s in self.samples if s["phase"] == phase]
        return {key: max((s[key] for s in rows), default=0) for key in ("dirty", "queued", "unacked")}


def _final_peak_rss(roots: dict[str, int]) -> dict[str, list[float]]:
    """Each process's own peak resident memory, largest first, by role."""
    table = _proc_table()
    return {
        role: sorted(
            (round(_peak_rss_mb(pid), 1) for pid in (_descendants(root, table) if root != os.getpid() else {root})),
            reverse=True,
        )
        for role, root in roots.items()
        if root in table
    }


class Autovacuum:
    """What autovacuum would do, on a server where it is off (as on this machine's shared PostgreSQL).

    Without it the day's trace partition keeps the statistics of when it was empty: the slow-request
    list then reads every row of the window (66 s on 7M rows, 3 ms after ANALYZE), and the deleted
    dirty-bucket notes are never cleared. So once every autovacuum_naptime this VACUUMs or ANALYZEs
    each table of the scratch database that autovacuum's own thresholds pick, at its cost-based pace.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.runs: Counter[str] = Counter()
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._conn: psycopg.Connection[Any] | None = None

    def start(self) -> bool:
        """Start unless the server's own autovacuum is on."""
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SHOW autovacuum").fetchone()
        if row and row[0] == "on":
            return False
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._conn is not None:
            self._conn.cancel()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            self._conn = conn
            setting = {
                name: float(value)
                for name, value in conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name LIKE 'autovacuum%' OR name = 'vacuum_cost_limit'"
                )
                if value.lstrip("-").replace(".", "", 1).isdigit()
            }
            limit = setting["autovacuum_vacuum_cost_limit"]
            conn.execute(f"SET vacuum_cost_delay = {setting['autovacuum_vacuum_cost_delay']}")
            conn.execute(f"SET vacuum_cost_limit = {int(limit if limit > 0 else setting['vacuum_cost_limit'])}")
            while not self._stop.wait(setting["autovacuum_naptime"]):
                try:
                    self._pass(conn, setting)
                except psycopg.errors.QueryCanceled:
                    return

    def _pass(self, conn: psycopg.Connection[Any], setting: dict[str, float]) -> None:
        tables = conn.execute(
            "SELECT s.relname, greatest(c.reltuples, 0), s.n_dead_tup, s.n_ins_since_vacuum, s.n_mod_since_analyze "
            "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
        ).fetchall()
        for name, tuples, dead, inserted, modified in tables:
            vacuum = dead > setting["autovacuum_vacuum_threshold"] + setting["autovacuum_vacuum_scale_factor"] * tuples
            vacuum |= inserted > (
                setting["autovacuum_vacuum_insert_threshold"]
                + setting["autovacuum_vacuum_insert_scale_factor"] * tuples
            )
            analyze = (
                modified > setting["autovacuum_analyze_threshold"] + setting["autovacuum_analyze_scale_factor"] * tuples
            )
            if self._stop.is_set() or not (vacuum or analyze):
                continue
            command = "VACUUM (ANALYZE)" if vacuum and analyze else "VACUUM" if vacuum else "ANALYZE"
            began = time.perf_counter()
            conn.execute(f'{command} "{name}"')
            self.seconds += time.perf_counter() - began
            self.runs[command] += 1


# --- setup ----------------------------------------------------------------------------------------------


def prepare(database_url: str, readers: int) -> tuple[dict[str, str], str]:
    """The ingest benchmark's scratch database, plus dashboard viewers and the alerts benchmark's rules."""
    env, token = prepare_database(database_url)
    env = {**env, "REDIS_URL": REDIS, "PERFOPS_VAR_DIR": str(VAR_DIR)}
    script = (
        "from django.contrib.auth.models import Group, User;"
        "from perfops.access.roles import Role;"
        "from perfops.telemetry.models import Agent, Department;"
        "from slos.models import SLO, AlertRule;"
        "d = Department.objects.get(slug='bench');"
        f"people = [User.objects.create_user(f'reader-{{n}}', password='{READER_PASSWORD}', is_staff=True)"
        f" for n in range({readers})];"
        "[p.groups.add(Group.objects.get(name=Role.VIEWER)) for p in people];"
        "[d.members.add(p) for p in people];"
        "[SLO.objects.create(name=f'{a.slug} latency', scope='agent', agent=a, department=d, kind='latency',"
        " threshold_ms=1500, target=0.95) for a in Agent.objects.all()];"
        "SLO.objects.create(name='bench availability', scope='department', department=d, kind='availability',"
        " target=0.99, window_days=28);"
        "AlertRule.objects.create(name='bench p95', metric='latency', quantile=0.95, scope='department',"
        " department=d, threshold=3000, window_s=600, severity='ticket');"
        "print(AlertRule.objects.count())"
    )
    rules = _manage(env, "shell", "-c", script).strip().splitlines()[-1]
    print(f"   {readers} viewers, {rules} alert rules", flush=True)
    _manage(env, "collectstatic", "--no-input", "--verbosity", "0")  # the page links hashed assets
    return env, token


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-m", "celery", "-A", "perfops", *args, "--loglevel", "WARNING"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def drain(monitor: Monitor, database_url: str) -> dict[str, Any]:
    """Wait until no dirty rollup bucket and no queued task is left; then compare the rollup with the rows."""
    ended = time.perf_counter()
    drained = None
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.perf_counter() - ended < DRAIN_LIMIT_S:
            dirty, waiting, _ = monitor.backlog(conn)
            if not dirty and not waiting:
                drained = round(time.perf_counter() - ended, 1)
                break
            time.sleep(0.5)
        row = conn.execute(
            "SELECT coalesce(sum(count), 0) FROM metrics_rollup WHERE view = 5 AND grain_s = 30"
        ).fetchone()
        rolled = int(row[0]) if row else 0
    return {"drain_s": drained, "rolled_up": rolled, "stored_total": _count(database_url)}


# --- the benchmark --------------------------------------------------------------------------------------


@dataclass
class Rig:
    """The running server and what watches it."""

    port: int
    token: str
    database_url: str
    batches: Batches
    monitor: Monitor
    readers: Readers

    def phase(self, name: str, rate: float | None, seconds: float) -> dict[str, Any]:
        """One load phase, then the wait for the queues to drain; what the clients, readers and monitor saw."""
        what = f"closed loop, {CLIENT_THREADS} clients" if rate is None else f"{rate:,.0f} traces/s offered"
        print(f"   {name}: {what} for {seconds:.0f} s ...", flush=True)
        self.monitor.phase = self.readers.phase = name
        before = _count(self.database_url)
        outcome = offer(self.port, self.token, self.batches, rate, seconds, CONNECTIONS)
        outcome["stored"] = _count(self.database_url) - before
        outcome["cpu"] = self.monitor.cpu(name)
        outcome["backlog_peak"] = self.monitor.peaks(name)
        outcome["dashboard"] = self.readers.summary(name)
        self.monitor.phase = self.readers.phase = f"{name} drain"
        outcome.update(drain(self.monitor, self.database_url))
        outcome["dashboard_during_drain"] = self.readers.summary(f"{name} drain")
        _report_phase(name, outcome)
        return outcome


def run(args: argparse.Namespace) -> dict[str, Any]:
    database_url = getattr(args, "load_database_url", None) or DATABASE
    seconds = float(getattr(args, "load_seconds", None) or 300.0)
    reader_count = int(getattr(args, "load_readers", None) or READERS)
    chosen_rate = getattr(args, "load_rate", None)
    probe_s = min(PROBE_S, seconds)
    print(
        f"== load: gunicorn x{args.workers}, Celery worker + beat, {reader_count} dashboard readers, "
        f"{seconds:.0f} s a phase, PostgreSQL {database_url}, Redis {REDIS}",
        flush=True,
    )
    with open("/proc/loadavg") as handle:
        load_before = handle.read().split()[:3]
    print(f"   load average before: {' '.join(load_before)}", flush=True)
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    env, token = prepare(database_url, reader_count)
    broker = redis.Redis.from_url(REDIS)
    broker.flushdb()
    (VAR_DIR / "celerybeat-schedule").unlink(missing_ok=True)
    port = _free_port()
    server = _server(env, port, args.workers)
    worker = _start(env, "worker", "--concurrency", "2")
    beat = _start(env, "beat")
    roots = {"gunicorn": server.pid, "celery worker": worker.pid, "celery beat": beat.pid, "client": os.getpid()}
    autovacuum = Autovacuum(database_url)
    rig = Rig(port, token, database_url, Batches(), Monitor(database_url, broker, roots), Readers(port, reader_count))
    results: dict[str, Any] = {
        "workers": args.workers,
        "batch": BATCH,
        "agents": AGENTS,
        "connections": CONNECTIONS,
        "readers": reader_count,
        "benchmark_rate": BENCHMARK_RATE,
        "load_average_before": load_before,
        "phases": {},
    }
    try:
        warm_up = [rig.batches.next() for _ in range(4)]
        post_all(port, "/api/v1/traces", token, warm_up, "application/json")
        rig.monitor.start()
        rig.readers.start()
        results["autovacuum"] = "the server's" if not autovacuum.start() else "this benchmark's stand-in"
        probe = results["phases"]["probe"] = rig.phase("probe", None, probe_s)
        if chosen_rate:
            sustained, results["sustained_rate_from"] = float(chosen_rate), "--load-rate"
        else:
            sustained = round(SUSTAINED_SHARE * probe["accepted_traces_per_s"], -3)
            results["sustained_rate_from"] = f"{SUSTAINED_SHARE:.0%} of the probe"
        for name, rate in (("sustained", sustained), ("overload", 2.0 * BENCHMARK_RATE)):
            results["phases"][name] = rig.phase(name, rate, seconds)
        rig.readers.stop()
        results["peak_rss_mb"] = _final_peak_rss(roots)
    finally:
        rig.readers.stop()
        rig.monitor.stop()
        autovacuum.stop()
        results["autovacuum_runs"] = {**autovacuum.runs, "seconds": round(autovacuum.seconds, 1)}
        for process in (beat, worker, server):
            process.terminate()
        for process in (beat, worker, server):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    _report_table(results)
    return results


def _report_phase(name: str, o: dict[str, Any]) -> None:
    lat, dash = o["latency"], o["dashboard"]
    drained = "NOT" if o["drain_s"] is None else f"in {o['drain_s']} s"
    print(
        f"     {name}: {o['accepted_traces_per_s']:,} traces/s accepted, statuses {o['statuses']}, "
        f"p50/p95/p99 {lat['p50_ms']}/{lat['p95_ms']}/{lat['p99_ms']} ms, accepted {o['accepted']:,} stored "
        f"{o['stored']:,}; dashboard {dash['statuses']}, panel p95 {dash['panel']['p95_ms']} ms; queues drained "
        f"{drained}, rolled up {o['rolled_up']:,} of {o['stored_total']:,}",
        flush=True,
    )


def _ms(figures: dict[str, float | None], *keys: str) -> str:
    return " / ".join("-" if figures[key] is None else f"{figures[key]:,.0f}" for key in keys)


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{code}: {count:,}" for code, count in statuses.items())


TABLE: tuple[tuple[str, Any], ...] = (
    ("offered (traces/s)", lambda p: f"{p['offered_traces_per_s']:,.0f}" if p["offered_traces_per_s"] else "as fast"),
    ("sent / accepted (traces/s)", lambda p: f"{p['sent_traces_per_s']:,} / {p['accepted_traces_per_s']:,}"),
    ("batches sent / never sent", lambda p: f"{p['batches_sent']:,} / {p['batches_not_sent']:,}"),
    ("ingest p50 / p95 / p99 (ms)", lambda p: _ms(p["latency"], "p50_ms", "p95_ms", "p99_ms")),
    ("  from the arrival p50 / p95", lambda p: _ms(p["latency_from_arrival"], "p50_ms", "p95_ms")),
    ("ingest statuses", lambda p: _statuses(p["statuses"])),
    ("ingest 5xx", lambda p: f"{p['server_errors']:,}"),
    ("accepted / stored", lambda p: f"{p['accepted']:,} / {p['stored']:,}"),
    ("dashboard statuses", lambda p: _statuses(p["dashboard"]["statuses"])),
    ("dashboard page p50 / p95 (ms)", lambda p: _ms(p["dashboard"]["page"], "p50_ms", "p95_ms")),
    ("dashboard panel p50 / p95 (ms)", lambda p: _ms(p["dashboard"]["panel"], "p50_ms", "p95_ms")),
    ("peak dirty buckets / queued / running", lambda p: " / ".join(f"{v:,}" for v in p["backlog_peak"].values())),
    ("queues drained after (s)", lambda p: "NOT" if p["drain_s"] is None else f"{p['drain_s']:.0f}"),
    ("rolled up / stored (so far)", lambda p: f"{p['rolled_up']:,} / {p['stored_total']:,}"),
    ("machine busy", lambda p: f"{100 * p['cpu'].get('machine_busy', 0):.0f}%"),
)


def _report_table(results: dict[str, Any]) -> None:
    phases = results["phases"]
    rows = [(label, [cell(p) for p in phases.values()]) for label, cell in TABLE]
    roles = sorted({role for p in phases.values() for role in p["cpu"].get("cores_used", {})})
    rows += [
        (f"  cores: {r}", [f"{p['cpu'].get('cores_used', {}).get(r, 0):.2f}" for p in phases.values()]) for r in roles
    ]
    width = max(len(label) for label, _ in rows)
    columns = [max(len(name), *(len(values[i]) for _, values in rows)) for i, name in enumerate(phases)]
    print(f"\n   {'':{width}}  " + "  ".join(f"{name:>{w}}" for name, w in zip(phases, columns, strict=True)))
    for label, values in rows:
        print(f"   {label:{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, columns, strict=True)))
    for name, phase in phases.items():
        print(f"   other commands during {name} (cores): {phase['cpu'].get('other_commands', {})}")
    print(f"   peak RSS of each process (MB): {results.get('peak_rss_mb')}")
    print(f"   autovacuum: {results.get('autovacuum')}, {results.get('autovacuum_runs')}")
