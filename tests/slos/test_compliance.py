"""SLIs from the rollups against exact counts over the raw traces, and the SLOs on the dashboard."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from slos import compliance
from slos.models import SLO
from tests.metrics.conftest import Truth


@pytest.fixture(autouse=True)
def _no_cached_panels():
    cache.clear()
    yield
    cache.clear()


def make_slo(traffic, **fields) -> SLO:
    defaults = {"name": "pay-bot latency", "scope": SLO.Scope.AGENT, "agent": traffic.agents["pay-bot"]}
    defaults |= {"kind": SLO.Kind.LATENCY, "threshold_ms": 500.0, "target": 0.9, "window_days": 7}
    slo = SLO(**(defaults | fields))
    slo.full_clean()
    slo.save()
    return slo


def exact(truth: Truth, mask: np.ndarray, threshold_ms: float | None) -> tuple[int, int]:
    ok = truth.status == "ok"
    good = ok & (truth.latency < threshold_ms) if threshold_ms is not None else ok
    return int((good & mask).sum()), int(mask.sum())


@pytest.mark.parametrize("threshold_ms", [500.0, 2000.0, 123.4, None])
def test_an_agent_slo_counts_good_and_total_events_like_the_raw_traces(rolled_up, superuser, threshold_ms):
    kind = SLO.Kind.LATENCY if threshold_ms else SLO.Kind.AVAILABILITY
    slo = make_slo(rolled_up, kind=kind, threshold_ms=threshold_ms)
    spent = compliance.budget(slo, superuser, rolled_up.now)
    truth = Truth.load()
    agent = rolled_up.agents["pay-bot"].pk
    start = rolled_up.now.timestamp() - 7 * 86400
    # The window starts at the finest kept edge (an hour that far back): bound the truth by it.
    wide = (truth.agent == agent) & (truth.environment == "production") & (truth.started_s >= start - 3600)
    narrow = wide & (truth.started_s >= start + 3600)
    good_high, total_high = exact(truth, wide, threshold_ms)
    good_low, total_low = exact(truth, narrow, threshold_ms)
    assert total_low <= spent.total <= total_high
    if threshold_ms in (500.0, 2000.0, None):  # a bucket boundary (or no threshold): exact
        assert good_low <= spent.good <= good_high
    else:  # a request within 1% above the threshold may count as bad, never the reverse
        near = wide & (truth.status == "ok") & (truth.latency >= threshold_ms / 1.0199) & (truth.latency < threshold_ms)
        assert good_low - int(near.sum()) <= spent.good <= good_high


def test_a_department_slo_gives_each_agent_its_compliance(rolled_up, superuser):
    slo = make_slo(rolled_up, scope=SLO.Scope.DEPARTMENT, agent=None, department=rolled_up.agents["pay-bot"].department)
    assert slo.department is not None
    assert slo.department.slug == "payments"
    by_agent = compliance.budgets_by_agent(slo, superuser, rolled_up.now)
    assert set(by_agent) == {"pay-bot", "refund-bot", "ledger-bot"}
    for spent in by_agent.values():
        assert 0 <= spent.good <= spent.total


def test_the_dashboard_shows_slo_lines_colours_and_the_compliance_grid(rolled_up, superuser):
    make_slo(rolled_up, target=0.5)
    client = Client()
    client.force_login(superuser)
    hx = {"HX-Request": "true"}
    url = reverse("dashboard:panel", args=["slo"])
    grid = client.get(url, {"range": "7d", "agent": "pay-bot"}, headers=hx).content.decode()
    assert "pay-bot" in grid
    assert re.search(r'class="slo-cell slo-(green|yellow|red)"', grid)
    assert "budget left" in grid
    latency = client.get(reverse("dashboard:panel", args=["latency"]), {"agent": "pay-bot"}, headers=hx)
    found = re.search(r'type="application/json">(.*?)</script>', latency.content.decode(), re.S)
    assert found
    figure = json.loads(found.group(1))
    assert any(shape.get("y0") == 500.0 for shape in figure["layout"]["shapes"])
    agents = client.get(reverse("dashboard:panel", args=["agents"]), {"range": "7d"}, headers=hx).content.decode()
    assert "of 50% of requests succeed under 500 ms over 7 days" in agents


def test_a_viewer_sees_only_slos_of_their_departments(rolled_up, viewer, research):
    make_slo(rolled_up, name="lab", agent=rolled_up.agents["lab-bot"])
    assert list(SLO.objects.visible_to(viewer)) == []
    fleet = make_slo(rolled_up, name="fleet", scope=SLO.Scope.FLEET, agent=None)
    assert fleet.department is None
    assert list(SLO.objects.visible_to(viewer)) == []


def test_an_slo_refuses_inconsistent_scopes(rolled_up):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="needs its agent"):
        make_slo(rolled_up, agent=None)
    with pytest.raises(ValidationError, match="needs a threshold"):
        make_slo(rolled_up, threshold_ms=None)
    with pytest.raises(ValidationError, match="Only a team scope names a team"):
        make_slo(rolled_up, team=rolled_up.agents["pay-bot"].team)


def panel_figure(client, name: str, **params) -> tuple[str, dict]:
    page = client.get(reverse("dashboard:panel", args=[name]), params, headers={"HX-Request": "true"}).content.decode()
    found = re.search(r'type="application/json">(.*?)</script>', page, re.S)
    return page, json.loads(found.group(1)) if found else {}


def test_the_error_chart_shows_how_fast_the_budget_burns(rolled_up, superuser):
    from perfops.metrics.filters import MetricFilters
    from perfops.metrics.query import MetricsQuery

    make_slo(rolled_up, kind=SLO.Kind.AVAILABILITY, threshold_ms=None, target=0.99, name="pay-bot up")
    client = Client()
    client.force_login(superuser)
    page, figure = panel_figure(client, "errors", agent="pay-bot", range="24h")
    burn = next(trace for trace in figure["data"] if trace["name"] == "budget burn rate (pay-bot up)")
    assert burn["yaxis"] == "y2"
    # Each point is that bucket's failed share over the 1% budget.
    series = MetricsQuery(MetricFilters(range="24h", agent="pay-bot"), superuser, now=rolled_up.now).series()
    expected = {
        p["t"]: (p["errors"] + p["timeouts"]) / p["count"] / 0.01 for p in series["series"][0]["points"] if p["count"]
    }
    shown = {t: v for t, v in zip(burn["x"], burn["y"], strict=True) if v is not None}
    common = set(shown) & set(expected)
    assert len(common) >= len(expected) - 1
    for t in common:
        assert shown[t] == pytest.approx(expected[t], abs=0.01)
    assert "the budget lasts the SLO window" in page


def test_panels_show_the_rules_firing_for_their_scope_and_offer_a_new_alert(rolled_up, superuser, engineer, viewer):
    from slos.models import AlertRule

    slo = make_slo(
        rolled_up, kind=SLO.Kind.AVAILABILITY, threshold_ms=None, target=0.99, name="pay-bot up", window_days=30
    )
    rule = slo.alert_rules.get(threshold=14.4)
    AlertRule.objects.filter(pk=rule.pk).update(state="firing", last_value=20.0)
    client = Client()
    client.force_login(engineer)
    errors, _ = panel_figure(client, "errors", agent="pay-bot")
    assert "firing: pay-bot up: page at 14.4x over 1 h" in errors
    assert reverse("slos:rule-new") + "?metric=error_rate" in errors
    latency, _ = panel_figure(client, "latency", agent="pay-bot")
    assert "firing:" not in latency  # an availability rule belongs on the error chart
    other, _ = panel_figure(client, "errors", agent="refund-bot")
    assert "firing:" not in other
    viewer_client = Client()
    viewer_client.force_login(viewer)
    seen, _ = panel_figure(viewer_client, "errors", agent="pay-bot")
    assert "firing: pay-bot up" in seen
    assert "+ alert" not in seen  # viewers read
