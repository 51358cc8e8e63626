"""manage.py seed_demo: what someone looking at the demo would notice."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from io import StringIO

import numpy as np
import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from perfops.telemetry.choices import COMMON_INTENTS
from perfops.telemetry.demo import fleet, loader
from perfops.telemetry.demo.plan import build_plan, from_us
from perfops.telemetry.ingest.records import Window, validate_record
from perfops.telemetry.models import Agent, AgentCapacity, Department, Deployment, Team, Trace
from tests import factories

# A Thursday afternoon: three days of history are Monday 16:00 to now, all weekdays.
NOW = datetime(2026, 3, 12, 16, 0, tzinfo=UTC)
SEED = 11
TRACES = 30_000
DAYS = 3


def seed(**options):
    out = StringIO()
    with time_machine.travel(NOW, tick=True):
        call_command("seed_demo", stdout=out, jobs=0, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def seeded(django_db_setup, django_db_blocker):
    """One seeded fleet for the read-only tests of this module (seeding takes a second or two)."""
    with django_db_blocker.unblock():
        output = seed(traces=TRACES, days=DAYS, seed=SEED)
        yield output
        loader.reset()


@pytest.fixture
def plan():
    return build_plan(SEED, fleet.base_size(), DAYS, NOW)


def production_traces(slug):
    return Trace.objects.filter(agent__slug=slug, environment="production")


def latencies(queryset):
    return np.array(list(queryset.values_list("latency_ms", flat=True)))


@pytest.mark.django_db
def test_the_fleet_has_six_departments_with_teams_and_at_least_60_agents(seeded):
    departments = Department.objects.filter(slug__in=fleet.DEPARTMENT_SLUGS)
    assert departments.count() == 6
    for department in departments:
        assert 2 <= department.teams.count() <= 3
    agents = Agent.objects.filter(department__in=departments).select_related("team")
    assert agents.count() >= 60
    for agent in agents:
        assert agent.team is not None
        assert agent.team.department_id == agent.department_id
        assert agent.owner is None
        assert agent.name
        assert agent.intent_category in COMMON_INTENTS
    assert {"refund-assistant", "order-status-bot", "invoice-extractor"} <= {a.slug for a in agents}
    assert len({a.intent_category for a in agents}) == len(COMMON_INTENTS)


@pytest.mark.django_db
def test_every_agent_has_a_capacity_per_environment_highest_in_production(seeded):
    for agent in Agent.objects.filter(department__slug__in=fleet.DEPARTMENT_SLUGS):
        capacity = dict(AgentCapacity.objects.filter(agent=agent).values_list("environment", "requests_per_s"))
        assert set(capacity) == {"production", "staging", "development"}
        assert capacity["production"] >= capacity["staging"] >= capacity["development"] > 0


@pytest.mark.django_db
def test_traffic_is_in_three_environments_mostly_production(seeded):
    per_environment = Counter(Trace.objects.values_list("environment", flat=True))
    assert Trace.objects.count() == TRACES
    assert set(per_environment) == {"production", "staging", "development"}
    assert per_environment["production"] > 0.7 * TRACES


@pytest.mark.django_db
def test_traces_cover_the_days_up_to_now_busier_by_day_than_by_night(seeded):
    started = list(Trace.objects.values_list("started_at", flat=True))
    assert min(started) >= NOW - timedelta(days=DAYS)
    assert max(started) < NOW
    assert max(started) > NOW - timedelta(minutes=15)
    assert len({moment.date() for moment in started}) == DAYS + 1
    hours = Counter(moment.hour for moment in started)
    office = sum(hours[h] for h in range(9, 17)) / 8
    night = sum(hours[h] for h in range(6)) / 6
    assert office > 3 * night


@pytest.mark.django_db
def test_stored_traces_pass_the_ingest_validation(seeded):
    window = Window.around(NOW, retention_days=30, max_future_s=300)
    sample = Trace.objects.select_related("agent").order_by("trace_id")[:400]
    for index, trace in enumerate(sample):
        record = {
            "trace_id": trace.trace_id.hex,
            "agent": trace.agent.slug,
            "environment": trace.environment,
            "version": trace.version,
            "intent": trace.intent,
            "started_at": trace.started_at.isoformat(),
            "latency_ms": trace.latency_ms,
            "status": trace.status,
            "phases": trace.phases,
            "dependencies": trace.dependencies,
            "model": trace.model,
            "cache_hit": trace.cache_hit,
            "attributes": trace.attributes,
        }
        if trace.error_type:
            record["error_type"] = trace.error_type
        if trace.input_tokens is not None:
            record.update(input_tokens=trace.input_tokens, output_tokens=trace.output_tokens)
        valid, errors = validate_record(record, index, window)
        assert valid is not None, (record, errors)
        assert (trace.error_type == "") == (trace.status == "ok")


@pytest.mark.django_db
def test_trace_ids_are_unique(seeded):
    assert Trace.objects.values("trace_id").distinct().count() == TRACES


@pytest.mark.django_db
def test_requests_look_real_phases_calls_tokens_and_cache_hits(seeded):
    traces = list(production_traces("faq-responder").values_list("phases", "dependencies", "latency_ms", "cache_hit"))
    full = [t for t in traces if not t[3] and "llm" in t[0]]
    cached = [t for t in traces if t[3]]
    assert full
    assert cached
    assert set(full[0][0]) == {"auth", "preprocess", "llm", "postprocess"}
    kinds = {call["kind"] for call in full[0][1]}
    assert {"llm", "db", "http", "tool"} <= kinds
    llm_call = next(call for call in full[0][1] if call["kind"] == "llm")
    assert llm_call["name"] == "gpt-4o-mini"
    # A cached answer skips the LLM: much faster.
    assert np.median([t[2] for t in cached]) < 0.3 * np.median([t[2] for t in full])
    tokens = Trace.objects.filter(agent__slug="faq-responder", cache_hit=False, status="ok")
    assert tokens.filter(input_tokens__gt=0, output_tokens__gt=0).exists()
    search = Trace.objects.filter(agent__slug="catalog-search").first()
    assert search is not None
    assert search.model == ""
    assert search.input_tokens is None


@pytest.mark.django_db
def test_timeouts_end_at_the_agents_timeout(seeded):
    timeouts = Trace.objects.filter(status="timeout")
    assert timeouts.exists()
    specs = {agent.slug: agent for agent in fleet.catalog(fleet.base_size())}
    for trace in timeouts.select_related("agent")[:50]:
        limit = fleet.ARCHETYPES[specs[trace.agent.slug].archetype].timeout_ms
        assert limit <= trace.latency_ms <= limit + 25
        assert trace.error_type == "timeout"
        assert any(call["status"] == "error" for call in trace.dependencies)


@pytest.mark.django_db
def test_the_latency_regression_is_clearly_slower_and_fixed_by_the_next_version(seeded):
    traces = production_traces(fleet.LATENCY_REGRESSION_AGENT)
    p95 = {
        version: np.percentile(latencies(traces.filter(version=version)), 95) for version in ("2.2.4", "2.3.0", "2.3.1")
    }
    assert p95["2.3.0"] > 1.4 * p95["2.2.4"]
    assert p95["2.3.1"] < 1.15 * p95["2.2.4"]


@pytest.mark.django_db
def test_the_error_regression_fails_more_often_with_llm_errors(seeded):
    traces = production_traces(fleet.ERROR_REGRESSION_AGENT)

    def llm_error_rate(version):
        return traces.filter(version=version, error_type="llm_error").count() / traces.filter(version=version).count()

    assert llm_error_rate("3.1.0") > llm_error_rate("3.0.7") + 0.025
    assert llm_error_rate("3.1.1") < llm_error_rate("3.1.0") / 2


@pytest.mark.django_db
def test_deployments_match_the_versions_in_the_traces(seeded):
    deployments = Deployment.objects.filter(agent__department__slug__in=fleet.DEPARTMENT_SLUGS)
    assert {"api", "ingest"} <= set(deployments.values_list("source", flat=True))
    seen: dict[tuple[str, str, str], datetime] = {}
    for slug, environment, version, started in Trace.objects.values_list(
        "agent__slug", "environment", "version", "started_at"
    ):
        key = (slug, environment, version)
        seen[key] = min(seen.get(key, started), started)
    for deployment in deployments.select_related("agent"):
        key = (deployment.agent.slug, deployment.environment, deployment.version)
        assert deployment.first_seen_at == seen.get(key), key
        if deployment.source == "api":
            assert deployment.deployed_at is not None
            assert deployment.first_seen_at is None or deployment.deployed_at <= deployment.first_seen_at
        else:
            assert deployment.deployed_at is None
    assert set(seen) <= {(d.agent.slug, d.environment, d.version) for d in deployments.select_related("agent")}
    regression = deployments.get(agent__slug=fleet.LATENCY_REGRESSION_AGENT, environment="production", version="2.3.0")
    assert "prompt" in regression.notes


@pytest.mark.django_db
def test_error_bursts_stand_out(seeded, plan):
    burst = plan.scenario("rate_limited_burst")
    traces = production_traces(fleet.RATE_LIMITED_AGENT)
    inside = traces.filter(started_at__gte=from_us(burst.start_us), started_at__lt=from_us(burst.end_us))
    outside = traces.exclude(pk__in=inside.values("pk"))
    assert inside.filter(error_type="rate_limited").count() >= 3
    assert inside.filter(error_type="rate_limited").count() > 0.4 * inside.count()
    assert outside.filter(error_type="rate_limited").count() < 0.03 * outside.count()

    outage = plan.scenario("dependency_outage")
    failed = Trace.objects.filter(
        agent__department__slug=fleet.OUTAGE_DEPARTMENT,
        environment="production",
        error_type="dependency_error",
        started_at__gte=from_us(outage.start_us),
        started_at__lt=from_us(outage.end_us),
    )
    assert failed.values("agent").distinct().count() >= 3
    example = failed.first()
    assert example is not None
    call = next(c for c in example.dependencies if c["status"] == "error")
    assert call["name"] == "crm-api"
    assert call["duration_ms"] > 1000


@pytest.mark.django_db
def test_the_output_tells_the_presenter_where_to_look(seeded, plan):
    for text in ("order-status-bot", "2.3.0", "invoice-extractor", "3.1.0", "refund-assistant", "crm-api"):
        assert text in seeded
    assert f"{from_us(plan.scenario('rate_limited_burst').start_us):%Y-%m-%d %H:%M}" in seeded
    assert "traces/s" in seeded


@pytest.mark.django_db
def test_seeding_again_without_reset_is_refused(seeded):
    with pytest.raises(CommandError, match=r"already seeded.*--reset"):
        seed(traces=100, days=1)
    assert Trace.objects.count() == TRACES


@pytest.mark.django_db
def test_if_empty_keeps_an_existing_fleet(seeded):
    output = seed(traces=100, days=1, if_empty=True)
    assert "already seeded" in output
    assert Trace.objects.count() == TRACES


@pytest.mark.django_db
def test_reset_replaces_the_fleet_and_leaves_other_agents_alone(seeded):
    other = factories.agent("home-grown-bot", factories.department("payments"))
    Trace.objects.create(
        agent=other,
        environment="production",
        version="1",
        started_at=NOW - timedelta(hours=1),
        latency_ms=5.0,
        status="ok",
    )

    output = seed(traces=2000, days=1, seed=3, reset=True)

    assert "Deleted the demo fleet" in output
    assert Trace.objects.filter(agent__department__slug__in=fleet.DEPARTMENT_SLUGS).count() == 2000
    assert Trace.objects.filter(agent=other).count() == 1
    assert Team.objects.filter(department__slug__in=fleet.DEPARTMENT_SLUGS).count() == 17


@pytest.mark.django_db
def test_the_same_seed_gives_the_same_history(seeded):
    def history(seed_value):
        seed(traces=3000, days=1, seed=seed_value, reset=True)
        agents = sorted(
            Agent.objects.filter(department__slug__in=fleet.DEPARTMENT_SLUGS).values_list("slug", flat=True)
        )
        per_version = Counter(Trace.objects.values_list("agent__slug", "environment", "version"))
        return agents, per_version

    first = history(5)
    again = history(5)
    other = history(6)

    assert first == again
    assert first[0] == other[0]
    assert first[1] != other[1]


def test_bad_options_are_refused():
    with pytest.raises(CommandError, match="--days"):
        call_command("seed_demo", days=90)
    with pytest.raises(CommandError, match="--agents"):
        call_command("seed_demo", agents=10)


@pytest.mark.django_db
def test_the_history_is_rolled_up_so_the_charts_show_it_at_once(seeded, superuser):
    from perfops.metrics.filters import parse_filters
    from perfops.metrics.query import MetricsQuery

    assert "Rolled up 30,000 traces" in seeded
    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        summary = MetricsQuery(parse_filters({"range": "7d", "environment": "all"}), superuser).summary()
    assert summary["count"] == TRACES
    assert summary["p50_ms"] > 0


@pytest.mark.django_db
def test_the_demo_gets_objectives_set_from_its_own_history(seeded, settings, tmp_path):
    from slos.models import SLO, AlertRule, PerformanceBudget

    settings.VAR_DIR = tmp_path
    with time_machine.travel(NOW, tick=True):
        call_command("prepare_demo", stdout=StringIO())
        call_command("prepare_demo", stdout=StringIO())  # a second run adds nothing
    latency = SLO.objects.select_related("agent").get(kind="latency")
    assert latency.agent is not None
    assert (latency.agent.slug, latency.target) == (fleet.LATENCY_REGRESSION_AGENT, 0.95)
    assert SLO.objects.filter(kind="availability", department__slug=fleet.OUTAGE_DEPARTMENT).count() == 1
    assert PerformanceBudget.objects.get().team == latency.agent.team
    assert AlertRule.objects.filter(metric="latency", slo__isnull=True).count() == 1
    # Set a little above the agent's own week: most requests meet it, the regression does not.
    threshold = latency.threshold_ms
    assert threshold is not None
    week = production_traces(fleet.LATENCY_REGRESSION_AGENT).filter(status="ok")
    met = (latencies(week) < threshold).mean()
    assert 0.9 < met < 1.0
