"""Schemathesis over the whole OpenAPI schema, once per principal: no 5xx, answers as documented, bad data 4xx.

The schema is the one the app serves at /api/schema/ (drf-spectacular). Every operation in it is fuzzed with
each principal's token: the superuser, a manager, an engineer and a viewer of payments and an outsider (an
engineer of no department), each with every scope; and the manager's tokens with one scope each. Requests
go in-process through Django's WSGI handler (the whole middleware stack, as gunicorn runs it) to the test
database, where payments and research each hold one object of every kind. A path parameter is drawn from
the schema, or names the own department's object, or the other department's, so lookups, permissions and
the validation behind them are all reached.

Each operation gets positive examples (data the schema allows) and negative ones (data it forbids). Each
example runs in a savepoint rolled back after it, so every example meets the same world. Generation is
seeded (per principal, operation and mode): every run sends the same requests.

Checks: not_a_server_error; status_code_conformance (every status is documented); content_type_conformance;
response_headers_conformance; response_schema_conformance (bodies match); negative_data_rejection (bad data
is answered 4xx); and, once per operation, ignored_auth (the request without a token, or with a wrong one,
is refused). No connection leaves the machine (any attempt is refused and fails the test).

The figures are printed and written to test-output/security/schema_fuzz.json.
"""

from __future__ import annotations

import json
import socket
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from rest_framework.test import APIClient
from schemathesis.core.media_types import YAML_MEDIA_TYPES
from schemathesis.generation.modes import GenerationMode

from interventions import configs, profiling, regressions
from interventions.models import LoadTest, Recommendation, Report
from interventions.profiling import forget_active as forget_active_profiling
from perfops.access.authentication import forget_token_memo
from perfops.access.models import ApiToken, Scope
from perfops.access.roles import Role
from perfops.metrics.rollup import catch_up
from perfops.telemetry.ingest.store import forget_ingest_memos
from perfops.telemetry.models import Deployment, Trace
from perfops.telemetry.partitions import forget_known_partitions
from slos.models import NotificationChannel, PerformanceBudget
from tests import factories
from tests.metrics.conftest import ingest

OUT = Path(__file__).resolve().parents[2] / "test-output" / "security"
SCHEMA_URL = "/api/schema/"
ALL_SCOPES = tuple(sorted(Scope.values))

# Examples per operation and generation mode (positive, negative), per principal. 75 operations: the roles
# send about 950 requests each, the one-scope tokens about 520; some 7,000 in all, 2.5-3 minutes on SQLite
# on 2 cores. A one-scope token is refused (403) before its data is read wherever its scope does not reach.
ROLE_EXAMPLES = (8, 5)
SCOPE_EXAMPLES = (4, 3)
# The ingest endpoints take batches of records; tests/security/test_ingest_malformed.py sends them 40 kinds
# of malformed payloads with exact expected counts. Here they get a few schema-driven examples.
INGEST_OPERATIONS = {("POST", "/api/v1/traces"), ("POST", "/v1/traces")}
INGEST_EXAMPLES = 4

# Operations left out, with why. None is: every operation is fuzzed, ingest with fewer examples (above).
EXCLUDED: dict[tuple[str, str], str] = {}

