"""The authorization matrix: every URL pattern x principal x own / foreign object, counted.

Principals: a superuser, a manager, an engineer and a viewer of payments, an outsider (an engineer of
research only), an anonymous client, API tokens of the manager with each scope, a viewer's token with
every scope, and an expired and a revoked token. Objects: one of each kind in payments and one in
research, every name carrying its department's marker, so a response showing another department's
object is found by searching its body (and lists must show the person's own marker, so an empty list
does not pass for a scoped one).

The URL patterns are walked from the resolver: a pattern or a ModelAdmin that the tables below do not
classify fails `test_every_url_pattern_is_classified`. Each table row gives a pattern's rule (public;
any role; engineer or manager; manager; superuser; for the API the token scopes too) and whether the
object is looked up before the role is checked. From that, each case expects: a login redirect (401
for the API and htmx panels), 403, 404 (or the answer for an unknown object), or success. Every
answer about another department's object must equal the answer about an object that does not exist,
and every response is searched for secrets (webhook secrets, token hashes and plaintexts).

Then the writes: read-only fields posted to the API, the pages and the admin; other departments'
objects named in bodies and filters; exports; and every admin action on an own and a foreign row.
The figures are printed and written to test-output/security/authorization.json.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from auditlog.models import LogEntry
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import transaction
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from pypdf import PdfReader
from rest_framework.test import APIClient

from interventions import configs, profiling, regressions, reports
from interventions.models import AgentConfig, LoadTest, ProfilingSession, Recommendation, RegressionFlag, Report
from perfops.access.authentication import forget_token_memo
from perfops.access.models import AllowedHost, ApiToken
from perfops.access.roles import Role
from perfops.dashboard.panels import PANELS
from perfops.metrics.models import RollupState
from perfops.metrics.rollup import catch_up
from perfops.telemetry.models import AgentCapacity, Deployment, PendingSpan, Trace
from slos.models import SLO, AlertRule, Delivery, NotificationChannel, PerformanceBudget
from tests import factories
from tests.metrics.conftest import ingest

OUT = Path(__file__).resolve().parents[2] / "test-output" / "security"

# Every object of a department carries its marker in its name; one marker never appears in the other's pages.
MARKERS = {"pay": "pq7own", "res": "zx9far"}
# A public address on the allowlist: load tests and webhooks may name it without a DNS lookup.
PUBLIC_HOST = "93.184.216.34"

SUPERUSER, MANAGER, ENGINEER, VIEWER = "superuser", "manager", "engineer", "viewer"
ANY = frozenset({SUPERUSER, MANAGER, ENGINEER, VIEWER})
ACT = frozenset({SUPERUSER, MANAGER, ENGINEER})
MANAGE = frozenset({SUPERUSER, MANAGER})
SUPER = frozenset({SUPERUSER})
NOBODY: frozenset[str] = frozenset()


# --- principals ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who asks: a session (scopes None), a bearer token (its scopes), or nobody (role None)."""

    name: str
    role: str | None = None
    home: str | None = None  # "pay" or "res"; None: every department (superuser) or none (anonymous)
    username: str | None = None
    scopes: frozenset[str] | None = None
    token: str = "none"  # none, active, expired, revoked

    @property
    def is_token(self) -> bool:
        return self.scopes is not None

    @property
    def bad_token(self) -> bool:
        return self.token in ("expired", "revoked")

    @property
    def side(self) -> str:
        """The department whose objects this principal acts on in request bodies."""
        return self.home or "pay"


ALL_SCOPES = frozenset({"ingest", "read", "automation", "configure"})
SESSIONS = (
    Principal("superuser", SUPERUSER, None, "root"),
    Principal("manager", MANAGER, "pay", "maria"),
    Principal("engineer", ENGINEER, "pay", "erin"),
    Principal("viewer", VIEWER, "pay", "victor"),
    Principal("outsider", ENGINEER, "res", "olga"),
    Principal("anonymous"),
)
TOKENS = (
    *(
        Principal(f"token:{scope}", MANAGER, "pay", "maria", frozenset({scope}), "active")
        for scope in ("ingest", "read", "automation", "configure")
    ),
    # A token never grants more than its person's role: a viewer's token with every scope only reads.
    Principal("token:viewer-all-scopes", VIEWER, "pay", "victor", ALL_SCOPES, "active"),
    Principal("token:expired", MANAGER, "pay", "maria", ALL_SCOPES, "expired"),
    Principal("token:revoked", MANAGER, "pay", "maria", ALL_SCOPES, "revoked"),
)
# Pages ignore bearer tokens: one token shows that it opens no page.
PAGE_PRINCIPALS = (*SESSIONS, TOKENS[1])
API_PRINCIPALS = (*SESSIONS, *TOKENS)
ADMIN_PRINCIPALS = SESSIONS

# Objects that belong to a person rather than a department: only they (and a superuser) see them.
PERSONAL = frozenset({"report", "apitoken"})


def sees(principal: Principal, kind: str | None, side: str | None, world: World) -> bool:
    """The specification of visibility, written independently of the code's `visible_to`."""
    if side is None or kind is None:
        return True
    if principal.role == SUPERUSER:
        return True
    if kind in PERSONAL:
        return principal.username == world.sides[side].owner.username
    return principal.home == side


# --- the world ------------------------------------------------------------------------------------------


@dataclass
class Side:
    """One department's objects."""

    marker: str
    department: Any
    owner: User  # creator of its report and its personal token
    objects: dict[str, Any] = field(default_factory=dict)
    private: list[str] = field(default_factory=list)  # names only their owner may see

    def url_id(self, kind: str) -> dict[str, Any]:
        """The URL keyword arguments naming this side's object of `kind`."""
        found = self.objects[kind]
        if kind == "agent":
            return {"slug": found.slug}
        if kind == "trace":
            return {"trace_id": found.trace_id.hex}
        if kind == "config":
            return {"slug": found.agent.slug, "version": found.version}
        return {"pk": found.pk}


MISSING_IDS: dict[str, dict[str, Any]] = {
    "agent": {"slug": "nosuch-bot"},
    "trace": {"trace_id": "0123456789abcdef0123456789abcdef"},
    "config": {"slug": "nosuch-bot", "version": 1},
}
MISSING_PK = 987654


def missing_id(kind: str) -> dict[str, Any]:
    return MISSING_IDS.get(kind, {"pk": MISSING_PK})


@dataclass
class World:
    """Both departments, the people, a client per principal, and every secret that must never be shown."""

    sides: dict[str, Side]
    users: dict[str, User]
    clients: dict[str, APIClient]
    secrets: list[bytes]
    globals: dict[str, Any]

    def client(self, principal: Principal) -> APIClient:
        return self.clients[principal.name]


def _build_side(key: str, department: Any, owner: User, writer: User, now: datetime) -> Side:
    marker = MARKERS[key]
    side = Side(marker, department, owner)
    department.name = f"{department.name} {marker}"
    department.save()
    team = factories.team(department, f"{marker}-team")
    agent = factories.agent(
        f"{marker}-bot", department, team=team, name=f"{marker} bot", description=f"{marker} agent", owner=owner
    )
    capacity = AgentCapacity.objects.create(agent=agent, environment="production", requests_per_s=40)
    records = []
    for i in range(36):
        environment = ("production", "staging")[i % 2]
        version = "1.0.0" if i >= 18 else "1.1.0"
        started = now - timedelta(minutes=3 + i * 4)
        records.append(
            factories.record(
                agent=agent.slug,
                environment=environment,
                version=version,
                started_at=factories.iso(started),
                latency_ms=900.0 + 37 * i,
                attributes={"customer": f"{marker}-customer"},
            )
        )
    assert ingest(records, writer) == len(records)
    trace = Trace.objects.filter(agent=agent).order_by("-started_at").first()
    deployment = Deployment.objects.filter(agent=agent).order_by("pk").first()
    slo = factories.latency_slo(f"{marker} latency slo", agent, owner)
    channel = NotificationChannel.objects.create(
        name=f"{marker} hook",
        department=department,
        kind="webhook",
        url=f"https://{PUBLIC_HOST}/hooks/{marker}",
        secret=f"whsec-{marker}-9b8c7d6e5f",
    )
    rule, event = factories.firing_rule(f"{marker} latency rule", agent, owner, channel, f"{marker}-1", now)
    delivery = Delivery.objects.create(
        event=event, key=event.dedupe_key, subject=f"{marker} firing", channel=channel, attempt=1, ok=True, detail="ok"
    )
    budget = PerformanceBudget.objects.create(
        name=f"{marker} budget",
        scope="department",
        department=department,
        threshold_ms=1200,
        created_by=owner,
    )
    first = configs.apply(agent, "production", {"model": f"{marker}-model"}, owner, note=f"{marker} first")
    config = configs.apply(agent, "production", {"timeout_ms": 20000}, owner, note=f"{marker} second")
    active = profiling.start(agent, "production", 900, owner, reason=f"{marker} profiling")
    ended = profiling.start(agent, "staging", 600, owner, reason=f"{marker} profiled")
    profiling.end(ended, user=owner)
    suspected = regressions.flag(agent, "production", "1.1.0", owner, summary=f"{marker} suspected")
    confirmed = regressions.flag(agent, "staging", "1.1.0", owner, summary=f"{marker} confirmed")
    incident = regressions.confirm(confirmed, owner, title=f"{marker} incident")
    recommendation = Recommendation.objects.create(
        agent=agent,
        environment="production",
        title=f"{marker} prompt cache",
        rationale=f"{marker} evidence",
        changes={"prompt_cache": True},
    )
    load_test = LoadTest.objects.create(
        agent=agent,
        environment="staging",
        target_url=f"https://{PUBLIC_HOST}/agent",
        rate_rps=1,
        duration_s=10,
        scheduled_at=now + timedelta(hours=2),
        created_by=owner,
    )
    private_report = f"report-of-{owner.username}-{marker}"
    report = Report.objects.create(
        format="csv",
        title=private_report,
        filters={"range": "24h"},
        status="ready",
        content=f"agent,{marker}-bot\n".encode(),
        size=20,
        created_by=owner,
    )
    private_token = f"token-of-{owner.username}-{marker}"
    token, _ = ApiToken.issue(owner, name=private_token, scopes=["read"])
    side.private = [private_report, private_token]
    side.objects = {
        "department": department,
        "team": team,
        "agent": agent,
        "agent_pk": agent,
        "capacity": capacity,
        "deployment": deployment,
        "trace": trace,
        "trace_pk": trace,
        "slo": slo,
        "channel": channel,
        "rule": rule,
        "event": event,
        "delivery": delivery,
        "budget": budget,
        "config": first,  # an earlier version: the one a revert goes back to
        "config_pk": config,
        "profiling": active,
        "profiling_ended": ended,
        "flag": suspected,
        "incident": incident,
        "recommendation": recommendation,
        "loadtest": load_test,
        "report": report,
        "apitoken": token,
    }
    return side


