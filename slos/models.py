"""Service level objectives: what "good" means for a scope of agents, and how much bad is allowed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from perfops.access.scoping import department_ids_for
from perfops.metrics.filters import MetricFilters
from perfops.telemetry.choices import Environment
from perfops.telemetry.models import Agent, Department, Team


class SLOQuerySet(models.QuerySet["SLO"]):
    def visible_to(self, user: Any) -> SLOQuerySet:
        """SLOs of the user's departments; fleet-wide SLOs (no department) only for a superuser."""
        ids = department_ids_for(user)
        return self if ids is None else self.filter(department_id__in=ids)


class SLO(models.Model):
    """An objective for a scope (fleet, department, team or agent) in one environment over a rolling window.

    Latency: the share of requests that succeed faster than `threshold_ms` ("P95 < 500 ms" is 95% of
    requests under 500 ms). Availability: the share of requests that are not errors or timeouts.
    """

    class Scope(models.TextChoices):
        FLEET = "fleet", "Fleet"
        DEPARTMENT = "department", "Department"
        TEAM = "team", "Team"
        AGENT = "agent", "Agent"

    class Kind(models.TextChoices):
        LATENCY = "latency", "Latency"
        AVAILABILITY = "availability", "Availability"

    class Window(models.IntegerChoices):
        DAYS_7 = 7, "7 days"
        DAYS_28 = 28, "28 days"
        DAYS_30 = 30, "30 days"

    name = models.CharField(max_length=128)
    scope = models.CharField(max_length=16, choices=Scope.choices)
    # The department is set for every scope but the fleet (from the team or agent), so that scoping is one filter.
    department = models.ForeignKey(Department, on_delete=models.CASCADE, null=True, blank=True, related_name="slos")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="slos")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, null=True, blank=True, related_name="slos")
    environment = models.CharField(max_length=16, choices=Environment.choices, default=Environment.PRODUCTION)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    threshold_ms = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.001)], help_text="Latency SLOs: the good/bad line."
    )
    target = models.FloatField(
        validators=[MinValueValidator(0.5), MaxValueValidator(0.99999)], help_text="e.g. 0.95 for 95% of requests."
    )
    window_days = models.PositiveSmallIntegerField(choices=Window.choices, default=Window.DAYS_30)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SLOQuerySet.as_manager()

    class Meta:
        verbose_name = "SLO"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind="availability") | models.Q(threshold_ms__isnull=False),
                name="slo_latency_has_threshold",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.kind == self.Kind.LATENCY and self.threshold_ms is None:
            errors["threshold_ms"] = "A latency SLO needs a threshold."
        if self.kind == self.Kind.AVAILABILITY:
            self.threshold_ms = None
        needed = {self.Scope.DEPARTMENT: "department", self.Scope.TEAM: "team", self.Scope.AGENT: "agent"}
        field = needed.get(self.Scope(self.scope)) if self.scope else None
        if field and getattr(self, f"{field}_id") is None:
            errors[field] = f"A {field} SLO needs its {field}."
        for other in ("team", "agent"):
            if other != field and getattr(self, f"{other}_id") is not None:
                errors[other] = f"Only a {other} SLO names a {other}."
        if errors:
            raise ValidationError(errors)
        # The department follows from the team or the agent; the fleet has none.
        if self.scope == self.Scope.FLEET:
            self.department = None
        elif self.team is not None:
            self.department_id = self.team.department_id
        elif self.agent is not None:
            self.department_id = self.agent.department_id

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.window_days)

    @property
    def objective(self) -> str:
        """The SLO in words, e.g. "95% of requests under 500 ms over 30 days"."""
        share = f"{self.target * 100:g}%"
        if self.kind == self.Kind.LATENCY:
            return f"{share} of requests succeed under {self.threshold_ms:g} ms over {self.window_days} days"
        return f"{share} of requests succeed over {self.window_days} days"

    def filters(self, now: datetime, window: timedelta | None = None) -> MetricFilters:
        """The metrics filter set of this SLO's scope over `window` (its own window by default)."""
        return MetricFilters(
            range=None,
            start=now - (window or self.window),
            end=now,
            environment=self.environment,
            department=(
                self.department.slug
                if self.department is not None and self.scope in (self.Scope.DEPARTMENT, self.Scope.TEAM)
                else None
            ),
            team=self.team.slug if self.team else None,
            agent=self.agent.slug if self.agent else None,
        )


class NotificationChannelQuerySet(models.QuerySet["NotificationChannel"]):
    def visible_to(self, user: Any) -> NotificationChannelQuerySet:
        ids = department_ids_for(user)
        return self if ids is None else self.filter(department_id__in=ids)


