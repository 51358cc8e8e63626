"""Periodic SLO work: burn-rate alert evaluation."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from slos import alerts, notify


@shared_task(time_limit=55, soft_time_limit=50)
def evaluate_alerts() -> dict[str, int]:
    """Advance every enabled alert rule (every minute under beat; idempotent, safe to run twice)."""
    return alerts.evaluate_all()


@shared_task(time_limit=55, soft_time_limit=50)
def resend_lost_notifications() -> int:
    """Send again every alert notice whose task was lost (beat, every 2 minutes); the count sent again."""
    pairs = notify.lost()
    for event_id, channel_id in pairs:
        deliver_event.delay(event_id, channel_id)
    return len(pairs)


class DeliveryFailed(Exception):
    """The channel did not take the message this time (retried with backoff)."""


@shared_task(
    bind=True,
    autoretry_for=(DeliveryFailed,),
    retry_backoff=10,
    retry_backoff_max=600,
    max_retries=notify.MAX_ATTEMPTS - 1,
    time_limit=60,
    soft_time_limit=50,
)
def deliver_event(self: Any, event_id: int, channel_id: int) -> bool:
    """Send one alert event to one channel; each attempt is a Delivery row, a success is never repeated."""
    from slos.models import AlertEvent, NotificationChannel

    event = AlertEvent.objects.select_related(
        "rule", "rule__slo", "rule__budget", "rule__department", "rule__team", "rule__agent"
    ).get(pk=event_id)
    channel = NotificationChannel.objects.get(pk=channel_id)
    if not notify.deliver(event, channel):
        raise DeliveryFailed(f"event {event_id} to channel {channel_id}")
    return True


@shared_task(
    bind=True,
    autoretry_for=(DeliveryFailed,),
    retry_backoff=10,
    retry_backoff_max=600,
    max_retries=notify.MAX_ATTEMPTS - 1,
    time_limit=60,
    soft_time_limit=50,
)
def deliver_message(self: Any, channel_id: int, key: str, subject: str, data: dict[str, Any]) -> bool:
    """Send a notice that is not an alert event (e.g. an incident opened) to one channel, like deliver_event."""
    from slos.models import NotificationChannel

    channel = NotificationChannel.objects.get(pk=channel_id)
    if not notify.send(channel, key, subject, data):
        raise DeliveryFailed(f"{key} to channel {channel_id}")
    return True