def _build_world(now: datetime) -> World:
    """The personas of tests/conftest.py, two departments with one object of every kind, a client per principal."""
    payments, research = factories.department("payments", "Payments"), factories.department("research", "Research")
    superuser = User.objects.create_superuser("root", "root@example.com", "pw-root")
    manager = factories.user("maria", Role.MANAGER, [payments])
    engineer = factories.user("erin", Role.ENGINEER, [payments])
    viewer = factories.user("victor", Role.VIEWER, [payments])
    outsider = factories.user("olga", Role.ENGINEER, [research])
    AllowedHost.objects.create(host=PUBLIC_HOST)
    sides = {
        "pay": _build_side("pay", payments, manager, superuser, now),
        "res": _build_side("res", research, outsider, superuser, now),
    }
    catch_up(now - timedelta(hours=4), now=now)
    users = {p.name: u for p, u in zip(SESSIONS[:5], (superuser, manager, engineer, viewer, outsider), strict=True)}
    clients: dict[str, APIClient] = {}
    for principal in SESSIONS:
        client = APIClient()
        if principal.role is not None:
            client.force_login(users[principal.name])
        clients[principal.name] = client
    plaintexts = []
    by_username = {u.username: u for u in users.values()}
    for principal in TOKENS:
        owner = by_username[principal.username or ""]
        expires = now - timedelta(minutes=1) if principal.token == "expired" else None
        token, plaintext = ApiToken.issue(owner, principal.name, sorted(principal.scopes or ()), expires_at=expires)
        if principal.token == "revoked":
            token.revoke()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        clients[principal.name] = client
        plaintexts.append(plaintext)
    secrets = [s.objects["channel"].secret.encode() for s in sides.values()]
    secrets += [h.encode() for h in ApiToken.objects.values_list("token_hash", flat=True)]
    secrets += [p.encode() for p in plaintexts]
    pending = PendingSpan.objects.create(trace_id=uuid.UUID("5" * 32), span_id="a" * 16, span={"name": "child"})
    global_objects = {
        "group": Group.objects.get(name=Role.MANAGER),
        "user": manager,
        "logentry": LogEntry.objects.order_by("pk").first(),
        "allowedhost": AllowedHost.objects.get(host=PUBLIC_HOST),
        "pendingspan": pending,
        "rollupstate": RollupState.objects.first(),
    }
    return World(sides, users, clients, secrets, global_objects)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker) -> Iterator[World]:
    """Built once for the module, in a transaction rolled back at its end; each test runs in a savepoint of it.

    Time stands still, so two answers about the same thing are byte for byte the same; what a request
    leaves in the session (messages) is rolled back with it.
    """
    now = datetime.now(UTC).replace(microsecond=0)
    # Messages in the session (a database row) rather than a cookie: rolled back with everything else.
    messages = override_settings(MESSAGE_STORAGE="django.contrib.messages.storage.session.SessionStorage")
    with django_db_blocker.unblock(), time_machine.travel(now, tick=False), messages, transaction.atomic():
        cache.clear()
        forget_token_memo()
        built = _build_world(now)
        yield built
        transaction.set_rollback(True)
    cache.clear()


