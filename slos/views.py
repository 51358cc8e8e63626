"""The alert feed: what fired and resolved in the person's departments; acknowledge an event, silence a rule."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from perfops.access.roles import can_act
from slos.models import AlertEvent, AlertRule

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
