"""Dashboard pages: the performance page (fleet and subset levels), an agent, one request, and the panels.

A page is a filter bar and empty panel frames; each frame loads its panel with htmx, so a slow
panel never holds the page. The filters live in the query string with the metrics API's names.
Every view needs a login, and everything shown goes through the person's department scope.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC
from functools import wraps
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from perfops.dashboard import overlays, traces
from perfops.dashboard.panels import AGENT_LAYOUT, ALERT_GROUPS, FLEET_LAYOUT, PANELS, Context, new_alert_link
from perfops.metrics.filters import (
    ALL,
    ENVIRONMENT_VALUES,
    LATEST,
    PARAMETERS,
    RANGES,
    STATUSES,
    TIERS,
    FilterError,
    MetricFilters,
    parse_filters,
)
from perfops.metrics.query import resolve_scope
from perfops.telemetry.choices import COMMON_INTENTS
from perfops.telemetry.models import Agent, Department, Deployment, Team, Trace

OPTIONS = ("sort", "order")
_LOCAL_DATETIME = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?\Z")
TIER_LABELS = {
    "fast": "Fast (<100 ms)",
    "normal": "Normal (100–500 ms)",
    "slow": "Slow (500 ms–2 s)",
    "critical": "Critical (>2 s)",
}
STATUS_LABELS = {"success": "Success", "errors": "Errors only", "timeouts": "Timeouts only"}


def login_required_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """login_required, but a panel that htmx reloads after the session ended sends the whole page to login.

    A plain redirect would be followed by htmx and the login form swapped into every panel.
    """
    page_view = login_required(view)

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.headers.get("HX-Request") and not request.user.is_authenticated:
            page = request.headers.get("HX-Current-URL") or reverse("dashboard:performance")
            path = urlsplit(page)
            target = path.path + (f"?{path.query}" if path.query else "")
            if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
                target = reverse("dashboard:performance")
            response = HttpResponse("Your session has ended; log in again.", status=401)
            response["HX-Redirect"] = f"{reverse(settings.LOGIN_URL)}?{urlencode({'next': target})}"
            return response
        return page_view(request, *args, **kwargs)

    return wrapper


def _filter_params(request: HttpRequest) -> dict[str, str]:
    """The filter parameters of a page request; the date-time inputs of the filter bar are UTC."""
    params = {key: request.GET.get(key, "") for key in PARAMETERS if key in request.GET}
    if params.get("range") == "custom":
        params.pop("range")
    for key in ("start", "end"):
        if _LOCAL_DATETIME.match(params.get(key, "")):
            params[key] = params[key] + ("Z" if params[key].count(":") == 2 else ":00Z")
    if not params.get("start"):
        params.pop("start", None)
        params.pop("end", None)
    return params


def _read_filters(request: HttpRequest, **fixed: str) -> tuple[MetricFilters, dict[str, list[str]]]:
    """The request's filters, and the problems with them (a page falls back to the defaults for those)."""
    params = {**_filter_params(request), **fixed}
    errors: dict[str, list[str]] = {}
    for _ in range(3):
        try:
            filters = parse_filters(params)
            # Names the person may not see, or a team outside the chosen department.
            resolve_scope(filters, request.user)
            return filters, errors
        except FilterError as exc:
            errors.update(exc.errors)
            dropped = set(exc.errors) | ({"start", "end"} if {"start", "end"} & set(exc.errors) else set())
            params = {k: v for k, v in params.items() if k not in dropped or k in fixed}
    return MetricFilters(agent=fixed.get("agent")), errors


def _filter_choices(request: HttpRequest, filters: MetricFilters) -> dict[str, Any]:
    user = request.user
    departments = list(Department.objects.visible_to(user).order_by("name").values_list("slug", "name"))
    teams = Team.objects.visible_to(user).select_related("department").order_by("department__name", "name")
    if filters.department:
        teams = teams.filter(department__slug=filters.department)
    versions = (
        Deployment.objects.visible_to(user)
        .filter(environment__in=filters.environments)
        .values_list("version", flat=True)
        .distinct()
        .order_by("-version")[:60]
    )
    intents = set(COMMON_INTENTS) | set(
        Agent.objects.visible_to(user).exclude(intent_category="").values_list("intent_category", flat=True).distinct()
    )
    return {
        "ranges": [*RANGES, "custom"],
        "environments": [(v, v.title() if v != ALL else "All") for v in (*ENVIRONMENT_VALUES,)],
        "departments": departments,
        "teams": [(t.slug, f"{t.department.name} / {t.name}") for t in teams],
        "tiers": [(key, TIER_LABELS[key]) for key in TIERS],
        "statuses": [(key, STATUS_LABELS[key]) for key in STATUSES],
        "versions": [LATEST, *sorted(set(versions), reverse=True)],
        "intents": sorted(intents),
    }


