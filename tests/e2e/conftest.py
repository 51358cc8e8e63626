"""Real-browser fixtures: Debian's chromium, driven by Playwright, against a live server over a seeded demo fleet.

How one seeded fleet serves every test of the module, on SQLite and on PostgreSQL alike:

pytest-django's `live_server` fixture makes each test that uses it transactional, and a transactional
test empties every table when it ends: a fleet seeded once per module would be gone after the first
test, and seeding per test costs seconds. So the module runs its own live server, built with the very
helper class that `live_server` uses (`pytest_django.live_server_helper.LiveServer`: Django's
`LiveServerThread` with the staticfiles handler, which serves plotly.min.js through the static finders):

- `seeded_server` runs `seed_demo` once, in autocommit outside any test transaction, so the rows are
  committed and the server's request threads see them (each has its own database connection: the
  SQLite test database is a file, not memory, and PostgreSQL is a server);
- the tests are marked plain `django_db` (not `transaction=True`): that makes pytest-django create the
  test database (even when only this folder runs), and it wraps each test in a transaction on the
  test thread's connection that is rolled back at the end. The tests write nothing through that
  connection (the browser talks to the server's threads), so the rollback undoes nothing, nothing
  is flushed, and the test thread holds no lock that the server's writes (sessions) would wait for;
- the module's teardown deletes what the module created (demo fleet, superuser, sessions, audit
  entries) and fails if any table's row count differs from before the module, so later tests start
  from the same database as without this module.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection, connections
from django.db.models import Model
from playwright.sync_api import Browser, Page, sync_playwright
from pytest_django.live_server_helper import LiveServer

from perfops.metrics.models import RollupState
from perfops.telemetry.demo import loader
from perfops.telemetry.models import TimingLabel

CHROMIUM = Path(os.environ.get("PERFOPS_E2E_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-output" / "screenshots"
# Four days of history (the default 24h range and the 7d one both have data, and the capacity forecast,
# which needs three, has some): seeds in a few seconds.
SEED_TRACES = 30_000
SEED_DAYS = 4
USERNAME, PASSWORD = "e2e-root", "pw-e2e-root"
VIEWPORT = {"width": 1440, "height": 900}
TIMEOUT_MS = 30_000
# Rows the module creates besides the demo fleet (which loader.reset() deletes with everything in
# it): timing labels and the rollup state of the seeding, the superuser, the login sessions and
# the audit entries (last: deleting the others writes some). The rows that were there before are kept.
OWN_ROWS: tuple[type[Model], ...] = (TimingLabel, RollupState, Session, User, LogEntry)


@dataclass
class Problems:
    """What a user (or their browser console) would notice going wrong on a page."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    error_responses: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on(
            "console", lambda m: self.console_errors.append(f"{m.text} {m.location}") if m.type == "error" else None
        )
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("requestfailed", lambda r: self.failed_requests.append(f"{r.method} {r.url}: {r.failure}"))
        page.on("response", lambda r: self.error_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    def assert_none(self) -> None:
        found = {name: seen for name, seen in vars(self).items() if seen}
        assert not found, f"the browser reported problems: {found}"


@dataclass
class Browsing:
    """A logged-in page of a fresh browser context, and the problems seen on it."""

    page: Page
    problems: Problems


def _row_counts() -> dict[str, int]:
    counts = {}
    with connection.cursor() as cursor:
        for table in sorted(connection.introspection.table_names()):
            if table.startswith("sqlite_"):  # SQLite's own (ANALYZE statistics)
                continue
            cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")  # noqa: S608
            counts[table] = cursor.fetchone()[0]
    return counts


def _clean_up(counts_before: dict[str, int], rows_before: dict[type[Model], set[Any]]) -> None:
    loader.reset()
    for model, kept in rows_before.items():
        model._default_manager.exclude(pk__in=kept).delete()
    cache.clear()
    changed = {table: n for table, n in _row_counts().items() if n != counts_before.get(table, 0)}
    assert not changed, f"the e2e module left rows behind: {changed} (rows per table before: {counts_before})"


@pytest.fixture(scope="module")
def chromium_executable() -> Path:
    """Debian's chromium (CI installs it with apt-get): a missing browser fails the tests, it never skips them."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the end-to-end tests drive Debian's chromium "
            "(apt-get install -y chromium; .ci/run installs it). Playwright's own browser download is not used.",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def seeded_server(chromium_executable: Path, django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServer]:
    """A live server over a freshly seeded demo fleet (seeded once for the module, removed after it)."""
    with django_db_blocker.unblock():
        counts_before = _row_counts()
        rows_before = {model: set(model._default_manager.values_list("pk", flat=True)) for model in OWN_ROWS}
        # Panel results are cached by filters and rollup generation; a cache that outlives the
        # database (Redis) could otherwise hand back a previous run's fleet, with other trace ids.
        cache.clear()
        call_command("seed_demo", traces=SEED_TRACES, days=SEED_DAYS, seed=7, jobs=0, stdout=StringIO())
        User.objects.create_superuser(USERNAME, "e2e-root@example.com", PASSWORD)
        server = LiveServer("localhost:0")
        server._live_server_modified_settings.enable()
        try:
            yield server
        finally:
            server._live_server_modified_settings.disable()
            server.stop()
            _clean_up(counts_before, rows_before)


@pytest.fixture(scope="module")
def browser(chromium_executable: Path, seeded_server: LiveServer) -> Iterator[Browser]:
    """One chromium for the module (started after the seeding, stopped before the clean-up).

    Playwright's sync API keeps an asyncio loop in this thread, suspended in a greenlet while test
    code runs. Two consequences for the database calls pytest-django makes around each test (begin
    and roll back the test's transaction):
    - Django sees the loop and refuses them; nothing else runs on the loop meanwhile, so they are
      safe, and they are allowed for the browser's lifetime only;
    - with a loop in the thread, Django's connections are per context rather than per thread: the
      tests get a connection of their own, which is closed here before the loop goes (left open,
      PostgreSQL would refuse to drop the test database at the end of the run).
    """
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        launched = playwright.chromium.launch(executable_path=str(chromium_executable), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
            connections.close_all()


@pytest.fixture(scope="module")
def auth_state(browser: Browser, seeded_server: LiveServer) -> Any:
    """Log in once through the admin login form; each test's browser context starts with its cookies."""
    context = browser.new_context(base_url=seeded_server.url, viewport=VIEWPORT)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        page.goto("/dashboard/performance/")
        assert "/admin/login/" in page.url, "the dashboard must ask for a login"
        page.fill("input[name=username]", USERNAME)
        page.fill("input[name=password]", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/dashboard/performance/")
        return context.storage_state()
    finally:
        context.close()


@pytest.fixture
def browsing(browser: Browser, seeded_server: LiveServer, auth_state: Any) -> Iterator[Browsing]:
    """A fresh browser context per test (own cookies, storage, theme), logged in, watched for problems."""
    context = browser.new_context(
        base_url=seeded_server.url,
        storage_state=auth_state,
        viewport=VIEWPORT,  # type: ignore[arg-type]
        accept_downloads=True,
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems = Problems()
    problems.watch(page)
    try:
        yield Browsing(page, problems)
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """test-output/screenshots/ at the repository root, emptied once per run."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS
