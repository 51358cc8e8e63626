"""SLOs, alert rules and performance budgets in a real browser: set from the dashboard, confirmed, then kept.

Each change goes form -> confirmation (what it means on today's data, nothing stored yet) -> save,
and these tests click through it as a person would, from the buttons the dashboard offers. Every
test ends by asserting that the browser saw no console error, no uncaught exception, no failed
request and no 4xx/5xx response.

What they create belongs to departments of the demo fleet, so the module's clean-up (which deletes
the fleet) deletes it too; the SLO deleted through its page is checked gone at once.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page
from pytest_django.live_server_helper import LiveServer

from perfops.telemetry.models import Agent, Department, Team
from slos.models import SLO, AlertRule, PerformanceBudget
from tests.e2e.conftest import Browsing
from tests.e2e.test_dashboard import screenshot, terms, wait_for_panels

# `db` here is this module's own fixture (below), not pytest-django's: see there why.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("db")]

FLEET = "/dashboard/performance/"
AGENT = "order-status-bot"  # LATENCY_REGRESSION_AGENT of the demo fleet
DEPARTMENT, TEAM = "customer-experience", "order-care"
SLO_URL = re.compile(r"/slos/(?P<pk>\d+)/$")
RULE_URL = re.compile(r"/alerts/rules/(?P<pk>\d+)/$")
BUDGET_URL = re.compile(r"/budgets/(?P<pk>\d+)/$")
# An SLO brings the Workbook's four burn-rate rules (two page, two ticket).
SLO_RULES = 4
# The budget chart is drawn, or says there is nothing to draw.
BUDGET_CHART_DONE = (
    "#budget-history-chart[data-rendered='true'] .plot-container svg.main-svg, "
    "section[aria-label='Consumption over time'] .empty"
)


@pytest.fixture
def db(seeded_server: LiveServer) -> None:
    """The seeded server's database, in autocommit: no test transaction around the test.

    pytest-django's `db` (and the plain `django_db` mark that test_dashboard.py uses) wraps each test
    in a transaction on the test thread's connection. On SQLite, whose transactions are IMMEDIATE
    here (perfops.settings), that transaction takes the database's write lock when the test starts
    and keeps it to the end, so every write of the live server waits for it and fails with
    "database is locked": these tests make the server write (what they create and delete). A
    fixture named `db` still tells pytest-django to create the test database, even when only this
    module runs; `seeded_server` keeps database access unblocked for the module, so the ORM checks
    below read in autocommit what the server has committed, on SQLite and PostgreSQL alike.
    """


def unique(name: str) -> str:
    """A name no earlier run or other test has used."""
    return f"e2e {name} {uuid.uuid4().hex[:8]}"


def pk_of(pattern: re.Pattern[str], url: str) -> int:
    match = pattern.search(url)
    assert match, url
    return int(match["pk"])


def rows_of(page: Page, selector: str) -> list[list[str]]:
    """A table's body as lists of cell texts."""
    return [row.locator("td").all_inner_texts() for row in page.locator(f"{selector} tbody tr").all()]


def selected_label(page: Page, selector: str) -> str:
    return page.eval_on_selector(selector, "el => el.selectedOptions[0] ? el.selectedOptions[0].label : ''")


def set_slo_from_the_agent_page(page: Page, name: str) -> None:
    """From the agent page to the confirmation of a latency SLO (P95 under 1500 ms over 30 days)."""
    page.goto(f"/dashboard/performance/agents/{AGENT}")
    # A person looks at the agent's charts first; leaving while they load would abort their requests.
    page.wait_for_load_state("networkidle")
    page.click("nav.page-actions a:text-is('Set SLO')")
    page.wait_for_url("**/slos/new?*")
    assert page.inner_text("h1") == "New SLO"
    # The agent it was asked from is preselected, with its scope.
    assert page.input_value("#id_scope") == "agent"
    assert page.input_value("#id_agent") == str(Agent.objects.get(slug=AGENT).pk)
    page.fill("#id_name", name)
    page.select_option("#id_kind", "latency")
    page.fill("#id_threshold_ms", "1500")
    page.fill("#id_target", "0.95")
    page.select_option("#id_window_days", "30")
    page.click("button:has-text('Review and create')")
    page.wait_for_selector("#confirm")


def confirm_and_open(page: Page, pattern: re.Pattern[str]) -> int:
    """Click the confirmation's button; the pk of the detail page it leads to."""
    page.click("#confirm")
    page.wait_for_url(pattern)
    return pk_of(pattern, page.url)


