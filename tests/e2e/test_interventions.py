"""An agent's interventions in a real browser: change and revert its configuration, profile it, load-test it.

An engineer reaches /interventions/agents/order-status-bot/ from the agent's dashboard ("Configuration
and profiling") and works in staging. Each action goes form -> confirmation (what will happen, nothing
stored yet) -> action, and these tests click through it as a person would. Every test ends by
asserting that the browser saw no console error, no uncaught exception, no failed request and no
4xx/5xx response.

What they create belongs to an agent of the demo fleet (configuration versions, profiling sessions,
load tests), so the module's clean-up (which deletes the fleet) deletes it too. The allowlist entry
that lets the load tests reach a target on loopback is not the fleet's: its fixture deletes it.

The load tests' target is a small HTTP server on 127.0.0.1 started by the test, which counts what it
receives per load test (the runner names the test in the X-Perfops-Load-Test header).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page
from pytest_django.live_server_helper import LiveServer

from interventions import configs, loadtest
from interventions.models import AgentConfig, LoadTest, ProfilingSession
from perfops.access.models import AllowedHost
from perfops.celery import app as celery_app
from perfops.telemetry.models import Agent
from tests.e2e.conftest import Browsing
from tests.e2e.test_dashboard import screenshot, terms

# `db` here is this module's own fixture (below), not pytest-django's: see there why.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("db")]

AGENT = "order-status-bot"  # LATENCY_REGRESSION_AGENT of the demo fleet
ENVIRONMENT = "staging"
DASHBOARD = f"/dashboard/performance/agents/{AGENT}"
HOME = f"/interventions/agents/{AGENT}/?environment={ENVIRONMENT}"
PROFILING_URL = re.compile(r"/interventions/profiling/(?P<pk>\d+)/$")
LOAD_TEST_URL = re.compile(r"/interventions/load-tests/(?P<pk>\d+)/$")
ACTIVE = re.compile(
    r"profiling since (\d\d:\d\d) UTC, ends by itself at (\d\d:\d\d) UTC \(started by e2e-root\)", re.IGNORECASE
)
STATE = "#load-test .actions .state"
TARGET_DELAY_S = 0.02
RATE, DURATION_S = 10, 3


@pytest.fixture
def db(seeded_server: LiveServer) -> None:
    """The seeded server's database, in autocommit: no test transaction around the test.

    pytest-django's `db` (and the plain `django_db` mark that test_dashboard.py uses) wraps each test
    in a transaction on the test thread's connection. On SQLite, whose transactions are IMMEDIATE
    here (perfops.settings), that transaction takes the database's write lock when the test starts
    and keeps it to the end, so every write of the live server waits for it and fails with
    "database is locked": these tests make the server write (configurations, sessions, load tests),
    and the load test is run from the test thread. A fixture named `db` still tells pytest-django to
    create the test database, even when only this module runs; `seeded_server` keeps database access
    unblocked for the module, so the ORM checks below read in autocommit what the server has
    committed, on SQLite and PostgreSQL alike.
    """


class Target:
    """An HTTP server on loopback that answers 200 after a fixed delay and counts requests per load test."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.received: Counter[str] = Counter()
        self.lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with target.lock:
                    target.received[self.headers.get("X-Perfops-Load-Test", "")] += 1
                time.sleep(target.delay_s)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/invoke"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, load_test: int) -> int:
        with self.lock:
            return self.received[str(load_test)]

    def total(self) -> int:
        with self.lock:
            return sum(self.received.values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target(db: None) -> Iterator[Target]:
    """A loopback target, with 127.0.0.1 on the outbound allowlist (private addresses allowed) meanwhile."""
    allowed = AllowedHost.objects.create(host="127.0.0.1", allow_private=True, note="e2e load-test target")
    found = Target(TARGET_DELAY_S)
    try:
        yield found
    finally:
        found.close()
        allowed.delete()


@pytest.fixture
def no_worker() -> Iterator[None]:
    """Tasks queued, not run: the test settings run Celery tasks eagerly, which would run a load test
    inside the request that schedules it (the page would never show it scheduled). With eager mode off
    the task goes to the test settings' in-memory broker, where no worker takes it, as in production
    between scheduling and the worker picking it up.
    """
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = eager


def unique(text: str) -> str:
    return f"e2e {text} {uuid.uuid4().hex[:8]}"


def pk_of(pattern: re.Pattern[str], url: str) -> int:
    match = pattern.search(url)
    assert match, url
    return int(match["pk"])


def rows_of(page: Page, selector: str) -> list[list[str]]:
    """A table's body as lists of cell texts."""
    return [row.locator("td").all_inner_texts() for row in page.locator(f"{selector} tbody tr").all()]


def section(page: Page, label: str) -> str:
    return page.inner_text(f"section[aria-label='{label}']")


def open_from_the_dashboard(page: Page) -> None:
    """From the agent's dashboard to its interventions page, then to staging."""
    page.goto(DASHBOARD)
    # A person looks at the agent's charts first; leaving while they load would abort their requests.
    page.wait_for_load_state("networkidle")
    page.click("nav.page-actions a:text-is('Configuration and profiling')")
    page.wait_for_url(f"**/interventions/agents/{AGENT}/?environment=production")
    page.click(".page-head .crumbs a:text-is('Staging')")
    page.wait_for_url(f"**{HOME}")
    assert page.inner_text(".page-head h1").endswith(AGENT)
    assert page.inner_text(".page-head .crumbs strong") == "Staging"


def agent() -> Agent:
    return Agent.objects.get(slug=AGENT)


def confirm(page: Page, label: str) -> None:
    """Click the confirmation's button (checking its label) and wait for the page it leads to."""
    button = page.locator("#confirm")
    assert button.inner_text() == label
    with page.expect_navigation():
        button.click()


def config_history(page: Page) -> list[list[str]]:
    return rows_of(page, "section[aria-label='Configuration']")


def change_config(page: Page, **values: str | bool) -> None:
    """Change… -> the form, prefilled -> set the values -> Review the change (the confirmation)."""
    page.click("section[aria-label='Configuration'] a:text-is('Change…')")
    page.wait_for_url(f"**/interventions/agents/{AGENT}/config?environment={ENVIRONMENT}")
    for name, value in values.items():
        if isinstance(value, bool):
            page.set_checked(f"#id_{name}", value)
        else:
            page.fill(f"#id_{name}", value)
    page.click("button:text-is('Review the change')")
    page.wait_for_selector("#confirm")


def test_change_then_revert_the_configuration(browsing: Browsing, screenshots: Path) -> None:
    page = browsing.page
    open_from_the_dashboard(page)
    assert "(defaults: no version yet)" in page.inner_text("section[aria-label='Configuration'] h2")
    assert not AgentConfig.objects.filter(agent=agent(), environment=ENVIRONMENT).exists()

    # The form is prefilled with the settings in force (the defaults: there is no version yet).
    page.click("section[aria-label='Configuration'] a:text-is('Change…')")
    page.wait_for_url(f"**/interventions/agents/{AGENT}/config?environment={ENVIRONMENT}")
    assert page.inner_text("h1") == f"Change the configuration of {AGENT}"
    assert page.input_value("#id_agent") == str(agent().pk)
    assert page.input_value("#id_environment") == ENVIRONMENT
    defaults = AgentConfig().settings_dict()
    assert page.input_value("#id_timeout_ms") == str(defaults["timeout_ms"]) == "30000"
    assert page.input_value("#id_concurrency") == str(defaults["concurrency"])
    assert not page.is_checked("#id_prompt_cache")
    page.fill("#id_timeout_ms", "45000")
    page.check("#id_prompt_cache")
    page.fill("#id_note", "tail latency under load")
    page.click("button:text-is('Review the change')")
    page.wait_for_selector("#confirm")

    assert page.inner_text("h1") == f"Confirm: Configuration v1 of {AGENT} in {ENVIRONMENT}"
    assert "Nothing is stored until you confirm" in page.inner_text(".page-head")
    facts = terms(page, "dl.confirm-facts")
    assert facts == {
        "Agent": f"{AGENT} ({ENVIRONMENT})",
        "timeout ms": "30000 → 45000",
        "prompt cache": "off → on",
        "Note": "tail latency under load",
    }
    screenshot(page, screenshots, "interventions-config-confirm")
    assert not AgentConfig.objects.filter(agent=agent()).exists(), "the confirmation page must store nothing"

    confirm(page, "Yes, apply it")
    page.wait_for_url(f"**{HOME}")
    assert f"Configuration v1 of {AGENT} ({ENVIRONMENT}) applied." in page.inner_text("ul.messages")
    assert page.inner_text("section[aria-label='Configuration'] h2") == "Configuration v1"
    settings = terms(page, "section[aria-label='Configuration'] dl.facts")
    assert (settings["timeout_ms"], settings["prompt_cache"]) == ("45000", "on")
    [first] = config_history(page)
    assert first[0] == "v1 current"
    assert first[2:4] == ["e2e-root", "Initial"]
    assert first[4] == "timeout_ms 30000 → 45000; prompt_cache off → on"
    assert first[5] == "tail latency under load"
    v1 = AgentConfig.objects.get(agent=agent(), environment=ENVIRONMENT, version=1)
    assert (v1.timeout_ms, v1.prompt_cache, v1.source) == (45000, True, AgentConfig.Source.INITIAL)
    assert v1.created_by is not None
    assert v1.created_by.get_username() == "e2e-root"

    # A second change: v2 is current, v1 offers a revert.
    change_config(page, concurrency="16")
    assert terms(page, "dl.confirm-facts")["concurrency"] == "8 → 16"
    confirm(page, "Yes, apply it")
    page.wait_for_url(f"**{HOME}")
    assert page.inner_text("section[aria-label='Configuration'] h2") == "Configuration v2"
    history = config_history(page)
    assert [row[0] for row in history] == ["v2 current", "v1"]
    assert history[0][4] == "concurrency 8 → 16"
    v2 = configs.current(agent(), ENVIRONMENT)
    assert v2 is not None
    assert (v2.version, v2.concurrency, v2.timeout_ms) == (2, 16, 45000)

    v1_row = page.locator("section[aria-label='Configuration'] tbody tr").nth(1)
    assert v1_row.locator("button").all_inner_texts() == ["revert to this…"]
    assert page.locator("section[aria-label='Configuration'] tbody tr").first.locator("button").count() == 0
    v1_row.locator("button:text-is('revert to this…')").click()
    page.wait_for_selector("#confirm")
    assert page.inner_text("h1") == f"Confirm: Configuration v3 of {AGENT} in {ENVIRONMENT}"
    facts = terms(page, "dl.confirm-facts")
    assert facts["concurrency"] == "16 → 8"
    assert facts["Note"] == "revert to v1"
    assert facts["Undo"] == "revert to v2 from the history at any time"
    assert AgentConfig.objects.filter(agent=agent(), environment=ENVIRONMENT).count() == 2

    confirm(page, "Yes, revert to v1")
    page.wait_for_url(f"**{HOME}")
    assert "Reverted: v3 restores v1." in page.inner_text("ul.messages")
    assert page.inner_text("section[aria-label='Configuration'] h2") == "Configuration v3"
    history = config_history(page)
    assert [row[0] for row in history] == ["v3 current", "v2", "v1"]
    assert history[0][3] == "Reverted to an earlier version (v1)"
    assert history[0][4] == "concurrency 16 → 8"
    screenshot(page, screenshots, "interventions-config")

    now = configs.current(agent(), ENVIRONMENT)
    assert now is not None
    assert (now.version, now.source, now.restores_id) == (3, AgentConfig.Source.REVERT, v1.pk)
    assert now.settings_dict() == v1.settings_dict()
    # Production was not touched.
    assert configs.current(agent(), "production") is None
    browsing.problems.assert_none()


def test_profile_for_15_minutes_then_stop_for_the_report(browsing: Browsing, screenshots: Path) -> None:
    page = browsing.page
    open_from_the_dashboard(page)
    reason = unique("p95 doubled")
    profiling = "section[aria-label='Profiling']"
    assert page.input_value(f"{profiling} select[name=minutes]") == "60"
    page.select_option(f"{profiling} select[name=minutes]", "15")
    page.fill(f"{profiling} input[name=reason]", reason)
    page.click(f"{profiling} button:text-is('Review and start…')")
    page.wait_for_selector("#confirm")

    assert page.inner_text("h1") == f"Confirm: Profile {AGENT} in {ENVIRONMENT}"
    facts = terms(page, "dl.confirm-facts")
    assert re.fullmatch(r"15 min, until \d\d:\d\d UTC", facts["Duration"]), facts
    assert facts["Agent"] == f"{AGENT} ({ENVIRONMENT})"
    assert facts["Reason"] == reason
    assert not ProfilingSession.objects.filter(agent=agent()).exists(), "the confirmation page must store nothing"

    confirm(page, "Yes, start profiling")
    page.wait_for_url(f"**{HOME}")
    session = ProfilingSession.objects.get(agent=agent(), environment=ENVIRONMENT)
    assert (session.status, session.duration_s, session.reason) == (ProfilingSession.Status.ACTIVE, 900, reason)
    assert f"Profiling {AGENT} until {session.expires_at:%H:%M} UTC." in page.inner_text("ul.messages")
    active = ACTIVE.search(section(page, "Profiling"))
    assert active, section(page, "Profiling")
    assert active.groups() == (f"{session.started_at:%H:%M}", f"{session.expires_at:%H:%M}")
    # No second session can be started meanwhile: the form gives way to the stop button.
    assert page.locator(f"{profiling} button:text-is('Review and start…')").count() == 0

    page.click(f"{profiling} button:text-is('Stop now…')")
    page.wait_for_selector("#confirm")
    assert page.inner_text("h1") == f"Confirm: Stop profiling {AGENT} now"
    assert terms(page, "dl.confirm-facts")["Planned end"] == f"{session.expires_at:%Y-%m-%d %H:%M} UTC"
    session.refresh_from_db()
    assert session.status == ProfilingSession.Status.ACTIVE, "the confirmation page must stop nothing"

    confirm(page, "Yes, stop it")
    page.wait_for_url(PROFILING_URL)
    assert pk_of(PROFILING_URL, page.url) == session.pk
    assert "Profiling stopped; its report is ready." in page.inner_text("ul.messages")
    assert page.inner_text("h1") == f"Profiling {AGENT} ({ENVIRONMENT})"
    about = terms(page, "section[aria-label='Session'] dl.facts")
    assert about["Status"] == "Ended (stopped early)"
    assert about["Started by"] == f"e2e-root: {reason}"
    assert about["Ended by"] == "e2e-root"
    report = page.locator("section[aria-label='Bottleneck report']")
    assert report.locator("h2").inner_text() == "Bottleneck report"
    summary = report.locator("p.big").inner_text()
    assert page.locator("section[aria-label='Session'] button:text-is('Stop now…')").count() == 0
    screenshot(page, screenshots, "interventions-profiling-report")

    session.refresh_from_db()
    assert (session.status, session.end_reason) == (ProfilingSession.Status.ENDED, ProfilingSession.EndReason.STOPPED)
    assert session.ended_by is not None
    assert session.ended_by.get_username() == "e2e-root"
    assert session.report is not None
    assert session.report["session"] == session.pk
    assert summary == session.report["summary"]
    # Nothing reaches staging during the few seconds of the session: no timing, yet a report.
    assert (session.report["traces"], summary) == (0, "No phase or dependency timing arrived during the session.")

    # Back on the agent's page: not profiling any more, the session listed with its report.
    page.click(f".page-head .crumbs a:text-is('{AGENT}: configuration and profiling')")
    page.wait_for_url(f"**{HOME}")
    assert not ACTIVE.search(section(page, "Profiling"))
    assert page.locator(f"{profiling} button:text-is('Review and start…')").count() == 1
    assert rows_of(page, profiling)[0][-1] == "bottleneck report"
    browsing.problems.assert_none()


def schedule_load_test(page: Page, target: Target, start_in_minutes: int) -> int:
    """Fill the agent page's load-test form, review, confirm; the pk of the load test page it leads to."""
    form = "section[aria-label='Load tests'] form"
    before = LoadTest.objects.filter(agent=agent()).count()
    page.fill("#lt-url", target.url)
    page.fill("#lt-rate", str(RATE))
    page.fill("#lt-duration", str(DURATION_S))
    page.fill("#lt-start", str(start_in_minutes))
    page.click(f"{form} button:text-is('Review and schedule…')")
    page.wait_for_selector("#confirm")
    assert page.inner_text("h1") == f"Confirm: Load test {AGENT} in {ENVIRONMENT}"
    facts = terms(page, "dl.confirm-facts")
    assert facts["Target"] == target.url
    assert facts["Load"] == f"{RATE} requests/s for {DURATION_S} s, at most 32 in flight"
    assert facts["Requests"] == f"about {RATE * DURATION_S}"
    assert LoadTest.objects.filter(agent=agent()).count() == before, "the confirmation page must store nothing"
    confirm(page, "Yes, schedule it")
    page.wait_for_url(LOAD_TEST_URL)
    assert LoadTest.objects.filter(agent=agent()).count() == before + 1
    return pk_of(LOAD_TEST_URL, page.url)


def status_of(page: Page) -> str:
    return page.inner_text(STATE)


def test_a_load_test_runs_and_reports_and_a_cancelled_one_sends_nothing(
    browsing: Browsing, screenshots: Path, target: Target, no_worker: None
) -> None:
    page = browsing.page
    open_from_the_dashboard(page)
    assert f"No load test of {AGENT} in {ENVIRONMENT} yet." in section(page, "Load tests")

    pk = schedule_load_test(page, target, start_in_minutes=0)
    assert "Load test scheduled for" in page.inner_text("ul.messages")
    assert page.inner_text("h1") == f"Load test of {AGENT} ({ENVIRONMENT})"
    assert status_of(page) == "Scheduled"
    assert target.count(pk) == 0
    # No worker takes the queued task: run it from the test thread, as the worker would at its time.
    # The page follows it by itself (htmx polls its progress every two seconds).
    assert loadtest.run(pk) == LoadTest.Status.COMPLETED
    page.wait_for_function(
        f"() => {{ const s = document.querySelector({STATE!r}); return s && s.innerText === 'Completed'; }}"
    )
    assert loadtest.run(pk) == LoadTest.Status.COMPLETED  # claimed once: a second delivery sends nothing
    results = terms(page, "#load-test dl.facts")
    assert results["Requests"] == f"{RATE * DURATION_S} sent, {RATE * DURATION_S} answered, 0 failed (0%)"
    achieved = re.fullmatch(r"([\d.]+) req/s achieved of ([\d.]+) intended", results["Arrival rate"])
    assert achieved, results
    assert float(achieved[1]) == pytest.approx(RATE, rel=0.15)
    assert float(achieved[2]) == RATE
    assert results["Status codes"] == f"200: {RATE * DURATION_S}"
    assert re.fullmatch(r"p50 [\d.]+ ms · p90 [\d.]+ · p95 [\d.]+ · p99 [\d.]+ · max [\d.]+ ms .*", results["Latency"])
    assert page.inner_text("#load-test h3") == "Against the agent's SLOs"
    if page.locator("#load-test table").count():
        assert rows_of(page, "#load-test"), "an SLO table without rows"
    else:
        assert f"No SLO covers {AGENT} in {ENVIRONMENT}." in page.inner_text("#load-test")
    screenshot(page, screenshots, "interventions-load-test")
    assert target.count(pk) == RATE * DURATION_S
    stored = LoadTest.objects.get(pk=pk)
    assert (stored.status, stored.sent, stored.completed, stored.failures) == ("completed", 30, 30, 0)
    assert stored.results is not None
    assert stored.results["status_codes"] == {"200": RATE * DURATION_S}

    # A second test, ten minutes ahead, cancelled from its page before it starts.
    page.goto(HOME)
    assert rows_of(page, "section[aria-label='Load tests']")[0][2] == "Completed"
    later = schedule_load_test(page, target, start_in_minutes=10)
    assert later != pk
    assert status_of(page) == "Scheduled"
    assert "it can be cancelled until then and sends nothing if it is" in page.inner_text("#load-test")
    page.click("#load-test button:text-is('Cancel…')")
    page.wait_for_selector("#confirm")
    assert page.inner_text("h1") == f"Confirm: Cancel the load test of {AGENT}"
    assert terms(page, "dl.confirm-facts") == {"Status": "Scheduled", "Sent so far": "0"}
    assert LoadTest.objects.get(pk=later).status == LoadTest.Status.SCHEDULED, "the confirmation must cancel nothing"
    confirm(page, "Yes, cancel it")
    page.wait_for_url(f"**/interventions/load-tests/{later}/")
    assert "Cancelled: it will send nothing." in page.inner_text("ul.messages")
    assert status_of(page) == "Cancelled"
    assert page.locator("#load-test button").count() == 0
    screenshot(page, screenshots, "interventions-load-test-cancelled")

    cancelled = LoadTest.objects.get(pk=later)
    # Even when its task arrives at its time, a cancelled test is not claimed and sends nothing.
    assert loadtest.run(later, now=cancelled.scheduled_at) == LoadTest.Status.CANCELLED
    assert cancelled.status == LoadTest.Status.CANCELLED
    assert (cancelled.sent, cancelled.results) == (0, None)
    assert target.count(later) == 0
    assert target.total() == RATE * DURATION_S
    browsing.problems.assert_none()


def test_the_load_test_page_stops_polling_once_the_test_has_finished(browsing: Browsing, target: Target) -> None:
    page = browsing.page
    later = LoadTest.objects.create(
        agent=agent(),
        environment=ENVIRONMENT,
        target_url=target.url,
        rate_rps=RATE,
        duration_s=DURATION_S,
        scheduled_at=timezone.now() + timedelta(minutes=10),
    )
    page.goto(f"/interventions/load-tests/{later.pk}/")
    assert status_of(page) == "Scheduled"
    # It finishes (here: cancelled from elsewhere); the page's poll shows it.
    assert loadtest.cancel(later, None)
    page.wait_for_function(f"() => document.querySelector({STATE!r}).innerText === 'Cancelled'")
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if request.headers.get("hx-request") else None)
    page.wait_for_timeout(5_000)
    assert target.total() == 0
    browsing.problems.assert_none()
    # Last, so that the expected failure is this one only: a finished test's page has nothing left to follow.
    assert polls == [], f"{len(polls)} polls in 5 s after the test had finished"