def _frames(request: HttpRequest, names: tuple[str, ...], query: str, level: str) -> list[dict[str, Any]]:
    frames = []
    for name in names:
        panel = PANELS[name]
        frames.append(
            {
                "panel": panel,
                "url": reverse("dashboard:panel", args=[name]) + (f"?{query}" if query else ""),
            }
        )
    return frames


def _page_context(request: HttpRequest, filters: MetricFilters, errors: dict[str, list[str]]) -> dict[str, Any]:
    ctx = Context(filters, request.user)
    query = ctx.link("dashboard:performance").partition("?")[2]
    start, end = filters.window(timezone.now())
    return {
        "filters": filters,
        "errors": errors,
        "choices": _filter_choices(request, filters),
        "query": query,
        "level": ctx.level,
        "window": (start, end),
        "custom": filters.range is None,
        "start_value": filters.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if filters.start else "",
        "end_value": filters.end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if filters.end else "",
        "reset": reverse("dashboard:performance"),
        "firing_alerts": _firing_alerts(request),
        "actions": _actions(request, filters),
    }


def _panel_actions(request: HttpRequest, name: str, filters: MetricFilters) -> list[tuple[str, str]]:
    """Actions a panel offers where the spec triggers them (outside its cached data: they depend on the role)."""
    found: list[tuple[str, str]] = []
    if not filters.agent:
        return found
    environment = urlencode({"environment": filters.environment if filters.environment != ALL else "production"})
    home = reverse("interventions:agent", args=[filters.agent]) + "?" + environment
    user = request.user
    if name == "versions" and user.has_perm("interventions.add_regressionflag"):
        url = reverse("interventions:flag-new", args=[filters.agent]) + "?" + environment
        found.append(("Flag a version as a regression…", url))
    if name in ("slow", "phases", "dependencies") and user.has_perm("interventions.add_profilingsession"):
        found.append(("Profile this agent for up to an hour…", home + "#profiling"))
    if name == "capacity" and user.has_perm("interventions.add_loadtest"):
        found.append(("Schedule a load test…", home + "#load-tests"))
    return found


def _actions(request: HttpRequest, filters: MetricFilters) -> list[tuple[str, str]]:
    """The page's actions for its scope, each a form that confirms before saving (A4.1, A4.3, A4.10)."""
    scope = {key: getattr(filters, key) for key in ("agent", "team", "department") if getattr(filters, key)}
    if filters.environment != ALL:
        scope["environment"] = filters.environment
    found: list[tuple[str, str]] = []
    user = request.user
    if user.has_perm("slos.add_slo") and (scope.keys() & {"agent", "team", "department"} or user.is_superuser):
        found.append(("Set SLO", reverse("slos:slo-new") + "?" + urlencode(scope)))
    if user.has_perm("slos.add_alertrule"):
        found.append(("Create alert", new_alert_link(filters, "latency")))
    if filters.agent:
        environment = {"environment": filters.environment if filters.environment != ALL else "production"}
        label = "Configuration and profiling"
        found.append((label, reverse("interventions:agent", args=[filters.agent]) + "?" + urlencode(environment)))
        found.append(("Compare environments", reverse("interventions:environments", args=[filters.agent])))
    budget_scope = {k: v for k, v in scope.items() if k != "agent"}
    if not filters.agent and (filters.team or filters.department):
        if user.has_perm("slos.add_performancebudget"):
            found.append(("Set budget", reverse("slos:budget-new") + "?" + urlencode(budget_scope)))
        found.append(("Budgets", reverse("slos:budget-list") + "?" + urlencode(budget_scope)))
    return found