# --- rules: who may call what -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Who may: roles (of the person, or of the token's owner) and, for the API, token scopes.

    `scopes` are alternatives: a token passes when it holds every scope of one of them.
    """

    label: str
    roles: frozenset[str] = ANY
    scopes: tuple[frozenset[str], ...] = (frozenset({"read"}),)
    sessions: bool = True  # API: whether a logged-in person (no token) may call it
    public: bool = False


PUBLIC = Rule("public", public=True)
LOGIN = Rule("login: any role, own departments")
ACTING = Rule("engineer or manager, own departments", ACT)
MANAGING = Rule("manager, own departments", MANAGE)
SUPERUSER_ONLY = Rule("superuser", SUPER)
READ = Rule("token scope read, any role, own departments")
READ_CHANNELS = Rule("token scope read, engineer or manager (viewers do not see channels)", ACT)
INGEST = Rule("token scope ingest, tokens only", ANY, (frozenset({"ingest"}),), sessions=False)
POLL = Rule("token scope ingest or read", ANY, (frozenset({"ingest"}), frozenset({"read"})))
DEPLOY = Rule(
    "token scope ingest or automation, engineer or manager", ACT, (frozenset({"ingest"}), frozenset({"automation"}))
)
AUTOMATE = Rule("token scope automation, engineer or manager", ACT, (frozenset({"automation"}),))
ACKNOWLEDGE = Rule("token scopes read and automation, engineer or manager", ACT, (frozenset({"read", "automation"}),))
CONFIGURE_RULES = Rule("token scope configure, engineer or manager", ACT, (frozenset({"configure"}),))
CONFIGURE = Rule("token scope configure, manager", MANAGE, (frozenset({"configure"}),))

# Outcomes other than a status code.
OK, LOGIN_NEEDED = "ok", "login"


@dataclass(frozen=True)
class Op:
    """One method of an endpoint: its rule, the statuses that mean "done" and what it sends."""

    method: str
    rule: Rule
    ok: frozenset[int] = frozenset({200})
    body: Callable[[World, Side], dict[str, Any]] | None = None
    htmx: bool = False
    # Pages look the object up before checking the role (404 first); DRF and a few views check the role first.
    object_first: bool = True


@dataclass(frozen=True)
class Endpoint:
    """A URL pattern and what it is called with; `target` is the kind of object it names, if any."""

    name: str
    kind: str  # page, api, admin
    ops: tuple[Op, ...]
    target: str | None = None
    where: str = "path"  # path: the object is in the URL; query: a filter parameter (?agent=)
    kwargs: dict[str, Any] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    missing: int = 404  # the answer for an object that does not exist (and so for a foreign one)
    path: str | None = None  # a literal path, for patterns without a name
    only: tuple[str, ...] = ()  # the principals it is tried with, when not all of its kind's
    admin_object: str | None = None  # admin: the object kind whose pk is the object_id ("global:<name>")
    id_name: str = "object_id"  # admin: the URL argument holding the pk
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request
    lists: bool = False  # a list: it shows the person's own department's objects (so it is not trivially empty)

    @property
    def label(self) -> str:
        extra = self.kwargs.get("name", "")
        where = f" ?{self.target}=" if self.where == "query" and self.target else ""
        return f"{self.name}{'[' + extra + ']' if extra else ''}{where}"


def get(rule: Rule = LOGIN, ok: tuple[int, ...] = (200,), htmx: bool = False) -> Op:
    return Op("GET", rule, frozenset(ok), htmx=htmx)


def post(
    rule: Rule,
    ok: tuple[int, ...] = (200,),
    body: Callable[[World, Side], dict[str, Any]] | None = None,
    object_first: bool = True,
) -> Op:
    return Op("POST", rule, frozenset(ok), body, object_first=object_first)


def api(method: str, rule: Rule, ok: tuple[int, ...] = (200,), body: Any = None) -> Op:
    # DRF checks authentication, then the scope and the role, then looks the object up.
    return Op(method, rule, frozenset(ok), body, object_first=False)


# --- request bodies (of the side the object belongs to, or of the principal's department) ---------------


def _agent_pk(side: Side) -> str:
    return str(side.objects["agent"].pk)


def rule_form(_: World, side: Side) -> dict[str, Any]:
    return {
        "name": f"{side.marker} new rule",
        "metric": "latency",
        "quantile": "0.95",
        "scope": "agent",
        "agent": _agent_pk(side),
        "environment": "production",
        "comparison": "gte",
        "threshold": "900",
        "window_s": "300",
        "pending_s": "0",
        "keep_firing_s": "0",
        "severity": "warning",
        "enabled": "on",
    }


def slo_form(_: World, side: Side) -> dict[str, Any]:
    return {
        "name": f"{side.marker} new slo",
        "scope": "agent",
        "agent": _agent_pk(side),
        "environment": "production",
        "kind": "latency",
        "threshold_ms": "500",
        "target": "0.99",
        "window_days": "7",
    }


def budget_form(_: World, side: Side) -> dict[str, Any]:
    return {
        "name": f"{side.marker} new budget",
        "scope": "department",
        "department": str(side.department.pk),
        "environment": "production",
        "quantile": "0.95",
        "aggregate": "mean",
        "threshold_ms": "800",
        "warn_at": "0.9",
        "window_s": "86400",
    }


def config_form(_: World, side: Side) -> dict[str, Any]:
    agent = side.objects["agent"]
    current = configs.current(agent, "production")
    values = (current or AgentConfig()).settings_dict() | {"timeout_ms": 25000}
    data = {"agent": str(agent.pk), "environment": "production", "note": "authz"}
    for name, value in values.items():
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        else:
            data[name] = "" if value is None else str(value)
    return data


def load_test_form(_: World, side: Side) -> dict[str, Any]:
    return {
        "environment": "staging",
        "target_url": f"https://{PUBLIC_HOST}/agent",
        "rate_rps": "1",
        "ramp_s": "0",
        "duration_s": "10",
        "concurrency": "4",
        "timeout_s": "5",
        "start_in_minutes": "30",
        "request_template": "{}",
    }


def fixed(data: dict[str, Any]) -> Callable[[World, Side], dict[str, Any]]:
    return lambda _world, _side: data


def api_slo(_: World, side: Side) -> dict[str, Any]:
    agent = side.objects["agent"].slug
    return {
        "name": f"{side.marker} api slo",
        "scope": "agent",
        "agent": agent,
        "kind": "latency",
        "threshold_ms": 450,
        "target": 0.99,
        "window_days": 7,
    }


def api_rule(_: World, side: Side) -> dict[str, Any]:
    agent = side.objects["agent"].slug
    return {
        "name": f"{side.marker} api rule",
        "metric": "latency",
        "quantile": 0.95,
        "scope": "agent",
        "agent": agent,
        "comparison": "gte",
        "threshold": 900,
        "window_s": 300,
        "severity": "warning",
    }


def api_budget(_: World, side: Side) -> dict[str, Any]:
    department = side.department.slug
    return {"name": f"{side.marker} api budget", "scope": "department", "department": department, "threshold_ms": 700}


def api_channel(_: World, side: Side) -> dict[str, Any]:
    department = side.department.slug
    return {"name": f"{side.marker} mail", "department": department, "kind": "email", "email_to": "ops@example.com"}


def api_traces(_: World, side: Side) -> dict[str, Any]:
    return {"traces": [factories.record(agent=side.objects["agent"].slug, environment="development")]}


def api_deployment(_: World, side: Side) -> dict[str, Any]:
    return {"agent": side.objects["agent"].slug, "environment": "production", "version": "9.9.9"}


def api_profiling(_: World, side: Side) -> dict[str, Any]:
    return {"agent": side.objects["agent"].slug, "environment": "development", "duration_s": 600}


def api_flag(_: World, side: Side) -> dict[str, Any]:
    return {"agent": side.objects["agent"].slug, "environment": "staging", "version": "1.0.0"}


def api_load_test(_: World, side: Side) -> dict[str, Any]:
    agent = side.objects["agent"].slug
    target = f"https://{PUBLIC_HOST}/agent"
    return {"agent": agent, "environment": "staging", "target_url": target, "rate_rps": 1, "duration_s": 10}


FLEET = {"range": "24h", "environment": "all"}
HTMX = {"HX-Request": "true"}

# --- the pages ----------------------------------------------------------------------------------------

PAGES: tuple[Endpoint, ...] = (
    Endpoint("dashboard:performance", "page", (get(htmx=True),), query=FLEET, lists=True),
    Endpoint("dashboard:agent", "page", (get(htmx=True),), "agent", query=FLEET),
    Endpoint("dashboard:request", "page", (get(),), "trace"),
    # Panels are htmx fragments; opened as a link, one is a page of its own (the same data).
    *(
        Endpoint("dashboard:panel", "page", (get(),), kwargs={"name": name}, query=FLEET, headers=HTMX)
        for name in PANELS
    ),
    Endpoint("dashboard:panel", "page", (get(),), kwargs={"name": "slow"}, query=FLEET),
    # A filter naming another department's agent is a bad filter value (400), like an unknown one; the
    # SLO panel lists the person's SLOs that cover the filter, and none covers an agent they cannot see.
    *(
        Endpoint(
            "dashboard:panel",
            "page",
            (get(),),
            "agent",
            "query",
            {"name": name},
            FLEET,
            missing=200 if name == "slo" else 400,
            headers=HTMX,
        )
        for name in PANELS
    ),
    Endpoint("dashboard:slow-csv", "page", (get(),), query=FLEET, lists=True),
    Endpoint("dashboard:slow-csv", "page", (get(),), "agent", "query", query=FLEET, missing=400),
    Endpoint("slos:feed", "page", (get(htmx=True),), lists=True),
    # The role is checked before the event is looked up: a viewer gets 403 whatever the id.
    Endpoint("slos:acknowledge", "page", (post(ACTING, (302,), object_first=False),), "event"),
    Endpoint("slos:silence", "page", (post(ACTING, (302,), fixed({"hours": "1"}), object_first=False),), "rule"),
    Endpoint("slos:rule-list", "page", (get(),), lists=True),
    Endpoint("slos:rule-new", "page", (get(ACTING), post(ACTING, body=rule_form))),
    Endpoint("slos:rule-detail", "page", (get(),), "rule"),
    Endpoint("slos:rule-edit", "page", (get(ACTING), post(ACTING, body=rule_form)), "rule"),
    Endpoint("slos:rule-delete", "page", (get(ACTING), post(ACTING, (302,))), "rule"),
    Endpoint("slos:slo-list", "page", (get(),), lists=True),
    Endpoint("slos:slo-new", "page", (get(MANAGING), post(MANAGING, body=slo_form))),
    Endpoint("slos:openslo-export", "page", (get(),), lists=True),
    Endpoint("slos:openslo-import", "page", (get(MANAGING), post(MANAGING, (400,), fixed({"yaml": ""})))),
    Endpoint("slos:slo-detail", "page", (get(),), "slo"),
    Endpoint("slos:slo-edit", "page", (get(MANAGING), post(MANAGING, body=slo_form)), "slo"),
    Endpoint("slos:slo-delete", "page", (get(MANAGING), post(MANAGING, (302,))), "slo"),
    Endpoint("slos:budget-list", "page", (get(),), lists=True),
    Endpoint("slos:budget-new", "page", (get(MANAGING), post(MANAGING, body=budget_form))),
    Endpoint("slos:budget-detail", "page", (get(),), "budget"),
    Endpoint("slos:budget-edit", "page", (get(MANAGING), post(MANAGING, body=budget_form)), "budget"),
    Endpoint("slos:budget-delete", "page", (get(MANAGING), post(MANAGING, (302,))), "budget"),
    Endpoint("interventions:agent", "page", (get(),), "agent"),
    Endpoint("interventions:change-config", "page", (get(ACTING), post(ACTING, body=config_form)), "agent"),
    Endpoint("interventions:revert-config", "page", (post(ACTING),), "config"),
    Endpoint(
        "interventions:start-profiling",
        "page",
        (post(ACTING, body=fixed({"minutes": "15", "environment": "development"})),),
        "agent",
    ),
    Endpoint("interventions:profiling", "page", (get(),), "profiling_ended"),
    Endpoint("interventions:stop-profiling", "page", (post(ACTING),), "profiling"),
    Endpoint(
        "interventions:flag-new",
        "page",
        (get(ACTING), post(ACTING, body=fixed({"version": "1.0.0", "environment": "production"}))),
        "agent",
    ),
    Endpoint("interventions:flag", "page", (get(),), "flag"),
    Endpoint("interventions:flag-confirm", "page", (post(ACTING),), "flag"),
    Endpoint("interventions:flag-dismiss", "page", (post(ACTING, body=fixed({"reason": "noise"})),), "flag"),
    Endpoint("interventions:incident-resolve", "page", (post(ACTING),), "incident"),
    Endpoint("interventions:recommendation-apply", "page", (post(ACTING),), "recommendation"),
    Endpoint("interventions:recommendation-dismiss", "page", (post(ACTING),), "recommendation"),
    Endpoint("interventions:schedule-load-test", "page", (post(ACTING, body=load_test_form),), "agent"),
    Endpoint("interventions:load-test", "page", (get(htmx=True),), "loadtest"),
    Endpoint("interventions:load-test-cancel", "page", (post(ACTING),), "loadtest"),
    Endpoint("interventions:load-test-stop", "page", (post(ACTING),), "loadtest"),
    Endpoint("interventions:environments", "page", (get(),), "agent"),
    Endpoint("interventions:reports", "page", (get(),)),
    # Asking for a report is reading (the report holds what its author may see), so viewers may.
    Endpoint("interventions:report-new", "page", (post(LOGIN, (302,), fixed({"format": "csv", "range": "24h"})),)),
    Endpoint("interventions:report", "page", (get(LOGIN, (200, 286), htmx=True),), "report"),
    Endpoint("interventions:report-download", "page", (get(),), "report"),
    # Public: the way in, health, and the API's description (no data).
    Endpoint("", "page", (get(PUBLIC, (302,)),), path="/"),
    Endpoint("healthz", "page", (get(PUBLIC),)),
)

# --- the API ------------------------------------------------------------------------------------------

CREATED = (201,)
DESCRIPTION_READERS = ("anonymous", "viewer", "token:read", "token:expired")
API: tuple[Endpoint, ...] = (
    Endpoint("api-metrics-summary", "api", (api("GET", READ),), query=FLEET),
    Endpoint("api-metrics-summary", "api", (api("GET", READ),), "agent", "query", query=FLEET, missing=400),
    Endpoint("api-metrics-series", "api", (api("GET", READ),), query=FLEET | {"group_by": "agent"}, lists=True),
    Endpoint("api-metrics-breakdown", "api", (api("GET", READ),), query=FLEET | {"by": "agent"}, lists=True),
    Endpoint(
        "api-metrics-breakdown",
        "api",
        (api("GET", READ),),
        "agent",
        "query",
        query=FLEET | {"by": "version"},
        missing=400,
    ),
    Endpoint("api-traces", "api", (api("POST", INGEST, body=api_traces),)),
    Endpoint("api-trace-detail", "api", (api("GET", READ),), "trace"),
    Endpoint("api-agents", "api", (api("GET", READ),), lists=True),
    Endpoint("api-agent-detail", "api", (api("GET", READ),), "agent"),
    Endpoint("api-deployments", "api", (api("GET", READ), api("POST", DEPLOY, CREATED, api_deployment)), lists=True),
    Endpoint("api-slo-list", "api", (api("GET", READ), api("POST", CONFIGURE, CREATED, api_slo)), lists=True),
    Endpoint("api-slo-openslo-export", "api", (api("GET", READ),), lists=True),
    Endpoint("api-slo-openslo-import", "api", (api("POST", CONFIGURE, (400,), fixed({})),)),
    Endpoint("api-slo-preview", "api", (api("POST", READ, body=api_slo),)),
    Endpoint(
        "api-slo-detail",
        "api",
        (api("GET", READ), api("PATCH", CONFIGURE, body=fixed({"target": 0.98})), api("DELETE", CONFIGURE, (204,))),
        "slo",
    ),
    Endpoint("api-slo-budget", "api", (api("GET", READ),), "slo"),
    Endpoint(
        "api-alert-rule-list", "api", (api("GET", READ), api("POST", CONFIGURE_RULES, CREATED, api_rule)), lists=True
    ),
    Endpoint("api-alert-rule-preview", "api", (api("POST", READ, body=api_rule),)),
    Endpoint(
        "api-alert-rule-detail",
        "api",
        (
            api("GET", READ),
            api("PATCH", CONFIGURE_RULES, body=fixed({"threshold": 1400})),
            api("DELETE", CONFIGURE_RULES, (204,)),
        ),
        "rule",
    ),
    Endpoint(
        "api-notification-channel-list",
        "api",
        (api("GET", READ_CHANNELS), api("POST", CONFIGURE, CREATED, api_channel)),
        lists=True,
    ),
    Endpoint(
        "api-notification-channel-detail",
        "api",
        (
            api("GET", READ_CHANNELS),
            api("PATCH", CONFIGURE, body=fixed({"email_to": "x@example.com", "kind": "email"})),
            api("DELETE", CONFIGURE, (204,)),
        ),
        "channel",
    ),
    Endpoint("api-budget-list", "api", (api("GET", READ), api("POST", CONFIGURE, CREATED, api_budget)), lists=True),
    Endpoint("api-budget-preview", "api", (api("POST", READ, body=api_budget),)),
    Endpoint(
        "api-budget-detail",
        "api",
        (
            api("GET", READ),
            api("PATCH", CONFIGURE, body=fixed({"threshold_ms": 1100})),
            api("DELETE", CONFIGURE, (204,)),
        ),
        "budget",
    ),
    Endpoint("api-budget-status", "api", (api("GET", READ),), "budget"),
    Endpoint("api-alert-event-list", "api", (api("GET", READ),), lists=True),
    Endpoint("api-alert-event-detail", "api", (api("GET", READ),), "event"),
    Endpoint("api-alert-event-acknowledge", "api", (api("POST", ACKNOWLEDGE),), "event"),
    Endpoint(
        "api-agent-config",
        "api",
        (api("GET", POLL), api("POST", AUTOMATE, CREATED, fixed({"timeout_ms": 12345}))),
        "agent",
    ),
    Endpoint("api-agent-configs", "api", (api("GET", READ),), "agent"),
    Endpoint("api-agent-config-revert", "api", (api("POST", AUTOMATE, CREATED),), "config"),
    Endpoint("api-profiling", "api", (api("GET", READ), api("POST", AUTOMATE, CREATED, api_profiling)), lists=True),
    Endpoint("api-profiling-detail", "api", (api("GET", READ),), "profiling"),
    Endpoint("api-profiling-stop", "api", (api("POST", AUTOMATE),), "profiling"),
    Endpoint("api-profiling-report", "api", (api("GET", READ),), "profiling_ended"),
    Endpoint("api-profiling-report-csv", "api", (api("GET", READ),), "profiling_ended"),
    Endpoint("api-regression-flags", "api", (api("GET", READ), api("POST", AUTOMATE, CREATED, api_flag)), lists=True),
    Endpoint("api-regression-flag", "api", (api("GET", READ),), "flag"),
    Endpoint("api-regression-flag-confirm", "api", (api("POST", AUTOMATE),), "flag"),
    Endpoint("api-regression-flag-dismiss", "api", (api("POST", AUTOMATE, body=fixed({"reason": "noise"})),), "flag"),
    Endpoint("api-incidents", "api", (api("GET", READ),), lists=True),
    Endpoint("api-incident-resolve", "api", (api("POST", AUTOMATE),), "incident"),
    Endpoint("api-recommendations", "api", (api("GET", READ),), lists=True),
    Endpoint("api-recommendation-apply", "api", (api("POST", AUTOMATE),), "recommendation"),
    Endpoint("api-recommendation-dismiss", "api", (api("POST", AUTOMATE),), "recommendation"),
    Endpoint("api-load-tests", "api", (api("GET", READ), api("POST", AUTOMATE, CREATED, api_load_test)), lists=True),
    Endpoint("api-load-test", "api", (api("GET", READ),), "loadtest"),
    Endpoint("api-load-test-cancel", "api", (api("POST", AUTOMATE),), "loadtest"),
    # Stopping a test that is only scheduled is refused with 409: authorized, nothing to stop.
    Endpoint("api-load-test-stop", "api", (api("POST", AUTOMATE, (409,)),), "loadtest"),
    Endpoint("api-agent-environments", "api", (api("GET", READ),), "agent"),
    Endpoint(
        "api-reports",
        "api",
        (api("GET", READ), api("POST", READ, (202,), fixed({"format": "csv", "filters": {"range": "24h"}}))),
    ),
    Endpoint("api-report", "api", (api("GET", READ),), "report"),
    Endpoint("api-report-download", "api", (api("GET", READ),), "report"),
    Endpoint("api-gate-version", "api", (api("GET", READ),), "agent", "query", query={"candidate": "1.1.0"}),
    Endpoint("otlp-traces", "api", (api("POST", INGEST, (200, 400), fixed({"resourceSpans": []})),)),
    # The API's description holds no data and is the same for everyone (building it costs 0.2 s): a few suffice.
    Endpoint("api-schema", "api", (api("GET", PUBLIC),), only=DESCRIPTION_READERS),
    Endpoint("api-docs", "api", (api("GET", PUBLIC),), only=DESCRIPTION_READERS),
)

# --- the admin ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminModel:
    """A registered ModelAdmin: the object it is tried with and who may view, add, change, delete."""

    target: str  # an object kind of both departments, or "global:<name>" for objects of no department
    view: frozenset[str]
    add: frozenset[str] = NOBODY
    change: frozenset[str] = NOBODY
    delete: frozenset[str] = NOBODY
    # ConfirmedChangeAdmin looks the object up before it checks a change (404 first).
    confirmed: bool = False
    # What another person's or department's object answers: 404, or the admin's "does not exist" redirect.
    missing: int = 404
    # An add form posted with only this (otherwise empty): refused with the form again.
    add_body: dict[str, str] = field(default_factory=dict)


ADMIN_MODELS: dict[str, AdminModel] = {
    "auth.group": AdminModel("global:group", SUPER, SUPER, SUPER, SUPER),
    "auth.user": AdminModel("global:user", SUPER, SUPER, SUPER, SUPER),
    "auditlog.logentry": AdminModel("global:logentry", SUPER),
    # Everyone manages their own tokens; another person's token "does not exist" (the admin's redirect).
    "access.apitoken": AdminModel("apitoken", ANY, ANY, ANY, SUPER, missing=302),
    "access.allowedhost": AdminModel("global:allowedhost", SUPER, SUPER, SUPER, SUPER),
    "telemetry.department": AdminModel("department", ANY, SUPER, SUPER, SUPER),
    "telemetry.team": AdminModel("team", ANY, MANAGE, MANAGE, MANAGE),
    "telemetry.agent": AdminModel("agent_pk", ANY, MANAGE, ACT, MANAGE),
    "telemetry.agentcapacity": AdminModel("capacity", ANY, ACT, ACT, ACT),
    "telemetry.deployment": AdminModel("deployment", ANY, ACT, ACT, MANAGE),
    "telemetry.trace": AdminModel("trace_pk", ANY),
    "telemetry.pendingspan": AdminModel("global:pendingspan", SUPER, delete=SUPER),
    "metrics.rollupstate": AdminModel("global:rollupstate", SUPER),
    "slos.slo": AdminModel("slo", ANY, MANAGE, MANAGE, MANAGE, confirmed=True),
    # The add form is posted with a metric: without one AlertRule.clean() reports an error on `slo`, a
    # field the form lacks, and Django answers 500 (a validation bug, not an authorization one).
    "slos.alertrule": AdminModel("rule", ANY, ACT, ACT, ACT, confirmed=True, add_body={"metric": "latency"}),
    "slos.performancebudget": AdminModel("budget", ANY, MANAGE, MANAGE, MANAGE, confirmed=True),
    "slos.notificationchannel": AdminModel("channel", ACT, MANAGE, MANAGE, MANAGE),
    "slos.delivery": AdminModel("delivery", MANAGE),
    # Configuration versions, profiling sessions and load tests are append-only: no change, no delete.
    "interventions.agentconfig": AdminModel("config_pk", ANY, ACT, confirmed=True),
    "interventions.profilingsession": AdminModel("profiling", ANY, ACT, confirmed=True),
    "interventions.regressionflag": AdminModel("flag", ANY, change=ACT),
    "interventions.incident": AdminModel("incident", ANY, change=ACT),
    "interventions.recommendation": AdminModel("recommendation", ANY, change=ACT),
    "interventions.loadtest": AdminModel("loadtest", ANY, ACT, confirmed=True),
}


def admin_endpoints(label: str, spec: AdminModel) -> list[Endpoint]:
    """The six URL patterns of one ModelAdmin, with the rules the table above says."""
    app, model = label.split(".")
    base = f"admin:{app}_{model}"
    target = None if spec.target.startswith("global:") else spec.target
    viewing = Rule(f"admin view {label}", spec.view | spec.change)
    adding = Rule(f"admin add {label}", spec.add)
    changing = Rule(f"admin change {label}", spec.change)
    deleting = Rule(f"admin delete {label}", spec.delete)
    missing = spec.missing

    def one(suffix: str, *ops: Op) -> Endpoint:
        return Endpoint(f"{base}_{suffix}", "admin", ops, target, missing=missing, admin_object=spec.target)

    return [
        Endpoint(f"{base}_changelist", "admin", (get(viewing),), lists=target is not None and target not in PERSONAL),
        Endpoint(f"{base}_add", "admin", (get(adding), post(adding, (200,), fixed(spec.add_body)))),
        # Django checks the model permission first, then looks the object up (change, delete);
        # the history looks it up first. An empty change form is refused with the form again (200);
        # a model whose fields are all read-only saves it as it is (302).
        one(
            "change",
            Op("GET", viewing, object_first=False),
            post(changing, (200, 302), object_first=spec.confirmed),
        ),
        one("history", get(viewing)),
        one("delete", Op("GET", deleting, object_first=False)),
        # The bare object URL redirects to its change page without looking at the object.
        Endpoint(
            f"admin/{app}/{model}/<path:object_id>/",
            "admin",
            (get(LOGIN, (302,)),),
            path=f"/admin/{app}/{model}/1/",
        ),
    ]


ADMIN_SITE: tuple[Endpoint, ...] = (
    Endpoint("admin:index", "admin", (get(),)),
    Endpoint("admin:login", "admin", (get(PUBLIC, (200, 302)),)),
    Endpoint("admin:logout", "admin", (post(PUBLIC, (200, 302)),), only=("anonymous",)),
    Endpoint("admin:password_change", "admin", (get(),)),
    Endpoint("admin:password_change_done", "admin", (get(),)),
    Endpoint(
        "admin:autocomplete",
        "admin",
        (get(),),
        query={"app_label": "telemetry", "model_name": "deployment", "field_name": "agent", "term": ""},
        lists=True,
    ),
    Endpoint("admin:jsi18n", "admin", (get(),)),
    Endpoint(
        "admin:auth_user_password_change",
        "admin",
        (get(SUPERUSER_ONLY),),
        admin_object="global:user",
        id_name="id",
    ),
    # No model has a public URL: "view on site" is a 404 for every object, another department's or not.
    Endpoint("admin:view_on_site", "admin", (get(LOGIN, (404,)),), "agent_pk", admin_object="agent_pk"),
    Endpoint("admin:app_list", "admin", (get(),), kwargs={"app_label": "slos"}),
    Endpoint("admin/(?P<url>.*)$", "admin", (get(LOGIN, (404,)),), path="/admin/nothing-here/"),
)
ADMIN: tuple[Endpoint, ...] = (
    *ADMIN_SITE,
    *(endpoint for label, spec in ADMIN_MODELS.items() for endpoint in admin_endpoints(label, spec)),
)


# --- the walk over the URL patterns -----------------------------------------------------------------------


def url_patterns() -> Iterator[tuple[str, str]]:
    """(key, route) of every URL pattern: the key is namespace:name, or the route when it has no name."""

    def walk(patterns: list[Any], prefix: str, namespace: str) -> Iterator[tuple[str, str]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = ":".join(part for part in (namespace, pattern.namespace or "") if part)
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            elif isinstance(pattern, URLPattern):
                route = prefix + str(pattern.pattern)
                key = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name or route
                yield key, route

    yield from walk(get_resolver().url_patterns, "", "")


def classified() -> set[str]:
    return {endpoint.name for endpoint in (*PAGES, *API, *ADMIN)}


# --- running the cases ----------------------------------------------------------------------------------


@dataclass
class Case:
    """One (endpoint, method, principal, object) and what happened."""

    section: str
    endpoint: str
    method: str
    principal: str
    target: str  # own, foreign, or - (no object)
    expected: str
    got: int
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class Figures:
    """Every case of the module, for the report and for each test's assertion."""

    cases: list[Case] = field(default_factory=list)

    def add(self, case: Case) -> None:
        self.cases.append(case)

    def failures(self, section: str) -> list[str]:
        return [
            f"{c.endpoint} {c.method} as {c.principal} on {c.target}: expected {c.expected}, got {c.got}; "
            + "; ".join(c.problems)
            for c in self.cases
            if c.section == section and not c.passed
        ]

    def summary(self) -> dict[str, Any]:
        sections: dict[str, Counter[str]] = {}
        for case in self.cases:
            counts = sections.setdefault(case.section, Counter())
            counts["cases"] += 1
            counts["passed"] += case.passed
            counts[f"target {case.target}"] += 1
        outcomes = Counter(case.expected for case in self.cases)
        statuses = Counter(str(case.got) for case in self.cases)
        return {
            "cases": len(self.cases),
            "passed": sum(case.passed for case in self.cases),
            "failed": sum(not case.passed for case in self.cases),
            "sections": {name: dict(counts) for name, counts in sections.items()},
            "expected_outcomes": dict(sorted(outcomes.items())),
            "statuses": dict(sorted(statuses.items())),
            "endpoints": len({(c.section, c.endpoint) for c in self.cases}),
            "principals": sorted({c.principal for c in self.cases}),
            "failures": [
                f"{c.section}: {c.endpoint} {c.method} as {c.principal} on {c.target}: " + "; ".join(c.problems)
                for c in self.cases
                if not c.passed
            ][:100],
        }


