"""manage.py simulate: live traffic through the real ingest API, and simulated agents answering HTTP."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from datetime import timedelta
from io import StringIO

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from perfops.access.models import ApiToken
from perfops.telemetry.demo import fleet, loader
from perfops.telemetry.demo.agents_server import start_agents
from perfops.telemetry.demo.plan import live_plan
from perfops.telemetry.demo.sender import BatchSender
from perfops.telemetry.demo.traffic import TrafficModel
from perfops.telemetry.models import Agent, Department, Trace
from tests import factories


def http(method, url, body=None):
    """(status, JSON answer) of a request to a local test server."""
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def simulate(**options):
    out = StringIO()
    call_command("simulate", stdout=out, status_every=1, batch_interval=0.2, seed=5, **options)
    return out.getvalue()


def final_counts(output):
    """The counters of the last line, e.g. 'simulate stopped: sent 150, accepted 150, ...'."""
    line = next(line for line in output.splitlines() if line.startswith("simulate stopped"))
    return {key: int(value.replace(",", "")) for key, value in re.findall(r"(\w+) ([\d,]+)", line)}


@pytest.fixture
def ingest_token(superuser):
    return factories.token(superuser, ["ingest"])


@pytest.mark.django_db(transaction=True)
def test_it_sends_live_traffic_through_the_ingest_api_and_stops_by_itself(live_server, ingest_token):
    output = simulate(duration=1.5, rate=60, url=live_server.url, token=ingest_token, no_agents=True)

    counts = final_counts(output)
    stored = Trace.objects.count()
    assert stored > 0
    assert counts["sent"] == counts["accepted"] == stored
    assert counts["rejected"] == counts["failures"] == counts["pending"] == 0
    assert "Created the demo fleet" in output
    now = timezone.now()
    for trace in Trace.objects.select_related("agent")[:50]:
        assert trace.agent.department.slug in fleet.DEPARTMENT_SLUGS
        assert now - timedelta(minutes=2) < trace.started_at < now
    assert Trace.objects.filter(environment="production").exists()


@pytest.mark.django_db(transaction=True)
def test_it_runs_the_simulated_agents_and_points_their_endpoints_at_them(live_server, ingest_token):
    output = simulate(
        duration=1,
        rate=1,
        url=live_server.url,
        token=ingest_token,
        agents_port=0,
        agent_latency_scale=0.01,
    )

    served = {a.slug: a.endpoint_url for a in Agent.objects.filter(slug__in=fleet.SERVED_AGENTS)}
    assert set(served) == set(fleet.SERVED_AGENTS)
    for slug, url in served.items():
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/invoke", url), (slug, url)
        assert f"Simulated agent {slug}: POST {url}" in output


@pytest.mark.django_db(transaction=True)
def test_a_simulated_agent_answers_and_its_requests_become_traces(live_server, ingest_token):
    agents = fleet.catalog(fleet.base_size())
    loader.ensure_fleet(agents)
    model = TrafficModel(live_plan(agents, {}, timezone.now()))
    sender = BatchSender(live_server.url, ingest_token, interval_s=0.1)
    sender.start()
    running = start_agents(model, ["catalog-search"], 0, sender.submit, seed=3)
    base = running.servers[0].url
    try:
        assert http("GET", f"{base}/health") == (200, {"status": "ok", "agent": "catalog-search"})
        answers = [http("POST", f"{base}/invoke", b'{"query": "red shoes"}') for _ in range(4)]
        answers.append(http("POST", f"{base}/invoke"))
        assert http("POST", f"{base}/invoke", b"{not json")[0] == 400
        assert http("GET", f"{base}/nope")[0] == 404
    finally:
        running.stop()
        stats = sender.stop(flush_timeout_s=10)

    for code, answer in answers:
        assert code in (200, 429, 500, 504)
        assert set(answer) >= {"trace_id", "latency_ms", "status"}
        assert (code == 200) == (answer["status"] == "ok")
    assert stats.accepted == 5
    assert stats.pending == 0
    stored = Trace.objects.filter(trace_id__in=[answer["trace_id"] for _, answer in answers])
    assert stored.count() == 5
    assert set(stored.values_list("agent__slug", flat=True)) == {"catalog-search"}
    assert all(trace.attributes["endpoint"] == "/invoke" for trace in stored)


@pytest.mark.django_db(transaction=True)
def test_create_token_for_issues_a_temporary_token_revoked_on_exit(live_server):
    output = simulate(duration=1, rate=5, url=live_server.url, create_token_for="sim-bot", no_agents=True)

    token = ApiToken.objects.get(user__username="sim-bot")
    assert token.state == "revoked"
    assert token.prefix in output
    assert set(Department.objects.filter(members=token.user).values_list("slug", flat=True)) == set(
        fleet.DEPARTMENT_SLUGS
    )
    assert final_counts(output)["rejected"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_bad_token_stops_it_with_a_clear_error(live_server):
    with pytest.raises(CommandError, match="401"):
        simulate(duration=5, rate=20, url=live_server.url, token="pfo_not-a-real-token", no_agents=True)


@pytest.mark.django_db
def test_it_needs_a_token(monkeypatch):
    monkeypatch.delenv("PERFOPS_INGEST_TOKEN", raising=False)
    with pytest.raises(CommandError, match="No ingest token"):
        simulate(duration=1, no_agents=True)


def test_the_sender_keeps_a_failed_batch_and_retries_it():
    answers = [(0, b"connection refused", None), (503, b'{"detail": "Storage is unavailable"}', "0")]
    posted = []

    def post(body):
        posted.append(body)
        if answers:
            return answers.pop(0)
        return 200, b'{"accepted": 3, "duplicates": 0, "rejected": []}', None

    sender = BatchSender("http://127.0.0.1:9", "t", interval_s=0.01, backoff_s=(0.01, 0.05), post=post)
    sender.submit([{"n": 1}, {"n": 2}, {"n": 3}])
    sender.start()
    stats = sender.stop(flush_timeout_s=5)

    assert stats.failures == 2
    assert (stats.sent, stats.accepted, stats.pending) == (3, 3, 0)
    assert len(posted) == 3
    assert len(set(posted)) == 1  # the same batch each time, never split or lost


def test_the_sender_drops_the_oldest_records_loudly_when_its_queue_overflows(caplog):
    sender = BatchSender("http://127.0.0.1:9", "t", max_pending=5)
    sender.submit([{"n": i} for i in range(8)])

    assert sender.stats.dropped == 3
    assert sender.stats.pending == 5
    assert "dropped the 3 oldest records" in caplog.text
