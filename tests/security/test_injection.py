"""Injection: spreadsheet formulas in CSV exports, markup in pages, fragments and PDFs, and CSRF on every POST view.

A world is built in which every name, note and text a person or a sender can write holds either markup
(`<script>`, an `<svg onload>` and a quote that would close an attribute) or a spreadsheet formula
(=, +, -, @, tab, CR). Then:

- every CSV export (found by scanning the URL map for views that answer text/csv) is read back: no cell
  starts with a formula prefix, and each hostile value is there, made text by a leading apostrophe;
- every page, every htmx fragment (HX-Request: true), every admin changelist and change page, and the
  confirmation pages that echo a posted form are read: no markup comes back raw, and each labelled
  value is shown (escaped) somewhere;
- the PDF report's text, read back with pypdf, holds the markup as literal characters;
- every view that takes a POST (found by walking the URL map: a POST with a valid CSRF token is not
  answered 405) refuses a POST without one, for a logged-in superuser.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.cache import cache
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from pypdf import PdfReader

from interventions import configs, profiling, reports
from interventions.models import Incident, LoadTest, ProfilingSession, Recommendation, RegressionFlag, Report
from perfops.dashboard.panels import PANELS
from perfops.metrics.filters import MetricFilters
from perfops.metrics.rollup import catch_up
from perfops.telemetry.models import Agent, Deployment, Trace
from slos.models import SLO, Delivery, NotificationChannel, PerformanceBudget
from tests import factories
from tests.metrics.conftest import ingest

pytestmark = pytest.mark.django_db
OUT = Path(__file__).resolve().parents[2] / "test-output" / "security"
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_figures():
    yield
    if FIGURES:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "injection.json").write_text(json.dumps(FIGURES, indent=2))


# Spreadsheets run a cell that starts with one of these (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
FORMULAS = ("=1+2", "+1+2", "-1+2", "@SUM(A1)", "\t=1+2", "\r=1+2")
# What ingest lets through (single-line printable text): no tab, no CR.
PRINTABLE_FORMULAS = ('=HYPERLINK("http://evil.example","x")', "+1+2", "-1+2", "@SUM(A1)")
# Raw markup that must never come back from a page.
RAW = ("<script>alert(", "<svg onload", 'onmouseover="alert')


def xss(label: str) -> str:
    """Markup carrying a label, at most 64 characters for a 7-character label (a version's limit)."""
    return f'<script>alert("{label}")</script><svg onload=alert(1)>'


def raw_markup(body: str) -> list[str]:
    lowered = body.lower()
    return [marker for marker in RAW if marker.lower() in lowered]


# --- The hostile world --------------------------------------------------------------------------


@dataclass
class World:
    superuser: Any
    agent: Agent
    trace: Trace
    objects: dict[str, Any] = field(default_factory=dict)
    labels: set[str] = field(default_factory=set)  # every label put into markup


def _label(world_labels: set[str], label: str) -> str:
    world_labels.add(label)
    return xss(label)


@pytest.fixture
def world(payments, superuser) -> World:
    cache.clear()
    labels: set[str] = set()
    now = datetime.now(UTC).replace(microsecond=0)
    superuser.first_name = _label(labels, "person")
    superuser.save()
    payments.name = _label(labels, "dept")
    payments.save()
    team = factories.team(payments, "checkout")
    team.name = _label(labels, "team")
    team.save()
    agent = factories.agent(
        "pay-bot",
        payments,
        team=team,
        name=_label(labels, "agent") + ' x" onmouseover="alert(1)',
        description=_label(labels, "about"),
        intent_category="customer_support",
    )
    calls = [
        {"name": name, "kind": kind, "start_ms": 1.0, "duration_ms": 50.0, "status": "error"}
        for name, kind in zip(PRINTABLE_FORMULAS, ("tool", "http", "db", "llm"), strict=True)
    ]
    calls.append({"name": _label(labels, "call"), "kind": "tool", "start_ms": 1.0, "duration_ms": 5.0})
    records = []
    versions = [*PRINTABLE_FORMULAS, _label(labels, "version")]
    for i in range(30):
        records.append(
            factories.record(
                agent="pay-bot",
                version=versions[i % len(versions)],
                model=(PRINTABLE_FORMULAS[i % 4] if i % 2 else _label(labels, "model")),
                started_at=factories.iso(now - timedelta(minutes=2 + i)),
                latency_ms=5000.0 + i,
                status="error" if i % 3 == 0 else "ok",
                dependencies=calls,
                attributes={"note": _label(labels, "attr"), _label(labels, "key"): PRINTABLE_FORMULAS[0]},
            )
        )
    # A profiling session over the last 40 minutes, ended: its report names the hostile calls.
    session = profiling.start(agent, "production", 3600, superuser, reason=_label(labels, "reason"))
    ProfilingSession.objects.filter(pk=session.pk).update(started_at=now - timedelta(minutes=40))
    session.refresh_from_db()
    assert ingest(records, superuser) == len(records)
    profiling.end(session, user=superuser)
    catch_up(now - timedelta(days=1), now=now + timedelta(minutes=5))

    Deployment.objects.filter(agent=agent).update(notes=_label(labels, "notes"))
    config = configs.apply(agent, "production", {"model": "gpt-4o"}, superuser, note=_label(labels, "cfgnote"))
    slo = factories.latency_slo(_label(labels, "slo"), agent, superuser)
    channel = NotificationChannel.objects.create(
        name=_label(labels, "channel"), department=payments, kind="email", email_to="oncall@example.com"
    )
    rule, event = factories.firing_rule(_label(labels, "rule"), agent, superuser, channel, "hostile-1", now)
    Delivery.objects.create(
        event=event,
        key=event.dedupe_key,
        subject=_label(labels, "subject"),
        channel=channel,
        attempt=1,
        ok=False,
        detail=_label(labels, "detail"),
    )
    budget = PerformanceBudget.objects.create(
        name=_label(labels, "budget"), scope="department", department=payments, threshold_ms=1200
    )
    flag = RegressionFlag.objects.create(
        agent=agent,
        environment="production",
        version=xss("flagver"),
        baseline_version=PRINTABLE_FORMULAS[0],
        summary=_label(labels, "summary"),
        flagged_by=superuser,
    )
    labels.add("flagver")
    confirmed = RegressionFlag.objects.create(
        agent=agent, environment="staging", version="=1+2", summary="\t=1+2 evidence", status="confirmed"
    )
    incident = Incident.objects.create(
        flag=confirmed, title=_label(labels, "incident"), notes=_label(labels, "incnotes"), opened_by=superuser
    )
    recommendation = Recommendation.objects.create(
        agent=agent,
        environment="production",
        title=_label(labels, "rectitle"),
        rationale=_label(labels, "why"),
        expected_effect=_label(labels, "effect"),
        changes={"prompt_cache": True},
    )
    for prefix_value in FORMULAS:
        Recommendation.objects.create(
            agent=agent,
            environment="staging",
            title=prefix_value,
            rationale=prefix_value + " rationale",
            expected_effect=prefix_value + " effect",
            changes={"prompt_cache": True},
        )
    load_test = LoadTest.objects.create(
        agent=agent,
        environment="staging",
        target_url="https://agents.example.com/pay",
        rate_rps=1,
        duration_s=10,
        scheduled_at=now + timedelta(hours=2),
        created_by=superuser,
    )
    LoadTest.objects.filter(pk=load_test.pk).update(detail=_label(labels, "loaddet"))
    trace = Trace.objects.filter(agent=agent, version=xss("version")).order_by("-latency_ms").first()
    assert trace is not None
    return World(
        superuser=superuser,
        agent=agent,
        trace=trace,
        labels=labels,
        objects={
            "slo": slo,
            "rule": rule,
            "budget": budget,
            "channel": channel,
            "event": event,
            "flag": flag,
            "incident": incident,
            "recommendation": recommendation,
            "load_test": load_test,
            "profiling": session,
            "config": config,
        },
    )


def client_for(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def make_report(world: World, fmt: str, title: str, django_capture_on_commit_callbacks: Any) -> Report:
    filters = MetricFilters(range="24h", agent="pay-bot", environment="all")
    with django_capture_on_commit_callbacks(execute=True):
        report = reports.request_report(filters, fmt, world.superuser, title=title)
    report.refresh_from_db()
    assert report.status == Report.Status.READY, report.detail
    return report


# --- CSV ----------------------------------------------------------------------------------------


def csv_cells(body: bytes) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(body.decode("utf-8"), newline="")) for cell in row]


