"""Pages of SLOs, alert rules and performance budgets: lists, detail, and a confirmed create / change / delete.

Every change goes form -> confirmation (what it means on today's data, `slos.confirm`) -> save, and
a delete shows what goes with it before it happens. Permissions are the admin's model permissions
(managers: SLOs and budgets; engineers and managers: alert rules), and every object outside the
person's departments answers 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from perfops.telemetry.models import Agent, Department, Team
from slos import budgets, compliance, confirm
from slos.forms import AlertRuleForm, PerformanceBudgetForm, ScopedForm, SLOForm
from slos.models import SLO, AlertEvent, AlertRule, PerformanceBudget, Scope

LIST_LIMIT = 200


@dataclass(frozen=True)
class Kind:
    """One configurable thing: its model, form, words and pages."""

    model: type[models.Model]
    form: type[ScopedForm]
    noun: str
    list_url: str
    detail_url: str

    @property
    def title(self) -> str:
        """The noun at the start of a sentence: "SLO", "Alert rule", "Performance budget"."""
        return self.noun[:1].upper() + self.noun[1:]

    @property
    def codename(self) -> str:
        return self.model._meta.model_name or ""

    def may(self, user: Any, action: str) -> bool:
        return bool(user.has_perm(f"slos.{action}_{self.codename}"))

    def visible(self, user: Any) -> Any:
        return self.model._default_manager.visible_to(user)  # type: ignore[attr-defined]


KINDS = {
    "slo": Kind(SLO, SLOForm, "SLO", "slos:slo-list", "slos:slo-detail"),
    "rule": Kind(AlertRule, AlertRuleForm, "alert rule", "slos:rule-list", "slos:rule-detail"),
    "budget": Kind(
        PerformanceBudget, PerformanceBudgetForm, "performance budget", "slos:budget-list", "slos:budget-detail"
    ),
}


def _scope_initial(request: HttpRequest) -> dict[str, Any]:
    """A new object's scope from the page it was asked from (?agent=, ?team=, ?department=, ?environment=)."""
    initial: dict[str, Any] = {}
    user = request.user
    for key, model in (("agent", Agent), ("team", Team), ("department", Department)):
        slug = request.GET.get(key)
        if slug:
            found = model._default_manager.visible_to(user).filter(slug=slug).first()
            if found is not None:
                initial.setdefault("scope", key)
                initial[key] = found.pk
    if not initial:
        initial["scope"] = Scope.DEPARTMENT
    environment = request.GET.get("environment")
    if environment and environment != "all":
        initial["environment"] = environment
    for key in (
        "metric",
        "quantile",
        "utilization",
        "comparison",
        "threshold",
        "window_s",
        "severity",
        "kind",
        "threshold_ms",
    ):
        if request.GET.get(key):
            initial[key] = request.GET[key]
    for key in AlertRule.FILTER_KEYS:
        if request.GET.get(key):
            initial[f"filter_{key}"] = request.GET[key]
    if initial.get("scope") == "agent" and request.GET.get("kind") is None:
        initial.setdefault("kind", SLO.Kind.LATENCY)
    return initial


@require_http_methods(["GET", "POST"])
@login_required
def edit(request: HttpRequest, kind: str, pk: int | None = None) -> HttpResponse:
    """Create (no pk) or change one object: form, then confirmation, then save."""
    spec = KINDS[kind]
    instance = get_object_or_404(spec.visible(request.user), pk=pk) if pk else None
    if not spec.may(request.user, "change" if instance else "add"):
        raise PermissionDenied(f"You may not {'change' if instance else 'create'} {spec.noun}s.")
    if request.method == "GET":
        form = spec.form(instance=instance, user=request.user, initial=None if instance else _scope_initial(request))
        return _render_form(request, spec, form, instance)
    form = spec.form(request.POST, instance=instance, user=request.user)
    if not form.is_valid():
        return _render_form(request, spec, form, instance, status=400)
    candidate = form.save(commit=False)
    if "_confirmed" not in request.POST:
        preview = confirm.describe(candidate, request.user, timezone.now())
        context = {
            "spec": spec,
            "preview": preview,
            "change": instance is not None,
            "post_items": [
                (key, value) for key, values in request.POST.lists() if key != "csrfmiddlewaretoken" for value in values
            ],
            "page_title": f"Confirm: {preview.title}",
            "cancel_url": reverse(spec.list_url),
            "confirm_label": "Yes, save the changes" if instance is not None else "Yes, create it",
        }
        return render(request, "slos/confirm.html", context)
    with transaction.atomic():
        if instance is None and hasattr(candidate, "created_by_id"):
            candidate.created_by = request.user
        candidate.save()
        form.save_m2m()
    messages.success(request, f"{spec.title} {candidate} {'saved' if instance else 'created'}.")
    return redirect(spec.detail_url, pk=candidate.pk)


