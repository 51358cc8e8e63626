"""Pages of an agent's interventions: its configuration (change, history, revert) and its profiling.

Each action is a form, then a confirmation page saying what will happen, then the action; the
audit log records it (the middleware names the person).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from interventions import configs, environments, loadtest, profiling, regressions, reports
from interventions.confirm import describe_config, describe_load_test, describe_profiling
from interventions.forms import AgentConfigForm, LoadTestForm, ProfilingForm
from interventions.models import (
    AgentConfig,
    Incident,
    LoadTest,
    ProfilingSession,
    Recommendation,
    RegressionFlag,
    Report,
)
from perfops.access.audit import record_access
from perfops.metrics.filters import PARAMETERS
from perfops.telemetry.choices import Environment
from perfops.telemetry.models import Agent, Deployment

HISTORY = 30
DURATIONS = (15, 30, 60)  # minutes offered on the page


def _agent(request: HttpRequest, slug: str) -> Agent:
    return get_object_or_404(Agent.objects.visible_to(request.user).select_related("department", "team"), slug=slug)


def _environment(request: HttpRequest) -> str:
    value = request.GET.get("environment") or request.POST.get("environment") or Environment.PRODUCTION
    return value if value in Environment.values else Environment.PRODUCTION


def _home(agent: Agent, environment: str) -> str:
    return reverse("interventions:agent", args=[agent.slug]) + f"?environment={environment}"


def _post_items(request: HttpRequest) -> list[tuple[str, str]]:
    return [(k, v) for k, values in request.POST.lists() if k != "csrfmiddlewaretoken" for v in values]


# htmx stops polling an element when it answers 286 (the fragment is still swapped in).
STOP_POLLING = 286


def _live_render(request: HttpRequest, fragment: str, page: str, context: dict[str, Any]) -> HttpResponse:
    """A page whose part polls while its work runs: the poll gets the fragment, and the last one says stop."""
    if not request.headers.get("HX-Request"):
        return render(request, page, context)
    return render(request, fragment, context, status=200 if context["live"] else STOP_POLLING)


def _confirm(request: HttpRequest, preview: Any, cancel_url: str, label: str) -> HttpResponse:
    context = {
        "preview": preview,
        "post_items": _post_items(request),
        "page_title": f"Confirm: {preview.title}",
        "cancel_url": cancel_url,
        "confirm_label": label,
    }
    return render(request, "slos/confirm.html", context)


@require_GET
@login_required
def agent_page(request: HttpRequest, slug: str) -> HttpResponse:
    """/interventions/agents/<slug>/: configuration now and before, profiling now and before."""
    agent = _agent(request, slug)
    environment = _environment(request)
    history = list(
        AgentConfig.objects.filter(agent=agent, environment=environment)
        .select_related("created_by", "restores")
        .order_by("-version")[: HISTORY + 1]
    )
    rows = [
        {"config": config, "changes": config.diff(history[i + 1] if i + 1 < len(history) else AgentConfig())}
        for i, config in enumerate(history[:HISTORY])
    ]
    current = history[0] if history else None
    sessions = ProfilingSession.objects.filter(agent=agent, environment=environment).select_related(
        "started_by", "ended_by"
    )[:20]
    now = timezone.now()
    context = {
        "agent": agent,
        "environment": environment,
        "environments": Environment.choices,
        "current": current,
        "settings": (current or AgentConfig()).settings_dict(),
        "rows": rows,
        "sessions": sessions,
        "flags": RegressionFlag.objects.filter(agent=agent, environment=environment).select_related("incident")[:20],
        "may_flag": request.user.has_perm("interventions.add_regressionflag"),
        "load_tests": LoadTest.objects.filter(agent=agent, environment=environment)[:10],
        "may_load_test": request.user.has_perm("interventions.add_loadtest"),
        "recommendations": [
            {
                "item": item,
                "changes": [
                    (name, (current or AgentConfig()).settings_dict().get(name), value)
                    for name, value in item.changes.items()
                ],
            }
            for item in Recommendation.objects.filter(
                agent=agent, environment=environment, status=Recommendation.Status.OPEN
            )[:10]
        ],
        "active": next(
            (s for s in sessions if s.status == ProfilingSession.Status.ACTIVE and s.expires_at > now), None
        ),
        "durations": DURATIONS,
        "may_change": request.user.has_perm("interventions.add_agentconfig"),
        "may_profile": request.user.has_perm("interventions.add_profilingsession"),
        "page_title": f"{agent.name}: configuration and profiling",
        "now": now,
    }
    return render(request, "interventions/agent.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def change_config(request: HttpRequest, slug: str) -> HttpResponse:
    """Change settings: the form (prefilled with the current ones), the diff to confirm, a new version."""
    agent = _agent(request, slug)
    environment = _environment(request)
    if not request.user.has_perm("interventions.add_agentconfig"):
        raise PermissionDenied("Viewers cannot change configurations.")
    if request.method == "GET":
        current = configs.current(agent, environment)
        initial = {"agent": agent.pk, "environment": environment, **(current or AgentConfig()).settings_dict()}
        form = AgentConfigForm(initial=initial, user=request.user)
        return _render_form(request, agent, environment, form)
    form = AgentConfigForm(request.POST, user=request.user)
    if not form.is_valid():
        return _render_form(request, agent, environment, form, status=400)
    candidate = form.save(commit=False)
    if candidate.agent_id != agent.pk:
        raise PermissionDenied("The form is for another agent.")
    if "_confirmed" not in request.POST:
        return _confirm(request, describe_config(candidate), _home(agent, environment), "Yes, apply it")
    settings = {name: getattr(candidate, name) for name in AgentConfig.SETTINGS}
    try:
        made = configs.apply(agent, candidate.environment, settings, request.user, note=candidate.note)
    except configs.NoChange:
        messages.info(request, "Nothing changed: these are the current settings.")
        return redirect(_home(agent, candidate.environment))
    messages.success(request, f"Configuration v{made.version} of {agent.slug} ({made.environment}) applied.")
    return redirect(_home(agent, made.environment))


def _render_form(
    request: HttpRequest, agent: Agent, environment: str, form: AgentConfigForm, status: int = 200
) -> HttpResponse:
    context = {
        "agent": agent,
        "environment": environment,
        "form": form,
        "page_title": f"Change the configuration of {agent.slug}",
        "cancel_url": _home(agent, environment),
    }
    return render(request, "interventions/form.html", context, status=status)


@require_POST
@login_required
def revert_config(request: HttpRequest, slug: str, version: int) -> HttpResponse:
    """Make an earlier version current again, after a confirmation showing what changes back."""
    agent = _agent(request, slug)
    environment = _environment(request)
    if not request.user.has_perm("interventions.add_agentconfig"):
        raise PermissionDenied("Viewers cannot change configurations.")
    target = get_object_or_404(AgentConfig, agent=agent, environment=environment, version=version)
    if "_confirmed" not in request.POST:
        candidate = AgentConfig(agent=agent, environment=environment, **target.settings_dict())
        candidate.note = f"revert to v{version}"
        return _confirm(request, describe_config(candidate), _home(agent, environment), f"Yes, revert to v{version}")
    try:
        made = configs.revert(target, request.user)
    except configs.NoChange:
        messages.info(request, f"v{version} is already the current configuration.")
        return redirect(_home(agent, environment))
    messages.success(request, f"Reverted: v{made.version} restores v{version}.")
    return redirect(_home(agent, environment))


@require_POST
@login_required
def start_profiling(request: HttpRequest, slug: str) -> HttpResponse:
    agent = _agent(request, slug)
    environment = _environment(request)
    if not request.user.has_perm("interventions.add_profilingsession"):
        raise PermissionDenied("Viewers cannot start profiling.")
    data = request.POST.copy()
    data["agent"] = str(agent.pk)
    try:
        data["duration_s"] = str(int(request.POST.get("minutes", "")) * 60)
    except ValueError:
        data["duration_s"] = request.POST.get("duration_s", "")
    form = ProfilingForm(data, user=request.user)
    if not form.is_valid():
        for error in form.errors.values():
            messages.error(request, " ".join(str(message) for message in error))
        return redirect(_home(agent, environment))
    candidate = form.save(commit=False)
    if "_confirmed" not in request.POST:
        return _confirm(request, describe_profiling(candidate), _home(agent, environment), "Yes, start profiling")
    try:
        session = profiling.start(agent, candidate.environment, candidate.duration_s, request.user, candidate.reason)
    except profiling.AlreadyActive as exc:
        messages.error(request, str(exc))
        return redirect(_home(agent, environment))
    messages.success(request, f"Profiling {agent.slug} until {session.expires_at:%H:%M} UTC.")
    return redirect(_home(agent, candidate.environment))


@require_POST
@login_required
def stop_profiling(request: HttpRequest, pk: int) -> HttpResponse:
    session = get_object_or_404(ProfilingSession.objects.visible_to(request.user).select_related("agent"), pk=pk)
    if not request.user.has_perm("interventions.change_profilingsession"):
        raise PermissionDenied("Viewers cannot stop profiling.")
    home = _home(session.agent, session.environment)
    if "_confirmed" not in request.POST:
        from slos.confirm import Preview

        preview = Preview(f"Stop profiling {session.agent.slug} now")
        preview.facts = [
            ("Agent", f"{session.agent.slug} ({session.environment})"),
            ("Planned end", f"{session.expires_at:%Y-%m-%d %H:%M} UTC"),
            ("After", "the bottleneck report is written from what arrived so far"),
        ]
        return _confirm(request, preview, home, "Yes, stop it")
    if profiling.end(session, user=request.user):
        messages.success(request, "Profiling stopped; its report is ready.")
    else:
        messages.info(request, "That session had already ended.")
    return redirect(reverse("interventions:profiling", args=[session.pk]))


@require_GET
@login_required
def profiling_report(request: HttpRequest, pk: int) -> HttpResponse:
    session = get_object_or_404(
        ProfilingSession.objects.visible_to(request.user).select_related("agent", "started_by", "ended_by"), pk=pk
    )
    context = {
        "session": session,
        "report": session.report,
        "home": _home(session.agent, session.environment),
        "may_stop": request.user.has_perm("interventions.change_profilingsession"),
        "now": timezone.now(),
        "page_title": f"Profiling {session.agent.slug} ({session.environment})",
    }
    return render(request, "interventions/profiling.html", context)


# --- regression flags and incidents (A4.4) ------------------------------------------------------------


def _evidence_preview(title: str, found: dict[str, Any], version: str) -> Any:
    from slos.confirm import Preview

    preview = Preview(title)
    preview.facts = [("Evidence", regressions.describe(found, version))]
    for label, key in (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms")):
        before = found.get("baseline", {}).get(key)
        after = found["candidate"].get(key)
        preview.facts.append((label, f"{_ms(before)} → {_ms(after)}"))
    before_rate = found.get("baseline", {}).get("error_rate")
    preview.facts.append(("error rate", f"{_pct(before_rate)} → {_pct(found['candidate'].get('error_rate'))}"))
    counts = (found.get("baseline", {}).get("count"), found["candidate"].get("count"))
    preview.facts.append(("requests compared", f"{counts[0] or 0:,} → {counts[1] or 0:,}"))
    if not found["candidate"].get("count"):
        preview.warnings.append(f"No requests of {version} in the window: there is nothing to judge yet.")
    return preview


def _ms(value: float | None) -> str:
    return "no data" if value is None else f"{value:,.0f} ms"


def _pct(value: float | None) -> str:
    return "no data" if value is None else f"{value * 100:.2f}%"


@require_http_methods(["GET", "POST"])
@login_required
def flag_new(request: HttpRequest, slug: str) -> HttpResponse:
    """Flag a version as a suspected regression: pick it, see the evidence, confirm."""
    agent = _agent(request, slug)
    environment = _environment(request)
    if not request.user.has_perm("interventions.add_regressionflag"):
        raise PermissionDenied("Viewers cannot flag regressions.")
    versions = list(
        Deployment.objects.filter(agent=agent, environment=environment)
        .with_effective_at()  # type: ignore[misc]
        .order_by("-effective_at")
        .values_list("version", flat=True)[:20]
    )
    version = request.POST.get("version") or request.GET.get("version") or (versions[0] if versions else "")
    if request.method == "GET" or version not in versions:
        context = {
            "agent": agent,
            "environment": environment,
            "versions": versions,
            "version": version,
            "error": "Choose one of the agent's versions." if request.method == "POST" else "",
            "page_title": f"Flag a regression of {agent.slug}",
            "cancel_url": _home(agent, environment),
        }
        return render(request, "interventions/flag_form.html", context, status=400 if request.method == "POST" else 200)
    found = regressions.evidence(agent, environment, version, request.user)
    if "_confirmed" not in request.POST:
        preview = _evidence_preview(
            f"Flag {agent.slug} {version} ({environment}) as a suspected regression", found, version
        )
        return _confirm(request, preview, _home(agent, environment), "Yes, flag it")
    try:
        made = regressions.flag(
            agent, environment, version, request.user, summary=request.POST.get("summary", ""), found=found
        )
    except regressions.AlreadyFlagged as exc:
        messages.info(request, str(exc))
        return redirect(_home(agent, environment))
    messages.success(request, f"{agent.slug} {version} flagged: {made.summary}")
    return redirect(reverse("interventions:flag", args=[made.pk]))


@require_GET
@login_required
def flag_detail(request: HttpRequest, pk: int) -> HttpResponse:
    flagged = get_object_or_404(
        RegressionFlag.objects.visible_to(request.user).select_related("agent", "flagged_by", "decided_by"), pk=pk
    )
    incident = Incident.objects.filter(flag=flagged).select_related("opened_by", "resolved_by").first()
    context = {
        "flag": flagged,
        "incident": incident,
        "evidence": _evidence_preview("", flagged.evidence, flagged.version) if flagged.evidence else None,
        "home": _home(flagged.agent, flagged.environment),
        "may_decide": request.user.has_perm("interventions.change_regressionflag"),
        "page_title": f"Regression flag: {flagged.agent.slug} {flagged.version}",
    }
    return render(request, "interventions/flag.html", context)


@require_POST
@login_required
def flag_decide(request: HttpRequest, pk: int, decision: str) -> HttpResponse:
    """Confirm (an incident is opened, the channels told) or dismiss with a reason, each confirmed first."""
    flagged = get_object_or_404(RegressionFlag.objects.visible_to(request.user).select_related("agent"), pk=pk)
    if not request.user.has_perm("interventions.change_regressionflag"):
        raise PermissionDenied("Viewers cannot decide regressions.")
    back = reverse("interventions:flag", args=[flagged.pk])
    reason = request.POST.get("reason", "").strip()
    if decision == "dismiss" and not reason:
        messages.error(request, "Say why it is a false positive.")
        return redirect(back)
    if "_confirmed" not in request.POST:
        from slos.confirm import Preview
        from slos.models import NotificationChannel

        if decision == "confirm":
            channels = NotificationChannel.objects.filter(department_id=flagged.agent.department_id).count()
            preview = Preview(f"Confirm the regression of {flagged.agent.slug} {flagged.version}")
            preview.facts = [
                ("Evidence", flagged.summary),
                ("Then", f"an incident is opened and {channels} notification channel(s) of the department are told"),
            ]
            label = "Yes, confirm and open an incident"
        else:
            preview = Preview(f"Dismiss the flag of {flagged.agent.slug} {flagged.version}")
            preview.facts = [("Evidence", flagged.summary), ("Reason", reason)]
            label = "Yes, dismiss it"
        return _confirm(request, preview, back, label)
    try:
        if decision == "confirm":
            incident = regressions.confirm(flagged, request.user, request.POST.get("title", ""))
            messages.success(request, f"Confirmed; incident “{incident.title}” opened.")
        else:
            regressions.dismiss(flagged, request.user, reason)
            messages.success(request, "Dismissed as a false positive.")
    except regressions.NotPending as exc:
        messages.info(request, str(exc))
    return redirect(back)


@require_POST
@login_required
def incident_resolve(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_object_or_404(Incident.objects.visible_to(request.user).select_related("flag"), pk=pk)
    if not request.user.has_perm("interventions.change_incident"):
        raise PermissionDenied("Viewers cannot resolve incidents.")
    back = reverse("interventions:flag", args=[incident.flag_id])
    if "_confirmed" not in request.POST:
        from slos.confirm import Preview

        preview = Preview(f"Resolve the incident “{incident.title}”")
        preview.facts = [("Opened", f"{incident.opened_at:%Y-%m-%d %H:%M} UTC")]
        return _confirm(request, preview, back, "Yes, resolve it")
    if regressions.resolve(incident, request.user):
        messages.success(request, "Incident resolved.")
    return redirect(back)


# --- recommendations (A4.5, A4.7) ------------------------------------------------------------------


@require_POST
@login_required
def recommendation_decide(request: HttpRequest, pk: int, decision: str) -> HttpResponse:
    """Apply a recommendation (a new configuration version, after seeing before and after) or dismiss it."""
    found = get_object_or_404(Recommendation.objects.visible_to(request.user).select_related("agent"), pk=pk)
    if not request.user.has_perm("interventions.add_agentconfig"):
        raise PermissionDenied("Viewers cannot change configurations.")
    home = _home(found.agent, found.environment)
    if "_confirmed" not in request.POST:
        if decision == "apply":
            base = configs.current(found.agent, found.environment)
            values = (base or AgentConfig()).settings_dict() | dict(found.changes)
            candidate = AgentConfig(agent=found.agent, environment=found.environment, note=found.title, **values)
            preview = describe_config(candidate)
            preview.facts.append(("Why", found.rationale))
            if found.expected_effect:
                preview.facts.append(("Expected effect", found.expected_effect))
            return _confirm(request, preview, home, "Yes, apply it")
        from slos.confirm import Preview

        preview = Preview(f"Dismiss the recommendation “{found.title}”")
        return _confirm(request, preview, home, "Yes, dismiss it")
    try:
        if decision == "apply":
            made = configs.apply_recommendation(found, request.user)
            messages.success(
                request, f"Applied as configuration v{made.version}; revert it from the history if needed."
            )
        elif configs.dismiss_recommendation(found, request.user):
            messages.success(request, "Recommendation dismissed.")
    except configs.NoChange as exc:
        messages.info(request, str(exc))
    return redirect(home)


# --- load tests (A4.6) ------------------------------------------------------------------------------


@require_POST
@login_required
def schedule_load_test(request: HttpRequest, slug: str) -> HttpResponse:
    """Schedule: the form's values, a confirmation (production: an explicit acknowledgement), then queued."""
    agent = _agent(request, slug)
    environment = _environment(request)
    if not request.user.has_perm("interventions.add_loadtest"):
        raise PermissionDenied("Viewers cannot schedule load tests.")
    data = request.POST.copy()
    data["agent"] = str(agent.pk)
    data.setdefault("request_template", "{}")
    form = LoadTestForm(data, user=request.user)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: " + " ".join(str(error) for error in errors))
        return redirect(_home(agent, environment))
    candidate = form.save(commit=False)
    if "_confirmed" not in request.POST:
        label = "Yes, send this load to production" if candidate.environment == "production" else "Yes, schedule it"
        return _confirm(request, describe_load_test(candidate), _home(agent, environment), label)
    test = loadtest.schedule(candidate, request.user)
    messages.success(request, f"Load test scheduled for {test.scheduled_at:%H:%M:%S} UTC.")
    return redirect(reverse("interventions:load-test", args=[test.pk]))