class NotificationChannel(models.Model):
    """Where alert notifications go: a webhook (JSON or Slack-compatible, HMAC-signed) or an email address.

    A webhook URL must pass perfops.netguard (the admin's allowlist, public addresses only) when it
    is saved and again at every send.
    """

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        EMAIL = "email", "Email"

    class Format(models.TextChoices):
        JSON = "json", "JSON"
        SLACK = "slack", "Slack-compatible"

    name = models.CharField(max_length=128)
    department = models.ForeignKey(
        Department, on_delete=models.CASCADE, null=True, blank=True, related_name="notification_channels"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    url = models.URLField(max_length=500, blank=True)
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.JSON)
    # Signs each webhook body (HMAC-SHA256 in X-Perfops-Signature); never shown again after it is set.
    secret = models.CharField(max_length=128, blank=True)
    email_to = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = NotificationChannelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from perfops import netguard

        if self.kind == self.Kind.WEBHOOK:
            if not self.url:
                raise ValidationError({"url": "A webhook needs its URL."})
            try:
                netguard.check_url(self.url)
            except netguard.UnsafeURL as exc:
                raise ValidationError({"url": str(exc)}) from exc
        elif not self.email_to:
            raise ValidationError({"email_to": "An email channel needs an address."})


class AlertRuleQuerySet(models.QuerySet["AlertRule"]):
    def visible_to(self, user: Any) -> AlertRuleQuerySet:
        ids = department_ids_for(user)
        return self if ids is None else self.filter(slo__department_id__in=ids)


class AlertRule(models.Model):
    """A burn-rate alert of an SLO: fires while both its windows burn the budget at or above `burn_rate`.

    Created with the SLO by the Workbook's scheme (two page rules, two ticket rules), editable, and
    deleted with it. The state machine (normal, pending, firing) is advanced by `slos.alerts.evaluate`.
    """

    class Severity(models.TextChoices):
        PAGE = "page", "Page"
        TICKET = "ticket", "Ticket"

    class State(models.TextChoices):
        NORMAL = "normal", "Normal"
        PENDING = "pending", "Pending"
        FIRING = "firing", "Firing"

    slo = models.ForeignKey(SLO, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=160)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    burn_rate = models.FloatField(validators=[MinValueValidator(0.01)])
    long_window_s = models.PositiveIntegerField(validators=[MinValueValidator(60)])
    short_window_s = models.PositiveIntegerField(validators=[MinValueValidator(60)])
    # How long the condition must hold before firing, and keep failing to hold before resolving (no flapping).
    pending_s = models.PositiveIntegerField(default=0)
    keep_firing_s = models.PositiveIntegerField(default=0)
    enabled = models.BooleanField(default=True)
    channels = models.ManyToManyField(NotificationChannel, blank=True, related_name="rules")
    # While silenced the rule is still evaluated and its events recorded, but nobody is notified.
    silenced_until = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.NORMAL, editable=False)
    state_since = models.DateTimeField(null=True, blank=True, editable=False)
    # When the condition last held while firing (the keep-firing period counts from here).
    last_true_at = models.DateTimeField(null=True, blank=True, editable=False)
    episode = models.PositiveIntegerField(default=0, editable=False)
    last_value = models.FloatField(null=True, blank=True, editable=False)
    last_evaluated_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AlertRuleQuerySet.as_manager()

    class Meta:
        ordering = ["slo", "-burn_rate"]

    def __str__(self) -> str:
        return self.name


class AlertEventQuerySet(models.QuerySet["AlertEvent"]):
    def visible_to(self, user: Any) -> AlertEventQuerySet:
        ids = department_ids_for(user)
        return self if ids is None else self.filter(rule__slo__department_id__in=ids)


class AlertEvent(models.Model):
    """A state change of a rule: one per transition, whoever evaluated it and however often (dedupe_key)."""

    class Kind(models.TextChoices):
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    episode = models.PositiveIntegerField()
    at = models.DateTimeField()
    value = models.FloatField(null=True)
    dedupe_key = models.CharField(max_length=64, unique=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    objects = AlertEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["rule", "-at"], name="alertevent_rule_at_idx")]

    def __str__(self) -> str:
        return f"{self.rule} {self.kind} #{self.episode}"


class Delivery(models.Model):
    """One attempt to send one event to one channel: the log of what was sent and what came back."""

    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveSmallIntegerField()
    at = models.DateTimeField(auto_now_add=True)
    ok = models.BooleanField()
    detail = models.CharField(max_length=300)

    class Meta:
        ordering = ["-at"]
        constraints = [
            models.UniqueConstraint(fields=["event", "channel", "attempt"], name="delivery_attempt_once"),
        ]

    def __str__(self) -> str:
        return f"{self.event} -> {self.channel} #{self.attempt}: {'ok' if self.ok else self.detail}"