def _firing_alerts(request: HttpRequest) -> list[str]:
    """Names of the burn-rate alerts firing in the person's departments (the banner above the panels)."""
    from slos.models import AlertRule

    return list(
        AlertRule.objects.visible_to(request.user)
        .filter(state=AlertRule.State.FIRING)
        .order_by("severity", "name")
        .values_list("name", flat=True)[:5]
    )


@require_GET
@login_required
@vary_on_headers("HX-Request")
def performance(request: HttpRequest) -> HttpResponse:
    """/dashboard/performance: the fleet, or the subset the filters narrow it to."""
    filters, errors = _read_filters(request)
    context = _page_context(request, filters, errors)
    context["frames"] = _frames(request, FLEET_LAYOUT, context["query"], context["level"])
    context["page_title"] = {
        "fleet": "Fleet performance",
        "subset": "Performance of a subset",
        "agent": "Agent performance",
    }[context["level"]]
    return render(request, "dashboard/performance.html", context)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def agent(request: HttpRequest, slug: str) -> HttpResponse:
    """/dashboard/performance/agents/<slug>: one agent's phases, dependencies, versions, environments, slow requests."""
    found = get_object_or_404(Agent.objects.visible_to(request.user).select_related("department", "team"), slug=slug)
    filters, errors = _read_filters(request, agent=slug)
    context = _page_context(request, filters, errors)
    context["agent"] = found
    context["frames"] = _frames(request, AGENT_LAYOUT, context["query"], "agent")
    context["deployments"] = found.deployments.with_effective_at().order_by("-effective_at")[:10]  # type: ignore[misc]
    context["page_title"] = found.name
    from interventions.models import ProfilingSession

    context["profiling"] = (
        ProfilingSession.objects.active(timezone.now()).filter(agent=found).order_by("expires_at").first()
    )
    context["fleet_link"] = (
        reverse("dashboard:performance")
        + "?"
        + "&".join(part for part in context["query"].split("&") if part and not part.startswith("agent="))
    )
    return render(request, "dashboard/agent.html", context)


@require_GET
@login_required_page
@vary_on_headers("HX-Request")
def panel(request: HttpRequest, name: str) -> HttpResponse:
    """One panel's content: the htmx fragment, or a page of its own for a plain link."""
    found = PANELS.get(name)
    if found is None:
        raise Http404("No such panel.")
    params = _filter_params(request)
    try:
        filters = parse_filters(params)
    except FilterError as exc:
        return render(request, "dashboard/panel_error.html", {"panel": found, "errors": exc.errors}, status=400)
    options = {key: request.GET[key] for key in OPTIONS if request.GET.get(key)}
    ctx = Context(filters, request.user, options=options)
    began = time.perf_counter()
    try:
        data = found.render_data(ctx)
    except FilterError as exc:
        return render(request, "dashboard/panel_error.html", {"panel": found, "errors": exc.errors}, status=400)
    except (OperationalError, InterfaceError):
        return render(
            request,
            "dashboard/panel_error.html",
            {
                "panel": found,
                "errors": {"storage": ["The database is unavailable; this panel retries in 10 s."]},
                "retry": True,
            },
            status=503,
        )
    group = ALERT_GROUPS.get(name)
    context = {
        "panel": found,
        "data": data,
        # Alert state is read fresh on every load (the panel's data may come from its cache).
        "alerts": overlays.alert_states(filters, request.user).get(group, []) if group else [],
        "new_alert": (
            new_alert_link(filters, group) if group and request.user.has_perm("slos.add_alertrule") else None
        ),
        "panel_actions": _panel_actions(request, name, filters),
        "figure_id": f"figure-{name}-{uuid.uuid4().hex[:8]}",
        "elapsed_ms": round((time.perf_counter() - began) * 1000),
        "self_url": request.get_full_path(),
    }
    template = "dashboard/panel.html" if request.headers.get("HX-Request") else "dashboard/panel_page.html"
    response = render(request, template, context)
    response["Server-Timing"] = f"panel;dur={context['elapsed_ms']}"
    return response