def test_set_slo_on_the_agent_page_confirms_before_it_creates(browsing: Browsing, screenshots: Path) -> None:
    page = browsing.page
    name = unique("order status latency")
    set_slo_from_the_agent_page(page, name)

    assert page.inner_text("h1") == f"Confirm: SLO {name}"
    assert "Nothing is stored until you confirm" in page.inner_text(".page-head")
    facts = terms(page, "dl.confirm-facts")
    assert facts["Objective"] == "95% of requests succeed under 1500 ms over 30 days"
    assert facts["Scope"] == f"agent {AGENT} (production)"
    assert re.fullmatch(r"[\d,]+ bad requests allowed, [\d,]+ spent", facts["Error budget"]), facts
    assert facts["Budget remaining"].endswith("%"), facts
    headers = page.locator("table.confirm-rules thead th").all_inner_texts()
    assert headers[-1] == "Would fire"
    rules = rows_of(page, "table.confirm-rules")
    assert len(rules) == SLO_RULES
    assert {row[-1] for row in rules} <= {"yes", "no"}
    assert all(row[1].startswith("burn rate at or above") for row in rules), rules
    screenshot(page, screenshots, "slo-confirm")
    assert not SLO.objects.filter(name=name).exists(), "the confirmation page must store nothing"

    pk = confirm_and_open(page, SLO_URL)
    assert page.inner_text("h1") == f"SLO {name}"
    # casefold: the message says "Slo" for now (test_the_messages_spell_slo_in_capitals).
    assert f"SLO {name} created.".casefold() in page.inner_text("ul.messages").casefold()
    budget = page.locator("section[aria-label='Error budget']")
    assert budget.locator("h2").inner_text() == "Error budget now"
    assert terms(page, "section[aria-label='Error budget'] dl.confirm-facts")["Objective"] == facts["Objective"]
    assert len(rows_of(page, "section[aria-label='Error budget'] table.confirm-rules")) == SLO_RULES
    its_rules = rows_of(page, "section[aria-label='Alert rules'] table")
    assert len(its_rules) == SLO_RULES
    assert all(row[1].startswith("burn rate at or above") for row in its_rules), its_rules
    screenshot(page, screenshots, "slo-detail")

    fields = ("name", "kind", "scope", "agent__slug", "threshold_ms", "target", "window_days", "environment")
    stored = SLO.objects.filter(pk=pk).values_list(*fields).get()
    assert stored == (name, "latency", "agent", AGENT, 1500, 0.95, 30, "production")
    assert AlertRule.objects.filter(slo_id=pk, metric="burn_rate").count() == SLO_RULES
    browsing.problems.assert_none()


def test_plus_alert_on_the_latency_panel_creates_a_latency_rule(browsing: Browsing, screenshots: Path) -> None:
    page = browsing.page
    page.goto(FLEET)
    wait_for_panels(browsing)
    page.click("#panel-latency a.panel-action:has-text('+ alert')")
    page.wait_for_url("**/alerts/rules/new?*")
    assert page.inner_text("h1") == "New alert rule"
    # What the chart shows is prefilled: P95 latency.
    assert selected_label(page, "#id_metric") == "Latency percentile (ms)"
    assert float(page.input_value("#id_quantile")) == 0.95

    name = unique("customer experience p95")
    department = Department.objects.get(slug=DEPARTMENT)
    page.fill("#id_name", name)
    page.select_option("#id_scope", "department")
    page.select_option("#id_department", str(department.pk))
    page.fill("#id_threshold", "5000")
    page.fill("#id_window_s", "600")
    page.select_option("#id_severity", "ticket")
    page.click("button:has-text('Review and create')")
    page.wait_for_selector("#confirm")

    condition = "P95 at or above 5,000 ms over 10 min"
    assert page.inner_text("h1") == f"Confirm: Alert rule {name}"
    facts = terms(page, "dl.confirm-facts")
    assert facts["Condition"] == condition
    assert facts["Scope"] == f"department {DEPARTMENT} (production)"
    assert facts["Severity"] == "Ticket"
    assert len(rows_of(page, "table.confirm-rules")) == 1
    screenshot(page, screenshots, "rule-confirm")
    assert not AlertRule.objects.filter(name=name).exists(), "the confirmation page must store nothing"

    pk = confirm_and_open(page, RULE_URL)
    assert page.inner_text("h1") == f"Alert rule {name}"
    assert terms(page, "section[aria-label='Rule'] dl.confirm-facts")["Condition"] == condition
    screenshot(page, screenshots, "rule-detail")

    fields = ("metric", "quantile", "threshold", "window_s", "scope", "department__slug", "severity", "slo", "budget")
    stored = AlertRule.objects.filter(pk=pk).values_list(*fields).get()
    assert stored == ("latency", 0.95, 5000, 600, "department", DEPARTMENT, "ticket", None, None)
    browsing.problems.assert_none()