def assert_formula_safe(name: str, body: bytes, expected: tuple[str, ...]) -> None:
    cells = csv_cells(body)
    assert cells, f"{name} is empty"
    running = [cell for cell in cells if cell.startswith(FORMULA_PREFIXES)]
    assert not running, f"{name}: cells a spreadsheet would run: {running[:5]}"
    for value in expected:
        assert any(cell.startswith("'" + value) for cell in cells), f"{name}: {value!r} is missing"


# Every view that answers text/csv, and the test that reads it (the scan below fails on a new one).
CSV_EXPORTS = {
    "perfops.dashboard.views.slow_requests_csv",
    "interventions.api.ProfilingReportView",
    "interventions.api.ReportDownloadView",
    "interventions.views.report_download",
}


def url_patterns() -> Iterator[tuple[str, URLPattern]]:
    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, URLPattern]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern

    yield from walk(get_resolver().url_patterns, "")


def view_name(pattern: URLPattern) -> str:
    view = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
    target = view or pattern.callback
    return f"{target.__module__}.{target.__qualname__}"


def test_every_csv_export_is_covered():
    answering_csv = set()
    for _, pattern in url_patterns():
        view = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
        try:
            source = inspect.getsource(view or inspect.unwrap(pattern.callback))
        except (OSError, TypeError):
            continue
        if "text/csv" in source or "report_csv_response" in source:
            answering_csv.add(view_name(pattern))
    assert answering_csv == CSV_EXPORTS


