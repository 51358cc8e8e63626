"""Load tests (A4.6): schedule, cancel, run with an open-model arrival rate, stop, report against the SLOs.

The runner sends request i at its intended time t_i of the arrival schedule (constant rate after an
optional linear ramp), whether or not earlier requests have answered. Each latency runs from t_i to
the answer, so when the target (or the concurrency limit) makes requests wait, the wait counts: a
slow target cannot hide behind fewer requests (coordinated omission). A run is claimed with a
conditional update (scheduled -> running), so the Celery task at the scheduled time and the beat
sweeper that starts overdue tests cannot both run it; a cancelled test is never claimed.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.db import close_old_connections
from django.utils import timezone

from interventions.models import LoadTest
from perfops import netguard
from perfops.access.audit import record_update
from perfops.metrics.sketch import Sketch

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0


def schedule_times(rate: float, ramp_s: float, duration_s: float) -> Iterator[float]:
    """Intended send offsets (seconds from the start): rate(t) = rate * t / ramp during the ramp, then rate.

    Arrival i is where the integral of rate(t) reaches i + 1, so the count over the test is exact.
    """
    full = rate * (duration_s - ramp_s) + rate * ramp_s / 2
    i = 0
    while i + 1 <= full + 1e-9:
        area = i + 1
        if ramp_s > 0 and area <= rate * ramp_s / 2:
            t = math.sqrt(2 * area * ramp_s / rate)  # area = rate * t^2 / (2 * ramp)
        else:
            t = ramp_s + (area - rate * ramp_s / 2) / rate
        yield t
        i += 1


def cancel(test: LoadTest, user: Any) -> bool:
    """Cancel a test that has not started: it will never send a request."""
    changed = LoadTest.objects.filter(pk=test.pk, status=LoadTest.Status.SCHEDULED).update(
        status=LoadTest.Status.CANCELLED, finished_at=timezone.now()
    )
    if changed:
        test.refresh_from_db()
        record_update(test, user, {"status": ("scheduled", "cancelled"), "finished_at": (None, test.finished_at)})
    return bool(changed)


def stop(test: LoadTest, user: Any) -> bool:
    """Ask a running test to stop: it ends within about a second and keeps what it measured."""
    changed = LoadTest.objects.filter(pk=test.pk, status=LoadTest.Status.RUNNING, stop_requested=False).update(
        stop_requested=True
    )
    if changed:
        record_update(test, user, {"stop_requested": (False, True)})
    return bool(changed)


def start_due(now: datetime | None = None) -> list[int]:
    """Tests whose time has come (the beat sweeper): each is run by the worker that claims it."""
    from interventions.tasks import run_load_test

    now = now or timezone.now()
    due = list(
        LoadTest.objects.filter(status=LoadTest.Status.SCHEDULED, scheduled_at__lte=now).values_list("pk", flat=True)
    )
    for pk in due:
        run_load_test.delay(pk)
    return due


def claim(test_id: int, now: datetime) -> LoadTest | None:
    changed = LoadTest.objects.filter(
        pk=test_id, status=LoadTest.Status.SCHEDULED, scheduled_at__lte=now + timedelta(seconds=1)
    ).update(status=LoadTest.Status.RUNNING, started_at=now)
    return LoadTest.objects.select_related("agent").get(pk=test_id) if changed else None


class _Tally:
    """What came back, shared by the sending threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.codes: Counter[str] = Counter()
        self.failures = 0
        self.ok_latencies: list[float] = []

    def add(self, latency_ms: float, code: str, ok: bool) -> None:
        with self.lock:
            self.latencies.append(latency_ms)
            self.codes[code] += 1
            if ok:
                self.ok_latencies.append(latency_ms)
            else:
                self.failures += 1


def run(test_id: int, *, now: datetime | None = None) -> str:
    """Run a scheduled test if it is due and nobody else has claimed it; returns its final status."""
    test = claim(test_id, now or timezone.now())
    if test is None:
        return LoadTest.objects.filter(pk=test_id).values_list("status", flat=True).first() or "missing"
    try:
        target = netguard.check_url(test.target_url)
    except netguard.UnsafeURL as exc:
        _finish(test, LoadTest.Status.FAILED, None, f"refused: {exc}")
        return LoadTest.Status.FAILED
    body = json.dumps(test.request_template or {}).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "perfops-loadtest",
        "X-Perfops-Load-Test": str(test.pk),
    }
    tally = _Tally()
    slots = threading.BoundedSemaphore(test.concurrency)
    stop_flag = threading.Event()

    def one(intended: float) -> None:
        with slots:
            try:
                reply = netguard.send_to(target, body, headers, timeout_s=test.timeout_s)
                code, ok = str(reply.status), 200 <= reply.status < 300
            except OSError as exc:
                code, ok = type(exc).__name__, False
        tally.add((time.monotonic() - intended) * 1000, code, ok)

    started = time.monotonic()
    sent = 0
    last_progress = started
    with ThreadPoolExecutor(max_workers=test.concurrency + 1, thread_name_prefix=f"loadtest-{test.pk}") as pool:
        for offset in schedule_times(test.rate_rps, test.ramp_s, test.duration_s):
            intended = started + offset
            wait = intended - time.monotonic()
            while wait > 0 and not stop_flag.is_set():
                time.sleep(min(wait, 0.05))
                wait = intended - time.monotonic()
                if time.monotonic() - last_progress >= PROGRESS_EVERY_S:
                    last_progress = time.monotonic()
                    _progress(test, sent, tally, stop_flag)
            if stop_flag.is_set():
                break
            pool.submit(one, intended)
            sent += 1
            if time.monotonic() - last_progress >= PROGRESS_EVERY_S:
                last_progress = time.monotonic()
                _progress(test, sent, tally, stop_flag)
        send_window = time.monotonic() - started
    elapsed = time.monotonic() - started
    status = LoadTest.Status.STOPPED if stop_flag.is_set() else LoadTest.Status.COMPLETED
    _finish(test, status, _results(test, sent, tally, send_window, elapsed), "")
    return status