CHECKS = [
    getattr(schemathesis.checks, name)
    for name in (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
]
AUTH_PROBED: set[str] = set()


def ignored_auth_once(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis's ignored_auth once per operation: it sends two more requests after every success (without
    a token, with a wrong one), and whether the operation checks the token does not change between examples."""
    if case.operation.label in AUTH_PROBED:
        return None
    result = schemathesis.checks.ignored_auth(ctx, response, case)
    if 200 <= response.status_code < 300:
        AUTH_PROBED.add(case.operation.label)
    return result


CHECKS.append(ignored_auth_once)


@schemathesis.deserializer(*YAML_MEDIA_TYPES)
def _yaml_stream(ctx: Any, response: Any) -> list[Any]:
    """The OpenSLO export is a YAML stream (a document per SLO): its value is the list of its documents."""
    return list(yaml.safe_load_all(response.content.decode()))


# --- principals -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who sends the requests: a person's token with some scopes."""

    name: str
    username: str
    scopes: tuple[str, ...]
    examples: tuple[int, int] = ROLE_EXAMPLES


PRINCIPALS = [
    Principal("superuser", "root", ALL_SCOPES),
    Principal("manager", "maria", ALL_SCOPES),
    Principal("engineer", "erin", ALL_SCOPES),
    Principal("viewer", "victor", ALL_SCOPES),
    Principal("outsider", "nadia", ALL_SCOPES),
    *(Principal(f"scope:{scope}", "maria", (scope,), SCOPE_EXAMPLES) for scope in ALL_SCOPES),
]


# --- the world ------------------------------------------------------------------------------------------


@dataclass
class World:
    """Both departments' objects, by kind, and a bearer token per principal."""

    objects: dict[str, dict[str, Any]]  # side ("own": payments, "foreign": research) -> kind -> object
    tokens: dict[str, str]


def _seed_department(department: Any, owner: User, now: datetime) -> dict[str, Any]:
    """One object of every kind the API names by id, in `department`."""
    marker = department.slug
    team = factories.team(department, f"{marker}-team")
    agent = factories.agent(f"{marker}-bot", department, team=team, owner=owner)
    records = [
        factories.record(
            agent=agent.slug,
            environment=("production", "staging")[i % 2],
            version="1.0.0" if i >= 12 else "1.1.0",
            started_at=factories.iso(now - timedelta(minutes=3 + i * 5)),
            latency_ms=900.0 + 37 * i,
        )
        for i in range(24)
    ]
    assert ingest(records, owner) == len(records)
    # Loopback URLs: nothing is ever sent from a test transaction (tasks wait for a commit that never comes),
    # and if something were, it would stay on this machine.
    channel = NotificationChannel.objects.create(
        name=f"{marker} hook", department=department, kind="webhook", url="https://127.0.0.1:9/hook", secret="whsec-x"
    )
    slo = factories.latency_slo(f"{marker} latency", agent, owner)
    rule, event = factories.firing_rule(f"{marker} latency rule", agent, owner, channel, f"{marker}-1", now)
    budget = PerformanceBudget.objects.create(
        name=f"{marker} budget", scope="department", department=department, threshold_ms=1200, created_by=owner
    )
    first = configs.apply(agent, "production", {"model": "gpt-4o"}, owner, note="first")
    configs.apply(agent, "production", {"timeout_ms": 20000}, owner, note="second")
    profiling.start(agent, "production", 900, owner, reason="active")
    ended = profiling.start(agent, "staging", 600, owner, reason="ended")
    profiling.end(ended, user=owner)
    flag = regressions.flag(agent, "production", "1.1.0", owner, summary="suspected")
    confirmed = regressions.flag(agent, "staging", "1.1.0", owner, summary="confirmed")
    incident = regressions.confirm(confirmed, owner, title=f"{marker} incident")
    recommendation = Recommendation.objects.create(
        agent=agent,
        environment="production",
        title="prompt cache",
        rationale="evidence",
        changes={"prompt_cache": True},
    )
    load_test = LoadTest.objects.create(
        agent=agent,
        environment="staging",
        target_url="https://127.0.0.1:9/agent",
        rate_rps=1,
        duration_s=10,
        scheduled_at=now + timedelta(hours=2),
        created_by=owner,
    )
    report = Report.objects.create(
        format="csv",
        title=f"{marker} report",
        filters={"range": "24h"},
        status="ready",
        content=b"agent\nx\n",
        size=8,
        created_by=owner,
    )
    return {
        "agent": agent,
        "config": first,
        "trace": Trace.objects.filter(agent=agent).order_by("-started_at").first(),
        "deployment": Deployment.objects.filter(agent=agent).first(),
        "slo": slo,
        "channel": channel,
        "rule": rule,
        "event": event,
        "budget": budget,
        "profiling": ended,
        "flag": flag,
        "incident": incident,
        "recommendation": recommendation,
        "loadtest": load_test,
        "report": report,
    }


def _build_world(now: datetime) -> World:
    payments, research = factories.department("payments", "Payments"), factories.department("research", "Research")
    people = {
        "root": User.objects.create_superuser("root", "root@example.com", "pw-root"),
        "maria": factories.user("maria", Role.MANAGER, [payments]),
        "erin": factories.user("erin", Role.ENGINEER, [payments]),
        "victor": factories.user("victor", Role.VIEWER, [payments]),
        "nadia": factories.user("nadia", Role.ENGINEER, []),  # the outsider: a role, but no department
    }
    olga = factories.user("olga", Role.MANAGER, [research])
    objects = {
        "own": _seed_department(payments, people["maria"], now),
        "foreign": _seed_department(research, olga, now),
    }
    catch_up(now - timedelta(hours=3), now=now)
    tokens = {p.name: ApiToken.issue(people[p.username], name=p.name, scopes=list(p.scopes))[1] for p in PRINCIPALS}
    return World(objects, tokens)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker) -> Iterator[World]:
    """Built once, in a transaction rolled back at the end of the module; each test runs in a savepoint of it."""
    with django_db_blocker.unblock(), transaction.atomic():
        cache.clear()
        forget_token_memo()
        built = _build_world(datetime.now(UTC).replace(microsecond=0))
        yield built
        transaction.set_rollback(True)
    cache.clear()