def test_set_budget_for_a_team_draws_its_consumption(browsing: Browsing, screenshots: Path) -> None:
    page = browsing.page
    page.goto(f"{FLEET}?department={DEPARTMENT}&team={TEAM}")
    wait_for_panels(browsing)
    page.click("nav.page-actions a:text-is('Set budget')")
    page.wait_for_url("**/budgets/new?*")
    assert page.inner_text("h1") == "New performance budget"
    # The team the dashboard was filtered to is preselected.
    assert page.input_value("#id_scope") == "team"
    assert page.input_value("#id_team") == str(Team.objects.get(slug=TEAM).pk)

    name = unique("order care p95")
    page.fill("#id_name", name)
    page.fill("#id_threshold_ms", "2000")
    page.click("button:has-text('Review and create')")
    page.wait_for_selector("#confirm")

    assert page.inner_text("h1") == f"Confirm: Performance budget {name}"
    facts = terms(page, "dl.confirm-facts")
    assert facts["Budget"] == "average P95 across its agents under 2000 ms over 24 hours"
    assert facts["Scope"] == f"team {TEAM} (production)"
    assert len(rows_of(page, "table.confirm-rules")) == 2
    assert not PerformanceBudget.objects.filter(name=name).exists(), "the confirmation page must store nothing"

    pk = confirm_and_open(page, BUDGET_URL)
    assert page.inner_text("h1") == f"Performance budget {name}"
    page.wait_for_selector(BUDGET_CHART_DONE)
    if page.locator("#budget-history-chart").count():
        plotted = page.evaluate("document.querySelector('#budget-history-chart').data.length")
        assert plotted == 1
        assert page.locator("#budget-history-chart svg.main-svg .trace").count() > 0
    else:
        empty = page.inner_text("section[aria-label='Consumption over time'] .empty")
        assert empty == "No requests in this scope in the last 30 days."
    assert len(rows_of(page, "section[aria-label='Alert rules'] table")) == 2
    screenshot(page, screenshots, "budget-detail")

    stored = PerformanceBudget.objects.filter(pk=pk).values_list("scope", "team__slug", "threshold_ms").get()
    assert stored == ("team", TEAM, 2000)
    assert AlertRule.objects.filter(budget_id=pk, metric="perf_budget").count() == 2
    browsing.problems.assert_none()


def test_deleting_an_slo_lists_its_rules_and_takes_them_along(browsing: Browsing, screenshots: Path) -> None:
    page = browsing.page
    name = unique("order status to delete")
    set_slo_from_the_agent_page(page, name)
    pk = confirm_and_open(page, SLO_URL)
    rule_names = set(
        page.locator("section[aria-label='Alert rules'] table tbody tr td:first-child a").all_inner_texts()
    )
    assert len(rule_names) == SLO_RULES

    page.click(".actions a.danger:has-text('Delete')")
    page.wait_for_url(f"**/slos/{pk}/delete")
    assert page.inner_text("h1") == f"Delete SLO {name}"
    text = page.inner_text("section[aria-label='Confirmation']")
    assert f"Its {SLO_RULES} alert rules go with it" in text
    listed = page.locator("section[aria-label='Confirmation'] ul li").all_inner_texts()
    assert len(listed) == SLO_RULES
    assert {item.split(" (")[0] for item in listed} == rule_names
    screenshot(page, screenshots, "slo-delete")
    assert SLO.objects.filter(pk=pk).exists(), "the delete page must delete nothing before it is confirmed"

    page.click("#confirm")
    page.wait_for_url("**/slos/")
    message = page.inner_text("ul.messages").casefold()
    assert f"SLO {name} deleted with {SLO_RULES} rules.".casefold() in message
    assert name not in page.locator("main section.panel").inner_text()
    assert not SLO.objects.filter(pk=pk).exists()
    assert not AlertRule.objects.filter(slo_id=pk).exists()
    assert not AlertRule.objects.filter(name__in=rule_names).exists()
    browsing.problems.assert_none()


def test_the_messages_spell_slo_in_capitals(browsing: Browsing) -> None:
    page = browsing.page
    name = unique("order status message")
    set_slo_from_the_agent_page(page, name)
    confirm_and_open(page, SLO_URL)
    created = page.inner_text("ul.messages")
    page.click(".actions a.danger:has-text('Delete')")
    page.click("#confirm")
    page.wait_for_url("**/slos/")
    deleted = page.inner_text("ul.messages")
    browsing.problems.assert_none()
    assert (created, deleted) == (f"SLO {name} created.", f"SLO {name} deleted with {SLO_RULES} rules.")