def test_formula_prefixes_are_neutralised_in_every_csv_export(world, django_capture_on_commit_callbacks):
    client = client_for(world.superuser)
    api = factories.api_as(world.superuser, ["read", "automation"])
    exports: dict[str, tuple[bytes, tuple[str, ...]]] = {}

    slow = client.get(reverse("dashboard:slow-csv"), {"range": "24h", "environment": "all"})
    assert slow.status_code == 200
    assert slow["Content-Type"].startswith("text/csv")
    exports["slow requests"] = (slow.content, PRINTABLE_FORMULAS)

    session = world.objects["profiling"]
    session.refresh_from_db()
    assert session.report_status == "ready"
    profile = api.get(f"/api/v1/profiling/{session.pk}/report.csv")
    assert profile.status_code == 200
    exports["profiling report (traces)"] = (profile.content, PRINTABLE_FORMULAS)
    # Every column of a stored report, with every prefix (tab and CR cannot come through ingest).
    part: dict[str, Any] = {"kind": FORMULAS[0], "name": FORMULAS[1], "calls": FORMULAS[2], "p50_ms": FORMULAS[3]}
    part |= {"p95_ms": FORMULAS[4], "mean_ms": FORMULAS[5], "share_of_latency": "-1", "p95_vs_baseline": "-2"}
    part["baseline"] = {"p50_ms": "=B", "p95_ms": "+C", "share_of_latency": "@D"}
    ProfilingSession.objects.filter(pk=session.pk).update(report={**session.report, "parts": [part]})
    stored = api.get(f"/api/v1/profiling/{session.pk}/report.csv")
    exports["profiling report (every column)"] = (stored.content, FORMULAS)

    for prefix_value in FORMULAS:
        report = make_report(world, "csv", prefix_value + " title", django_capture_on_commit_callbacks)
        page = client.get(reverse("interventions:report-download", args=[report.pk]))
        assert page["Content-Type"].startswith("text/csv")
        exports[f"report {prefix_value!r} (page)"] = (page.content, (prefix_value + " title", *FORMULAS))
        download = api.get(f"/api/v1/reports/{report.pk}/download")
        assert download.status_code == 200
        exports[f"report {prefix_value!r} (API)"] = (download.content, (prefix_value + " title",))

    for name, (body, expected) in exports.items():
        assert_formula_safe(name, body, expected)
    FIGURES["csv"] = {
        "export_views": sorted(CSV_EXPORTS),
        "files_read": len(exports),
        "cells_read": sum(len(csv_cells(body)) for body, _ in exports.values()),
        "prefixes": [repr(prefix) for prefix in FORMULA_PREFIXES],
        "cells_starting_with_a_prefix": 0,
    }
    # The report holds the regression flag's version and evidence too, with a tab in front.
    report_cells = csv_cells(exports["report '=1+2' (page)"][0])
    assert "'=1+2" in report_cells
    assert "'\t=1+2 evidence" in report_cells


def test_the_openslo_export_keeps_hostile_names_as_plain_strings(world):
    slo = world.objects["slo"]
    SLO.objects.filter(pk=slo.pk).update(name='x\nkind: Secret\n"y": =1+2 # <b>')
    body = client_for(world.superuser).get(reverse("slos:openslo-export")).content.decode()
    documents = list(yaml.safe_load_all(body))
    assert [doc["kind"] for doc in documents] == ["SLO"]
    assert documents[0]["metadata"]["displayName"] == 'x\nkind: Secret\n"y": =1+2 # <b>'