# --- the app, counted -----------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the app answered, per principal."""

    principal: str = "(loading the schema)"
    requests: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    server_errors: dict[str, list[str]] = field(default_factory=dict)  # principal -> request and traceback


class CountingApp:
    """Django's WSGI handler, with every answer's status counted and the traceback of every 5xx kept."""

    def __init__(self) -> None:
        self.handler = WSGIHandler()
        self.tally = Tally()
        self.last_exception = ""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def counted(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            code, who = int(status.split()[0]), self.tally.principal
            self.tally.requests[who] += 1
            self.tally.statuses.setdefault(who, Counter())[code] += 1
            if code >= 500:
                request = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}?{environ.get('QUERY_STRING', '')}"
                self.tally.server_errors.setdefault(who, []).append(f"{request} -> {code}\n{self.last_exception}")
            self.last_exception = ""
            return start_response(status, headers, exc_info)

        return self.handler(environ, counted)


@pytest.fixture(scope="module")
def app() -> Iterator[CountingApp]:
    """The WSGI app, counted."""
    counting = CountingApp()

    def keep(sender: Any, request: Any = None, **kwargs: Any) -> None:
        # The app's own frames, and the exception.
        lines = traceback.format_exc().splitlines()
        counting.last_exception = "\n".join(
            line for i, line in enumerate(lines) if "/.venv/" not in line and "/.venv/" not in lines[i - 1]
        )

    got_request_exception.connect(keep)
    yield counting
    got_request_exception.disconnect(keep)


@contextmanager
def kept_connection() -> Iterator[None]:
    """Requests through the WSGI handler stay on the test's database connection, as the test client's do:
    closing "old" connections at each request's start and end would close the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def on_the_test_connection() -> Iterator[None]:
    with kept_connection():
        yield


@pytest.fixture(scope="module")
def schema(app: CountingApp, world: World) -> Any:
    with kept_connection():
        return schemathesis.openapi.from_wsgi(SCHEMA_URL, app)


@pytest.fixture(scope="module")
def connections_off_loopback() -> Iterator[list[str]]:
    """Refuse, and record, every connection the app tries to open to an address off this machine."""
    refused: list[str] = []
    original = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else ""
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            refused.append(str(address))
            raise OSError(f"test_schema_fuzz: no connection to {address}")
        return original(sock, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    yield refused
    socket.socket.connect = original  # type: ignore[method-assign]


# --- figures --------------------------------------------------------------------------------------------


@dataclass
class Figures:
    operations: set[str] = field(default_factory=set)
    cases: Counter[str] = field(default_factory=Counter)  # generated cases, per principal
    sent: set[tuple[str, str]] = field(default_factory=set)  # (principal, operation) with a case sent
    failures: list[dict[str, str]] = field(default_factory=list)
    no_negative: set[str] = field(default_factory=set)  # nothing in the request can break the schema
    seconds: dict[str, float] = field(default_factory=dict)


FIGURES = Figures()


@pytest.fixture(scope="module", autouse=True)
def _report_figures(app: CountingApp) -> Iterator[None]:
    yield
    tally = app.tally
    if not FIGURES.seconds:
        return
    histogram: Counter[int] = Counter()
    for statuses in tally.statuses.values():
        histogram.update(statuses)
    summary = {
        "operations_covered": len(FIGURES.operations),
        "operations_excluded": {f"{method} {path}": why for (method, path), why in EXCLUDED.items()},
        "roles": list(FIGURES.seconds),
        "examples_per_operation": {p.name: {"positive": p.examples[0], "negative": p.examples[1]} for p in PRINCIPALS},
        "examples_per_ingest_operation": INGEST_EXAMPLES,
        "cases_generated_per_role": dict(FIGURES.cases),
        "requests_per_role": dict(tally.requests),
        "requests_total": sum(tally.requests.values()),
        "status_histogram": {str(code): n for code, n in sorted(histogram.items())},
        "status_histogram_per_role": {
            name: {str(code): n for code, n in sorted(statuses.items())} for name, statuses in tally.statuses.items()
        },
        "server_errors_5xx": sum(n for code, n in histogram.items() if code >= 500),
        "schema_conformance_failures": sum(1 for f in FIGURES.failures if f["check"] != "not_a_server_error"),
        "operations_without_negative_data": sorted(FIGURES.no_negative),
        "seconds_per_role": {name: round(s, 1) for name, s in FIGURES.seconds.items()},
        "failures": FIGURES.failures,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "schema_fuzz.json").write_text(json.dumps(summary, indent=2))
    shown = {k: v for k, v in summary.items() if k not in ("failures", "status_histogram_per_role")}
    print("\nschema fuzzing:", json.dumps(shown, indent=2))


# --- fuzzing --------------------------------------------------------------------------------------------

COLLECTIONS = {
    "alert-events": "event",
    "alert-rules": "rule",
    "budgets": "budget",
    "incidents": "incident",
    "load-tests": "loadtest",
    "notification-channels": "channel",
    "profiling": "profiling",
    "recommendations": "recommendation",
    "regression-flags": "flag",
    "reports": "report",
    "slos": "slo",
}


def path_parameters(path: str, side: dict[str, Any]) -> dict[str, Any] | None:
    """The path parameters that name `side`'s object in an operation's path, if the path names one."""
    if "{" not in path:
        return None
    if "{trace_id}" in path:
        return {"trace_id": side["trace"].trace_id.hex}
    if "{slug}" in path:
        if "{version}" in path:
            return {"slug": side["agent"].slug, "version": side["config"].version}
        return {"slug": side["agent"].slug}
    return {"id": side[COLLECTIONS[path.split("/")[3]]].pk}


def cases(operation: Any, mode: GenerationMode, world: World, headers: dict[str, str]) -> Any:
    """Cases of `operation` with drawn path parameters, or ones naming the own or the other department's object."""
    strategies = [operation.as_strategy(generation_mode=mode, headers=headers)]
    # With the path fixed, a negative case needs something else to break: a body or a query parameter.
    more = bool(operation.body) or any(parameter.location != "path" for parameter in operation.iter_parameters())
    if mode.is_positive or more:
        for side in ("own", "foreign"):
            named = path_parameters(operation.path, world.objects[side])
            if named is not None:
                strategies.append(operation.as_strategy(generation_mode=mode, headers=headers, path_parameters=named))
    return st.one_of(strategies)


