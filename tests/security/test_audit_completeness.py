"""Audit completeness: every change a person or the system makes to an audited object leaves exactly one entry.

Each write path is driven for real: the pages and the admin through a browser-like client that must send
its CSRF token, the REST API with a bearer token, admin actions over several rows at once, and the
Celery tasks and management commands called as functions (the system: no actor). Around each path the
state of every object of every model registered with django-auditlog is read before and after (its
audited fields, as auditlog renders them, and its audited many-to-many sets), and the new entries are
compared with what changed:

- every changed object has exactly one new entry, and no unchanged object has one;
- the entry's action is what happened (create, update, delete) and its actor is the person (None for
  the system);
- an update's entry holds the before and after value of every audited field that changed (a
  many-to-many set as the JSON list of its members), a create's the values the object was created
  with, a delete's the values it had;
- no entry holds a secret: a token's plaintext or hash, a webhook secret, a password hash.

Each path also says which objects it must change, so a path that silently changes nothing fails too.
The figures (paths by kind, objects changed, entries found, paths fixed) are written to
test-output/security/audit.json and printed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from auditlog.diff import get_field_value, track_field
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.db import models
from django.db.models import Prefetch
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import smart_str

from interventions import configs, loadtest, profiling, regressions
from interventions.models import (
    AgentConfig,
    Incident,
    LoadTest,
    ProfilingSession,
    Recommendation,
    RegressionFlag,
    Report,
)
from perfops.access.audit import SECRET_FIELDS, hidden
from perfops.access.models import AllowedHost, ApiToken
from perfops.telemetry.models import Agent, AgentCapacity, Deployment, Team
from slos.models import SLO, AlertEvent, AlertRule, NotificationChannel, PerformanceBudget
from tests import factories

pytestmark = pytest.mark.django_db
OUT = Path(__file__).resolve().parents[2] / "test-output" / "security"
FIGURES: list[dict[str, Any]] = []
KINDS = ("page", "API", "admin form", "admin action", "task", "command")

# The paths that failed this test on the code before it (measured by running it, with its assertion
# turned into a record, against the last commit), and what was wrong.
_UPDATE = "record_update left out fields the update() wrote ({}), and wrote times and objects unlike auditlog"
_STAMP = "updated_at was audited but never in an entry (auto_now is set after auditlog's diff): no longer audited"
_M2M = "one entry per {} and addition (a form wrote 2-3); members as before / after lists"
FIXED = {
    "page: stop profiling": _UPDATE.format("ended_by"),
    "API: stop profiling": _UPDATE.format("ended_by"),
    "admin action: stop profiling sessions": _UPDATE.format("ended_by"),
    "task: sweep_profiling ends an expired session": _UPDATE.format("none; the time was written as ISO"),
    "page: confirm a regression flag": _UPDATE.format("decided_by"),
    "API: confirm a regression flag": _UPDATE.format("decided_by"),
    "admin action: confirm regression flags": _UPDATE.format("decided_by"),
    "page: dismiss a regression flag": _UPDATE.format("decided_by, decided_at"),
    "API: dismiss a regression flag": _UPDATE.format("decided_by, decided_at"),
    "admin action: dismiss regression flags": _UPDATE.format("decided_by, decided_at"),
    "page: resolve an incident": _UPDATE.format("resolved_by"),
    "API: resolve an incident": _UPDATE.format("resolved_by"),
    "page: apply a recommendation": _UPDATE.format("decided_by, decided_at; the config by name, not id"),
    "API: apply a recommendation": _UPDATE.format("decided_by, decided_at; the config by name, not id"),
    "admin action: apply recommendations": _UPDATE.format("decided_by, decided_at; the config by name, not id"),
    "page: dismiss a recommendation": _UPDATE.format("decided_by, decided_at"),
    "API: dismiss a recommendation": _UPDATE.format("decided_by, decided_at"),
    "admin action: dismiss recommendations": _UPDATE.format("decided_by, decided_at"),
    "page: cancel a load test": _UPDATE.format("finished_at"),
    "API: cancel a load test": _UPDATE.format("finished_at"),
    "admin action: cancel load tests": _UPDATE.format("finished_at"),
    "task: run_load_test": "the run's one entry said running -> done; now scheduled -> done with its start and end",
    "command: prepare_demo replaces the simulator's token": "no entry for the token revoked by update(), nor passwords",
    "page: change an SLO": _STAMP,
    "API: change an SLO": _STAMP,
    "admin form: change an SLO": _STAMP,
    "admin form: change an SLO's rule inline": _STAMP,
    "admin form: change an SLO's window (its rules replaced)": _STAMP,
    "page: import OpenSLO YAML": _STAMP,
    "page: change a performance budget": _STAMP,
    "API: change a performance budget": _STAMP,
    "page: change an alert rule's channels": "AlertRule.channels was not audited: no entry",
    "API: change an alert rule's channels": "AlertRule.channels was not audited: no entry",
    "admin action: delete channels that a rule notifies": "the rules that lost the channel had no entry",
    "API: rotate a webhook secret": "a changed secret wrote no entry; now it says changed, value hidden",
    "admin form: rotate a webhook secret": "a changed secret wrote no entry; now it says changed, value hidden",
    "admin form: set a user's password": "a changed password wrote no entry; now it says changed, hash hidden",
    "admin form: change a user's roles": _M2M.format("save, removal"),
    "admin form: change a group's permissions": _M2M.format("removal"),
    "admin form: add a department with members": _M2M.format("save"),
    "admin form: change a department's members": _M2M.format("save, removal"),
    "admin form: change a user's permissions": "User.user_permissions was not audited: no entry",
    "admin action: delete teams with agents": "the agents left without a team (SET_NULL) had no entry",
    "admin action: delete a person who made things": "what they made (SET_NULL) and their departments had no entry",
}


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    if not FIGURES:
        return
    by_kind = {kind: sum(1 for row in FIGURES if row["kind"] == kind) for kind in KINDS}
    checked = {row["path"] for row in FIGURES}
    summary = {
        "paths_checked": len(FIGURES),
        "paths_by_kind": by_kind,
        "objects_changed": sum(row["objects_changed"] for row in FIGURES),
        "entries_found": sum(row["entries"] for row in FIGURES),
        "entries_expected": sum(row["objects_changed"] + row["access_entries"] for row in FIGURES),
        "paths_failed": sum(1 for row in FIGURES if not row["ok"]),
        "paths_fixed": len([path for path in FIXED if path in checked]),
        "fixed": {path: why for path, why in FIXED.items() if path in checked},
        "paths": FIGURES,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "audit.json").write_text(json.dumps(summary, indent=2))
    print("\naudit completeness:")
    for key in ("paths_checked", "objects_changed", "entries_found", "entries_expected", "paths_failed"):
        print(f"  {key}: {summary[key]}")
    print(f"  paths_fixed: {summary['paths_fixed']}")
    print("  paths by kind: " + ", ".join(f"{kind} {count}" for kind, count in by_kind.items()))


# --- reading the audited state ---------------------------------------------------------------------------


def audited_fields(model: type[models.Model]) -> list[Any]:
    """The concrete fields auditlog compares for `model` (its include and exclude lists applied)."""
    options = auditlog.get_model_fields(model)
    fields = [f for f in model._meta.fields if track_field(f)]
    if options["include_fields"]:
        fields = [f for f in fields if f.name in options["include_fields"]]
    return [f for f in fields if f.name not in options["exclude_fields"]]


def members(objects: Any) -> str:
    """A many-to-many set as the audit log records it: the JSON list of its members' names, sorted."""
    return json.dumps(sorted(str(item) for item in objects))


