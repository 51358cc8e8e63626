"""Alert notifications: one message per event and channel, signed, retried with backoff, every attempt logged."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F
from django.utils import timezone

from perfops import netguard
from slos.models import AlertEvent, Delivery, NotificationChannel, format_value

SIGNATURE_HEADER = "X-Perfops-Signature"
MAX_ATTEMPTS = 5
# A send task writes its first Delivery row within a minute (its time limit); an event with none after this
# long lost its task: a worker killed mid-send (Redis would redeliver only after its visibility timeout, an
# hour) or a process that died between the event's commit and the enqueue.
LOST_AFTER = timedelta(minutes=5)
LOST_LOOKBACK = timedelta(days=1)


def payload(event: AlertEvent) -> dict[str, Any]:
    """The JSON body of a webhook: what fired, on what, its value against the threshold."""
    rule = event.rule
    owner = rule.owner
    return {
        "event": event.kind,
        "dedupe_key": event.dedupe_key,
        "at": event.at.isoformat(),
        "severity": rule.severity,
        "rule": rule.name,
        "metric": rule.metric,
        "condition": rule.condition,
        "scope": rule.scope_label,
        "environment": rule.environment,
        "filters": rule.filters,
        "slo": rule.slo.name if rule.slo else None,
        "budget": rule.budget.name if rule.budget else None,
        "objective": owner.objective if owner else None,
        "value": None if event.value is None else round(event.value, 6),
        "value_text": format_value(rule.metric, event.value),
        "threshold": rule.threshold,
    }


def text(event: AlertEvent) -> str:
    """One line for Slack and email subjects."""
    data = payload(event)
    verb = "FIRING" if event.kind == AlertEvent.Kind.FIRING else "resolved"
    return f"[{data['severity']}] {verb}: {data['rule']} ({data['value_text']}; {data['condition']}; {data['scope']})"


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex>` of the body: receivers recompute it with the shared secret to trust the message."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(event: AlertEvent, channel: NotificationChannel) -> bool:
    """Send an alert event to a channel (one attempt, logged); True when the channel took it (or already had)."""
    data = payload(event)
    return send(channel, event.dedupe_key, text(event), data, event=event)


def send(
    channel: NotificationChannel, key: str, subject: str, data: dict[str, Any], *, event: AlertEvent | None = None
) -> bool:
    """One attempt to send message `key` to a channel, logged as a Delivery row; never twice after a success.

    Webhooks get `data` as JSON (or `{"text": subject}` in the Slack format), signed with the
    channel's secret; email gets the subject and the data as its body.
    """
    if Delivery.objects.filter(key=key, channel=channel, ok=True).exists():
        return True  # a retried task after a success: nothing to send twice
    attempt = Delivery.objects.filter(key=key, channel=channel).count() + 1
    try:
        if channel.kind == NotificationChannel.Kind.WEBHOOK:
            sent: Any = {"text": subject} if channel.format == NotificationChannel.Format.SLACK else data
            body = json.dumps(sent).encode()
            headers = {"Content-Type": "application/json", "User-Agent": "perfops-alerts"}
            if channel.secret:
                headers[SIGNATURE_HEADER] = signature(channel.secret, body)
            reply = netguard.send(channel.url, body, headers)
            ok, detail = 200 <= reply.status < 300, f"HTTP {reply.status}"
        else:
            send_mail(subject, json.dumps(data, indent=2), settings.DEFAULT_FROM_EMAIL, [channel.email_to])
            ok, detail = True, "sent"
    except netguard.UnsafeURL as exc:
        ok, detail = False, f"refused: {exc}"[:300]
    except OSError as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
    Delivery.objects.create(
        event=event, key=key, subject=subject[:300], channel=channel, attempt=attempt, ok=ok, detail=detail
    )
    return ok


def lost(now: datetime | None = None) -> list[tuple[int, int]]:
    """(event id, channel id) of alert events of the last day with no delivery attempt at all to a channel.

    A channel that was tried, successfully or not, is the retry logic's; one never tried is lost. Events of
    a rule silenced at the time were never meant to be sent.
    """
    now = now or timezone.now()
    events = list(
        AlertEvent.objects.filter(at__gte=now - LOST_LOOKBACK, at__lte=now - LOST_AFTER)
        .exclude(rule__silenced_until__gt=F("at"))
        .prefetch_related("rule__channels")
    )
    tried = set(
        Delivery.objects.filter(key__in=[event.dedupe_key for event in events]).values_list("key", "channel_id")
    )
    return [
        (event.pk, channel.pk)
        for event in events
        for channel in event.rule.channels.all()
        if (event.dedupe_key, channel.pk) not in tried
    ]