def forget_memos() -> None:
    """Process memos of rows a rolled-back example made (partitions, agents, tokens, profiling sessions)."""
    forget_known_partitions()
    forget_ingest_memos()
    forget_token_memo()
    forget_active_profiling()


def fuzz(operation: Any, mode: GenerationMode, examples: int, app: CountingApp, world: World, token: str) -> None:
    """Send `examples` cases of `operation`; raise what the first failing one failed.

    The seed is fixed per principal, operation and mode: every run sends the same requests, and the principals
    do not all send the same ones."""

    @seed(zlib.crc32(f"{app.tally.principal} {operation.label} {mode.value}".encode()))
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        # Each case goes through the whole app and the database, which Hypothesis finds slow; negative
        # generation filters out much of what it draws. Neither is a fault of the app or of the test.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=cases(operation, mode, world, {"Authorization": f"Bearer {token}"}))
    def run(case: Any) -> None:
        FIGURES.cases[app.tally.principal] += 1
        FIGURES.sent.add((app.tally.principal, operation.label))
        try:
            with transaction.atomic():
                response = case.call(app=app)
                case.validate_response(response, checks=CHECKS, transport_kwargs={"app": app})
                transaction.set_rollback(True)
        finally:
            forget_memos()

    run()


def check_name(failure: BaseException) -> str:
    checks = getattr(failure, "checks", None)
    return checks[0] if checks else type(failure).__name__


