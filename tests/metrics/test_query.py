"""The query layer against exact answers: numpy nearest-rank percentiles and counts over the raw rows."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.db.models.functions import Coalesce

from perfops.metrics.filters import TIERS, FilterError, parse_filters
from perfops.metrics.query import MetricsQuery
from perfops.metrics.rollup import tick
from perfops.metrics.sketch import RELATIVE_ACCURACY, TIER_EDGES_MS, nearest_rank
from perfops.telemetry.models import Agent, Department, Deployment, Team
from tests.metrics.conftest import Truth

QS = (0.5, 0.95, 0.99)
STATUS = {"success": "ok", "errors": "error", "timeouts": "timeout"}


def random_params(rng: np.random.Generator, now) -> dict[str, str]:
    params: dict[str, str] = {}
    if rng.random() < 0.75:
        params["range"] = str(rng.choice(["1h", "6h", "24h", "7d", "30d"]))
    else:
        start = now - timedelta(seconds=float(rng.uniform(120, 9 * 86400)))
        params["start"] = start.isoformat()
        if rng.random() < 0.6:
            end = start + timedelta(seconds=float(rng.uniform(60, 3 * 86400)))
            params["end"] = end.isoformat()
    choices = {
        "environment": ["production", "staging", "development", "all"],
        "department": ["payments", "research"],
        "team": ["checkout", "billing", "lab"],
        "agent": ["pay-bot", "refund-bot", "ledger-bot", "lab-bot"],
        "tier": list(TIERS),
        "status": list(STATUS),
        "version": ["1.0.0", "1.2.0", "latest", "9.9.9"],
        "intent": ["customer_support", "code_generation"],
    }
    for key, values in choices.items():
        if rng.random() < 0.3:
            params[key] = str(rng.choice(values))
    return params


def truth_mask(truth: Truth, params: dict[str, str], start_s: float, end_s: float) -> np.ndarray:
    mask = (truth.started_s >= start_s) & (truth.started_s < end_s)
    environment = params.get("environment", "production")
    if environment != "all":
        mask &= truth.environment == environment
    if "department" in params:
        mask &= truth.department == Department.objects.get(slug=params["department"]).pk
    if "team" in params:
        teams = Team.objects.filter(slug=params["team"])
        if "department" in params:
            teams = teams.filter(department__slug=params["department"])
        mask &= np.isin(truth.team, list(teams.values_list("pk", flat=True)))
    if "agent" in params:
        mask &= truth.agent == Agent.objects.get(slug=params["agent"]).pk
    if "tier" in params:
        edges = (0.0, *TIER_EDGES_MS, np.inf)
        tier = TIERS[params["tier"]]
        mask &= (truth.latency >= edges[tier]) & (truth.latency < edges[tier + 1])
    if "status" in params:
        mask &= truth.status == STATUS[params["status"]]
    if "intent" in params:
        mask &= truth.intent == params["intent"]
    version = params.get("version")
    if version == "latest":
        newest: dict[tuple[int, str], str] = {}
        for agent_id, env, name in (
            Deployment.objects.annotate(effective_at=Coalesce("deployed_at", "first_seen_at"))
            .order_by("effective_at", "pk")
            .values_list("agent_id", "environment", "version")
        ):
            newest[(agent_id, env)] = name
        keys = list(zip(truth.agent.tolist(), truth.environment.tolist(), truth.version.tolist(), strict=True))
        mask &= np.array([newest.get((a, e)) == v for a, e, v in keys], dtype=bool)
    elif version is not None:
        mask &= truth.version == version
    return mask


def exact_quantiles(values: np.ndarray) -> list[float]:
    ordered = np.sort(values)
    return [float(ordered[nearest_rank(q, len(ordered)) - 1]) for q in QS]


def check_against_truth(query: MetricsQuery, params: dict[str, str], truth: Truth) -> None:
    the_plan = query.plan()
    end_s = min(the_plan.end_s, query.now.timestamp())
    mask = truth_mask(truth, params, the_plan.start_s, end_s)
    summary = query.summary()
    context = (params, the_plan)
    assert summary["count"] == int(mask.sum()), context
    assert summary["errors"] == int((truth.status[mask] == "error").sum()), context
    assert summary["timeouts"] == int((truth.status[mask] == "timeout").sum()), context
    if mask.any():
        for q, exact in zip(QS, exact_quantiles(truth.latency[mask]), strict=True):
            estimate = summary[f"p{q * 100:g}_ms"]
            assert abs(estimate - exact) <= RELATIVE_ACCURACY * exact, (q, estimate, exact, context)
    else:
        assert summary["p50_ms"] is None
    series = query.series()
    points = series["series"][0]["points"]
    index = ((truth.started_s[mask] - the_plan.start_s) // the_plan.width_s).astype(int)
    expected = np.bincount(index, minlength=len(points))
    assert [p["count"] for p in points] == expected.tolist(), context
    assert len(points) <= 301


@pytest.mark.django_db
def test_random_filter_sets_match_the_raw_rows(rolled_up, superuser):
    truth = Truth.load()
    assert len(truth.latency) == rolled_up.count == 2500
    rng = np.random.default_rng(7)
    checked = refused = 0
    for _ in range(80):
        params = random_params(rng, rolled_up.now)
        filters = parse_filters(params, now=rolled_up.now)
        if (
            "team" in params
            and "department" in params
            and (params["team"] == "lab") != (params["department"] == "research")
        ):
            # A team that is not in the named department is refused.
            with pytest.raises(FilterError, match="team"):
                MetricsQuery(filters, superuser, now=rolled_up.now)
            refused += 1
            continue
        query = MetricsQuery(filters, superuser, now=rolled_up.now)
        check_against_truth(query, params, truth)
        checked += 1
    assert checked >= 60


@pytest.mark.django_db
def test_the_default_filters_cover_the_last_24_hours_of_production(rolled_up, superuser):
    query = MetricsQuery(parse_filters({}, now=rolled_up.now), superuser, now=rolled_up.now)
    truth = Truth.load()
    check_against_truth(query, {}, truth)
    window = query.summary()["window"]
    assert window["range"] == "24h"
    assert window["bucket_s"] == 300


@pytest.mark.django_db
@pytest.mark.parametrize(
    "by", ["agent", "department", "team", "version", "environment", "intent", "error_type", "tier"]
)
def test_breakdowns_count_each_group_exactly(rolled_up, superuser, by):
    params = {"range": "7d", "environment": "all"}
    query = MetricsQuery(parse_filters(params, now=rolled_up.now), superuser, now=rolled_up.now)
    the_plan = query.plan(by)
    truth = Truth.load()
    mask = truth_mask(truth, params, the_plan.start_s, rolled_up.now.timestamp())
    result = query.breakdown(by)
    got = {row["key"]: row["count"] for row in result["rows"]}
    keys = {
        "agent": lambda: [Agent.objects.get(pk=pk).slug for pk in truth.agent[mask]],
        "department": lambda: [Department.objects.get(pk=pk).slug for pk in truth.department[mask]],
        "team": lambda: [Team.objects.get(pk=pk).slug if pk else "(none)" for pk in truth.team[mask]],
        "version": lambda: truth.version[mask].tolist(),
        "environment": lambda: truth.environment[mask].tolist(),
        "intent": lambda: truth.intent[mask].tolist(),
        "error_type": lambda: [e or "none" for e in truth.error_type[mask]],
        "tier": lambda: [
            ("fast", "normal", "slow", "critical")[int(np.searchsorted(TIER_EDGES_MS, v, side="right"))]
            for v in truth.latency[mask]
        ],
    }[by]()
    values, counts = np.unique(np.array(keys, dtype=object), return_counts=True)
    assert got == dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert [row["count"] for row in result["rows"]] == sorted(got.values(), reverse=True)


@pytest.mark.django_db
def test_ticks_alone_give_the_same_answers_as_a_catch_up(traffic, superuser):
    # Ingest marked every bucket it wrote; ticks recompute them at the grain kept at their time.
    result = tick(now=traffic.now + timedelta(seconds=60), settle_s=0, limit=100_000)
    assert result.marks_left == 0
    assert result.traces == 2500
    truth = Truth.load()
    rng = np.random.default_rng(11)
    later = traffic.now + timedelta(seconds=60)
    for _ in range(25):
        params = random_params(rng, traffic.now)
        params.pop("team", None)
        query = MetricsQuery(parse_filters(params, now=later), superuser, now=later)
        check_against_truth(query, params, truth)


@pytest.mark.django_db
def test_a_person_sees_only_their_departments(rolled_up, engineer, outsider):
    # The engineer belongs to payments, the outsider to research.
    mine = MetricsQuery(parse_filters({"range": "30d", "environment": "all"}), engineer, now=rolled_up.now).summary()
    theirs = MetricsQuery(parse_filters({"range": "30d", "environment": "all"}), outsider, now=rolled_up.now).summary()
    truth = Truth.load()
    payments = Department.objects.get(slug="payments").pk
    assert mine["count"] == int((truth.department == payments).sum())
    assert theirs["count"] == int((truth.department != payments).sum())
    for params in ({"department": "payments"}, {"agent": "pay-bot"}, {"team": "checkout"}):
        with pytest.raises(FilterError) as refused:
            MetricsQuery(parse_filters(params), outsider, now=rolled_up.now)
        # The same words as for a name that does not exist: nothing about the other department leaks.
        assert "is visible to you" in str(refused.value)
    with pytest.raises(FilterError) as missing:
        MetricsQuery(parse_filters({"department": "no-such"}), outsider, now=rolled_up.now)
    assert "is visible to you" in str(missing.value)


@pytest.mark.django_db
def test_phase_and_dependency_breakdowns_add_up_to_the_raw_timings(rolled_up, superuser):
    from perfops.telemetry.models import Trace

    query = MetricsQuery(parse_filters({"range": "30d", "environment": "all"}), superuser, now=rolled_up.now)
    start_s = query.plan().start_s
    phases: dict[str, float] = {}
    calls: dict[tuple[str, str], list[float]] = {}
    for trace in Trace.objects.all():
        if trace.started_at.timestamp() < start_s:
            continue
        for name, ms in trace.phases.items():
            phases[name] = phases.get(name, 0.0) + ms
        for call in trace.dependencies:
            entry = calls.setdefault((call["kind"], call["name"]), [0, 0, 0.0])
            entry[0] += 1
            entry[1] += call["status"] == "error"
            entry[2] += call["duration_ms"]
    by_phase = query.breakdown("phase")
    assert [row["name"] for row in by_phase["rows"]] == ["auth", "llm", "postprocess"]  # in the order they run
    for row in by_phase["rows"]:
        assert row["per_trace_ms"] * by_phase["traces"] == pytest.approx(phases[row["name"]], rel=1e-4)
    by_call = query.breakdown("dependency")
    for row in by_call["rows"]:
        count, errors, total = calls[(row["kind"], row["name"])]
        assert (row["calls"], row["errors"]) == (count, errors)
        assert row["mean_ms"] * count == pytest.approx(total, rel=1e-4)