# --- HTML: pages, fragments, admin ----------------------------------------------------------------


def pages(world: World) -> list[str]:
    agent = ["pay-bot"]
    o = world.objects
    urls = [
        reverse("dashboard:performance") + "?range=24h&environment=all",
        reverse("dashboard:agent", args=agent) + "?range=24h&environment=all",
        reverse("dashboard:request", args=[world.trace.trace_id.hex]),
        # Filter values echoed back: the filter bar and the error fragment.
        reverse("dashboard:performance") + "?range=24h&version=" + xss("filter"),
        reverse("dashboard:panel", args=["kpis"]) + "?range=24h&agent=" + xss("badagent"),
        reverse("slos:feed"),
        reverse("slos:rule-list"),
        reverse("slos:rule-detail", args=[o["rule"].pk]),
        reverse("slos:rule-edit", args=[o["rule"].pk]),
        reverse("slos:rule-delete", args=[o["rule"].pk]),
        reverse("slos:slo-list"),
        reverse("slos:slo-detail", args=[o["slo"].pk]),
        reverse("slos:slo-edit", args=[o["slo"].pk]),
        reverse("slos:slo-delete", args=[o["slo"].pk]),
        reverse("slos:budget-list"),
        reverse("slos:budget-detail", args=[o["budget"].pk]),
        reverse("slos:budget-edit", args=[o["budget"].pk]),
        reverse("slos:budget-delete", args=[o["budget"].pk]),
        reverse("slos:slo-new") + "?scope=agent&agent=" + str(world.agent.pk),
        reverse("slos:rule-new") + "?scope=agent&agent=" + str(world.agent.pk),
        reverse("interventions:agent", args=agent),
        reverse("interventions:agent", args=agent) + "?environment=staging",
        reverse("interventions:change-config", args=agent) + "?environment=production",
        reverse("interventions:flag-new", args=agent) + "?environment=production&version=" + xss("qversion"),
        reverse("interventions:profiling", args=[o["profiling"].pk]),
        reverse("interventions:flag", args=[o["flag"].pk]),
        reverse("interventions:flag", args=[o["incident"].flag_id]),
        reverse("interventions:load-test", args=[o["load_test"].pk]),
        reverse("interventions:environments", args=agent),
        reverse("interventions:reports"),
    ]
    for name in PANELS:
        urls.append(reverse("dashboard:panel", args=[name]) + "?range=24h&environment=all")
        urls.append(reverse("dashboard:panel", args=[name]) + "?range=24h&environment=all&agent=pay-bot")
    return urls


def seen_labels(body: str, labels: set[str]) -> set[str]:
    # A label is shown when its text is on the page: escaped as HTML, or as JSON inside a data script.
    return {label for label in labels if f"alert(&quot;{label}&quot;)" in body or f'alert(\\"{label}\\")' in body}


def test_markup_is_escaped_in_every_page_and_htmx_fragment(world, django_capture_on_commit_callbacks):
    report = make_report(world, "pdf", xss("rtitle"), django_capture_on_commit_callbacks)
    world.labels.add("rtitle")
    client = client_for(world.superuser)
    urls = [*pages(world), reverse("interventions:report", args=[report.pk])]
    shown: set[str] = set()
    problems = []
    for url in urls:
        for htmx in (False, True):
            response = client.get(url, headers={"HX-Request": "true"} if htmx else {})
            body = response.content.decode()
            if response.status_code >= 500 or raw_markup(body):
                problems.append((url, htmx, response.status_code, raw_markup(body)))
            shown |= seen_labels(body, world.labels)
    assert not problems
    FIGURES["pages"] = {"urls": len(urls), "requests_full_and_htmx": 2 * len(urls), "raw_markup_found": 0}
    # Every value was on some page (so the check above looked at it), except those no page shows.
    # Shown in the admin only (checked there): the agent's description, deployment notes, incident notes,
    # a delivery's subject and detail; a person's first name is not shown anywhere.
    assert world.labels - shown == {"about", "notes", "incnotes", "subject", "detail", "person"}