FIGURES = Figures()
URL_FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_figures() -> Iterator[None]:
    yield
    summary = FIGURES.summary() | {"url_patterns": URL_FIGURES}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "authorization.json").write_text(json.dumps(summary, indent=2))
    short = {k: v for k, v in summary.items() if k != "failures"}
    print("\nauthorization matrix:", json.dumps(short, indent=1))


@contextmanager
def undone() -> Iterator[None]:
    """Whatever the request changes is rolled back, so every case starts from the same world."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def expected(endpoint: Endpoint, op: Op, principal: Principal, side: str | None, world: World) -> str:
    """The answer the specification gives: ok, login, or a status code."""
    rule = op.rule
    if endpoint.kind == "api" and principal.bad_token:
        return "401"
    if rule.public:
        return OK
    if principal.role is None or (endpoint.kind != "api" and principal.is_token):
        return "401" if endpoint.kind == "api" else LOGIN_NEEDED
    if endpoint.kind == "api":
        if principal.scopes is not None:
            if not any(alternative <= principal.scopes for alternative in rule.scopes):
                return "403"
        elif not rule.sessions:
            return "403"
    visible = sees(principal, endpoint.target, side, world)
    allowed = principal.role in rule.roles
    if op.object_first:
        if not visible:
            return str(endpoint.missing)
        return OK if allowed else "403"
    if not allowed:
        return "403"
    return OK if visible else str(endpoint.missing)


def object_ids(endpoint: Endpoint, world: World, side: str | None, missing: bool) -> dict[str, Any]:
    """The identifiers of the endpoint's object: its own department's, the other's, or one that does not exist."""
    kind = endpoint.admin_object or endpoint.target
    if kind is None:
        return {}
    if kind.startswith("global:"):
        return {endpoint.id_name: world.globals[kind.split(":", 1)[1]].pk}
    if endpoint.kind == "admin":
        pk = MISSING_PK if missing else world.sides[side or "pay"].objects[kind].pk
        ids: dict[str, Any] = {endpoint.id_name: pk}
        if endpoint.name == "admin:view_on_site":
            model = world.sides["pay"].objects[kind].__class__
            ids["content_type_id"] = ContentType.objects.get_for_model(model).pk
        return ids
    return missing_id(kind) if missing else world.sides[side or "pay"].url_id(kind)


