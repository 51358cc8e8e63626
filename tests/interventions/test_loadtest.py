"""Load tests against a target on loopback: the rate is met, latencies are the target's, a cancel sends nothing.

The target is a threading HTTP server on 127.0.0.1 that answers after a fixed delay and counts what
it receives; it is on the outbound allowlist with private addresses allowed, as a test agent would be.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from interventions import loadtest
from interventions.models import LoadTest
from perfops.access.models import AllowedHost
from slos.models import SLO

pytestmark = pytest.mark.django_db(transaction=True)


class Target:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.received = 0
        self.lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with target.lock:
                    target.received += 1
                time.sleep(target.delay_s)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/invoke"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    AllowedHost.objects.create(host="127.0.0.1", allow_private=True)
    found = Target(0.05)
    yield found
    found.close()


def make(agent, url: str, **fields) -> LoadTest:
    base = {"agent": agent, "environment": "staging", "target_url": url, "rate_rps": 40.0, "duration_s": 5}
    test = LoadTest(**(base | {"scheduled_at": timezone.now()} | fields))
    test.full_clean()
    test.save()
    return test


def test_the_schedule_holds_the_rate_and_the_ramp():
    flat = list(loadtest.schedule_times(10.0, 0, 3))
    assert len(flat) == 30
    assert flat[:3] == pytest.approx([0.1, 0.2, 0.3])
    ramped = list(loadtest.schedule_times(10.0, 2, 4))
    assert len(ramped) == 30  # half the rate over the ramp, then the full rate
    gaps = [b - a for a, b in itertools.pairwise(ramped)]
    assert gaps[0] > gaps[-1] == pytest.approx(0.1)


def test_a_run_meets_its_rate_and_reports_the_targets_latency(agent, target, engineer):
    SLO.objects.create(
        name="fast",
        scope="agent",
        agent=agent,
        department=agent.department,
        environment="staging",
        kind="latency",
        threshold_ms=20,
        target=0.9,
    )
    test = make(agent, target.url)
    assert loadtest.run(test.pk) == "completed"
    test.refresh_from_db()
    results = test.results
    assert results is not None
    assert (test.sent, test.completed, test.failures) == (200, 200, 0)
    assert target.received == 200
    assert results["achieved_rate_rps"] == pytest.approx(40.0, rel=0.05)
    latency = results["latency_ms"]
    assert 50 <= latency["p50"] <= 75  # the target's 50 ms, plus loopback and threads
    assert latency["p99"] < 200
    assert results["status_codes"] == {"200": 200}
    # The agent's 20 ms SLO cannot hold at 50 ms: the report says so.
    assert results["slo"] == [
        {
            "slo": results["slo"][0]["slo"],
            "name": "fast",
            "objective": "90% of requests succeed under 20 ms over 30 days",
            "good_share": 0.0,
            "target": 0.9,
            "met": False,
        }
    ]
    assert loadtest.run(test.pk) == "completed"  # a second delivery of the task runs nothing
    assert target.received == 200


def test_a_slow_target_cannot_hide_behind_the_concurrency_limit(agent, target):
    target.delay_s = 0.2
    # One request at a time at 10 per second: each waits for the ones before it; the wait is counted.
    test = make(agent, target.url, rate_rps=10.0, duration_s=2, concurrency=1)
    loadtest.run(test.pk)
    test.refresh_from_db()
    results = test.results
    assert results is not None
    assert results["completed"] == 20
    assert results["latency_ms"]["p95"] > 1500  # 20 requests x 200 ms, from their intended send times


def test_a_cancelled_test_never_sends_a_request(agent, target, engineer):
    test = make(agent, target.url, scheduled_at=timezone.now() + timedelta(minutes=5))
    assert loadtest.cancel(test, engineer) is True
    assert loadtest.run(test.pk, now=timezone.now() + timedelta(minutes=10)) == "cancelled"
    assert loadtest.start_due(timezone.now() + timedelta(minutes=10)) == []
    assert target.received == 0
    assert loadtest.cancel(test, engineer) is False


def test_a_stop_ends_a_running_test_within_a_second(agent, target, engineer):
    test = make(agent, target.url, rate_rps=20.0, duration_s=30)
    result: list[str] = []
    runner = threading.Thread(target=lambda: result.append(loadtest.run_in_thread_safe(test.pk)))
    runner.start()
    time.sleep(1.5)
    assert loadtest.stop(LoadTest.objects.get(pk=test.pk), engineer)
    runner.join(timeout=10)
    assert result == ["stopped"]
    test.refresh_from_db()
    assert test.results is not None
    assert 20 <= test.results["sent"] <= 70


def test_a_target_off_the_allowlist_is_refused_before_anything_is_sent(agent, target):
    test = make(agent, target.url)
    AllowedHost.objects.all().delete()
    assert loadtest.run(test.pk) == "failed"
    test.refresh_from_db()
    assert test.detail.startswith("refused: The host '127.0.0.1' is not on the allowlist")
    assert target.received == 0


def test_scheduling_from_the_page_confirms_and_production_needs_its_acknowledgement(agent, target, engineer, viewer):
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(engineer)
    url = reverse("interventions:schedule-load-test", args=["pay-bot"])
    form = {"environment": "staging", "target_url": target.url, "rate_rps": "5", "duration_s": "2", "ramp_s": "0"}
    form |= {"concurrency": "4", "timeout_s": "5", "start_in_minutes": "10"}
    preview = client.post(url, form).content.decode()
    assert "5 requests/s for 2 s, at most 4 in flight" in preview
    assert "about 10" in preview
    assert not LoadTest.objects.exists()
    client.post(url, form | {"_confirmed": "1"})
    test = LoadTest.objects.get()
    assert (test.status, test.created_by, test.environment) == ("scheduled", engineer, "staging")
    page = client.get(reverse("interventions:load-test", args=[test.pk])).content.decode()
    assert "Cancel…" in page
    assert 'hx-trigger="every 2s' in page
    client.post(reverse("interventions:load-test-cancel", args=[test.pk]), {"_confirmed": "1"})
    test.refresh_from_db()
    assert test.status == "cancelled"
    # Production: refused without the explicit acknowledgement, even confirmed.
    production = form | {"environment": "production", "_confirmed": "1"}
    client.post(url, production)
    assert LoadTest.objects.filter(environment="production").count() == 0
    client.post(url, production | {"confirm_production": "on"})
    assert LoadTest.objects.filter(environment="production").count() == 1
    viewer_client = Client()
    viewer_client.force_login(viewer)
    assert viewer_client.post(url, form | {"_confirmed": "1"}).status_code == 403
    assert target.received == 0


def test_the_api_schedules_with_a_dry_run_and_refuses_bad_tests(agent, target, engineer):
    from tests import factories

    client = factories.api_as(engineer, ["automation", "read"])
    body = {"agent": "pay-bot", "environment": "staging", "target_url": target.url, "rate_rps": 5, "duration_s": 2}
    dry = client.post("/api/v1/load-tests", body | {"dry_run": True}, format="json")
    assert dry.status_code == 200
    assert not LoadTest.objects.exists()
    too_long = client.post("/api/v1/load-tests", body | {"duration_s": 100_000}, format="json")
    assert too_long.status_code == 400
    assert "duration_s" in too_long.json()
    metadata = client.post("/api/v1/load-tests", body | {"target_url": "http://169.254.169.254/x"}, format="json")
    assert metadata.status_code == 400
    assert "target_url" in metadata.json()
    production = client.post("/api/v1/load-tests", body | {"environment": "production"}, format="json")
    assert "confirm_production" in production.json()
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    made = client.post("/api/v1/load-tests", body | {"scheduled_at": later}, format="json")
    assert made.status_code == 201, made.json()
    pk = made.json()["id"]
    assert client.post(f"/api/v1/load-tests/{pk}/stop").status_code == 409
    assert client.post(f"/api/v1/load-tests/{pk}/cancel").json()["status"] == "cancelled"
    assert target.received == 0