def _progress(test: LoadTest, sent: int, tally: _Tally, stop_flag: threading.Event) -> None:
    with tally.lock:
        completed, failures = len(tally.latencies), tally.failures
    LoadTest.objects.filter(pk=test.pk).update(sent=sent, completed=completed, failures=failures)
    if LoadTest.objects.filter(pk=test.pk, stop_requested=True).exists():
        stop_flag.set()


def _results(test: LoadTest, sent: int, tally: _Tally, send_window: float, elapsed: float) -> dict[str, Any]:
    latencies = np.asarray(tally.latencies, dtype=np.float64)
    sketch = Sketch.of(latencies)
    qs = (0.5, 0.9, 0.95, 0.99)
    values = sketch.quantiles(qs)
    return {
        "sent": sent,
        "completed": len(latencies),
        "failures": tally.failures,
        "error_rate": round(tally.failures / len(latencies), 6) if len(latencies) else None,
        "intended_rate_rps": test.rate_rps,
        "achieved_rate_rps": round(sent / send_window, 3) if send_window > 0 else None,
        "send_window_s": round(send_window, 3),
        "elapsed_s": round(elapsed, 3),
        "latency_ms": {
            **{f"p{q * 100:g}": None if v is None else round(v, 2) for q, v in zip(qs, values, strict=True)},
            "mean": round(float(latencies.mean()), 2) if len(latencies) else None,
            "max": round(float(latencies.max()), 2) if len(latencies) else None,
        },
        "status_codes": dict(tally.codes.most_common()),
        # Mergeable sketches of every latency and of the successful ones (the SLOs' good events).
        "sketch": sketch.encode().hex(),
        "ok_sketch": Sketch.of(np.asarray(tally.ok_latencies, dtype=np.float64)).encode().hex(),
        "slo": [],
    }


def _finish(test: LoadTest, status: str, results: dict[str, Any] | None, detail: str) -> None:
    if results is not None:
        results["slo"] = compare_with_slos(test, results)
    LoadTest.objects.filter(pk=test.pk).update(
        status=status,
        finished_at=timezone.now(),
        results=results,
        detail=detail[:300],
        sent=(results or {}).get("sent", 0),
        completed=(results or {}).get("completed", 0),
        failures=(results or {}).get("failures", 0),
    )
    test.refresh_from_db()
    # One entry for the whole run, by the system: the claim (scheduled -> running) wrote none.
    record_update(
        test,
        None,
        {
            "status": (LoadTest.Status.SCHEDULED, status),
            "started_at": (None, test.started_at),
            "finished_at": (None, test.finished_at),
            "detail": ("", test.detail),
        },
    )
    if results is not None:
        _alert(test, results)


def compare_with_slos(test: LoadTest, results: dict[str, Any]) -> list[dict[str, Any]]:
    """The agent's SLOs in the test's environment, judged on the test's own requests."""
    from django.db.models import Q

    from slos.models import SLO

    out: list[dict[str, Any]] = []
    total = results["completed"]
    if not total:
        return out
    covering = Q(agent=test.agent) | Q(scope=SLO.Scope.DEPARTMENT, department_id=test.agent.department_id)
    if test.agent.team_id is not None:
        covering |= Q(scope=SLO.Scope.TEAM, team_id=test.agent.team_id)
    slos = SLO.objects.filter(covering, environment=test.environment)
    ok = Sketch.decode(bytes.fromhex(results["ok_sketch"]), 0.0, math.inf)
    for slo in slos.distinct():
        if slo.kind == SLO.Kind.AVAILABILITY:
            good = total - results["failures"]
        else:
            assert slo.threshold_ms is not None
            good = ok.cut(0.0, slo.threshold_ms).count
        share = good / total
        out.append(
            {
                "slo": slo.pk,
                "name": slo.name,
                "objective": slo.objective,
                "good_share": round(share, 5),
                "target": slo.target,
                "met": share >= slo.target,
            }
        )
    return out


def _alert(test: LoadTest, results: dict[str, Any]) -> None:
    """Tell the department's channels about each SLO the test violated (once per test and SLO)."""
    from slos.models import NotificationChannel
    from slos.tasks import deliver_message

    violated = [row for row in results["slo"] if not row["met"]]
    if not violated:
        return
    channels = list(
        NotificationChannel.objects.filter(department_id=test.agent.department_id).values_list("pk", flat=True)
    )
    for row in violated:
        subject = (
            f"[load test] {test.agent.slug} ({test.environment}) violated {row['name']}: "
            f"{row['good_share'] * 100:.2f}% good against {row['target'] * 100:g}%"
        )
        data = {"event": "load_test_slo_violated", "load_test": test.pk, "agent": test.agent.slug, **row}
        for channel_id in channels:
            deliver_message.delay(channel_id, f"loadtest:{test.pk}:slo:{row['slo']}", subject, data)


def run_in_thread_safe(test_id: int) -> str:
    """The task body: a fresh database connection state around a long run."""
    close_old_connections()
    try:
        return run(test_id)
    finally:
        close_old_connections()


def schedule(test: LoadTest, user: Any) -> LoadTest:
    """Store a validated test and enqueue its run for its time (the sweeper starts it if that task is lost)."""
    from django.db import transaction

    from interventions.tasks import run_load_test

    test.created_by = user if getattr(user, "pk", None) else None
    test.full_clean()
    test.save()
    transaction.on_commit(lambda: run_load_test.apply_async(args=(test.pk,), eta=test.scheduled_at))
    return test