@require_GET
@login_required
def slow_requests_csv(request: HttpRequest) -> HttpResponse:
    """The slow-request table of the filters as CSV (cells that look like formulas are made text)."""
    params = _filter_params(request)
    try:
        filters = parse_filters(params)
        result = traces.slow_requests(filters, request.user, timezone.now())
    except FilterError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    rows = traces.sort_rows(result.rows, request.GET.get("sort", "latency_ms"), request.GET.get("order") != "asc")
    body = traces.slow_requests_csv(traces.SlowRequests(rows, result.phase_names))
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="perfops-slow-requests-{stamp}.csv"'
    return response


@require_GET
@login_required
def request_detail(request: HttpRequest, trace_id: str) -> HttpResponse:
    """/dashboard/performance/requests/<trace_id>: one request's phases, calls, attributes and outcome."""
    try:
        key = uuid.UUID(trace_id)
    except ValueError as exc:
        raise Http404("No such request.") from exc
    visible = Trace.objects.visible_to(request.user).select_related("agent", "agent__department")
    # On PostgreSQL a trace is (trace_id, started_at): a reused id with another start is a second record.
    trace = visible.filter(trace_id=key).order_by("-started_at").first()
    if trace is None:
        raise Http404("No such request.")
    phases = [(str(k), float(v)) for k, v in (trace.phases or {}).items() if isinstance(v, int | float)]
    calls = [c for c in (trace.dependencies or []) if isinstance(c, dict)]
    waterfall, offset = [], 0.0
    for name, ms in phases:
        waterfall.append({"label": f"phase: {name}", "start": offset, "ms": ms, "kind": "phase", "status": "ok"})
        offset += ms
    for call in sorted(calls, key=lambda c: float(c.get("start_ms") or 0.0)):
        waterfall.append(
            {
                "label": f"{call.get('kind', 'call')}: {call.get('name', '?')}",
                "start": float(call.get("start_ms") or 0.0),
                "ms": float(call.get("duration_ms") or 0.0),
                "kind": str(call.get("kind", "call")),
                "status": str(call.get("status", "ok")),
            }
        )
    figure = _waterfall_figure(waterfall, trace.latency_ms)
    start_of_day = trace.started_at.replace(hour=0, minute=0, second=0, microsecond=0)
    context = {
        "trace": trace,
        "phases": phases,
        "calls": calls,
        "figure": figure,
        "figure_id": "figure-request",
        "attributes": sorted((trace.attributes or {}).items()),
        "similar": traces.similar_slow(trace, request.user),
        "root_cause": overlays.root_cause(trace),
        "agent_link": reverse("dashboard:agent", args=[trace.agent.slug])
        + f"?environment={trace.environment}&start={start_of_day.isoformat().replace('+00:00', 'Z')}",
        "page_title": f"Request {trace.trace_id.hex[:12]}…",
    }
    return render(request, "dashboard/request.html", context)


def _waterfall_figure(rows: list[dict[str, Any]], total_ms: float) -> dict[str, Any]:
    from perfops.dashboard import figures as fig

    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    data = []
    for i, kind in enumerate(kinds):
        mine = [r for r in rows if r["kind"] == kind]
        ok_colour = fig.KIND_COLOURS[i % len(fig.KIND_COLOURS)]
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": kind,
                "y": [r["label"] for r in mine],
                "base": [r["start"] for r in mine],
                "x": [r["ms"] for r in mine],
                "marker": {
                    "color": [ok_colour if r["status"] == "ok" else fig.FAILED for r in mine],
                },
                "hovertext": [r["status"] for r in mine],
                "hovertemplate": "%{y}: %{base:,.1f} → +%{x:,.1f} ms (%{hovertext})<extra></extra>",
            }
        )
    layout = fig.layout(
        x_title="ms since the request started",
        height=max(200, 28 * len(rows) + 90),
        hovermode="closest",
        barmode="overlay",
        yaxis={
            "categoryorder": "array",
            "categoryarray": [r["label"] for r in rows],
            "autorange": "reversed",
            "rangemode": "normal",
        },
        shapes=[
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": total_ms,
                "x1": total_ms,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#d1495b", "dash": "dash"},
            }
        ],
        annotations=[
            {
                "x": total_ms,
                "y": 1,
                "xref": "x",
                "yref": "paper",
                "text": f"total {total_ms:,.1f} ms",
                "showarrow": False,
                "xanchor": "right",
                "yanchor": "bottom",
                "font": {"size": 10},
            }
        ],
    )
    return fig.figure(data, layout)