def test_markup_is_escaped_in_the_admin(world):
    client = client_for(world.superuser)
    as_superuser = RequestFactory().get("/admin/")
    as_superuser.user = world.superuser
    shown: set[str] = set()
    problems = []
    visited = 0
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        urls = [reverse("admin:{}_{}_changelist".format(*info))]
        obj = model_admin.get_queryset(as_superuser).first()
        if obj is not None:
            urls.append(reverse("admin:{}_{}_change".format(*info), args=[quote(obj.pk)]))
        for url in urls:
            response = client.get(url)
            visited += 1
            body = response.content.decode()
            if response.status_code != 200 or raw_markup(body):
                problems.append((url, response.status_code, raw_markup(body)))
            shown |= seen_labels(body, world.labels)
    assert visited > 30
    assert not problems
    FIGURES["admin"] = {"pages": visited, "raw_markup_found": 0}
    assert {"agent", "about", "slo", "rule", "budget", "notes", "cfgnote", "summary", "incnotes", "detail"} <= shown
    assert {"subject", "reason", "incident", "rectitle", "loaddet", "channel"} <= shown


def test_posted_markup_is_escaped_on_the_confirmation_and_error_pages(world):
    client = client_for(world.superuser)
    agent = world.agent
    posted = {
        reverse("slos:slo-new"): {
            "name": xss("p-slo"),
            "scope": "agent",
            "agent": agent.pk,
            "kind": "availability",
            "target": "0.99",
            "window_days": "30",
        },
        reverse("slos:budget-new"): {
            "name": xss("p-bud"),
            "scope": "department",
            "department": agent.department_id,
            "threshold_ms": "1000",
            "aggregate": "p95",
            "quantile": "0.95",
            "window_days": "7",
        },
        reverse("slos:slo-edit", args=[world.objects["slo"].pk]): {"name": xss("p-bad"), "kind": xss("p-kind")},
        reverse("interventions:flag-new", args=["pay-bot"]): {
            "environment": "production",
            "version": xss("version"),  # a version the agent runs (its name is markup), so a preview
            "summary": xss("p-sum"),
        },
        reverse("interventions:flag-new", args=["pay-bot"]) + "?environment=staging": {
            "environment": "staging",
            "version": xss("p-ver"),  # not one of the agent's: the form again, with its error
        },
        reverse("interventions:start-profiling", args=["pay-bot"]): {
            "environment": "production",
            "minutes": "30",
            "reason": xss("p-why"),
        },
        reverse("interventions:change-config", args=["pay-bot"]) + "?environment=production": {
            "agent": agent.pk,
            "environment": "production",
            "note": xss("p-note"),
            "model": xss("p-model")[:60],
            "temperature": "0.2",
            "max_tokens": "1024",
            "timeout_ms": "30000",
            "batch_size": "1",
            "concurrency": "8",
            "cache_ttl_s": "3600",
            "cache_invalidation": "ttl",
        },
        reverse("interventions:schedule-load-test", args=["pay-bot"]): {
            "environment": xss("p-env"),
            "target_url": "javascript:alert(1)//" + xss("p-url"),
        },
    }
    labels = {"p-slo", "p-bud", "p-bad", "p-sum", "p-why", "p-note"}
    shown: set[str] = set()
    for url, data in posted.items():
        response = client.post(url, data)
        body = response.content.decode()
        assert response.status_code < 500, (url, response.status_code)
        assert not raw_markup(body), (url, raw_markup(body))
        shown |= seen_labels(body, labels)
    assert labels <= shown, labels - shown
    FIGURES["posted_forms"] = {"posts": len(posted), "raw_markup_found": 0}


# --- PDF ----------------------------------------------------------------------------------------