def build_request(endpoint: Endpoint, world: World, side: str | None, missing: bool) -> tuple[str, dict[str, str]]:
    """The path and query string of a case."""
    query = dict(endpoint.query)
    if endpoint.path:
        return endpoint.path, query
    kwargs = dict(endpoint.kwargs)
    ids = object_ids(endpoint, world, side, missing)
    if endpoint.where == "query" and endpoint.target:
        query[endpoint.target] = str(next(iter(ids.values())))
    else:
        kwargs |= ids
    return reverse(endpoint.name, kwargs=kwargs or None), query


def send(client: APIClient, endpoint: Endpoint, op: Op, path: str, query: dict[str, str], body: Any, htmx: bool) -> Any:
    headers = endpoint.headers | (HTMX if htmx else {})
    if op.method == "GET":
        return client.get(path, query, headers=headers)
    if query:
        path = f"{path}?{'&'.join(f'{k}={v}' for k, v in query.items())}"
    if endpoint.kind == "api":
        return client.generic(op.method, path, json.dumps(body or {}), "application/json", headers=headers)
    return client.post(path, body or {}, headers=headers)


def content_of(response: Any) -> bytes:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items()).encode()
    return bytes(body) + b"\n" + headers


def forbidden(world: World, principal: Principal) -> list[str]:
    """What this principal must never be shown: the other department's names and trace ids, others' personal objects."""
    if principal.role == SUPERUSER:
        return []
    found = []
    for key, side in world.sides.items():
        if principal.home != key:
            found.append(side.marker)
            found.append(side.objects["trace"].trace_id.hex)
        if principal.username != side.owner.username:
            found.extend(side.private)
    return found


def own_markers(world: World, principal: Principal) -> list[str]:
    """What a list must show this principal: its department's objects; a superuser's, both departments'."""
    if principal.role == SUPERUSER:
        return [side.marker for side in world.sides.values()]
    return [world.sides[principal.home].marker] if principal.home else []


def echo_free(content: bytes, value: str) -> bytes:
    """The body without the identifier the request named: a slug anywhere, a number where a link repeats it."""
    if not value.isdigit():
        return content.replace(value.encode(), b"<id>")
    return re.sub(rb'(%3D|=|/|\\"|value=")' + value.encode() + rb'(?=["&/\\])', rb"\1<id>", content)


def normalised(content: bytes, ids: dict[str, Any]) -> bytes:
    """A body with the object's identifiers (echoed in messages) and its timings taken out."""
    for value in ids.values():
        content = echo_free(content, str(value))
    content = re.sub(rb"Server-Timing: \S+", b"", content)
    # CSRF tokens are masked afresh in every response.
    content = re.sub(rb'(csrfmiddlewaretoken" value="|X-CSRFToken": "|csrftoken=)[^"; ]+', rb"\1", content)
    content = re.sub(rb"figure-[\w-]+-[0-9a-f]{8}", b"figure", content)
    return re.sub(rb">\d+ ms</p>", b"> ms</p>", content)


