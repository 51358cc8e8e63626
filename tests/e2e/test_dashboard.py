"""The performance dashboard in a real browser: what someone clicking through it would notice.

Debian's chromium, driven by Playwright, against a live server over a seeded demo fleet (see
conftest.py for how one seeding serves the whole module). Every test ends by asserting that the
browser saw no console error, no uncaught exception, no failed request and no 4xx/5xx response.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from perfops.dashboard.panels import AGENT_LAYOUT, FLEET_LAYOUT
from tests.e2e.conftest import Browsing

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

FLEET = "/dashboard/performance/"
# No SLO is seeded, so the SLO grid shows its empty state; every other panel has data.
EMPTY_ON_FLEET = {"slo"}
EMPTY_ON_AGENT = {"slo"}
# The panels that show no chart of their own: key figures, tables and the SLO grid.
WITHOUT_CHART = {"kpis", "agents", "slo", "slow"}
REQUEST_URL = re.compile(r"/dashboard/performance/requests/(?P<trace_id>[0-9a-f]{32})$")
AGENT_URL = re.compile(r"/dashboard/performance/agents/(?P<slug>[a-z0-9-]+)(\?.*)?$")
WINDOW_TEXT = re.compile(r"Showing (\d{4}-\d\d-\d\d \d\d:\d\d) \u2013 (\d{4}-\d\d-\d\d \d\d:\d\d) UTC")

# Done when no panel shows its loading placeholder and every chart has been plotted. (Not when no
# panel is aria-busy: dashboard.js removes that attribute in a listener it attaches only once htmx
# has loaded the body, so the panels whose fragments arrive before that keep aria-busy="true".)
PANELS_DONE_JS = """(root) => {
  const scope = document.querySelector(root);
  if (!scope) return false;
  const panels = [...scope.querySelectorAll('.panel[data-panel]')];
  return panels.length > 0 && panels.every(p => !p.querySelector('.loading'))
    && [...scope.querySelectorAll('[data-figure]')].every(el => el.dataset.rendered === 'true');
}"""
PANEL_STATES_JS = """(root) => [...document.querySelectorAll(root + ' .panel[data-panel]')].map(p => ({
  name: p.dataset.panel,
  loading: !!p.querySelector('.loading'),
  empty: p.querySelector('.empty') ? p.querySelector('.empty').innerText : null,
  charts: [...p.querySelectorAll('[data-figure]')].length,
}))"""
# For each chart: whether plotly drew it, how many traces its figure JSON and plotly hold, and how
# many of them are in the SVG (a heatmap is an <image>, every other trace type a g.trace).
CHARTS_JS = """(root) => [...document.querySelectorAll(root + ' [data-figure]')].map(el => {
  const source = document.getElementById(el.dataset.figure);
  return {
    panel: el.closest('[data-panel]') ? el.closest('[data-panel]').dataset.panel : el.dataset.figure,
    rendered: el.dataset.rendered === 'true',
    container: !!el.querySelector('.plot-container svg.main-svg'),
    json_traces: source ? JSON.parse(source.textContent).data.length : 0,
    plotted: (el.data || []).length,
    drawn: el.querySelectorAll('svg.main-svg .trace, svg.main-svg .hm image').length,
  };
})"""


def wait_for_panels(browsing: Browsing, root: str = "#dashboard") -> dict[str, dict[str, Any]]:
    """Wait until every panel under `root` has loaded and drawn its charts; their states by panel name."""
    page = browsing.page
    try:
        page.wait_for_function(PANELS_DONE_JS, arg=root)
    except PlaywrightTimeout:
        states = page.evaluate(PANEL_STATES_JS, root)
        pending = [s["name"] for s in states if s["loading"]]
        raise AssertionError(
            f"panels still loading on {page.url}: {pending}; charts: {page.evaluate(CHARTS_JS, root)}; "
            f"browser problems: {browsing.problems}"
        ) from None
    return {s["name"]: s for s in page.evaluate(PANEL_STATES_JS, root)}


def assert_panels(browsing: Browsing, layout: tuple[str, ...], may_be_empty: set[str]) -> None:
    """Every panel of the layout is there, loaded, empty only where allowed, and its charts drawn."""
    states = wait_for_panels(browsing)
    assert list(states) == list(layout)
    empty = {name for name, s in states.items() if s["empty"] is not None}
    assert empty == may_be_empty, {name: states[name]["empty"] for name in empty ^ may_be_empty}
    with_chart = {name for name, s in states.items() if s["charts"]}
    assert with_chart == set(layout) - WITHOUT_CHART - may_be_empty
    assert_charts_drawn(browsing.page, "#dashboard")


def assert_charts_drawn(page: Page, root: str) -> list[dict[str, Any]]:
    charts = page.evaluate(CHARTS_JS, root)
    assert charts, f"no chart under {root}"
    for chart in charts:
        assert chart["rendered"], chart
        assert chart["container"], chart
        assert chart["json_traces"] > 0, chart
        assert chart["plotted"] == chart["json_traces"], chart
        assert chart["drawn"] > 0, chart
    return charts


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def window_of(page: Page) -> timedelta:
    match = WINDOW_TEXT.search(page.inner_text("#dashboard .window"))
    assert match, page.inner_text("#dashboard .window")
    start, end = (datetime.strptime(value, "%Y-%m-%d %H:%M") for value in match.groups())
    return end - start


def terms(page: Page, selector: str) -> dict[str, str]:
    """A description list as {term: description}."""
    terms, descriptions = (page.locator(selector).locator(tag).all_inner_texts() for tag in ("dt", "dd"))
    return dict(zip(terms, descriptions, strict=True))


def level_of(page: Page) -> str:
    return page.inner_text("#dashboard .window strong")


def screenshot(page: Page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


def test_the_fleet_page_loads_every_panel_with_drawn_charts(browsing, screenshots):
    page = browsing.page
    # plotly.js comes from the installed plotly package through a static finder, not from a CDN.
    with page.expect_response(lambda r: r.url.endswith("/static/vendor/plotly/plotly.min.js")) as plotly:
        page.goto(FLEET)
    assert plotly.value.status == 200
    assert "javascript" in (plotly.value.header_value("content-type") or "")
    assert page.title() == "Fleet performance · perfops"
    assert_panels(browsing, FLEET_LAYOUT, EMPTY_ON_FLEET)
    assert "No SLO is defined" in page.inner_text("#panel-slo .empty")
    assert level_of(page) == "fleet"
    assert window_of(page) == timedelta(hours=24)
    kpis = terms(page, "#panel-kpis dl.kpis")
    assert int(kpis["Requests"].replace(",", "")) > 1000
    assert page.locator("#panel-agents a.agent-link").count() >= 20
    assert page.locator("#panel-slow a.request-link").count() >= 10
    screenshot(page, screenshots, "fleet")
    browsing.problems.assert_none()


def test_the_dark_theme_restyles_the_page_and_its_charts_and_is_remembered(browsing, screenshots):
    page = browsing.page
    page.goto(FLEET)
    wait_for_panels(browsing)
    light_background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.click("#theme-toggle")
    assert page.get_attribute("html", "data-theme") == "dark"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light_background
    # Each chart is re-laid out with the dark theme's text colour.
    page.wait_for_function(
        """() => {
          const text = getComputedStyle(document.documentElement).getPropertyValue('--text').trim();
          return [...document.querySelectorAll('[data-rendered]')].every(el => el.layout.font.color === text);
        }"""
    )
    assert_charts_drawn(page, "#dashboard")
    screenshot(page, screenshots, "fleet-dark")
    page.reload()
    assert page.get_attribute("html", "data-theme") == "dark"
    wait_for_panels(browsing)
    browsing.problems.assert_none()


def test_changing_filters_updates_the_url_and_reloads_the_panels_and_back_returns(browsing):
    page = browsing.page
    page.goto(FLEET)
    wait_for_panels(browsing)

    with page.expect_request(lambda r: "/panels/latency" in r.url) as latency:
        page.select_option("#filters select[name=range]", "7d")
    assert query_of(latency.value.url)["range"] == ["7d"]
    page.wait_for_url("**/performance/?range=7d")
    wait_for_panels(browsing)
    assert window_of(page) == timedelta(days=7)

    with page.expect_request(lambda r: "/panels/latency" in r.url) as latency:
        page.select_option("#filters select[name=environment]", "all")
    assert query_of(latency.value.url) == {"range": ["7d"], "environment": ["all"]}
    assert query_of(page.url) == {"range": ["7d"], "environment": ["all"]}
    wait_for_panels(browsing)
    # Environment "All": one line per percentile and environment.
    names = page.evaluate("document.querySelector('#panel-latency [data-figure]').data.map(t => t.name)")
    assert {"P95 production", "P95 staging", "P95 development"} <= set(names)

    fleet_agents = page.locator("#panel-agents a.agent-link").count()
    department = page.locator("#filters select[name=department] option:not([value=''])").first
    slug, department_name = department.get_attribute("value"), department.inner_text()
    assert slug
    with page.expect_request(lambda r: "/panels/latency" in r.url) as latency:
        page.select_option("#filters select[name=department]", slug)
    assert query_of(latency.value.url) == {"range": ["7d"], "environment": ["all"], "department": [slug]}
    assert query_of(page.url) == {"range": ["7d"], "environment": ["all"], "department": [slug]}
    wait_for_panels(browsing)
    assert level_of(page) == "subset"
    assert page.inner_text("#panel-comparison h2").startswith("Comparison by team")
    assert 0 < page.locator("#panel-agents a.agent-link").count() < fleet_agents, department_name

    page.go_back()
    page.wait_for_url("**/performance/?range=7d&environment=all")
    wait_for_panels(browsing)
    assert level_of(page) == "fleet"
    assert page.input_value("#filters select[name=department]") == ""
    assert page.input_value("#filters select[name=environment]") == "all"
    page.go_back()
    page.wait_for_url("**/performance/?range=7d")
    wait_for_panels(browsing)
    assert page.input_value("#filters select[name=environment]") == "production"
    assert window_of(page) == timedelta(days=7)
    browsing.problems.assert_none()


def test_an_agent_link_opens_the_agent_page_with_its_panels(browsing, screenshots):
    page = browsing.page
    page.goto(FLEET)
    wait_for_panels(browsing)
    # The busiest agent: it has errors, versions and staging traffic to show on its own page.
    page.click("#panel-agents .sorts a:has-text('throughput')")
    page.wait_for_selector("#panel-agents .sorts a[aria-current]:has-text('throughput')")
    link = page.locator("#panel-agents a.agent-link").first
    slug = link.inner_text()
    link.click()
    page.wait_for_url(AGENT_URL)
    match = AGENT_URL.search(page.url)
    assert match
    assert match["slug"] == slug
    assert slug in page.inner_text("h1")
    assert_panels(browsing, AGENT_LAYOUT, EMPTY_ON_AGENT)
    assert level_of(page) == "agent"
    # Its slow requests are its own.
    agents = set(page.locator("#panel-slow table.slow tbody tr td:nth-child(2)").all_inner_texts())
    assert agents == {slug}
    # Each slow request says why it was slow, against the agent's own p50, in a sentence with numbers.
    causes = page.locator("#panel-slow table.slow tbody td.cause").all_inner_texts()
    assert causes
    assert all(re.search(r"p50 of [\d.,]+ (ms|s)", cause) for cause in causes), causes[:3]
    # The capacity planner draws the 7-day forecast band beside the traffic and says what it rests on.
    capacity = page.locator("#panel-capacity")
    assert "Fitted on" in capacity.inner_text()
    names = page.evaluate("() => document.querySelector('#panel-capacity [data-figure]').data.map(t => t.name)")
    assert {"80% band", "forecast"} <= set(names)
    screenshot(page, screenshots, "agent")
    browsing.problems.assert_none()


def test_a_slow_request_opens_the_request_page_with_its_waterfall(browsing, screenshots):
    page = browsing.page
    page.goto(FLEET)
    wait_for_panels(browsing)
    first = page.locator("#panel-slow table.slow tbody tr").first
    agent = first.locator("td:nth-child(2)").inner_text()
    latency = float(first.locator("td:nth-child(6)").inner_text().replace(",", ""))
    first.locator("a.request-link").click()
    page.wait_for_url(REQUEST_URL)
    match = REQUEST_URL.search(page.url)
    assert match
    assert match["trace_id"] in page.inner_text("h1")
    facts = terms(page, "dl.facts >> nth=0")
    assert facts["Agent"] == agent
    assert float(facts["Latency"].removesuffix(" ms").replace(",", "")) == pytest.approx(latency, abs=0.1)
    page.wait_for_selector("[data-figure][data-rendered='true']")
    charts = assert_charts_drawn(page, "main")
    assert len(charts) == 1
    waterfall = page.evaluate(
        "document.querySelector('[data-figure]').data.map(t => [t.type, t.orientation, t.y.length])"
    )
    assert all(kind == "bar" and orientation == "h" and rows > 0 for kind, orientation, rows in waterfall)
    # One table row per bar: the phases, then the dependency calls.
    table = page.locator("section.panel:has([data-figure]) table.compact tbody tr")
    assert table.count() == sum(rows for _, _, rows in waterfall)
    screenshot(page, screenshots, "request")
    browsing.problems.assert_none()


def test_clicking_a_point_of_the_latency_chart_opens_its_distribution(browsing):
    """A real mouse click on a point of the P95 line (hover first, as a person would), not a synthetic event."""
    page = browsing.page
    page.goto(FLEET)
    wait_for_panels(browsing)
    chart = page.locator("#panel-latency [data-figure]")
    chart.scroll_into_view_if_needed()
    # The page position of the P95 line's point in the middle of the window.
    point = page.evaluate(
        """() => {
          const el = document.querySelector('#panel-latency [data-figure]');
          const xa = el._fullLayout.xaxis, ya = el._fullLayout.yaxis;
          const trace = el._fullData.find(t => t.name === 'P95');
          const filled = trace.x.map((x, i) => i).filter(i => trace.y[i] !== null);
          const i = filled[Math.floor(filled.length / 2)];
          const box = el.getBoundingClientRect();
          return {
            x: box.left + xa._offset + xa.l2p(xa.d2l(trace.x[i])),
            y: box.top + ya._offset + ya.l2p(ya.d2l(trace.y[i])),
            t: trace.customdata[i],
          };
        }"""
    )
    page.mouse.move(point["x"], point["y"])
    page.wait_for_selector("#panel-latency .hoverlayer .legend, #panel-latency .hoverlayer .hovertext")
    with page.expect_request(lambda r: "/panels/distribution" in r.url) as drill:
        page.mouse.click(point["x"], point["y"])
    params = query_of(drill.value.url)
    clicked = datetime.fromisoformat(point["t"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(params["start"][0].replace("Z", "+00:00")) == clicked
    assert datetime.fromisoformat(params["end"][0].replace("Z", "+00:00")) > clicked

    dialog = page.locator("#drill-dialog")
    assert dialog.evaluate("d => d.open")
    page.wait_for_selector("#drill [data-figure][data-rendered='true']")
    assert dialog.locator("#drill h2").first.inner_text().startswith("Latency distribution")
    assert dialog.locator("#drill .empty").count() == 0
    assert_charts_drawn(page, "#drill")
    page.click("#drill-dialog [data-close]")
    assert not dialog.evaluate("d => d.open")
    browsing.problems.assert_none()


def test_export_csv_downloads_the_slow_requests(browsing):
    page = browsing.page
    page.goto(FLEET)
    wait_for_panels(browsing)
    first_request = page.locator("#panel-slow a.request-link").first.get_attribute("href") or ""
    with page.expect_download() as download:
        page.click("#panel-slow a[download]")
    assert re.fullmatch(r"perfops-slow-requests-\d{8}T\d{6}Z\.csv", download.value.suggested_filename)
    path = download.value.path()
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows[0][0] == "trace_id"
    assert "latency_ms" in rows[0]
    assert len(rows) >= 2
    # The same requests, in the same order, as the table.
    assert first_request.endswith(rows[1][0])
    browsing.problems.assert_none()
