"""Alert notifications: signed webhooks to allowed hosts only, every attempt logged, never sent twice."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from celery.exceptions import Retry
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone

from perfops.access.models import AllowedHost
from slos import alerts, notify
from slos.models import AlertEvent, Delivery, NotificationChannel
from slos.tasks import deliver_event


class Receiver:
    """A webhook receiver on 127.0.0.1 answering with the given statuses in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                self.send_response(statuses[min(len(outer.requests), len(statuses)) - 1])
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory(db):
    made: list[Receiver] = []
    AllowedHost.objects.create(host="127.0.0.1", allow_private=True)

    def make(statuses: list[int]) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def event(slo) -> AlertEvent:
    rule = slo.alert_rules.get(threshold=14.4)
    return AlertEvent.objects.create(
        rule=rule,
        kind="firing",
        episode=1,
        at=timezone.now(),
        value=20.5,
        dedupe_key=f"rule:{rule.pk}:episode:1:firing",
    )


def channel(url: str, **fields) -> NotificationChannel:
    made = NotificationChannel(name="ops hook", kind="webhook", url=url, secret="s3cret", **fields)
    made.full_clean()
    made.save()
    return made


def test_a_signed_webhook_reaches_the_receiver_and_its_signature_verifies(event, receiver_factory):
    receiver = receiver_factory([204])
    assert notify.deliver(event, channel(receiver.url))
    ((headers, body),) = receiver.requests
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Perfops-Signature"], expected)
    sent = json.loads(body)
    assert (sent["event"], sent["severity"], sent["value"]) == ("firing", "page", 20.5)
    assert Delivery.objects.get().detail == "HTTP 204"


def test_the_slack_format_sends_one_line_of_text(event, receiver_factory):
    receiver = receiver_factory([200])
    notify.deliver(event, channel(receiver.url, format="slack"))
    text = json.loads(receiver.requests[0][1])["text"]
    assert text.startswith("[page] FIRING: pay-bot availability: page at 14.4x over 1 h (20.5x; ")
    assert "burn rate at or above 14.4x over 1 h and 5 min" in text


def test_a_failed_delivery_is_retried_logged_and_a_success_is_never_repeated(event, receiver_factory):
    receiver = receiver_factory([500, 502, 200])
    hook = channel(receiver.url)
    # The task asks Celery for a retry (with backoff) after each failure; a worker runs it again.
    for _ in range(2):
        with pytest.raises(Retry):
            deliver_event.apply(args=(event.pk, hook.pk))
    assert deliver_event.apply(args=(event.pk, hook.pk)).get() is True
    assert list(Delivery.objects.order_by("attempt").values_list("attempt", "ok", "detail")) == [
        (1, False, "HTTP 500"),
        (2, False, "HTTP 502"),
        (3, True, "HTTP 200"),
    ]
    deliver_event.apply(args=(event.pk, hook.pk))  # a duplicate task after the success
    assert len(receiver.requests) == 3


def test_a_url_that_is_no_longer_allowed_is_refused_at_send_and_gives_up(event, receiver_factory):
    receiver = receiver_factory([200])
    hook = channel(receiver.url)
    AllowedHost.objects.all().delete()
    assert deliver_event.max_retries == notify.MAX_ATTEMPTS - 1
    for _ in range(notify.MAX_ATTEMPTS):
        with pytest.raises(Retry):
            deliver_event.apply(args=(event.pk, hook.pk))
    assert Delivery.objects.count() == notify.MAX_ATTEMPTS
    assert Delivery.objects.order_by("attempt")[0].detail.startswith(
        "refused: The host '127.0.0.1' is not on the allowlist"
    )
    assert receiver.requests == []


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://evil.example.com/", "http://10.0.0.5/hook"]
)
def test_forbidden_urls_are_refused_when_the_channel_is_saved(db, url):
    AllowedHost.objects.create(host="169.254.169.254")
    AllowedHost.objects.create(host="10.0.0.5")
    with pytest.raises(ValidationError):
        channel(url)


def test_an_email_channel_sends_the_alert(event):
    mailbox = NotificationChannel.objects.create(name="oncall", kind="email", email_to="oncall@example.com")
    assert notify.deliver(event, mailbox)
    assert mail.outbox[0].subject.startswith("[page] FIRING")
    assert mail.outbox[0].to == ["oncall@example.com"]


def test_each_transition_notifies_each_channel_once(
    event, receiver_factory, superuser, monkeypatch, django_capture_on_commit_callbacks
):
    receiver = receiver_factory([200])
    rule = event.rule
    event.delete()
    rule.channels.add(channel(receiver.url))
    values = iter([20.0, 20.0, 1.0, 1.0])
    monkeypatch.setattr(alerts, "value_of", lambda *args: next(values))
    now = timezone.now()
    for minute in range(4):
        with django_capture_on_commit_callbacks(execute=True):
            alerts.evaluate(rule, superuser, now + timedelta(minutes=minute))
    kinds = [json.loads(body)["event"] for _, body in receiver.requests]
    assert kinds == ["firing", "resolved"]


def test_a_notice_whose_task_was_lost_is_sent_again_once_and_tried_ones_are_left_to_their_retries(
    event, receiver_factory
):
    receiver = receiver_factory([200])
    lost_hook, tried_hook = channel(receiver.url), channel(receiver.url + "?b")
    event.rule.channels.add(lost_hook, tried_hook)
    Delivery.objects.create(
        event=event, key=event.dedupe_key, channel=tried_hook, attempt=1, ok=False, detail="HTTP 502"
    )
    # Fresh events may still be in the queue: nothing is sent again before LOST_AFTER.
    assert notify.lost(event.at + notify.LOST_AFTER / 2) == []
    later = event.at + notify.LOST_AFTER + timedelta(seconds=1)
    assert notify.lost(later) == [(event.pk, lost_hook.pk)]
    # The sweep (beat) enqueues the send; run here as the worker would.
    for event_id, channel_id in notify.lost(later):
        deliver_event.apply(args=(event_id, channel_id))
    assert len(receiver.requests) == 1
    assert notify.lost(later) == [], "a tried channel is never swept again"
    # Silenced rules and events older than a day are not the sweep's.
    assert notify.lost(event.at + notify.LOST_LOOKBACK + timedelta(minutes=1)) == []
    Delivery.objects.filter(channel=lost_hook).delete()
    event.rule.silenced_until = event.at + timedelta(hours=1)
    event.rule.save(update_fields=["silenced_until"])
    assert notify.lost(later) == []


def test_the_lost_notification_sweep_runs_on_the_beat_schedule():
    from django.conf import settings

    from slos.tasks import resend_lost_notifications

    entry = settings.CELERY_BEAT_SCHEDULE["resend-lost-notifications"]
    assert entry["task"] == resend_lost_notifications.name
    assert entry["schedule"] == 120.0, "two sweeps fit in LOST_AFTER: a lost notice waits at most 7 minutes"
    assert notify.LOST_AFTER.total_seconds() == 300