def outcome_problems(expect: str, op: Op, response: Any, htmx: bool) -> list[str]:
    status = response.status_code
    if expect == OK:
        wanted = op.ok | ({286} if htmx else set())
        return [] if status in wanted else [f"status {status} not in {sorted(wanted)}"]
    if expect == LOGIN_NEEDED:
        location = response.headers.get("Location", "") or response.headers.get("HX-Redirect", "")
        if status in (302, 401) and location.startswith(reverse("admin:login")):
            return []
        return [f"status {status} is not a login redirect ({location!r})"]
    return [] if str(status) == expect else [f"status {status}"]


def run_case(world: World, section: str, endpoint: Endpoint, op: Op, principal: Principal, side: str | None) -> None:
    """Send one request (rolled back afterwards) and check its status, leaks and secrets."""
    for htmx in (False, True) if op.htmx else (False,):
        expect = expected(endpoint, op, principal, side, world)
        visible = sees(principal, endpoint.target, side, world)
        target = "-" if side is None or endpoint.target is None else ("own" if visible else "foreign")
        path, query = build_request(endpoint, world, side, missing=False)
        body_side = world.sides[side or principal.side]
        body = op.body(world, body_side) if op.body else None
        client = world.client(principal)
        problems: list[str] = []
        try:
            with undone():
                response = send(client, endpoint, op, path, query, body, htmx)
        except Exception as exc:  # a crash is a failed case, with its reason
            FIGURES.add(Case(section, endpoint.label, op.method, principal.name, target, expect, 500, [repr(exc)]))
            continue
        content = content_of(response)
        problems += outcome_problems(expect, op, response, htmx)
        problems += [f"secret {s[:12]!r}… in the response" for s in world.secrets if s in content]
        asked = f"{path} {query} {body}"
        echoed = any(word in asked for word in forbidden(world, principal))
        if not echoed:
            problems += [f"shows {word!r}" for word in forbidden(world, principal) if word.encode() in content]
        if endpoint.lists and expect == OK and op.method == "GET":
            problems += [
                f"does not show {word!r}" for word in own_markers(world, principal) if word.encode() not in content
            ]
        if target == "foreign" and expect == str(endpoint.missing):
            # Another department's object must be indistinguishable from one that does not exist.
            missing_path, missing_query = build_request(endpoint, world, side, missing=True)
            with undone():
                absent = send(client, endpoint, op, missing_path, missing_query, body, htmx)
            named_ids = {
                f"{k}{i}": v
                for i, ids in enumerate(
                    (object_ids(endpoint, world, side, False), object_ids(endpoint, world, side, True))
                )
                for k, v in ids.items()
            }
            if absent.status_code != response.status_code:
                problems.append(f"answers {response.status_code}, a missing one {absent.status_code}")
            elif normalised(content, named_ids) != normalised(content_of(absent), named_ids):
                problems.append("the answer differs from that for a missing object")
        label = endpoint.label + (" (htmx)" if htmx or endpoint.headers else "")
        FIGURES.add(Case(section, label, op.method, principal.name, target, expect, response.status_code, problems))


def sides_for(endpoint: Endpoint, principal: Principal) -> tuple[str | None, ...]:
    """Both departments' objects for a person of one; research's alone for whoever the object cannot matter to
    (a superuser sees both, nobody signed in sees neither)."""
    if not endpoint.target:
        return (None,)
    signed_in = principal.role is not None and not principal.bad_token
    if not signed_in or principal.role == SUPERUSER or (principal.is_token and endpoint.kind != "api"):
        return ("res",)
    return ("pay", "res")


def run_section(world: World, section: str, endpoints: tuple[Endpoint, ...], principals: tuple[Principal, ...]) -> None:
    for endpoint in endpoints:
        for op in endpoint.ops:
            for principal in principals:
                if endpoint.only and principal.name not in endpoint.only:
                    continue
                for side in sides_for(endpoint, principal):
                    run_case(world, section, endpoint, op, principal, side)


# --- the tests --------------------------------------------------------------------------------------------


def test_every_url_pattern_is_classified():
    """A URL pattern or a ModelAdmin that no table above names has not been reviewed: it fails here."""
    patterns = dict(url_patterns())
    registered = {model._meta.label_lower for model in admin.site._registry}
    unclassified = sorted(set(patterns) - classified())
    stale = sorted(classified() - set(patterns))
    URL_FIGURES.update(
        {
            "patterns": len(patterns),
            "classified": len(patterns) - len(unclassified),
            "admin_models": len(registered),
            "unclassified": unclassified,
        }
    )
    assert not unclassified, f"URL patterns with no expected outcome: {unclassified}"
    assert not stale, f"the matrix names patterns that no longer exist: {stale}"
    assert registered == set(ADMIN_MODELS), f"ModelAdmins not in ADMIN_MODELS: {registered ^ set(ADMIN_MODELS)}"


def test_pages_and_htmx_fragments(world, db):
    """Every page and htmx fragment, as each person and a token, on both departments' objects."""
    run_section(world, "pages", PAGES, PAGE_PRINCIPALS)
    failures = FIGURES.failures("pages")
    assert not failures, "\n".join(failures)


def test_api_operations(world, db):
    """Every API operation, as each person, each token scope, an expired and a revoked token."""
    run_section(world, "api", API, API_PRINCIPALS)
    failures = FIGURES.failures("api")
    assert not failures, "\n".join(failures)


def test_admin_views(world, db):
    """Every admin view of every registered model, as each person, on both departments' objects."""
    run_section(world, "admin", ADMIN, ADMIN_PRINCIPALS)
    failures = FIGURES.failures("admin")
    assert not failures, "\n".join(failures)


# --- writes: read-only fields, foreign references, list filters, admin actions ---------------------------


def record(section: str, endpoint: str, method: str, who: str, target: str, problems: list[str], got: int = 0) -> None:
    FIGURES.add(Case(section, endpoint, method, who, target, "as specified", got, problems))


def fresh(obj: Any) -> Any:
    return type(obj)._default_manager.get(pk=obj.pk)


def unchanged(before: Any, after: Any, names: tuple[str, ...]) -> list[str]:
    return [
        f"{name} changed from {getattr(before, name)!r} to {getattr(after, name)!r}"
        for name in names
        if getattr(before, name) != getattr(after, name)
    ]


