"""The alert feed: what fired and resolved in the person's departments; acknowledge an event, silence a rule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from perfops.access.roles import can_act
from slos import openslo
from slos.models import SLO, AlertEvent, AlertRule

FEED_LENGTH = 100
SILENCE_HOURS = (1, 4, 24)


def _feed_context(request: HttpRequest) -> dict[str, object]:
    now = timezone.now()
    events = (
        AlertEvent.objects.visible_to(request.user)
        .select_related("rule", "rule__department", "rule__team", "rule__agent", "acknowledged_by")
        .order_by("-at")[:FEED_LENGTH]
    )
    firing = (
        AlertRule.objects.visible_to(request.user)
        .filter(state=AlertRule.State.FIRING)
        .select_related("department", "team", "agent")
    )
    return {
        "events": events,
        "firing": firing,
        "now": now,
        "may_act": can_act(request.user),
        "silence_hours": SILENCE_HOURS,
        "page_title": "Alerts",
    }


@require_GET
@login_required
def feed(request: HttpRequest) -> HttpResponse:
    """/alerts/: firing rules first, then the latest events; the list refreshes itself every 30 s."""
    template = "slos/_feed.html" if request.headers.get("HX-Request") else "slos/feed.html"
    return render(request, template, _feed_context(request))


@require_POST
@login_required
def acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    """Mark an event as seen by this person (once; a second acknowledgement changes nothing)."""
    if not can_act(request.user):
        raise PermissionDenied("Viewers cannot acknowledge alerts.")
    event = get_object_or_404(AlertEvent.objects.visible_to(request.user), pk=pk)
    if event.acknowledged_at is None:
        event.acknowledged_by = request.user  # type: ignore[assignment]
        event.acknowledged_at = timezone.now()
        event.save(update_fields=["acknowledged_by", "acknowledged_at"])
    return _back(request)


@require_POST
@login_required
def silence(request: HttpRequest, pk: int) -> HttpResponse:
    """Silence a rule's notifications for 1, 4 or 24 hours, or lift a silence (hours=0)."""
    if not can_act(request.user):
        raise PermissionDenied("Viewers cannot silence alerts.")
    rule = get_object_or_404(AlertRule.objects.visible_to(request.user), pk=pk)
    try:
        hours = int(request.POST.get("hours", ""))
    except ValueError:
        hours = -1
    if hours not in (0, *SILENCE_HOURS):
        return HttpResponse("hours must be 0, 1, 4 or 24.", status=400, content_type="text/plain; charset=utf-8")
    rule.silenced_until = timezone.now() + timedelta(hours=hours) if hours else None
    rule.save(update_fields=["silenced_until"])
    return _back(request)


def _back(request: HttpRequest) -> HttpResponse:
    if request.headers.get("HX-Request"):
        return render(request, "slos/_feed.html", _feed_context(request))
    return redirect("slos:feed")


@require_GET
@login_required
def openslo_export(request: HttpRequest) -> HttpResponse:
    """The person's SLOs (or ?id=... of them) as OpenSLO v1 YAML, one document per SLO."""
    chosen = SLO.objects.visible_to(request.user).select_related("department", "team", "agent")
    ids = [value for value in request.GET.getlist("id") if value.isdigit()]
    if ids:
        chosen = chosen.filter(pk__in=ids)
    response = HttpResponse(openslo.export_slos(chosen), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="perfops-slos.yaml"'
    return response


@require_http_methods(["GET", "POST"])
@login_required
def openslo_import(request: HttpRequest) -> HttpResponse:
    """Upload OpenSLO YAML: check it, show what it creates and changes, then apply after confirmation."""
    if not (request.user.has_perm("slos.add_slo") and request.user.has_perm("slos.change_slo")):
        raise PermissionDenied("Only managers import SLOs.")
    context: dict[str, Any] = {"page_title": "Import SLOs from OpenSLO YAML", "errors": [], "planned": None}
    if request.method == "POST":
        text = request.POST.get("yaml", "")
        upload = request.FILES.get("file")
        if upload is not None:
            raw = upload.read(openslo.MAX_BYTES + 1)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                context["errors"] = ["The file is not UTF-8 text."]
                text = ""
        context["yaml"] = text
        if text and not context["errors"]:
            planned, errors = openslo.parse(text, request.user)
            context["errors"] = errors
            if not errors and "_confirmed" in request.POST:
                result = openslo.apply(planned, request.user)
                messages.success(request, f"Imported {len(result.created)} new and {len(result.updated)} changed SLOs.")
                return redirect("slos:slo-list")
            context["planned"] = planned
        elif not context["errors"]:
            context["errors"] = ["Paste the YAML or choose a file."]
    return render(request, "slos/openslo_import.html", context, status=400 if context["errors"] else 200)