def snapshot() -> dict[tuple[type[models.Model], str], dict[str, str]]:
    """Every object of every audited model: its audited values as auditlog renders them."""
    state: dict[tuple[type[models.Model], str], dict[str, str]] = {}
    for model in auditlog.get_models():
        fields = audited_fields(model)
        m2m = sorted(auditlog._registry[model]["m2m_fields"])  # not in get_model_fields
        queryset = model._base_manager.all()
        for name in m2m:
            related = model._meta.get_field(name).related_model
            inner = related._base_manager.all()
            if related is Permission:
                inner = inner.select_related("content_type")
            queryset = queryset.prefetch_related(Prefetch(name, queryset=inner))
        for obj in queryset:
            row = {f.name: smart_str(get_field_value(obj, f)) for f in fields}
            row |= {name: SECRET + smart_str(getattr(obj, name)) for name in SECRET_FIELDS.get(model, [])}
            for name in m2m:
                row[name] = members(getattr(obj, name).all())
            state[(model, str(obj.pk))] = row
    return state


# A secret field's value in a snapshot: compared to find a change, shown as `hidden(value)` in an entry.
SECRET = "secret:"


def shown(value: str) -> str:
    """A snapshot value as an entry must show it."""
    return hidden(value.removeprefix(SECRET)) if value.startswith(SECRET) else value


def secrets_now() -> set[str]:
    """Values no audit entry may hold: token hashes, webhook secrets, password hashes."""
    found = set(ApiToken.objects.values_list("token_hash", flat=True))
    found |= {s for s in NotificationChannel.objects.values_list("secret", flat=True) if s}
    found |= {p for p in User.objects.values_list("password", flat=True) if len(p) > 20}
    return found | PLAINTEXTS


PLAINTEXTS: set[str] = set()


@dataclass
class Change:
    model: type[models.Model]
    pk: str
    action: int
    before: dict[str, str] | None
    after: dict[str, str] | None

    @property
    def fields(self) -> dict[str, tuple[str, str]]:
        if self.before is None or self.after is None:
            return {}
        return {k: (self.before[k], self.after[k]) for k in self.after if self.before.get(k) != self.after[k]}


def changes_between(
    before: dict[tuple[type[models.Model], str], dict[str, str]],
    after: dict[tuple[type[models.Model], str], dict[str, str]],
) -> list[Change]:
    found = []
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if old is None:
            found.append(Change(*key, LogEntry.Action.CREATE, None, new))
        elif new is None:
            found.append(Change(*key, LogEntry.Action.DELETE, old, None))
        elif old != new:
            found.append(Change(*key, LogEntry.Action.UPDATE, old, new))
    return found


ACTIONS = {LogEntry.Action.CREATE: "create", LogEntry.Action.UPDATE: "update", LogEntry.Action.DELETE: "delete"}


def problems_of(change: Change, entries: list[LogEntry], actor: Any) -> list[str]:
    """What is wrong with the entries of one changed object (nothing: an empty list)."""
    name = f"{change.model.__name__} {change.pk} ({ACTIONS[change.action]})"
    if len(entries) != 1:
        return [f"{name}: {len(entries)} entries"]
    entry = entries[0]
    problems = []
    if entry.action != change.action:
        problems.append(f"{name}: entry action {entry.action}")
    wanted = getattr(actor, "pk", None)
    if entry.actor_id != wanted:
        problems.append(f"{name}: actor {entry.actor_id}, not {wanted}")
    recorded = entry.changes or {}
    if change.action == LogEntry.Action.UPDATE:
        for key, (old, new) in change.fields.items():
            values = (shown(old), shown(new))
            if key not in recorded:
                problems.append(f"{name}: {key} changed {values[0]!r} -> {values[1]!r}, not in the entry")
            elif list(recorded[key]) != list(values):
                problems.append(f"{name}: {key} recorded as {recorded[key]!r}, was {list(values)!r}")
        for key, values in recorded.items():
            if change.after is not None and key in change.after and values[1] != shown(change.after[key]):
                problems.append(f"{name}: {key} recorded as now {values[1]!r}, is {change.after[key]!r}")
    elif change.action == LogEntry.Action.CREATE:
        assert change.after is not None
        for key, value in change.after.items():
            # A new object's secret and its empty many-to-many sets are not in its entry.
            if value in ("None", "[]") or value.startswith(SECRET):
                continue
            if key not in recorded or recorded[key][1] != value:
                problems.append(f"{name}: created with {key}={value!r}, entry says {recorded.get(key)!r}")
    else:
        assert change.before is not None
        for key, values in recorded.items():
            if key in change.before and values[0] != change.before[key]:
                problems.append(f"{name}: deleted with {key}={change.before[key]!r}, entry says {values[0]!r}")
    return problems


@contextmanager
def audited(kind: str, path: str, actor: Any, expect: dict[str, int], *, access: int = 0) -> Iterator[None]:
    """Run a path (the block) and check what it wrote against what it changed.

    `actor` is the person (None: the system), `expect` the number of objects the path must change per
    model, `access` the number of access entries (exports and views that change nothing) it must write.
    """
    assert kind in KINDS
    mark = LogEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    before = snapshot()
    yield
    changed = changes_between(before, snapshot())
    entries = list(LogEntry.objects.filter(pk__gt=mark).select_related("content_type", "actor").order_by("pk"))
    by_object: dict[tuple[type[models.Model], str], list[LogEntry]] = {}
    accesses = []
    for entry in entries:
        if entry.action == LogEntry.Action.ACCESS:
            accesses.append(entry)
            continue
        model = entry.content_type.model_class()
        assert model is not None
        by_object.setdefault((model, entry.object_pk), []).append(entry)
    problems: list[str] = []
    for change in changed:
        problems += problems_of(change, by_object.pop((change.model, change.pk), []), actor)
    problems += [
        f"{model.__name__} {pk}: {len(found)} entries, nothing changed" for (model, pk), found in by_object.items()
    ]
    if len(accesses) != access:
        problems.append(f"{len(accesses)} access entries, expected {access}")
    wanted = getattr(actor, "pk", None)
    problems += [f"{e.content_type.model} {e.object_pk}: actor {e.actor_id}" for e in accesses if e.actor_id != wanted]
    secrets = secrets_now()
    for entry in entries:
        text = json.dumps([entry.changes, entry.object_repr, entry.additional_data, entry.serialized_data])
        problems += [f"{entry.content_type.model} {entry.object_pk}: holds a secret" for s in secrets if s in text]
    counted = Counter(change.model.__name__ for change in changed)
    if dict(counted) != expect:
        problems.append(f"changed {dict(counted)}, expected {expect}")
    FIGURES.append(
        {
            "kind": kind,
            "path": f"{kind}: {path}",
            "objects_changed": len(changed),
            "entries": len(entries),
            "access_entries": access,
            "by_model": dict(counted),
            "actor": getattr(actor, "username", None) or "system",
            "ok": not problems,
            "problems": problems,
            "written": [
                {
                    "object": f"{e.content_type.model} {e.object_pk}",
                    "action": ACTIONS.get(e.action, "access"),
                    "actor": e.actor.username if e.actor else "system",
                    "changes": e.changes,
                }
                for e in entries
            ],
        }
    )
    assert not problems, "\n".join(problems)


SYSTEM = None


# --- clients ----------------------------------------------------------------------------------------------