@require_GET
@login_required
def load_test_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A test's page; htmx polls its progress fragment every two seconds until it has finished."""
    test = get_object_or_404(LoadTest.objects.visible_to(request.user).select_related("agent", "created_by"), pk=pk)
    now = timezone.now()
    elapsed = (now - test.started_at).total_seconds() if test.started_at and test.status == "running" else 0.0
    context = {
        "test": test,
        "home": _home(test.agent, test.environment),
        "progress_pct": min(100, round(100 * elapsed / test.duration_s)) if test.duration_s else 0,
        "live": test.status in (LoadTest.Status.SCHEDULED, LoadTest.Status.RUNNING),
        "may_act": request.user.has_perm("interventions.change_loadtest"),
        "page_title": f"Load test of {test.agent.slug} ({test.environment})",
    }
    return _live_render(request, "interventions/_load_test.html", "interventions/load_test.html", context)


@require_POST
@login_required
def load_test_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Cancel a scheduled test or stop a running one, after a confirmation."""
    test = get_object_or_404(LoadTest.objects.visible_to(request.user).select_related("agent"), pk=pk)
    if not request.user.has_perm("interventions.change_loadtest"):
        raise PermissionDenied("Viewers cannot cancel or stop load tests.")
    back = reverse("interventions:load-test", args=[test.pk])
    if "_confirmed" not in request.POST:
        from slos.confirm import Preview

        verb = "Cancel" if action == "cancel" else "Stop"
        preview = Preview(f"{verb} the load test of {test.agent.slug}")
        preview.facts = [("Status", test.get_status_display()), ("Sent so far", f"{test.sent:,}")]
        return _confirm(request, preview, back, f"Yes, {verb.lower()} it")
    done = loadtest.cancel(test, request.user) if action == "cancel" else loadtest.stop(test, request.user)
    if done:
        messages.success(request, "Cancelled: it will send nothing." if action == "cancel" else "Stopping…")
    else:
        messages.info(request, f"It is {LoadTest.objects.get(pk=test.pk).get_status_display().lower()} already.")
    return redirect(back)


@require_GET
@login_required
def environments_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The agent in development, staging and production side by side (A4.9), over the last 7 or 30 days."""
    agent = _agent(request, slug)
    days = 30 if request.GET.get("range") == "30d" else 7
    reference, columns = environments.compare(agent, request.user, timezone.now(), days)
    record_access(agent, request.user, f"environment comparison over {days} days")
    keys = [("count", "requests"), ("p50_ms", "p50 (ms)"), ("p95_ms", "p95 (ms)"), ("p99_ms", "p99 (ms)")]
    keys += [("error_rate", "error rate"), ("throughput_rps", "throughput (req/s)"), ("cache_hit_rate", "cache hits")]
    table = [
        {
            "label": label,
            "cells": [
                {
                    "value": column.figures.get(key),
                    "delta": column.deltas.get(key),
                    "gap": key in column.gaps,
                    "percent": key in ("error_rate", "cache_hit_rate"),
                    "points": key == "error_rate",
                }
                for column in columns
            ],
        }
        for key, label in keys
    ]
    context = {
        "agent": agent,
        "days": days,
        "reference": reference,
        "columns": columns,
        "table": table,
        "page_title": f"{agent.slug} across environments",
    }
    return render(request, "interventions/environments.html", context)