def test_markup_stays_literal_text_in_the_pdf_report(world, django_capture_on_commit_callbacks):
    title = xss("pdf")
    report = make_report(world, "pdf", title, django_capture_on_commit_callbacks)
    response = client_for(world.superuser).get(reverse("interventions:report-download", args=[report.pk]))
    assert response["Content-Type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(response.content))
    text = "\n".join(page.extract_text() for page in reader.pages)
    flat = re.sub(r"\s+", "", text)
    for literal in (
        title,  # the title paragraph
        xss("rectitle"),  # a recommendation's heading
        xss("effect"),  # ...its expected effect
        xss("why"),  # ...and its rationale
        xss("flagver"),  # a regression flag's version, in a table cell
    ):
        assert re.sub(r"\s+", "", literal) in flat, literal
    assert re.sub(r"\s+", "", xss("summary"))[:60] in flat  # the evidence column is cut at 80 characters
    assert reader.metadata is not None
    assert reader.metadata.title == title
    FIGURES["pdf"] = {"pages": len(reader.pages), "literal_markup_values_found": 6}


def test_markup_in_a_pdf_paragraph_is_not_read_as_reportlab_markup(world):
    # reportlab paragraphs take <b>, <font>, <link href>: escaped, they must print as they were written.
    hostile = '<font size=40 color=red>big</font> <link href="javascript:alert(1)">x</link> <b>b</b> &amp; &'
    content = reports.Content(
        title=hostile,
        scope=hostile,
        window=("a", "b"),
        summary={"count": 0, "error_rate": None, "p50_ms": None, "p95_ms": None, "p99_ms": None, "throughput_rps": 0},
        series=[],
        agents=[],
        recommendations=[{"agent": "pay-bot", "title": hostile, "effect": hostile, "rationale": hostile}],
    )
    reader = PdfReader(io.BytesIO(reports.to_pdf(content)))
    text = re.sub(r"\s+", "", "\n".join(page.extract_text() for page in reader.pages))
    assert text.count(re.sub(r"\s+", "", hostile)) >= 4  # title, scope, heading (title and effect), rationale
    assert all("/Annots" not in page for page in reader.pages)  # the <link> made no link


# --- CSRF ---------------------------------------------------------------------------------------


def concrete_path(route: str) -> str:
    """A URL that the route matches: ints and ids become 999999 (no such object), other parts 'nope'."""
    path = re.sub(
        r"\(\?P<(\w+)>([^)]*)\)",
        lambda m: m.group(2).split("|")[0] if "|" in m.group(2) else "999999",
        route,
    )
    path = re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: "999999" if m.group(1) == "int" else "nope", path)
    return "/" + path.replace("^", "").replace("$", "").replace("\\", "")


def csrf_refused(response: Any) -> bool:
    return response.status_code == 403 and b"CSRF" in response.content


def test_a_post_without_a_csrf_token_is_refused_by_every_view(superuser):
    secret = _get_new_csrf_string()
    checked, refused_anyway, skipped = [], [], []
    controls: dict[int, int] = {}
    without = client_for(superuser, enforce_csrf_checks=True)
    with_token = client_for(superuser, enforce_csrf_checks=True)
    with_token.cookies[settings.CSRF_COOKIE_NAME] = secret
    for route, pattern in url_patterns():
        path = concrete_path(route)
        match = resolve(path.split("?")[0])
        assert match.func == pattern.callback or route.startswith("admin/"), (route, path)
        # The control: with a token, does the view take a POST at all?
        # JSON, so that no parser refuses the body before the method is looked at (DRF parses to read the token).
        control = with_token.post(path, "{}", content_type="application/json", headers={"X-CSRFToken": secret})
        controls[control.status_code] = controls.get(control.status_code, 0) + 1
        if "logout" in path:
            with_token.force_login(superuser)  # it did log out
        if control.status_code == 405:
            skipped.append(path)
            continue
        assert not csrf_refused(control), (path, control.status_code)
        response = without.post(path, "{}", content_type="application/json")
        checked.append((path, view_name(pattern)))
        if not csrf_refused(response):
            refused_anyway.append((path, response.status_code, response.content[:200]))
    assert not refused_anyway, refused_anyway
    views = {name for _, name in checked}
    # The form views of each app, the API's session path, ingest and the admin were all among them.
    for expected in (
        "slos.pages.edit",
        "slos.pages.delete",
        "slos.views.acknowledge",
        "slos.views.silence",
        "slos.views.openslo_import",
        "interventions.views.change_config",
        "interventions.views.revert_config",
        "interventions.views.start_profiling",
        "interventions.views.stop_profiling",
        "interventions.views.flag_new",
        "interventions.views.flag_decide",
        "interventions.views.incident_resolve",
        "interventions.views.recommendation_decide",
        "interventions.views.schedule_load_test",
        "interventions.views.load_test_action",
        "interventions.views.request_report",
        "perfops.telemetry.api.TraceBatchView",
        "perfops.telemetry.api_otlp.OtlpTracesView",
        "slos.api.SLOViewSet",
    ):
        assert expected in views, expected
    admin_views = sum(1 for path, _ in checked if path.startswith("/admin/"))
    assert admin_views > 50
    FIGURES["csrf"] = {
        # Every route that does not answer a POST carrying a valid token with 405 (API views that check
        # permissions before the method answer 403 and count here too).
        "routes_taking_post": len(checked),
        "of_which_admin": admin_views,
        "of_which_api": sum(1 for path, _ in checked if path.startswith(("/api/", "/v1/"))),
        "refused_without_token": len(checked) - len(refused_anyway),
        "get_only_routes_skipped": len(skipped),
        "statuses_with_a_token": {str(code): count for code, count in sorted(controls.items())},
    }