def test_read_only_fields_cannot_be_written(world, db):
    """Status, state, creators and deciders are set by perfops, whatever a request body says."""
    pay = world.sides["pay"]
    root = world.users["superuser"]
    manager = world.client(SESSIONS[1])
    engineer = world.client(SESSIONS[2])
    stamp = "2001-01-01T00:00:00Z"
    rule, slo, budget, channel = (pay.objects[k] for k in ("rule", "slo", "budget", "channel"))
    forged_rule = {"state": "firing", "state_since": stamp, "last_value": 99.0, "last_evaluated_at": stamp}
    forged_rule |= {"created_by": "root", "budget": budget.pk, "condition": "x", "value_text": "x"}
    patches: list[tuple[str, Any, dict[str, Any], tuple[str, ...], dict[str, Any]]] = [
        (
            f"/api/v1/alert-rules/{rule.pk}",
            rule,
            forged_rule | {"threshold": 1450},
            ("state", "state_since", "last_value", "last_evaluated_at", "created_by_id", "budget_id"),
            {"threshold": 1450},
        ),
        (
            f"/api/v1/slos/{slo.pk}",
            slo,
            {"created_by": "root", "created_at": stamp, "updated_at": stamp, "objective": "x", "target": 0.97},
            ("created_by_id", "created_at"),
            {"target": 0.97},
        ),
        (
            f"/api/v1/budgets/{budget.pk}",
            budget,
            {"created_by": "root", "created_at": stamp, "alert_rules": [], "threshold_ms": 1300},
            ("created_by_id", "created_at"),
            {"threshold_ms": 1300},
        ),
        (
            f"/api/v1/notification-channels/{channel.pk}",
            channel,
            {"created_at": stamp, "has_secret": False, "name": f"{pay.marker} hook 2"},
            ("created_at", "secret"),
            {"name": f"{pay.marker} hook 2"},
        ),
    ]
    for path, obj, forged, kept, applied in patches:
        for method in ("PATCH", "PUT"):
            before = fresh(obj)
            with undone():
                body = forged
                if method == "PUT":
                    body = manager.get(path).json() | forged
                response = manager.generic(method, path, json.dumps(body), "application/json")
                after = fresh(obj)
            problems = (
                [] if response.status_code == 200 else [f"status {response.status_code}: {response.content[:200]!r}"]
            )
            problems += unchanged(before, after, kept)
            problems += [f"{k} was not applied" for k, v in applied.items() if getattr(after, k) != v]
            problems += [f"secret in the answer of {path}" for s in world.secrets if s in response.content]
            record("read-only fields", path, method, "manager", "own", problems, response.status_code)

    creations: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], list[str]]]] = [
        (
            "/api/v1/slos",
            api_slo(world, pay) | {"created_by": "root", "created_at": stamp, "alert_rules": [1, 2]},
            lambda made: (
                [] if SLO.objects.get(pk=made["id"]).created_by_id == world.users["manager"].pk else ["creator"]
            ),
        ),
        (
            "/api/v1/alert-rules",
            api_rule(world, pay) | forged_rule,
            lambda made: [
                problem
                for problem, bad in (
                    ("state", AlertRule.objects.get(pk=made["id"]).state != "normal"),
                    ("creator", AlertRule.objects.get(pk=made["id"]).created_by_id != world.users["manager"].pk),
                    ("budget", AlertRule.objects.get(pk=made["id"]).budget_id is not None),
                )
                if bad
            ],
        ),
        (
            "/api/v1/profiling",
            api_profiling(world, pay)
            | {
                "status": "ended",
                "started_by": "root",
                "ended_by": "root",
                "report_status": "ready",
                "ended_at": stamp,
            },
            lambda made: [
                problem
                for problem, bad in (
                    ("status", ProfilingSession.objects.get(pk=made["id"]).status != "active"),
                    (
                        "starter",
                        ProfilingSession.objects.get(pk=made["id"]).started_by_id != world.users["manager"].pk,
                    ),
                    ("ender", ProfilingSession.objects.get(pk=made["id"]).ended_by_id is not None),
                )
                if bad
            ],
        ),
        (
            "/api/v1/regression-flags",
            api_flag(world, pay)
            | {"status": "confirmed", "decided_by": "root", "flagged_by": "root", "decided_at": stamp}
            | {"source": "detector", "evidence": {"forged": True}, "dismiss_reason": "forged"},
            lambda made: [
                problem
                for problem, bad in (
                    ("status", RegressionFlag.objects.get(pk=made["id"]).status != "suspected"),
                    ("decider", RegressionFlag.objects.get(pk=made["id"]).decided_by_id is not None),
                    ("flagger", RegressionFlag.objects.get(pk=made["id"]).flagged_by_id != world.users["manager"].pk),
                    ("evidence", RegressionFlag.objects.get(pk=made["id"]).evidence.get("forged") is not None),
                )
                if bad
            ],
        ),
        (
            "/api/v1/load-tests",
            api_load_test(world, pay)
            | {"status": "finished", "created_by": "root", "sent": 999, "failures": 5, "results": {"p95": 1}},
            lambda made: [
                problem
                for problem, bad in (
                    ("status", LoadTest.objects.get(pk=made["id"]).status != "scheduled"),
                    ("creator", LoadTest.objects.get(pk=made["id"]).created_by_id != world.users["manager"].pk),
                    ("counts", LoadTest.objects.get(pk=made["id"]).sent != 0),
                )
                if bad
            ],
        ),
        (
            "/api/v1/deployments",
            api_deployment(world, pay) | {"source": "admin", "first_seen_at": stamp, "created_at": stamp},
            lambda made: [] if Deployment.objects.get(pk=made["id"]).source == "api" else ["source"],
        ),
        (
            "/api/v1/reports",
            {"format": "csv", "filters": {"range": "24h"}, "status": "ready", "created_by": "root", "size": 1},
            lambda made: [
                problem
                for problem, bad in (
                    ("status", Report.objects.get(pk=made["id"]).status != "queued"),
                    ("creator", Report.objects.get(pk=made["id"]).created_by_id != world.users["manager"].pk),
                )
                if bad
            ],
        ),
    ]
    for path, body, judge in creations:
        with undone():
            response = manager.post(path, body, format="json")
            ok = response.status_code in (201, 202)
            problems = judge(response.json()) if ok else [f"status {response.status_code}: {response.content[:300]!r}"]
        record("read-only fields", path, "POST", "manager", "-", problems, response.status_code)

    # Acknowledging names the person who did it, not the one the body names.
    event = pay.objects["event"]
    with undone():
        response = engineer.post(
            f"/api/v1/alert-events/{event.pk}/acknowledge", {"acknowledged_by": "root"}, format="json"
        )
        problems = [] if fresh(event).acknowledged_by_id == world.users["engineer"].pk else ["acknowledger"]
    record(
        "read-only fields",
        "/api/v1/alert-events/<pk>/acknowledge",
        "POST",
        "engineer",
        "own",
        problems,
        response.status_code,
    )

    # The admin: read-only fields are not in the form; posting them changes nothing.
    incident, flag, recommendation, token = (pay.objects[k] for k in ("incident", "flag", "recommendation", "apitoken"))
    admin_posts: list[tuple[str, Any, dict[str, Any], tuple[str, ...], str]] = [
        (
            f"/admin/interventions/incident/{incident.pk}/change/",
            incident,
            {"notes": "checked", "status": "resolved", "title": "forged", "resolved_by": root.pk, "opened_by": root.pk},
            ("status", "title", "resolved_by_id", "opened_by_id"),
            "engineer",
        ),
        (
            f"/admin/interventions/regressionflag/{flag.pk}/change/",
            flag,
            {"status": "confirmed", "decided_by": root.pk, "summary": "forged", "version": "6.6.6"},
            ("status", "decided_by_id", "summary", "version"),
            "engineer",
        ),
        (
            f"/admin/interventions/recommendation/{recommendation.pk}/change/",
            recommendation,
            {"status": "applied", "decided_by": root.pk, "changes": '{"timeout_ms": 1}'},
            ("status", "decided_by_id", "changes"),
            "engineer",
        ),
        (
            f"/admin/access/apitoken/{token.pk}/change/",
            token,
            {"name": "renamed", "scopes": ["read"], "user": root.pk, "token_hash": "0" * 64, "revoked_at": stamp},
            ("user_id", "token_hash", "revoked_at", "prefix"),
            "manager",
        ),
    ]
    for path, obj, forged, kept, who in admin_posts:
        before = fresh(obj)
        client = world.client(next(p for p in SESSIONS if p.name == who))
        with undone():
            response = client.post(path, forged)
            after = fresh(obj)
        problems = [] if response.status_code == 302 else [f"status {response.status_code}"]
        problems += unchanged(before, after, kept)
        record("read-only fields", path, "POST", who, "own", problems, response.status_code)

    # A confirmed change of an alert rule on its page and in the admin: the threshold changes, the state does not.
    agent_pk = str(pay.objects["agent"].pk)
    page = rule_form(world, pay) | {
        "threshold": "1450",
        "state": "firing",
        "created_by": str(root.pk),
        "_confirmed": "1",
    }
    admin_form = page | {"department": "", "team": "", "utilization": "", "recovery_threshold": "", "_save": "Save"}
    admin_form |= {"short_window_s": "", "channels": [str(channel.pk)], "agent": agent_pk, "last_value": "9"}
    for path, body in (
        (f"/alerts/rules/{rule.pk}/edit", page),
        (f"/admin/slos/alertrule/{rule.pk}/change/", admin_form),
    ):
        before = fresh(rule)
        with undone():
            response = engineer.post(path, body)
            after = fresh(rule)
        problems = [] if response.status_code == 302 else [f"status {response.status_code}"]
        problems += unchanged(before, after, ("state", "created_by_id", "last_value"))
        problems += [] if after.threshold == 1450 else ["the threshold was not saved"]
        record("read-only fields", path, "POST", "engineer", "own", problems, response.status_code)
    failures = FIGURES.failures("read-only fields")
    assert not failures, "\n".join(failures)


def named(foreign: dict[str, Any], absent: dict[str, Any]) -> tuple[str, str, str]:
    """The field where the two bodies differ, and the identifier each names there."""
    key = next(k for k in foreign if foreign[k] != absent.get(k))
    here, there = foreign[key], absent[key]
    if isinstance(here, list):
        here, there = here[0], there[0]
    return key, str(here), str(there)


def same_answer(
    client: APIClient, method: str, path: str, foreign: dict[str, Any], absent: dict[str, Any], form: bool = False
) -> tuple[list[str], int]:
    """Send the request naming another department's object and then one that does not exist: the same answer."""
    _, *ids = named(foreign, absent)
    answers = []
    for body in (foreign, absent):
        with undone():
            if method == "GET":
                response = client.get(path, body)
            elif form:
                response = client.post(path, body)
            else:
                response = client.generic(method, path, json.dumps(body), "application/json")
        answers.append(response)
    first, second = answers
    problems = []
    # Both identifiers out of both bodies: a number can also be some other object's id on the page.
    here = normalised(first.content, {"a": ids[0], "b": ids[1]})
    there = normalised(second.content, {"a": ids[0], "b": ids[1]})
    if first.status_code != second.status_code:
        problems.append(f"answers {first.status_code}, for a missing one {second.status_code}")
    elif here != there:
        at = next(i for i, (a, b) in enumerate(zip(here, there, strict=False)) if a != b)
        problems.append(f"answers differ: {here[at - 80 : at + 80]!r} / {there[at - 80 : at + 80]!r}")
    if method != "GET" and first.status_code in {201, 202, 204, 302} | ({200} if path.startswith("/api/") else set()):
        problems.append(f"accepted ({first.status_code})")
    return problems, first.status_code