def _render_form(request: HttpRequest, spec: Kind, form: ScopedForm, instance: Any, status: int = 200) -> HttpResponse:
    title = f"Change {spec.noun} {instance}" if instance else f"New {spec.noun}"
    return render(
        request,
        "slos/edit.html",
        {"spec": spec, "form": form, "instance": instance, "page_title": title},
        status=status,
    )


@require_http_methods(["GET", "POST"])
@login_required
def delete(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    """Delete after a confirmation that lists what goes with it (an SLO's and a budget's rules)."""
    spec = KINDS[kind]
    instance = get_object_or_404(spec.visible(request.user), pk=pk)
    if not spec.may(request.user, "delete"):
        raise PermissionDenied(f"You may not delete {spec.noun}s.")
    rules = list(instance.alert_rules.all()) if hasattr(instance, "alert_rules") else []
    if request.method == "GET":
        context = {"spec": spec, "instance": instance, "rules": rules, "page_title": f"Delete {spec.noun} {instance}"}
        return render(request, "slos/delete.html", context)
    name = str(instance)
    instance.delete()
    messages.success(request, f"{spec.title} {name} deleted" + (f" with {len(rules)} rules." if rules else "."))
    return redirect(spec.list_url)


# --- SLOs -----------------------------------------------------------------------------------------


@require_GET
@login_required
def slo_list(request: HttpRequest) -> HttpResponse:
    """Every SLO of the person's departments with its budget now: the error-budget status board."""
    now = timezone.now()
    slos = SLO.objects.visible_to(request.user).select_related("department", "team", "agent")[:LIST_LIMIT]
    firing = dict(
        AlertRule.objects.visible_to(request.user)
        .filter(state=AlertRule.State.FIRING, slo__isnull=False)
        .values("slo")
        .annotate(n=models.Count("pk"))
        .values_list("slo", "n")
    )
    rows = [
        {
            "slo": slo,
            "report": compliance.report(slo, request.user, now, with_rules=False),
            "firing": firing.get(slo.pk, 0),
        }
        for slo in slos
    ]
    rows.sort(key=lambda row: (row["report"].budget.remaining is None, row["report"].budget.remaining or 0))
    context = {"rows": rows, "may_add": KINDS["slo"].may(request.user, "add"), "page_title": "SLOs"}
    return render(request, "slos/slo_list.html", context)


# The status board reads each SLO's budget at most once a minute: 200 SLOs cost about 1.6 s cold.
REPORT_TTL_S = 60


def _report(slo: SLO, user: Any, now: Any) -> compliance.Report:
    """The SLO's budget for the list, shared for a minute (it depends on the SLO, not on who asks:
    whoever may see an SLO may see every agent of its scope)."""
    key = f"slos:report:{slo.pk}:{slo.updated_at.timestamp()}"
    found = cache.get(key)
    if found is None:
        found = compliance.report(slo, user, now, with_rules=False)
        cache.set(key, found, REPORT_TTL_S)
    return found


@require_GET
@login_required
def slo_detail(request: HttpRequest, pk: int) -> HttpResponse:
    slo = get_object_or_404(SLO.objects.visible_to(request.user).select_related("department", "team", "agent"), pk=pk)
    now = timezone.now()
    context = {
        "slo": slo,
        "preview": confirm.describe_slo(slo, request.user, now, saved=True),
        "rules": slo.alert_rules.all(),
        "events": AlertEvent.objects.filter(rule__slo=slo).select_related("rule")[:20],
        "dashboard": _dashboard_link(slo),
        "may_change": KINDS["slo"].may(request.user, "change"),
        "may_delete": KINDS["slo"].may(request.user, "delete"),
        "page_title": f"SLO {slo.name}",
    }
    return render(request, "slos/slo_detail.html", context)


def _dashboard_link(obj: Any) -> str:
    """The dashboard filtered to an object's scope (its agent's page for an agent)."""
    params = {"environment": obj.environment}
    if obj.scope == Scope.AGENT:
        return reverse("dashboard:agent", args=[obj.agent.slug]) + f"?environment={obj.environment}"
    if obj.scope == Scope.TEAM:
        params |= {"department": obj.team.department.slug, "team": obj.team.slug}
    elif obj.scope == Scope.DEPARTMENT:
        params["department"] = obj.department.slug
    return reverse("dashboard:performance") + "?" + "&".join(f"{k}={v}" for k, v in params.items())


# --- alert rules ----------------------------------------------------------------------------------


@require_GET
@login_required
def rule_list(request: HttpRequest) -> HttpResponse:
    rules = (
        AlertRule.objects.visible_to(request.user)
        .select_related("department", "team", "agent", "slo", "budget")
        .order_by("state", "name")[:LIST_LIMIT]
    )
    order = {AlertRule.State.FIRING: 0, AlertRule.State.PENDING: 1, AlertRule.State.NORMAL: 2}
    context = {
        "rules": sorted(rules, key=lambda rule: (order[AlertRule.State(rule.state)], rule.name)),
        "may_add": KINDS["rule"].may(request.user, "add"),
        "page_title": "Alert rules",
    }
    return render(request, "slos/rule_list.html", context)


@require_GET
@login_required
def rule_detail(request: HttpRequest, pk: int) -> HttpResponse:
    rule = get_object_or_404(
        AlertRule.objects.visible_to(request.user).select_related("department", "team", "agent", "slo", "budget"),
        pk=pk,
    )
    context = {
        "rule": rule,
        "preview": confirm.describe_rule(rule, request.user, timezone.now(), saved=True),
        "events": rule.events.all()[:50],
        "channels": rule.channels.all(),
        "dashboard": _dashboard_link(rule),
        "may_change": KINDS["rule"].may(request.user, "change"),
        "may_delete": KINDS["rule"].may(request.user, "delete") and rule.owner is None,
        "now": timezone.now(),
        "page_title": f"Alert rule {rule.name}",
    }
    return render(request, "slos/rule_detail.html", context)


# --- performance budgets --------------------------------------------------------------------------


@require_GET
@login_required
def budget_list(request: HttpRequest) -> HttpResponse:
    """The team view of budgets (A4.10): each budget's use now, narrowed by ?department= or ?team=."""
    found = PerformanceBudget.objects.visible_to(request.user).select_related("department", "team")
    team, department = request.GET.get("team"), request.GET.get("department")
    if team:
        found = found.filter(team__slug=team)
    elif department:
        found = found.filter(department__slug=department)
    now = timezone.now()
    rows = [{"budget": b, "status": budgets.status(b, request.user, now)} for b in found[:LIST_LIMIT]]
    context = {
        "rows": rows,
        "team": team,
        "department": department,
        "may_add": KINDS["budget"].may(request.user, "add"),
        "page_title": "Performance budgets"
        + (f" of team {team}" if team else f" of {department}" if department else ""),
    }
    return render(request, "slos/budget_list.html", context)


@require_GET
@login_required
def budget_detail(request: HttpRequest, pk: int) -> HttpResponse:
    budget = get_object_or_404(
        PerformanceBudget.objects.visible_to(request.user).select_related("department", "team"), pk=pk
    )
    now = timezone.now()
    status = budgets.status(budget, request.user, now)
    history = budgets.history(budget, request.user, now)
    context = {
        "budget": budget,
        "status": status,
        "history_figure": _history_figure(budget, history),
        "rules": budget.alert_rules.all(),
        "dashboard": _dashboard_link(budget),
        "may_change": KINDS["budget"].may(request.user, "change"),
        "may_delete": KINDS["budget"].may(request.user, "delete"),
        "page_title": f"Performance budget {budget.name}",
    }
    return render(request, "slos/budget_detail.html", context)


def _history_figure(budget: PerformanceBudget, history: list[dict[str, Any]]) -> dict[str, Any] | None:
    from perfops.dashboard import figures as fig

    if not any(point["consumed"] is not None for point in history):
        return None
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "budget used",
            "x": [point["t"] for point in history],
            "y": [None if point["consumed"] is None else round(point["consumed"] * 100, 2) for point in history],
            "hovertemplate": "%{y:.1f}% of the budget<extra></extra>",
        }
    ]
    lines = [(100.0, "budget", fig.FAILED), (budget.warn_at * 100, "close", fig.SLO_COLOURS["yellow"])]
    shapes = [
        {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y, "line": {"dash": "dot", "color": colour}}
        for y, _, colour in lines
    ]
    layout = fig.layout(y_title="share of the budget (%) per day", x_title="day (UTC)")
    layout["shapes"] = shapes
    return fig.figure(data, layout)