class Browser:
    """A logged-in browser: every POST carries the CSRF cookie and the form's token, as the pages send them."""

    def __init__(self, user: User) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.client.force_login(user)
        self.token = _get_new_csrf_string()
        self.client.cookies[settings.CSRF_COOKIE_NAME] = self.token

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.client.get(url, **kwargs)

    def post(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.client.post(url, {**(data or {}), "csrfmiddlewaretoken": self.token}, **kwargs)


def api_for(user: User, *scopes: str) -> Any:
    from rest_framework.test import APIClient

    plaintext = factories.token(user, list(scopes))
    PLAINTEXTS.add(plaintext)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def redirected(response: Any) -> None:
    assert response.status_code == 302, response.content[:3000]


# --- the world the paths act on ----------------------------------------------------------------------------


@pytest.fixture
def world(agent, engineer, manager):
    """pay-bot with two versions in production, a first configuration, and loopback on the allowlist."""
    AllowedHost.objects.create(host="127.0.0.1", allow_private=True, note="the tests' targets")
    now = timezone.now()
    for version, days in (("1.0.0", 10), ("2.0.0", 2)):
        Deployment.objects.create(
            agent=agent, environment="production", version=version, deployed_at=now - timedelta(days=days)
        )
    configs.apply(agent, "production", {"timeout_ms": 20_000}, engineer)
    return agent


def config_form(agent: Agent, **changes: Any) -> dict[str, Any]:
    """The configuration form as a browser posts it (checkboxes only when on)."""
    form: dict[str, Any] = {"agent": agent.pk, "environment": "production", "note": "audit"}
    current = configs.current(agent, "production") or AgentConfig()
    for name, value in (current.settings_dict() | changes).items():
        if isinstance(value, bool):
            if value:
                form[name] = "on"
        else:
            form[name] = str(value)
    return form


def flag(agent: Agent, version: str, user: Any, environment: str = "production") -> RegressionFlag:
    return regressions.flag(agent, environment, version, user, found={"candidate": {}})


def recommendation(agent: Agent, title: str, **changes: Any) -> Recommendation:
    return Recommendation.objects.create(
        agent=agent, environment="production", title=title, rationale="evidence", changes=changes
    )


def load_test(
    agent: Agent, *, running: bool = False, url: str = "http://127.0.0.1:9/invoke", **fields: Any
) -> LoadTest:
    base = {"environment": "staging", "target_url": url, "rate_rps": 5.0, "duration_s": 1, "timeout_s": 1.0}
    base["scheduled_at"] = timezone.now() + timedelta(hours=1)
    test = LoadTest(agent=agent, **(base | fields))
    test.full_clean()
    test.save()
    if running:
        LoadTest.objects.filter(pk=test.pk).update(status=LoadTest.Status.RUNNING, started_at=timezone.now())
    return test


def session(agent: Agent, user: Any, environment: str = "production") -> ProfilingSession:
    return profiling.start(agent, environment, 900, user, "slow")


LOAD_TEST_FORM = {
    "environment": "staging",
    "target_url": "http://127.0.0.1:9/invoke",
    "rate_rps": "5",
    "ramp_s": "0",
    "duration_s": "1",
    "concurrency": "4",
    "timeout_s": "1",
    "start_in_minutes": "60",
    "request_template": "{}",
}


# --- interventions: the pages -------------------------------------------------------------------------------


def test_page_change_the_configuration(world, engineer):
    browser = Browser(engineer)
    url = reverse("interventions:change-config", args=[world.slug])
    with audited("page", "change the configuration", engineer, {"AgentConfig": 1}):
        redirected(browser.post(url, config_form(world, timeout_ms=15_000) | {"_confirmed": "1"}))


def test_page_revert_the_configuration(world, engineer):
    configs.apply(world, "production", {"concurrency": 16}, engineer)
    browser = Browser(engineer)
    url = reverse("interventions:revert-config", args=[world.slug, 1]) + "?environment=production"
    with audited("page", "revert the configuration", engineer, {"AgentConfig": 1}):
        redirected(browser.post(url, {"environment": "production", "_confirmed": "1"}))


def test_page_start_and_stop_profiling(world, engineer):
    browser = Browser(engineer)
    start = reverse("interventions:start-profiling", args=[world.slug])
    form = {"environment": "production", "minutes": "15", "reason": "slow", "_confirmed": "1"}
    with audited("page", "start profiling", engineer, {"ProfilingSession": 1}):
        redirected(browser.post(start, form))
    running = ProfilingSession.objects.get()
    with audited("page", "stop profiling", engineer, {"ProfilingSession": 1}):
        redirected(browser.post(reverse("interventions:stop-profiling", args=[running.pk]), {"_confirmed": "1"}))


def test_page_flag_confirm_and_resolve_a_regression(world, engineer):
    browser = Browser(engineer)
    url = reverse("interventions:flag-new", args=[world.slug])
    with audited("page", "flag a regression", engineer, {"RegressionFlag": 1}):
        redirected(browser.post(url, {"environment": "production", "version": "2.0.0", "_confirmed": "1"}))
    flagged = RegressionFlag.objects.get()
    confirm = reverse("interventions:flag-confirm", args=[flagged.pk])
    with audited("page", "confirm a regression flag", engineer, {"RegressionFlag": 1, "Incident": 1}):
        redirected(browser.post(confirm, {"title": "slow 2.0.0", "_confirmed": "1"}))
    incident = Incident.objects.get()
    with audited("page", "resolve an incident", engineer, {"Incident": 1}):
        redirected(browser.post(reverse("interventions:incident-resolve", args=[incident.pk]), {"_confirmed": "1"}))


def test_page_dismiss_a_regression_flag(world, engineer):
    flagged = flag(world, "2.0.0", engineer)
    browser = Browser(engineer)
    url = reverse("interventions:flag-dismiss", args=[flagged.pk])
    with audited("page", "dismiss a regression flag", engineer, {"RegressionFlag": 1}):
        redirected(browser.post(url, {"reason": "synthetic traffic", "_confirmed": "1"}))


def test_page_apply_and_dismiss_recommendations(world, engineer):
    applied = recommendation(world, "Cache prompts", prompt_cache=True)
    dismissed = recommendation(world, "More in flight", concurrency=12)
    browser = Browser(engineer)
    with audited("page", "apply a recommendation", engineer, {"Recommendation": 1, "AgentConfig": 1}):
        url = reverse("interventions:recommendation-apply", args=[applied.pk])
        redirected(browser.post(url, {"_confirmed": "1"}))
    with audited("page", "dismiss a recommendation", engineer, {"Recommendation": 1}):
        url = reverse("interventions:recommendation-dismiss", args=[dismissed.pk])
        redirected(browser.post(url, {"_confirmed": "1"}))


def test_page_schedule_cancel_and_stop_load_tests(world, engineer):
    browser = Browser(engineer)
    url = reverse("interventions:schedule-load-test", args=[world.slug])
    with audited("page", "schedule a load test", engineer, {"LoadTest": 1}):
        redirected(browser.post(url, LOAD_TEST_FORM | {"_confirmed": "1"}))
    scheduled = LoadTest.objects.get()
    with audited("page", "cancel a load test", engineer, {"LoadTest": 1}):
        redirected(browser.post(reverse("interventions:load-test-cancel", args=[scheduled.pk]), {"_confirmed": "1"}))
    running = load_test(world, running=True)
    with audited("page", "stop a load test", engineer, {"LoadTest": 1}):
        redirected(browser.post(reverse("interventions:load-test-stop", args=[running.pk]), {"_confirmed": "1"}))


def test_page_request_a_report_and_compare_environments(world, engineer):
    browser = Browser(engineer)
    with audited("page", "request a report", engineer, {"Report": 1}):
        redirected(browser.post(reverse("interventions:report-new"), {"format": "csv", "range": "24h"}))
    with audited("page", "compare environments (an access entry)", engineer, {}, access=1):
        assert browser.get(reverse("interventions:environments", args=[world.slug])).status_code == 200


# --- interventions: the API ---------------------------------------------------------------------------------


def test_api_change_and_revert_the_configuration(world, engineer):
    api = api_for(engineer, "automation", "read")
    url = f"/api/v1/agents/{world.slug}/config"
    with audited("API", "change the configuration", engineer, {"AgentConfig": 1}):
        assert api.post(url, {"timeout_ms": 12_000, "note": "api"}, format="json").status_code == 201
    with audited("API", "revert the configuration", engineer, {"AgentConfig": 1}):
        assert api.post(f"/api/v1/agents/{world.slug}/configs/1/revert").status_code == 201


def test_api_start_and_stop_profiling(world, engineer):
    api = api_for(engineer, "automation", "read")
    body = {"agent": world.slug, "environment": "production", "duration_s": 900, "reason": "slow"}
    with audited("API", "start profiling", engineer, {"ProfilingSession": 1}):
        assert api.post("/api/v1/profiling", body, format="json").status_code == 201
    running = ProfilingSession.objects.get()
    with audited("API", "stop profiling", engineer, {"ProfilingSession": 1}):
        assert api.post(f"/api/v1/profiling/{running.pk}/stop").status_code == 200


def test_api_flag_confirm_dismiss_and_resolve(world, engineer):
    api = api_for(engineer, "automation", "read")
    body = {"agent": world.slug, "environment": "production", "version": "2.0.0"}
    with audited("API", "flag a regression", engineer, {"RegressionFlag": 1}):
        assert api.post("/api/v1/regression-flags", body, format="json").status_code == 201
    flagged = RegressionFlag.objects.get()
    with audited("API", "confirm a regression flag", engineer, {"RegressionFlag": 1, "Incident": 1}):
        assert api.post(f"/api/v1/regression-flags/{flagged.pk}/confirm", {}, format="json").status_code == 200
    with audited("API", "resolve an incident", engineer, {"Incident": 1}):
        assert api.post(f"/api/v1/incidents/{Incident.objects.get().pk}/resolve").status_code == 200
    other = flag(world, "1.0.0", engineer)
    with audited("API", "dismiss a regression flag", engineer, {"RegressionFlag": 1}):
        url = f"/api/v1/regression-flags/{other.pk}/dismiss"
        assert api.post(url, {"reason": "warm-up"}, format="json").status_code == 200


def test_api_apply_and_dismiss_recommendations(world, engineer):
    api = api_for(engineer, "automation", "read")
    applied = recommendation(world, "Cache prompts", prompt_cache=True)
    dismissed = recommendation(world, "More in flight", concurrency=12)
    with audited("API", "apply a recommendation", engineer, {"Recommendation": 1, "AgentConfig": 1}):
        assert api.post(f"/api/v1/recommendations/{applied.pk}/apply").status_code == 200
    with audited("API", "dismiss a recommendation", engineer, {"Recommendation": 1}):
        assert api.post(f"/api/v1/recommendations/{dismissed.pk}/dismiss").status_code == 200


def test_api_schedule_cancel_and_stop_load_tests(world, engineer):
    api = api_for(engineer, "automation", "read")
    body = {"agent": world.slug, "environment": "staging", "target_url": "http://127.0.0.1:9/invoke"}
    body |= {"rate_rps": 5, "duration_s": 1, "scheduled_at": (timezone.now() + timedelta(hours=1)).isoformat()}
    with audited("API", "schedule a load test", engineer, {"LoadTest": 1}):
        assert api.post("/api/v1/load-tests", body, format="json").status_code == 201
    scheduled = LoadTest.objects.get()
    with audited("API", "cancel a load test", engineer, {"LoadTest": 1}):
        assert api.post(f"/api/v1/load-tests/{scheduled.pk}/cancel").status_code == 200
    running = load_test(world, running=True)
    with audited("API", "stop a load test", engineer, {"LoadTest": 1}):
        assert api.post(f"/api/v1/load-tests/{running.pk}/stop").status_code == 200


def test_api_request_a_report(world, engineer):
    api = api_for(engineer, "read")
    with audited("API", "request a report", engineer, {"Report": 1}):
        assert api.post("/api/v1/reports", {"format": "csv"}, format="json").status_code == 202


# --- interventions: the admin -------------------------------------------------------------------------------


def test_admin_add_and_revert_configurations(world, engineer):
    browser = Browser(engineer)
    url = "/admin/interventions/agentconfig/add/"
    with audited("admin form", "add a configuration version", engineer, {"AgentConfig": 1}):
        redirected(browser.post(url, config_form(world, timeout_ms=15_000) | {"_confirmed": "1"}))
    first = AgentConfig.objects.get(version=1)
    action = {"action": "revert_to", "_selected_action": [first.pk], "_confirmed": "1"}
    with audited("admin action", "revert to a configuration version", engineer, {"AgentConfig": 1}):
        redirected(browser.post("/admin/interventions/agentconfig/", action))


def test_admin_start_profiling_and_stop_sessions(world, engineer):
    browser = Browser(engineer)
    form = {"agent": world.pk, "environment": "production", "duration_s": "900", "reason": "slow", "_confirmed": "1"}
    with audited("admin form", "start profiling", engineer, {"ProfilingSession": 1}):
        redirected(browser.post("/admin/interventions/profilingsession/add/", form))
    session(world, engineer, "staging")
    chosen = list(ProfilingSession.objects.values_list("pk", flat=True))
    action = {"action": "stop_now", "_selected_action": chosen, "_confirmed": "1"}
    with audited("admin action", "stop profiling sessions", engineer, {"ProfilingSession": 2}):
        redirected(browser.post("/admin/interventions/profilingsession/", action))


def test_admin_confirm_and_dismiss_regression_flags(world, engineer):
    browser = Browser(engineer)
    confirmed = [flag(world, "2.0.0", engineer), flag(world, "2.0.0", engineer, "staging")]
    action = {"action": "confirm_flags", "_selected_action": [f.pk for f in confirmed], "_confirmed": "1"}
    with audited("admin action", "confirm regression flags", engineer, {"RegressionFlag": 2, "Incident": 2}):
        redirected(browser.post("/admin/interventions/regressionflag/", action))
    dismissed = [flag(world, "1.0.0", engineer), flag(world, "1.0.0", engineer, "staging")]
    action = {"action": "dismiss_flags", "_selected_action": [f.pk for f in dismissed], "_confirmed": "1"}
    with audited("admin action", "dismiss regression flags", engineer, {"RegressionFlag": 2}):
        redirected(browser.post("/admin/interventions/regressionflag/", action | {"reason": "synthetic"}))
    incident = Incident.objects.first()
    assert incident is not None
    form = {"notes": "rolled back at 10:00"}
    with audited("admin form", "write an incident's notes", engineer, {"Incident": 1}):
        redirected(browser.post(f"/admin/interventions/incident/{incident.pk}/change/", form))


def test_admin_apply_and_dismiss_recommendations(world, engineer):
    browser = Browser(engineer)
    applied = [
        recommendation(world, "Cache prompts", prompt_cache=True),
        recommendation(world, "Wait", timeout_ms=9000),
    ]
    action = {"action": "apply_selected", "_selected_action": [r.pk for r in applied], "_confirmed": "1"}
    with audited("admin action", "apply recommendations", engineer, {"Recommendation": 2, "AgentConfig": 2}):
        redirected(browser.post("/admin/interventions/recommendation/", action))
    dismissed = [recommendation(world, "More", concurrency=12), recommendation(world, "Less", concurrency=4)]
    action = {"action": "dismiss_selected", "_selected_action": [r.pk for r in dismissed], "_confirmed": "1"}
    with audited("admin action", "dismiss recommendations", engineer, {"Recommendation": 2}):
        redirected(browser.post("/admin/interventions/recommendation/", action))


def test_admin_schedule_cancel_and_stop_load_tests(world, engineer):
    browser = Browser(engineer)
    form = LOAD_TEST_FORM | {"agent": world.pk, "_confirmed": "1"}
    with audited("admin form", "schedule a load test", engineer, {"LoadTest": 1}):
        redirected(browser.post("/admin/interventions/loadtest/add/", form))
    scheduled = [LoadTest.objects.get(), load_test(world)]
    action = {"action": "cancel_tests", "_selected_action": [t.pk for t in scheduled], "_confirmed": "1"}
    with audited("admin action", "cancel load tests", engineer, {"LoadTest": 2}):
        redirected(browser.post("/admin/interventions/loadtest/", action))
    running = [load_test(world, running=True), load_test(world, running=True)]
    action = {"action": "stop_tests", "_selected_action": [t.pk for t in running], "_confirmed": "1"}
    with audited("admin action", "stop load tests", engineer, {"LoadTest": 2}):
        redirected(browser.post("/admin/interventions/loadtest/", action))


# --- interventions: the system (beat and worker tasks, called as functions) ---------------------------------


class Target:
    """An HTTP endpoint on loopback that answers every POST with 200 (what a load test calls)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/invoke"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    found = Target()
    yield found
    found.close()


def test_task_sweep_profiling_ends_an_expired_session(world, engineer):
    from interventions.tasks import sweep_profiling

    expired = session(world, engineer)
    now = timezone.now()
    ProfilingSession.objects.filter(pk=expired.pk).update(
        started_at=now - timedelta(minutes=20), expires_at=now - timedelta(minutes=5)
    )
    with audited("task", "sweep_profiling ends an expired session", SYSTEM, {"ProfilingSession": 1}):
        assert sweep_profiling() == 1


def test_task_run_load_test(world, engineer, target):
    test = load_test(world, url=target.url, scheduled_at=timezone.now(), rate_rps=5.0, duration_s=1)
    # The task's body without its connection housekeeping (which would end the test's transaction).
    with audited("task", "run_load_test", SYSTEM, {"LoadTest": 1}):
        assert loadtest.run(test.pk) == LoadTest.Status.COMPLETED
    assert LoadTest.objects.get().completed == 5


def test_task_check_new_versions_flags_a_regression(world):
    from perfops.analytics import detect

    found = {"baseline_version": "1.0.0", "decision": {"verdict": "fail"}}
    # What check_new_versions and flag_change_points do with a failed verdict.
    with audited("task", "check_new_versions flags a regression", SYSTEM, {"RegressionFlag": 1}):
        assert detect.raise_flag(world, "production", "2.0.0", "2.0.0 is slower", found, timezone.now())


def test_task_generate_recommendations(world, monkeypatch):
    from interventions.tasks import generate_recommendations
    from perfops.analytics import advisor, recommend

    proposal = recommend.Proposal("prompt_cache", "Cache prompts", "92% repeat", "-300 ms", {"prompt_cache": True})
    monkeypatch.setattr("perfops.analytics.samples.busy", lambda now, least: [(world, "production")])
    monkeypatch.setattr(advisor, "proposals", lambda agent, environment, now: [proposal])
    with audited("task", "generate_recommendations", SYSTEM, {"Recommendation": 1}):
        assert generate_recommendations()["written"] == 1


def test_task_generate_report_changes_nothing_audited(world, engineer):
    from interventions import reports
    from interventions.tasks import generate_report
    from perfops.metrics.filters import parse_filters

    report = reports.request_report(parse_filters({}), "csv", engineer)
    # Its progress, content and status are the system's work, not audited acts: no entry.
    with audited("task", "generate_report", SYSTEM, {}):
        assert generate_report(report.pk) == Report.Status.READY


def test_task_evaluate_alerts_records_an_event(world, payments, engineer):
    from slos.tasks import evaluate_alerts

    AlertRule.objects.create(
        name="quiet", metric="throughput", scope="department", department=payments, comparison="lte",
        threshold=1e6, window_s=600, severity="ticket", created_by=engineer,
    )  # fmt: skip
    # The rule's state is a measurement (not audited); the event it records is a new object.
    with audited("task", "evaluate_alerts records an event", SYSTEM, {"AlertEvent": 1}):
        assert evaluate_alerts()["firing"] == 1


# --- management commands (the system: no actor) --------------------------------------------------------------


def test_command_create_api_token(engineer):
    import io

    out = io.StringIO()
    with audited("command", "create_api_token", SYSTEM, {"ApiToken": 1}):
        call_command("create_api_token", engineer.username, "--scopes", "read", stdout=out)
    PLAINTEXTS.add(out.getvalue().strip())


def test_command_prepare_demo_replaces_the_simulators_token(db, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("prepare_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    PLAINTEXTS.add((tmp_path / "demo-ingest-token").read_text())
    # Again: every demo password is set anew (hidden in the entries), the old token revoked, a new one issued.
    with audited("command", "prepare_demo replaces the simulator's token", SYSTEM, {"User": 5, "ApiToken": 2}):
        call_command("prepare_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    PLAINTEXTS.add((tmp_path / "demo-ingest-token").read_text())


# --- SLOs, alert rules, budgets, channels: the pages ------------------------------------------------------------


@pytest.fixture
def channels(payments):
    """Two channels of payments: an email one, and a signed webhook to loopback (allowlisted)."""
    AllowedHost.objects.get_or_create(host="127.0.0.1", defaults={"allow_private": True})
    email = NotificationChannel.objects.create(
        name="on-call", department=payments, kind="email", email_to="oncall@example.com"
    )
    hook = NotificationChannel.objects.create(
        name="hook", department=payments, kind="webhook", url="http://127.0.0.1:9/hook", secret="first-secret-1"
    )
    return email, hook


def slo_form(agent: Agent, **fields: Any) -> dict[str, Any]:
    base = {"name": "pay-bot p95", "scope": "agent", "agent": agent.pk, "environment": "production"}
    return base | {"kind": "latency", "threshold_ms": "800", "target": "0.95", "window_days": "30"} | fields


def rule_form(agent: Agent, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "pay-bot p95 over 2 s", "metric": "latency", "quantile": "0.95", "scope": "agent"}
    base |= {"agent": agent.pk, "environment": "production", "comparison": "gte", "threshold": "2000"}
    base |= {"window_s": "600", "pending_s": "0", "keep_firing_s": "0", "severity": "ticket", "enabled": "on"}
    return base | fields


def budget_form(payments: Any, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "payments p95", "scope": "department", "department": payments.pk}
    base |= {
        "environment": "production",
        "quantile": "0.95",
        "aggregate": "mean",
        "threshold_ms": "600",
        "warn_at": "0.9",
        "window_s": "86400",
    }
    return base | fields


def make_slo(agent: Agent, user: Any, name: str = "pay-bot availability") -> SLO:
    return SLO.objects.create(
        name=name, scope="agent", agent=agent, department=agent.department, kind="availability", target=0.999,
        window_days=30, created_by=user,
    )  # fmt: skip


def test_page_create_change_and_delete_an_slo(agent, manager):
    browser = Browser(manager)
    with audited("page", "create an SLO (with its four rules)", manager, {"SLO": 1, "AlertRule": 4}):
        redirected(browser.post(reverse("slos:slo-new"), slo_form(agent) | {"_confirmed": "1"}))
    slo = SLO.objects.get()
    with audited("page", "change an SLO", manager, {"SLO": 1}):
        url = reverse("slos:slo-edit", args=[slo.pk])
        redirected(browser.post(url, slo_form(agent, target="0.99") | {"_confirmed": "1"}))
    with audited("page", "delete an SLO (and its rules)", manager, {"SLO": 1, "AlertRule": 4}):
        redirected(browser.post(reverse("slos:slo-delete", args=[slo.pk])))


def test_page_create_change_and_delete_an_alert_rule(agent, engineer, channels):
    email, hook = channels
    browser = Browser(engineer)
    with audited("page", "create an alert rule", engineer, {"AlertRule": 1}):
        redirected(browser.post(reverse("slos:rule-new"), rule_form(agent, channels=[email.pk]) | {"_confirmed": "1"}))
    rule = AlertRule.objects.get()
    url = reverse("slos:rule-edit", args=[rule.pk])
    with audited("page", "change an alert rule's channels", engineer, {"AlertRule": 1}):
        redirected(browser.post(url, rule_form(agent, channels=[hook.pk]) | {"_confirmed": "1"}))
    with audited("page", "silence an alert rule", engineer, {"AlertRule": 1}):
        redirected(browser.post(reverse("slos:silence", args=[rule.pk]), {"hours": "4"}))
    with audited("page", "delete an alert rule", engineer, {"AlertRule": 1}):
        redirected(browser.post(reverse("slos:rule-delete", args=[rule.pk])))


def test_page_create_change_and_delete_a_budget(payments, manager):
    browser = Browser(manager)
    with audited(
        "page", "create a performance budget (with its two rules)", manager, {"PerformanceBudget": 1, "AlertRule": 2}
    ):
        redirected(browser.post(reverse("slos:budget-new"), budget_form(payments) | {"_confirmed": "1"}))
    budget = PerformanceBudget.objects.get()
    with audited("page", "change a performance budget", manager, {"PerformanceBudget": 1}):
        url = reverse("slos:budget-edit", args=[budget.pk])
        redirected(browser.post(url, budget_form(payments, threshold_ms="700") | {"_confirmed": "1"}))
    with audited("page", "delete a performance budget", manager, {"PerformanceBudget": 1, "AlertRule": 2}):
        redirected(browser.post(reverse("slos:budget-delete", args=[budget.pk])))


def fired_event(agent: Agent, user: Any) -> AlertEvent:
    slo = make_slo(agent, user)
    rule = slo.alert_rules.first()
    assert rule is not None
    return AlertEvent.objects.create(rule=rule, kind="firing", episode=1, at=timezone.now(), dedupe_key=f"e{rule.pk}")


def test_page_acknowledge_an_event(agent, engineer):
    event = fired_event(agent, engineer)
    browser = Browser(engineer)
    with audited("page", "acknowledge an alert event", engineer, {"AlertEvent": 1}):
        redirected(browser.post(reverse("slos:acknowledge", args=[event.pk])))


def test_page_import_openslo_changes_an_slo(agent, manager):
    from slos import openslo

    slo = make_slo(agent, manager)
    text = openslo.export_slos([slo]).replace("0.999", "0.995")
    browser = Browser(manager)
    with audited("page", "import OpenSLO YAML", manager, {"SLO": 1}):
        redirected(browser.post(reverse("slos:openslo-import"), {"yaml": text, "_confirmed": "1"}))


# --- SLOs, alert rules, budgets, channels: the API ---------------------------------------------------------------


def test_api_create_change_and_delete_an_slo(agent, manager):
    api = api_for(manager, "configure")
    body = {"name": "pay-bot p95", "scope": "agent", "agent": agent.slug, "kind": "latency", "threshold_ms": 800}
    body |= {"target": 0.95, "window_days": 28}
    with audited("API", "create an SLO (with its four rules)", manager, {"SLO": 1, "AlertRule": 4}):
        assert api.post("/api/v1/slos", body, format="json").status_code == 201
    slo = SLO.objects.get()
    with audited("API", "change an SLO", manager, {"SLO": 1}):
        assert api.patch(f"/api/v1/slos/{slo.pk}", {"target": 0.99}, format="json").status_code == 200
    with audited("API", "delete an SLO (and its rules)", manager, {"SLO": 1, "AlertRule": 4}):
        assert api.delete(f"/api/v1/slos/{slo.pk}").status_code == 204


def test_api_import_openslo_creates_an_slo(agent, manager):
    from slos import openslo

    slo = make_slo(agent, manager)
    text = openslo.export_slos([slo])
    slo.delete()
    api = api_for(manager, "configure")
    with audited("API", "import OpenSLO YAML", manager, {"SLO": 1, "AlertRule": 4}):
        response = api.post("/api/v1/slos/openslo/import", text, content_type="application/yaml")
        assert response.status_code == 200, response.content


def test_api_create_change_and_delete_an_alert_rule(agent, engineer, channels):
    email, hook = channels
    api = api_for(engineer, "configure")
    body = {"name": "pay-bot p95 over 2 s", "metric": "latency", "quantile": 0.95, "scope": "agent"}
    body |= {"agent": agent.slug, "comparison": "gte", "threshold": 2000, "window_s": 600, "severity": "ticket"}
    with audited("API", "create an alert rule", engineer, {"AlertRule": 1}):
        response = api.post("/api/v1/alert-rules", body | {"channels": [email.pk]}, format="json")
        assert response.status_code == 201, response.content
    rule = AlertRule.objects.get()
    with audited("API", "change an alert rule's channels", engineer, {"AlertRule": 1}):
        assert api.patch(f"/api/v1/alert-rules/{rule.pk}", {"channels": [hook.pk]}, format="json").status_code == 200
    with audited("API", "delete an alert rule", engineer, {"AlertRule": 1}):
        assert api.delete(f"/api/v1/alert-rules/{rule.pk}").status_code == 204


def test_api_create_rotate_and_delete_a_channel(payments, manager):
    AllowedHost.objects.create(host="127.0.0.1", allow_private=True)
    api = api_for(manager, "configure")
    body = {"name": "hook", "department": "payments", "kind": "webhook", "url": "http://127.0.0.1:9/hook"}
    with audited("API", "create a webhook channel with its secret", manager, {"NotificationChannel": 1}):
        assert (
            api.post("/api/v1/notification-channels", body | {"secret": "api-secret-1"}, format="json").status_code
            == 201
        )
    channel = NotificationChannel.objects.get()
    url = f"/api/v1/notification-channels/{channel.pk}"
    with audited("API", "rotate a webhook secret", manager, {"NotificationChannel": 1}):
        assert api.patch(url, {"secret": "api-secret-2"}, format="json").status_code == 200
    with audited("API", "delete a channel", manager, {"NotificationChannel": 1}):
        assert api.delete(url).status_code == 204


def test_api_create_change_and_delete_a_budget(payments, manager):
    api = api_for(manager, "configure")
    body = {"name": "payments p95", "scope": "department", "department": "payments", "threshold_ms": 600}
    with audited(
        "API", "create a performance budget (with its two rules)", manager, {"PerformanceBudget": 1, "AlertRule": 2}
    ):
        assert api.post("/api/v1/budgets", body, format="json").status_code == 201
    budget = PerformanceBudget.objects.get()
    with audited("API", "change a performance budget", manager, {"PerformanceBudget": 1}):
        assert api.patch(f"/api/v1/budgets/{budget.pk}", {"threshold_ms": 700}, format="json").status_code == 200
    with audited("API", "delete a performance budget", manager, {"PerformanceBudget": 1, "AlertRule": 2}):
        assert api.delete(f"/api/v1/budgets/{budget.pk}").status_code == 204


def test_api_acknowledge_an_event(agent, engineer):
    event = fired_event(agent, engineer)
    api = api_for(engineer, "automation", "read")
    with audited("API", "acknowledge an alert event", engineer, {"AlertEvent": 1}):
        assert api.post(f"/api/v1/alert-events/{event.pk}/acknowledge").status_code == 200


# --- SLOs, alert rules, budgets, channels: the admin -------------------------------------------------------------

NO_INLINE_RULES = {"alert_rules-TOTAL_FORMS": "0", "alert_rules-INITIAL_FORMS": "0"}


def test_admin_add_change_and_delete_slos(agent, manager, superuser):
    browser = Browser(manager)
    with audited("admin form", "add an SLO (with its four rules)", manager, {"SLO": 1, "AlertRule": 4}):
        redirected(browser.post("/admin/slos/slo/add/", slo_form(agent) | NO_INLINE_RULES | {"_confirmed": "1"}))
    slo = SLO.objects.get()
    with audited("admin form", "change an SLO", manager, {"SLO": 1}):
        form = slo_form(agent, target="0.99") | NO_INLINE_RULES | {"_confirmed": "1"}
        redirected(browser.post(f"/admin/slos/slo/{slo.pk}/change/", form))
    other = make_slo(agent, manager, "pay-bot availability")
    action = {"action": "delete_selected", "_selected_action": [slo.pk, other.pk], "post": "yes"}
    with audited("admin action", "delete SLOs (and their rules)", superuser, {"SLO": 2, "AlertRule": 8}):
        redirected(Browser(superuser).post("/admin/slos/slo/", action))


def test_admin_add_and_change_alert_rules(agent, engineer, channels):
    email, hook = channels
    browser = Browser(engineer)
    with audited("admin form", "add an alert rule", engineer, {"AlertRule": 1}):
        redirected(
            browser.post("/admin/slos/alertrule/add/", rule_form(agent, channels=[email.pk]) | {"_confirmed": "1"})
        )
    rule = AlertRule.objects.get()
    with audited("admin form", "change an alert rule's channels", engineer, {"AlertRule": 1}):
        form = rule_form(agent, channels=[hook.pk], threshold="2500") | {"_confirmed": "1"}
        redirected(browser.post(f"/admin/slos/alertrule/{rule.pk}/change/", form))


def test_admin_add_a_budget(payments, manager):
    browser = Browser(manager)
    with audited(
        "admin form", "add a performance budget (with its two rules)", manager, {"PerformanceBudget": 1, "AlertRule": 2}
    ):
        redirected(browser.post("/admin/slos/performancebudget/add/", budget_form(payments) | {"_confirmed": "1"}))


def test_admin_add_rotate_and_delete_channels(payments, manager, superuser):
    AllowedHost.objects.create(host="127.0.0.1", allow_private=True)
    browser = Browser(manager)
    form = {"name": "hook", "department": payments.pk, "kind": "webhook", "url": "http://127.0.0.1:9/hook"}
    form |= {"format": "json", "email_to": ""}
    with audited("admin form", "add a webhook channel with its secret", manager, {"NotificationChannel": 1}):
        redirected(browser.post("/admin/slos/notificationchannel/add/", form | {"secret": "admin-secret-1"}))
    channel = NotificationChannel.objects.get()
    url = f"/admin/slos/notificationchannel/{channel.pk}/change/"
    with audited("admin form", "rotate a webhook secret", manager, {"NotificationChannel": 1}):
        redirected(browser.post(url, form | {"secret": "admin-secret-2"}))
    with audited("admin form", "rename a channel (its secret kept)", manager, {"NotificationChannel": 1}):
        redirected(browser.post(url, form | {"name": "hook 2", "secret": ""}))
    other = NotificationChannel.objects.create(name="mail", department=payments, kind="email", email_to="a@example.com")
    rule = make_slo(factories.agent("pay-bot", payments), manager).alert_rules.first()
    assert rule is not None
    rule.channels.add(channel, other)
    # The rule that notified both loses them: its entry says so (Django removes them with no signal).
    action = {"action": "delete_selected", "_selected_action": [channel.pk, other.pk], "post": "yes"}
    with audited(
        "admin action", "delete channels that a rule notifies", superuser, {"NotificationChannel": 2, "AlertRule": 1}
    ):
        redirected(Browser(superuser).post("/admin/slos/notificationchannel/", action))


# --- access: tokens, people, roles, allowed hosts (the admin) ---------------------------------------------------


def test_admin_issue_and_revoke_tokens(superuser, engineer):
    import re

    browser = Browser(superuser)
    form = {"user": engineer.pk, "name": "ci", "scopes": ["read"], "expires_at_0": "", "expires_at_1": ""}
    with audited("admin form", "issue an API token", superuser, {"ApiToken": 1}):
        response = browser.post("/admin/access/apitoken/add/", form)
        assert response.status_code == 200, response.content[:2000]
    PLAINTEXTS.update(re.findall(r"pfo_[A-Za-z0-9_-]{20,}", response.content.decode()))
    factories.token(engineer, ["ingest"])
    chosen = list(ApiToken.objects.values_list("pk", flat=True))
    with audited("admin action", "revoke tokens", superuser, {"ApiToken": 2}):
        redirected(browser.post("/admin/access/apitoken/", {"action": "revoke_tokens", "_selected_action": chosen}))


def user_form(person: User, **fields: Any) -> dict[str, Any]:
    """The admin's change form of a person as a browser posts it."""
    joined = timezone.localtime(person.date_joined)
    form: dict[str, Any] = {
        "username": person.username,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "email": person.email,
        "is_active": "on",
        "is_staff": "on",
        "groups": list(person.groups.values_list("pk", flat=True)),
        "user_permissions": list(person.user_permissions.values_list("pk", flat=True)),
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": f"{joined:%Y-%m-%d}",
        "date_joined_1": f"{joined:%H:%M:%S}",
        "initial-date_joined_0": f"{joined:%Y-%m-%d}",
        "initial-date_joined_1": f"{joined:%H:%M:%S}",
    }
    return form | fields


def test_admin_add_a_person_and_change_their_roles_permissions_and_password(superuser, engineer):
    browser = Browser(superuser)
    form = {"username": "newbie", "password1": "a-long-pass-phrase-1", "password2": "a-long-pass-phrase-1"}
    with audited("admin form", "add a person", superuser, {"User": 1}):
        redirected(browser.post("/admin/auth/user/add/", form | {"usable_password": "true"}))
    managers = Group.objects.get(name="managers")
    url = f"/admin/auth/user/{engineer.pk}/change/"
    with audited("admin form", "change a user's roles", superuser, {"User": 1}):
        redirected(browser.post(url, user_form(engineer, groups=[managers.pk], first_name="Erin")))
    engineer.refresh_from_db()
    export = Permission.objects.get(codename="view_logentry", content_type__app_label="auditlog")
    with audited("admin form", "change a user's permissions", superuser, {"User": 1}):
        redirected(browser.post(url, user_form(engineer, user_permissions=[export.pk])))
    password = {"password1": "another-pass-phrase-2", "password2": "another-pass-phrase-2", "usable_password": "true"}
    with audited("admin form", "set a user's password", superuser, {"User": 1}):
        redirected(browser.post(f"/admin/auth/user/{engineer.pk}/password/", password))


def test_admin_change_a_groups_permissions(superuser):
    viewers = Group.objects.get(name="viewers")
    wanted = [*viewers.permissions.values_list("pk", flat=True)][1:]
    wanted.append(Permission.objects.get(codename="view_logentry", content_type__app_label="auditlog").pk)
    with audited("admin form", "change a group's permissions", superuser, {"Group": 1}):
        redirected(
            Browser(superuser).post(
                f"/admin/auth/group/{viewers.pk}/change/", {"name": "viewers", "permissions": wanted}
            )
        )


def test_admin_add_change_and_delete_allowed_hosts(superuser):
    browser = Browser(superuser)
    with audited("admin form", "allow a host", superuser, {"AllowedHost": 1}):
        redirected(browser.post("/admin/access/allowedhost/add/", {"host": "hooks.example.com", "note": "chat"}))
    host = AllowedHost.objects.get()
    with audited("admin form", "allow a host's private addresses", superuser, {"AllowedHost": 1}):
        form = {"host": "hooks.example.com", "note": "chat", "allow_private": "on"}
        redirected(browser.post(f"/admin/access/allowedhost/{host.pk}/change/", form))
    other = AllowedHost.objects.create(host="*.example.org")
    action = {"action": "delete_selected", "_selected_action": [host.pk, other.pk], "post": "yes"}
    with audited("admin action", "remove allowed hosts", superuser, {"AllowedHost": 2}):
        redirected(browser.post("/admin/access/allowedhost/", action))


# --- telemetry: departments, teams, agents, capacity, deployments --------------------------------------------------


def test_admin_add_and_change_a_department_with_members(superuser, manager, engineer):
    browser = Browser(superuser)
    form = {"slug": "search", "name": "Search", "members": [manager.pk]}
    with audited("admin form", "add a department with members", superuser, {"Department": 1}):
        redirected(browser.post("/admin/telemetry/department/add/", form))
    search = factories.department("search")
    with audited("admin form", "change a department's members", superuser, {"Department": 1}):
        form = {"slug": "search", "name": "Search and ranking", "members": [engineer.pk]}
        redirected(browser.post(f"/admin/telemetry/department/{search.pk}/change/", form))


def test_admin_add_change_and_delete_teams(payments, manager, superuser):
    browser = Browser(manager)
    with audited("admin form", "add a team", manager, {"Team": 1}):
        redirected(
            browser.post("/admin/telemetry/team/add/", {"department": payments.pk, "slug": "risk", "name": "Risk"})
        )
    team = Team.objects.get()
    with audited("admin form", "rename a team", manager, {"Team": 1}):
        form = {"department": payments.pk, "slug": "risk", "name": "Risk and fraud"}
        redirected(browser.post(f"/admin/telemetry/team/{team.pk}/change/", form))
    other = factories.team(payments, "ledger")
    factories.agent("risk-bot", payments, team=team)
    factories.agent("ledger-bot", payments, team=other)
    # Their agents are left without a team (Django's SET_NULL sends no signal): one entry each.
    action = {"action": "delete_selected", "_selected_action": [team.pk, other.pk], "post": "yes"}
    with audited("admin action", "delete teams with agents", superuser, {"Team": 2, "Agent": 2}):
        redirected(Browser(superuser).post("/admin/telemetry/team/", action))


def agent_form(agent: Agent, **fields: Any) -> dict[str, Any]:
    """The agent change form as the admin posts it, with no inline rows unless given."""
    return {
        "slug": agent.slug,
        "name": agent.name,
        "department": agent.department_id,
        "team": "",
        "owner": "",
        "intent_category": "",
        "description": "",
        "endpoint_url": "",
        "capacities-TOTAL_FORMS": "0",
        "capacities-INITIAL_FORMS": "0",
        "deployments-TOTAL_FORMS": "0",
        "deployments-INITIAL_FORMS": "0",
        **fields,
    }


def test_admin_change_an_agent_with_its_capacity_and_deployments(agent, manager):
    browser = Browser(manager)
    form = agent_form(agent, name="Pay Bot", owner=manager.pk) | {
        "capacities-TOTAL_FORMS": "1",
        "capacities-0-environment": "production",
        "capacities-0-requests_per_s": "40",
    }
    with audited("admin form", "change an agent and add its capacity", manager, {"Agent": 1, "AgentCapacity": 1}):
        redirected(browser.post(f"/admin/telemetry/agent/{agent.pk}/change/", form))
    capacity = AgentCapacity.objects.get()
    with audited("admin form", "change a capacity", manager, {"AgentCapacity": 1}):
        form = {"agent": agent.pk, "environment": "production", "requests_per_s": "55"}
        redirected(browser.post(f"/admin/telemetry/agentcapacity/{capacity.pk}/change/", form))
    with audited("admin form", "record a deployment", manager, {"Deployment": 1}):
        form = {"agent": agent.pk, "environment": "production", "version": "3.0.0", "notes": "hotfix"}
        form |= {"deployed_at_0": f"{timezone.now():%Y-%m-%d}", "deployed_at_1": "10:00:00", "first_seen_at_0": ""}
        redirected(browser.post("/admin/telemetry/deployment/add/", form | {"first_seen_at_1": "", "source": "admin"}))


def test_api_report_deployments(agent, engineer):
    api = api_for(engineer, "ingest")
    body = {"agent": agent.slug, "environment": "production", "version": "3.0.0"}
    with audited("API", "report a deployment", engineer, {"Deployment": 1}):
        assert api.post("/api/v1/deployments", body, format="json").status_code == 201
    with audited("API", "report when a known deployment went out", engineer, {"Deployment": 1}):
        moment = (timezone.now() - timedelta(hours=1)).isoformat()
        assert api.post("/api/v1/deployments", body | {"deployed_at": moment}, format="json").status_code == 200


def test_admin_add_an_agent_and_delete_one_with_its_capacity_and_deployments(payments, manager):
    browser = Browser(manager)
    form = agent_form(Agent(slug="new-bot", name="New bot", department=payments))
    with audited("admin form", "add an agent", manager, {"Agent": 1}):
        redirected(browser.post("/admin/telemetry/agent/add/", form))
    doomed = Agent.objects.get(slug="new-bot")
    AgentCapacity.objects.create(agent=doomed, environment="production", requests_per_s=5)
    Deployment.objects.create(agent=doomed, environment="production", version="0.1.0")
    # (An agent with interventions cannot be deleted in the admin: their history is never deleted.)
    expect = {"Agent": 1, "AgentCapacity": 1, "Deployment": 1}
    with audited("admin action", "delete an agent with its capacity and deployments", manager, expect):
        action = {"action": "delete_selected", "_selected_action": [doomed.pk], "post": "yes"}
        redirected(browser.post("/admin/telemetry/agent/", action))


def test_admin_delete_a_person_who_made_things(agent, payments, superuser, engineer):
    from interventions import reports
    from perfops.metrics.filters import parse_filters

    leaver = factories.user("lee", "engineers", [payments])
    make_slo(agent, leaver)
    factories.token(leaver, ["read"])
    reports.request_report(parse_filters({}), "csv", leaver)
    # Their token and report go with them; their SLO and its rules lose their maker, their department a member.
    expect = {"User": 1, "ApiToken": 1, "Report": 1, "SLO": 1, "AlertRule": 4, "Department": 1}
    with audited("admin action", "delete a person who made things", superuser, expect):
        action = {"action": "delete_selected", "_selected_action": [leaver.pk], "post": "yes"}
        redirected(Browser(superuser).post("/admin/auth/user/", action))


def test_admin_change_an_slos_rule_inline(agent, manager, channels):
    email, _ = channels
    slo = make_slo(agent, manager)
    rules = list(slo.alert_rules.order_by("pk"))
    form = slo_form(agent, kind="availability", threshold_ms="", target="0.999", name=slo.name) | {"_confirmed": "1"}
    form |= {"alert_rules-TOTAL_FORMS": str(len(rules)), "alert_rules-INITIAL_FORMS": str(len(rules))}
    for i, rule in enumerate(rules):
        values = {"id": rule.pk, "slo": slo.pk, "name": rule.name, "severity": rule.severity}
        values |= {"threshold": rule.threshold, "window_s": rule.window_s, "short_window_s": rule.short_window_s}
        values |= {"pending_s": rule.pending_s, "keep_firing_s": rule.keep_firing_s, "enabled": "on"}
        if i == 0:
            values |= {"threshold": 20.0, "channels": [email.pk]}
        form |= {f"alert_rules-{i}-{key}": value for key, value in values.items()}
    with audited("admin form", "change an SLO's rule inline", manager, {"AlertRule": 1}):
        redirected(Browser(manager).post(f"/admin/slos/slo/{slo.pk}/change/", form))


def test_admin_change_an_slos_window_replaces_its_rules(agent, manager):
    slo = make_slo(agent, manager)
    form = slo_form(agent, kind="availability", threshold_ms="", target="0.999", name=slo.name, window_days="7")
    # The Workbook's thresholds depend on the window: the four rules are replaced (four deleted, four created).
    with audited("admin form", "change an SLO's window (its rules replaced)", manager, {"SLO": 1, "AlertRule": 8}):
        redirected(
            Browser(manager).post(f"/admin/slos/slo/{slo.pk}/change/", form | NO_INLINE_RULES | {"_confirmed": "1"})
        )


def test_admin_change_a_tokens_name_and_expiry(superuser, engineer):
    token = ApiToken.objects.get(pk=ApiToken.issue(engineer, "ci", ["read"])[0].pk)
    expires = timezone.localtime() + timedelta(days=30)
    form = {"name": "ci (renamed)", "scopes": ["read"], "expires_at_0": f"{expires:%Y-%m-%d}"}
    with audited("admin form", "change a token's name and expiry", superuser, {"ApiToken": 1}):
        redirected(
            Browser(superuser).post(f"/admin/access/apitoken/{token.pk}/change/", form | {"expires_at_1": "12:00:00"})
        )


def test_previews_and_confirmation_pages_change_nothing(world, engineer, manager):
    api = api_for(engineer, "automation", "read")
    with audited("API", "preview a configuration change (dry run)", engineer, {}):
        body = {"timeout_ms": 12_000, "dry_run": True}
        assert api.post(f"/api/v1/agents/{world.slug}/config", body, format="json").status_code == 200
    with audited("page", "the confirmation page of a configuration change", engineer, {}):
        url = reverse("interventions:change-config", args=[world.slug])
        assert Browser(engineer).post(url, config_form(world, timeout_ms=15_000)).status_code == 200
    with audited("admin form", "the confirmation page of a new SLO", manager, {}):
        assert Browser(manager).post("/admin/slos/slo/add/", slo_form(world) | NO_INLINE_RULES).status_code == 200