# --- reports (A4.8) ----------------------------------------------------------------------------------


@require_POST
@login_required
def request_report(request: HttpRequest) -> HttpResponse:
    """Export the dashboard's filters as a PDF or CSV report, written in the background."""
    from perfops.metrics.filters import FilterError, parse_filters

    params = {key: request.POST[key] for key in PARAMETERS if request.POST.get(key)}
    fmt = request.POST.get("format", Report.Format.PDF)
    if fmt not in Report.Format.values:
        messages.error(request, "Choose PDF or CSV.")
        return redirect("interventions:reports")
    try:
        filters = parse_filters(params, strict=True)
    except FilterError as exc:
        messages.error(request, f"The report's filters: {exc}")
        return redirect("interventions:reports")
    report = reports.request_report(filters, fmt, request.user)
    return redirect(reverse("interventions:report", args=[report.pk]))


@require_GET
@login_required
def report_list(request: HttpRequest) -> HttpResponse:
    context = {
        "reports": Report.objects.visible_to(request.user).select_related("created_by").defer("content")[:50],
        "page_title": "Reports",
    }
    return render(request, "interventions/reports.html", context)


@require_GET
@login_required
def report_detail(request: HttpRequest, pk: int) -> HttpResponse:
    report = get_object_or_404(Report.objects.visible_to(request.user).defer("content"), pk=pk)
    context = {"report": report, "live": report.status in (Report.Status.QUEUED, Report.Status.RUNNING)}
    context["page_title"] = report.title
    return _live_render(request, "interventions/_report.html", "interventions/report.html", context)


@require_GET
@login_required
def report_download(request: HttpRequest, pk: int) -> HttpResponse:
    report = get_object_or_404(Report.objects.visible_to(request.user), pk=pk, status=Report.Status.READY)
    content_type = "application/pdf" if report.format == Report.Format.PDF else "text/csv; charset=utf-8"
    response = HttpResponse(bytes(report.content or b""), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{report.filename}"'
    return response