def test_other_departments_objects_named_in_bodies_and_filters_do_not_exist(world, db):
    """A body or a filter naming another department's object gets the answer an unknown one gets."""
    pay, res = world.sides["pay"], world.sides["res"]
    manager = world.client(SESSIONS[1])
    agent, department, team = res.objects["agent"].slug, res.department.slug, res.objects["team"].slug
    channel, slo, budget, rule = (res.objects[k].pk for k in ("channel", "slo", "budget", "rule"))
    gone = MISSING_PK
    team_slo = {"scope": "team", "agent": None}
    burn = {"metric": "burn_rate"}
    own_rule = f"/api/v1/alert-rules/{pay.objects['rule'].pk}"
    requests: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("POST", "/api/v1/slos", {"agent": agent}, {"agent": "nosuch-bot"}),
        ("POST", "/api/v1/slos", team_slo | {"team": team}, team_slo | {"team": "nosuch-team"}),
        ("POST", "/api/v1/budgets", {"department": department}, {"department": "nosuch"}),
        ("POST", "/api/v1/notification-channels", {"department": department}, {"department": "nosuch"}),
        ("POST", "/api/v1/alert-rules", {"channels": [channel]}, {"channels": [gone]}),
        ("POST", "/api/v1/alert-rules", burn | {"slo": slo}, burn | {"slo": gone}),
        ("PATCH", own_rule, {"channels": [channel]}, {"channels": [gone]}),
        ("POST", "/api/v1/profiling", {"agent": agent}, {"agent": "nosuch-bot"}),
        ("POST", "/api/v1/regression-flags", {"agent": agent}, {"agent": "nosuch-bot"}),
        ("POST", "/api/v1/load-tests", {"agent": agent}, {"agent": "nosuch-bot"}),
        ("POST", "/api/v1/deployments", {"agent": agent}, {"agent": "nosuch-bot"}),
        # The lists' filters: another department's id filters like an unknown one.
        ("GET", "/api/v1/alert-rules", {"slo": slo}, {"slo": gone}),
        ("GET", "/api/v1/alert-rules", {"budget": budget}, {"budget": gone}),
        ("GET", "/api/v1/alert-events", {"rule": rule}, {"rule": gone}),
        ("GET", "/api/v1/deployments", {"agent": agent}, {"agent": "nosuch-bot"}),
        ("GET", "/api/v1/agents", {"department": department}, {"department": "nosuch"}),
        ("GET", "/api/v1/metrics/summary", {"department": department}, {"department": "nosuch"}),
        ("GET", "/api/v1/metrics/summary", {"team": team}, {"team": "nosuch-team"}),
        ("GET", "/budgets/", {"department": department}, {"department": "nosuch"}),
        ("GET", "/slos/openslo.yaml", {"id": slo}, {"id": gone}),
        ("GET", "/admin/slos/alertrule/", {"slo__id__exact": slo}, {"slo__id__exact": gone}),
        (
            "GET",
            "/admin/telemetry/agent/",
            {"department__id__exact": res.department.pk},
            {"department__id__exact": gone},
        ),
    ]
    bodies = {
        "/api/v1/slos": api_slo,
        "/api/v1/budgets": api_budget,
        "/api/v1/notification-channels": api_channel,
        "/api/v1/alert-rules": api_rule,
        "/api/v1/profiling": api_profiling,
        "/api/v1/regression-flags": api_flag,
        "/api/v1/load-tests": api_load_test,
        "/api/v1/deployments": api_deployment,
    }
    for method, path, foreign, absent in requests:
        base = bodies[path](world, pay) if method == "POST" else {}
        problems, status = same_answer(manager, method, path, base | foreign, base | absent)
        record(
            "foreign references", f"{path} {named(foreign, absent)[0]}", method, "manager", "foreign", problems, status
        )

    # The pages' and the admin's forms offer only the person's objects: another's id is "not one of the choices".
    far, dept = str(res.objects["agent"].pk), str(res.department.pk)
    forms: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("/alerts/rules/new", rule_form(world, pay) | {"agent": far}, {"agent": str(gone)}),
        ("/slos/new", slo_form(world, pay) | {"agent": far}, {"agent": str(gone)}),
        ("/budgets/new", budget_form(world, pay) | {"department": dept}, {"department": str(gone)}),
        (
            reverse("interventions:change-config", args=[pay.objects["agent"].slug]),
            config_form(world, pay) | {"agent": far},
            {"agent": str(gone)},
        ),
        ("/admin/telemetry/team/add/", {"name": "x", "slug": "x", "department": dept}, {"department": str(gone)}),
        ("/admin/slos/alertrule/add/", rule_form(world, pay) | {"agent": far}, {"agent": str(gone)}),
        (
            "/admin/telemetry/deployment/add/",
            {"agent": far, "environment": "production", "version": "7"},
            {"agent": str(gone)},
        ),
    ]
    for path, foreign, absent in forms:
        problems, status = same_answer(manager, "POST", path, foreign, foreign | absent, form=True)
        record("foreign references", path, "POST", "manager", "foreign", problems, status)

    # Ingest refuses another department's agent and stores nothing of it.
    ingest_client = world.client(TOKENS[0])
    with undone():
        response = ingest_client.post("/api/v1/traces", api_traces(world, res), format="json")
        stored = Trace.objects.filter(agent=res.objects["agent"], environment="development").count()
    refused = response.status_code == 400 and response.json()["accepted"] == 0 and not stored
    problems = [] if refused else [f"{response.status_code} {response.content[:200]!r}"]
    record(
        "foreign references", "/api/v1/traces agent", "POST", TOKENS[0].name, "foreign", problems, response.status_code
    )

    # A report of another department's agent fails like one of an unknown agent, and holds nothing of it.
    written = []
    for name in (agent, "nosuch-bot"):
        with undone():
            body = {"format": "csv", "filters": {"agent": name, "range": "24h"}}
            made = manager.post("/api/v1/reports", body, format="json").json()
            reports.generate(made["id"])
            report = Report.objects.get(pk=made["id"])
            written.append((report.status, report.detail.replace(name, "<id>"), bytes(report.content or b"")))
    problems = [] if written[0] == written[1] else [f"{written[0][:2]} / {written[1][:2]}"]
    record("foreign references", "/api/v1/reports filters.agent", "POST", "manager", "foreign", problems)
    failures = FIGURES.failures("foreign references")
    assert not failures, "\n".join(failures)


def test_exports_hold_only_the_persons_departments(world, db):
    """Reports written for a viewer (CSV) and the OpenSLO export hold nothing of another department."""
    viewer = world.client(SESSIONS[3])
    for fmt in ("csv", "pdf"):
        with undone():
            made = viewer.post(
                "/api/v1/reports", {"format": fmt, "filters": {"range": "24h", "environment": "all"}}, format="json"
            )
            reports.generate(made.json()["id"])
            report = Report.objects.get(pk=made.json()["id"])
            content = bytes(report.content or b"")
        text = (
            content
            if fmt == "csv"
            else b"".join(page.extract_text().encode() for page in PdfReader(io.BytesIO(content)).pages)
        )
        problems = [] if report.status == "ready" else [f"{report.status}: {report.detail}"]
        problems += [f"shows {w!r}" for w in forbidden(world, SESSIONS[3]) if w.encode() in text]
        problems += [] if MARKERS["pay"].encode() in text or fmt == "pdf" else ["the report is empty"]
        record("exports", f"report {fmt}", "POST", "viewer", "-", problems)
    failures = FIGURES.failures("exports")
    assert not failures, "\n".join(failures)


@dataclass(frozen=True)
class AdminAction:
    """An admin action, who may run it, and how to tell whether it changed an object."""

    model: str
    action: str
    target: str
    roles: frozenset[str]
    changed: Callable[[Any, Any], bool]
    extra: dict[str, str] = field(default_factory=dict)


def _field_changed(name: str) -> Callable[[Any, Any], bool]:
    return lambda before, after: after is None or getattr(before, name) != getattr(after, name)


ADMIN_ACTIONS = (
    AdminAction("slos/slo", "delete_selected", "slo", MANAGE, _field_changed("pk"), {"post": "yes"}),
    # A rule or a channel that has sent notifications keeps its delivery log: nobody deletes it in the admin.
    AdminAction("slos/alertrule", "delete_selected", "rule", NOBODY, _field_changed("pk"), {"post": "yes"}),
    AdminAction("slos/performancebudget", "delete_selected", "budget", MANAGE, _field_changed("pk"), {"post": "yes"}),
    AdminAction(
        "slos/notificationchannel", "delete_selected", "channel", NOBODY, _field_changed("pk"), {"post": "yes"}
    ),
    AdminAction("telemetry/agentcapacity", "delete_selected", "capacity", ACT, _field_changed("pk"), {"post": "yes"}),
    AdminAction(
        "interventions/agentconfig",
        "revert_to",
        "config",
        ACT,
        lambda before, _: AgentConfig.objects.filter(agent_id=before.agent_id).count() > 2,
    ),
    AdminAction("interventions/profilingsession", "stop_now", "profiling", ACT, _field_changed("status")),
    AdminAction("interventions/regressionflag", "confirm_flags", "flag", ACT, _field_changed("status")),
    AdminAction(
        "interventions/regressionflag", "dismiss_flags", "flag", ACT, _field_changed("status"), {"reason": "noise"}
    ),
    AdminAction("interventions/recommendation", "apply_selected", "recommendation", ACT, _field_changed("status")),
    AdminAction("interventions/recommendation", "dismiss_selected", "recommendation", ACT, _field_changed("status")),
    AdminAction("interventions/loadtest", "cancel_tests", "loadtest", ACT, _field_changed("status")),
    # Everyone may revoke their own tokens, and only theirs.
    AdminAction("access/apitoken", "revoke_tokens", "apitoken", ANY, _field_changed("revoked_at")),
)


def test_admin_actions_change_only_what_the_person_may_change(world, db):
    """Each action, confirmed, on one own and one other department's row at once: only the own row changes,
    and only for a role that may; a viewer's confirmed action changes nothing."""
    for spec in ADMIN_ACTIONS:
        for principal in SESSIONS[:5]:
            for side in ("pay", "res"):
                obj = world.sides[side].objects[spec.target]
                before = fresh(obj)
                body = {"action": spec.action, "_selected_action": [str(obj.pk)], "_confirmed": "1", **spec.extra}
                with undone():
                    response = world.client(principal).post(f"/admin/{spec.model}/", body)
                    after = type(obj)._default_manager.filter(pk=obj.pk).first()
                    changed = spec.changed(before, after)
                should = sees(principal, spec.target, side, world) and principal.role in spec.roles
                target = "own" if sees(principal, spec.target, side, world) else "foreign"
                allowed_statuses = (200, 302) if should else (200, 302, 403)
                problems = [] if response.status_code in allowed_statuses else [f"status {response.status_code}"]
                if changed != should:
                    problems.append("changed" if changed else "did not change")
                content = content_of(response)
                problems += [f"shows {w!r}" for w in forbidden(world, principal) if w.encode() in content]
                label = f"{spec.model} {spec.action}"
                FIGURES.add(
                    Case(
                        "admin actions",
                        label,
                        "POST",
                        principal.name,
                        target,
                        "changed" if should else "unchanged",
                        response.status_code,
                        problems,
                    )
                )
    # The export action writes only the selected SLOs the person may see.
    slos = [str(world.sides[side].objects["slo"].pk) for side in ("pay", "res")]
    for principal in SESSIONS[:5]:
        body = {"action": "export_openslo", "_selected_action": slos}
        with undone():
            response = world.client(principal).post("/admin/slos/slo/", body)
        content = content_of(response)
        problems = [f"shows {w!r}" for w in forbidden(world, principal) if w.encode() in content]
        home = world.sides[principal.home or "pay"].marker
        problems += [] if home.encode() in content else ["the own SLO is missing"]
        FIGURES.add(
            Case(
                "admin actions",
                "slos/slo export_openslo",
                "POST",
                principal.name,
                "both",
                "own only",
                response.status_code,
                problems,
            )
        )
    failures = FIGURES.failures("admin actions")
    assert not failures, "\n".join(failures)