@pytest.mark.parametrize("principal", PRINCIPALS, ids=lambda p: p.name)
def test_every_operation_answers_as_documented(
    principal, world, db, app, schema, on_the_test_connection, connections_off_loopback
):
    app.tally.principal = principal.name
    started = time.monotonic()
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in EXCLUDED:
            continue
        FIGURES.operations.add(f"{key[0]} {key[1]}")
        for mode, examples in zip((GenerationMode.POSITIVE, GenerationMode.NEGATIVE), principal.examples, strict=True):
            try:
                fuzz(
                    operation,
                    mode,
                    INGEST_EXAMPLES if key in INGEST_OPERATIONS else examples,
                    app,
                    world,
                    world.tokens[principal.name],
                )
            except Unsatisfiable:
                # A free-form string in the path (a slug, a trace id) and no body or query: every request is valid.
                assert not mode.is_positive, f"{key}: no valid request could be made"
                FIGURES.no_negative.add(f"{key[0]} {key[1]}")
            except (Exception, BaseExceptionGroup) as exc:  # recorded, and the test fails on all of them below
                for failure in getattr(exc, "exceptions", [exc]):
                    FIGURES.failures.append(
                        {
                            "principal": principal.name,
                            "operation": f"{key[0]} {key[1]}",
                            "mode": mode.value,
                            "check": check_name(failure),
                            "message": str(exc)[:4000],
                        }
                    )
                failures.append(f"{key[0]} {key[1]} ({mode.value}): {str(exc)[:3000]}")
    FIGURES.seconds[principal.name] = time.monotonic() - started

    fuzzed = {operation.label for result in schema.get_all_operations() if (operation := result.ok())}
    assert len(fuzzed) > len(EXCLUDED), "the schema lists no operation"
    unsent = sorted(label for label in fuzzed if (principal.name, label) not in FIGURES.sent)
    assert unsent == sorted(f"{method} {path}" for method, path in EXCLUDED), unsent

    assert not connections_off_loopback, connections_off_loopback
    server_errors = app.tally.server_errors.get(principal.name, [])
    assert not server_errors, f"{len(server_errors)} server errors:\n\n" + "\n\n".join(server_errors[:5])
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures[:10])


# --- what the fuzzing found, kept fixed -----------------------------------------------------------------

FOUND = [
    # (what, method, URL, JSON body, status, a word of the answer): each was a 500, a 2xx for bad data or an
    # HTML page before its fix. The time-zone offset was a 500 on PostgreSQL only.
    ("NUL in the path", "get", "/api/v1/agents/pay%00bot", None, 400, "NUL"),
    ("NUL in a query value", "get", "/api/v1/metrics/summary?version=1%00", None, 400, "NUL"),
    ("NUL in a JSON string", "post", "/api/v1/slos/preview", {"name": "x", "department": "pay\u0000"}, 400, "NUL"),
    ("a number for a string", "post", "/api/v1/regression-flags/{flag}/dismiss", {"reason": 4.4e268}, 400, "reason"),
    (
        "a string for a boolean",
        "post",
        "/api/v1/profiling",
        {"agent": "payments-bot", "environment": "staging", "duration_s": 600, "dry_run": "yes"},
        400,
        "dry_run",
    ),
    ("a limit that is not a whole number", "get", "/api/v1/agents?limit=1.5", None, 400, "limit"),
    ("an offset past the database's", "get", "/api/v1/agents?offset=99999999999999999999", None, 400, "offset"),
    ("an SLO id past the database's", "get", "/api/v1/slos/openslo?id=99999999999999999999", None, 400, "id"),
    ("an SLO id that is a superscript two", "get", "/api/v1/slos/openslo?id=%C2%B2", None, 400, "id"),
    ("dry_run that is not a boolean", "post", "/api/v1/slos/openslo/import?dry_run=maybe", None, 400, "dry_run"),
    ("a boolean filter that is not a boolean", "get", "/api/v1/alert-rules?enabled=maybe", None, 400, "enabled"),
    ("an unknown range", "get", "/api/v1/agents/payments-bot/environments?range=1y", None, 400, "range"),
    ("a blank environment", "get", "/api/v1/agents/payments-bot/config?environment=", None, 400, "environment"),
    ("an offset past PostgreSQL's", "get", "/api/v1/deployments?since=0503-10-12T19:22:53%2B18:32", None, 200, "count"),
    ("an id that is not a number", "get", "/api/v1/slos/abc", None, 404, "Not found"),
]


@pytest.mark.parametrize(("what", "method", "url", "body", "status", "says"), FOUND, ids=[row[0] for row in FOUND])
def test_what_fuzzing_found_stays_fixed(what, method, url, body, status, says, world, db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {world.tokens['manager']}")
    response = getattr(client, method)(url.format(flag=world.objects["own"]["flag"].pk), body, format="json")
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert says in response.content.decode(), response.content[:300]


def test_format_filters_notification_channels_rather_than_choosing_a_renderer(world, db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {world.tokens['superuser']}")
    NotificationChannel.objects.filter(department__slug="research").update(format="slack")
    names = {
        format_: [c["name"] for c in client.get(f"/api/v1/notification-channels?format={format_}").json()["results"]]
        for format_ in ("slack", "json")
    }
    assert names == {"slack": ["research hook"], "json": ["payments hook"]}
