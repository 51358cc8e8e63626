"""The dashboard's pages and panels through Django's test client: content, scoping, bad input, exports."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import numpy as np
import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from perfops.dashboard.panels import AGENT_LAYOUT, FLEET_LAYOUT, PANELS
from perfops.dashboard.traces import csv_safe
from perfops.metrics.rollup import catch_up
from perfops.telemetry.models import Trace
from tests import factories
from tests.metrics.conftest import Truth, ingest

# Panels that are empty by design until SLOs exist (the slos app fills them).
EMPTY_WITHOUT_SLOS = {"slo"}


@pytest.fixture(autouse=True)
def _no_cached_panels():
    cache.clear()
    yield
    cache.clear()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def panel(client: Client, name: str, **params: str):
    return client.get(reverse("dashboard:panel", args=[name]), params, headers={"HX-Request": "true"})


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} is not on the page"
    return match.group(1)


def figure_of(response) -> dict:
    match = re.search(
        r'<script id="figure-[^"]+" type="application/json">(.*?)</script>', response.content.decode(), re.S
    )
    assert match, "the panel has no figure"
    return json.loads(match.group(1))


def test_it_requires_a_login(db, client):
    for url in (
        reverse("dashboard:performance"),
        reverse("dashboard:agent", args=["pay-bot"]),
        reverse("dashboard:panel", args=["latency"]),
        reverse("dashboard:slow-csv"),
        reverse("dashboard:request", args=["0" * 32]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_the_root_opens_the_dashboard(db, client):
    assert client.get("/")["Location"] == reverse("dashboard:performance")


def test_the_fleet_page_frames_every_panel_with_its_filters(rolled_up, superuser):
    response = client_for(superuser).get(reverse("dashboard:performance"), {"range": "7d", "environment": "all"})
    assert response.status_code == 200
    body = response.content.decode()
    for name in FLEET_LAYOUT:
        assert f'id="panel-{name}"' in body
        assert f'hx-get="/dashboard/performance/panels/{name}?range=7d&amp;environment=all"' in body
    assert "level: <strong>fleet</strong>" in body
    assert 'value="7d" selected' in body


@pytest.mark.parametrize("name", sorted(PANELS))
def test_every_panel_has_data_for_the_fleet(rolled_up, superuser, name):
    response = panel(client_for(superuser), name, range="7d", environment="all")
    assert response.status_code == 200
    body = response.content.decode()
    if name in EMPTY_WITHOUT_SLOS:
        assert 'class="empty"' in body
        assert "No SLO is defined" in body
        return
    assert 'class="empty"' not in body, body[:600]
    if 'data-figure="' in body:
        assert figure_of(response)["data"], f"{name} has a figure with no traces"


def test_the_kpis_count_the_production_requests_of_the_last_day(rolled_up, superuser):
    truth = Truth.load()
    day_ago = rolled_up.now.timestamp() - 86400
    expected = int(((truth.environment == "production") & (truth.started_s >= day_ago - 300)).sum())
    lower = int(((truth.environment == "production") & (truth.started_s >= day_ago + 300)).sum())
    body = panel(client_for(superuser), "kpis").content.decode()
    shown = int(found(r"<dt>Requests</dt><dd>([\d,]+)</dd>", body).replace(",", ""))
    # The window starts at a 5-minute bucket edge: the count is within that edge's traffic.
    assert lower <= shown <= expected


def test_the_latency_chart_has_three_percentiles_per_environment_when_all_are_shown(rolled_up, superuser):
    figure = figure_of(panel(client_for(superuser), "latency", environment="all", range="7d"))
    names = {trace["name"] for trace in figure["data"]}
    assert {"P50 production", "P95 production", "P99 production", "P95 staging"} <= names
    p95 = next(t for t in figure["data"] if t["name"] == "P95 production")
    assert p95["meta"]["drill"].startswith("/dashboard/performance/panels/distribution?")
    assert "environment=production" in p95["meta"]["drill"]
    assert len(p95["customdata"]) == len(p95["x"])


def test_the_distribution_marks_the_exact_p95_within_one_percent(rolled_up, superuser):
    figure = figure_of(panel(client_for(superuser), "distribution", range="7d"))
    p95_line = next(shape for shape in figure["layout"]["shapes"] if shape["line"]["color"] == "#e9a03b")
    truth = Truth.load()
    start = rolled_up.now.timestamp() - 7 * 86400
    chosen = np.sort(truth.latency[(truth.environment == "production") & (truth.started_s >= start - 3600)])
    low = np.sort(truth.latency[(truth.environment == "production") & (truth.started_s >= start + 3600)])
    exact_high = chosen[int(np.ceil(0.95 * len(chosen))) - 1]
    exact_low = low[int(np.ceil(0.95 * len(low))) - 1]
    assert min(exact_low, exact_high) * 0.99 <= p95_line["x0"] <= max(exact_low, exact_high) * 1.01
    assert sum(y for y in figure["data"][0]["y"][::2]) == pytest.approx(len(chosen), rel=0.05)


def test_a_department_filter_is_the_subset_level_and_compares_its_teams(rolled_up, superuser):
    client = client_for(superuser)
    page = client.get(reverse("dashboard:performance"), {"department": "payments", "range": "7d"}).content.decode()
    assert "level: <strong>subset</strong>" in page
    figure = figure_of(panel(client, "comparison", department="payments", range="7d"))
    teams = set(figure["data"][0]["y"])
    assert {"checkout", "billing"} <= teams
    assert "lab" not in teams
    assert figure["data"][0]["customdata"][0].startswith("/dashboard/performance/?")


def test_the_agent_table_links_each_agent_to_its_page_and_sorts(rolled_up, superuser):
    client = client_for(superuser)
    body = panel(client, "agents", range="7d", environment="all", sort="agent", order="asc").content.decode()
    agents = re.findall(r'class="agent-link">([\w-]+)</a>', body)
    assert agents == sorted(agents) == ["lab-bot", "ledger-bot", "pay-bot", "refund-bot"]
    assert 'href="/dashboard/performance/agents/pay-bot?range=7d&amp;environment=all"' in body
    assert "<polyline" in body  # the 7-day sparkline


def test_a_viewer_sees_only_their_departments(rolled_up, viewer):
    client = client_for(viewer)
    body = panel(client, "agents", range="7d", environment="all").content.decode()
    assert set(re.findall(r'class="agent-link">([\w-]+)</a>', body)) == {"pay-bot", "refund-bot", "ledger-bot"}
    assert client.get(reverse("dashboard:agent", args=["lab-bot"])).status_code == 404
    foreign = Trace.objects.filter(agent__slug="lab-bot")[0]
    assert client.get(reverse("dashboard:request", args=[foreign.trace_id.hex])).status_code == 404
    refused = panel(client, "latency", department="research")
    assert refused.status_code == 400
    assert "No department" in refused.content.decode()
    csv_body = client.get(reverse("dashboard:slow-csv"), {"range": "7d", "environment": "all"}).content.decode()
    assert "lab-bot" not in csv_body
    assert "pay-bot" in csv_body or "refund-bot" in csv_body or "ledger-bot" in csv_body


def test_bad_filters_get_a_clear_error(rolled_up, superuser):
    client = client_for(superuser)
    response = panel(client, "latency", range="2d")
    assert response.status_code == 400
    assert "Must be one of 1h, 6h, 24h, 7d, 30d." in response.content.decode()
    page = client.get(reverse("dashboard:performance"), {"range": "2d", "tier": "slow"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "Some filters were not applied" in body
    assert 'value="slow" selected' in body  # the good filters stay
    assert client.get(reverse("dashboard:panel", args=["nope"])).status_code == 404


def test_the_custom_range_inputs_are_read_as_utc(rolled_up, superuser):
    start = (rolled_up.now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    end = (rolled_up.now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    page = client_for(superuser).get(reverse("dashboard:performance"), {"range": "custom", "start": start, "end": end})
    body = page.content.decode()
    assert "Some filters were not applied" not in body
    assert f"start={start.replace(':', '%3A')}%3A00%2B00%3A00" in body


def test_a_time_bucket_drill_lists_the_agents_with_failures(rolled_up, superuser):
    start = rolled_up.now - timedelta(hours=6)
    body = panel(
        client_for(superuser),
        "contributors",
        start=factories.iso(start),
        end=factories.iso(rolled_up.now),
        environment="all",
        sort="failures",
    ).content.decode()
    assert "agents with failed requests" in body
    assert re.findall(r'href="/dashboard/performance/agents/([\w-]+)', body)


def test_the_slow_requests_are_the_slowest_and_sort_by_any_column(rolled_up, superuser):
    client = client_for(superuser)
    body = panel(client, "slow", range="7d", environment="all").content.decode()
    latency_cells = r'class="num"><a href="/dashboard/performance/requests/\w+">([\d.,]+)</a>'
    shown = [float(v.replace(",", "")) for v in re.findall(latency_cells, body)]
    truth = Truth.load()
    start = rolled_up.now.timestamp() - 7 * 86400
    top = np.sort(truth.latency[truth.started_s >= start])[::-1][: len(shown)]
    assert shown == pytest.approx(list(top), abs=0.051)
    by_agent = panel(client, "slow", range="7d", environment="all", sort="agent", order="asc").content.decode()
    agents = re.findall(r'<td><a href="/dashboard/performance/agents/[\w-]+\?[^"]*">([\w-]+)</a></td>', by_agent)
    assert agents == sorted(agents)


def test_the_csv_export_neutralises_formulas(rolled_up, superuser):
    ingest(
        [factories.record(agent="pay-bot", latency_ms=999_000.0, version='=HYPERLINK("http://x")', model="@SUM(A1)")],
        superuser,
    )
    response = client_for(superuser).get(reverse("dashboard:slow-csv"), {"range": "1h"})
    assert response["Content-Disposition"].startswith('attachment; filename="perfops-slow-requests-')
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:3] == ["trace_id", "started_at", "agent"]
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["version"] == '\'=HYPERLINK("http://x")'
    assert first["model"] == "'@SUM(A1)"
    assert first["latency_ms"] == "999000.0"


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@A1", "\t=1", "\r=1"])
def test_csv_cells_that_a_spreadsheet_would_run_are_made_text(value):
    assert csv_safe(value) == "'" + value
    assert csv_safe("plain") == "plain"


def test_the_request_page_shows_phases_calls_and_similar_requests(rolled_up, superuser):
    trace = Trace.objects.filter(agent__slug="pay-bot").order_by("-latency_ms")[0]
    body = client_for(superuser).get(reverse("dashboard:request", args=[trace.trace_id.hex])).content.decode()
    assert trace.trace_id.hex in body
    assert "phase: llm" in body  # the waterfall figure
    assert "gpt-4o" in body
    assert "/dashboard/performance/agents/pay-bot?" in body
    assert client_for(superuser).get(reverse("dashboard:request", args=["not-a-uuid"])).status_code == 404


def test_names_are_escaped_everywhere(rolled_up, superuser):
    agent = rolled_up.agents["pay-bot"]
    agent.name = '<script>alert("x")</script>'
    agent.save()
    body = client_for(superuser).get(reverse("dashboard:agent", args=["pay-bot"])).content.decode()
    assert '<script>alert("x")</script>' not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body


def test_the_agent_page_frames_its_panels_for_that_agent(rolled_up, superuser):
    body = client_for(superuser).get(reverse("dashboard:agent", args=["pay-bot"]), {"range": "7d"}).content.decode()
    for name in AGENT_LAYOUT:
        assert f'hx-get="/dashboard/performance/panels/{name}?range=7d&amp;agent=pay-bot"' in body
    assert 'name="department"' not in body  # the agent fixes the scope


def test_a_panel_opened_as_a_link_is_a_whole_page(rolled_up, superuser):
    response = client_for(superuser).get(reverse("dashboard:panel", args=["heatmap"]), {"range": "7d"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" in body
    assert "Latency percentile heatmap" in body


def test_panels_are_cached_per_filter_set_until_new_data(rolled_up, superuser, django_assert_max_num_queries):
    client = client_for(superuser)

    def requests_shown() -> int:
        body = panel(client, "kpis").content.decode()
        return int(found(r"<dt>Requests</dt><dd>([\d,]+)</dd>", body).replace(",", ""))

    before = requests_shown()
    with django_assert_max_num_queries(4):  # session, user, the rollup generation: no rollup read
        assert requests_shown() == before
    ingest([factories.record(agent="pay-bot")], superuser)
    catch_up(rolled_up.now - timedelta(hours=1), now=rolled_up.now + timedelta(minutes=5))
    assert requests_shown() == before + 1


def test_a_team_of_another_department_is_named_on_the_page_and_left_out(rolled_up, superuser):
    body = client_for(superuser).get(reverse("dashboard:performance"), {"department": "payments", "team": "lab"})
    text = body.content.decode()
    assert "Some filters were not applied" in text
    assert "<code>team</code>" in text
    assert "level: <strong>subset</strong>" in text
    assert 'hx-get="/dashboard/performance/panels/latency?department=payments"' in text


def test_a_panel_error_is_a_fragment_htmx_swaps_in(rolled_up, superuser):
    response = panel(client_for(superuser), "latency", department="payments", team="lab")
    assert response.status_code == 400
    body = response.content.decode()
    assert "This panel could not be computed." in body
    assert "<html" not in body


def test_the_version_panel_gates_each_version_against_the_busiest(rolled_up, superuser):
    body = panel(client_for(superuser), "versions", range="7d", environment="all").content.decode()
    versions = re.findall(r"<tr(?: class=\"gap\")?><td>(1\.\d\.0)", body)
    assert sorted(versions) == ["1.0.0", "1.1.0", "1.2.0"]
    assert body.count('<span class="tag">baseline</span>') == 1
    assert re.search(r'class="num">[+-]\d+%</td>', body)


def test_clicking_the_active_agent_sort_reverses_it(rolled_up, superuser):
    client = client_for(superuser)
    body = panel(client, "agents", range="7d", environment="all").content.decode()
    assert "sort=p95&amp;order=asc" in body
    assert "(highest first)" in body
    reversed_body = panel(client, "agents", range="7d", environment="all", sort="p95", order="asc").content.decode()
    assert "(lowest first)" in reversed_body
    p95s = [float(v.replace(",", "")) for v in re.findall(r'<span class="num">([\d.,]+) ms</span>', reversed_body)]
    assert p95s == sorted(p95s)


def test_names_from_traces_are_inert_in_charts(rolled_up, superuser):
    ingest([factories.record(agent="pay-bot", version='<a href="https://evil.example">9.9</a>')], superuser)
    catch_up(rolled_up.now - timedelta(hours=1), now=rolled_up.now + timedelta(minutes=5))
    figure = figure_of(panel(client_for(superuser), "versions", range="1h"))
    names = [trace["name"] for trace in figure["data"]]
    assert '&lt;a href="https://evil.example"&gt;9.9&lt;/a&gt;' in names
    assert not any("<a" in name for name in names)


def test_panels_of_a_relative_range_refresh_every_minute_but_sortable_tables_and_custom_ranges_do_not(
    rolled_up, superuser
):
    client = client_for(superuser)

    def triggers(**params: str) -> dict[str, str]:
        body = client.get(reverse("dashboard:performance"), params).content.decode()
        return dict(re.findall(r'data-panel="(\w+)"\s+hx-get="[^"]*" hx-trigger="([^"]*)"', body))

    live = triggers(range="1h")
    assert "every 60s" in live["latency"]
    assert live["agents"] == live["slow"] == "load"
    start = factories.iso(rolled_up.now - timedelta(hours=3))
    assert set(triggers(start=start).values()) == {"load"}


def test_the_csv_export_refuses_a_foreign_scope_with_400(rolled_up, viewer):
    client = client_for(viewer)
    for params in ({"department": "research"}, {"agent": "lab-bot"}, {"team": "lab"}):
        response = client.get(reverse("dashboard:slow-csv"), params)
        assert response.status_code == 400
        assert "visible to you" in response.content.decode()


def test_the_request_page_shows_the_latest_of_a_reused_trace_id(rolled_up, superuser):
    trace_id = factories.new_trace_id()
    now = rolled_up.now
    ingest(
        [
            factories.record(agent="pay-bot", trace_id=trace_id, started_at=factories.iso(now - timedelta(minutes=5))),
            factories.record(
                agent="pay-bot",
                trace_id=trace_id,
                started_at=factories.iso(now - timedelta(minutes=2)),
                version="7.7.7",
            ),
        ],
        superuser,
    )
    response = client_for(superuser).get(reverse("dashboard:request", args=[trace_id]))
    assert response.status_code == 200
    if Trace.objects.filter(trace_id=trace_id).count() == 2:  # PostgreSQL keeps both (id, start) records
        assert "7.7.7" in response.content.decode()


def test_the_agent_table_sorts_names_both_ways(rolled_up, superuser):
    client = client_for(superuser)
    body = panel(client, "agents", range="7d", environment="all", sort="agent", order="desc").content.decode()
    assert re.findall(r'class="agent-link">([\w-]+)</a>', body) == ["refund-bot", "pay-bot", "ledger-bot", "lab-bot"]


def test_utilization_is_shown_only_when_every_agent_in_scope_has_a_capacity(rolled_up, superuser):
    from perfops.telemetry.models import AgentCapacity

    AgentCapacity.objects.create(agent=rolled_up.agents["pay-bot"], environment="production", requests_per_s=0.03)
    client = client_for(superuser)
    fleet = figure_of(panel(client, "throughput", range="7d"))
    assert [t["name"] for t in fleet["data"]] == ["requests/s"]
    assert any("capacity 1.8/min" in a["text"] for a in fleet["layout"]["annotations"])
    one = figure_of(panel(client, "throughput", range="7d", agent="pay-bot"))
    assert [t["name"] for t in one["data"]] == ["requests/s", "utilization %"]


def test_members_without_a_team_are_not_a_link(rolled_up, superuser):
    figure = figure_of(panel(client_for(superuser), "comparison", department="payments", range="7d"))
    links = dict(zip(figure["data"][0]["y"], figure["data"][0]["customdata"], strict=True))
    assert links["(none)"] == ""
    assert links["checkout"].endswith("team=checkout")


def test_a_panel_reloaded_after_the_session_ended_sends_the_page_to_login(db, client):
    response = client.get(
        reverse("dashboard:panel", args=["latency"]),
        {"range": "1h"},
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/dashboard/performance/?range=1h"},
    )
    assert response.status_code == 401
    assert response["HX-Redirect"] == "/admin/login/?next=%2Fdashboard%2Fperformance%2F%3Frange%3D1h"
