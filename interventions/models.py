"""Interventions: what people do to an agent, each a row with a status, confirmed and audited.

- AgentConfig: an agent's configuration per environment, versioned and append-only (A4.5, A4.7);
  applying a change or reverting to an earlier version adds a version, so every state it was ever in
  stays readable and "the current one" is the newest version.
- ProfilingSession: an hour (at most) of full-detail traces for one agent and environment (A4.2),
  ended by a sweeper at `expires_at` and summarised in a bottleneck report.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from perfops.access.scoping import department_ids_for
from perfops.telemetry.choices import Environment
from perfops.telemetry.models import Agent


class AgentScopedQuerySet(models.QuerySet[Any]):
    def visible_to(self, user: Any) -> Any:
        """Rows of agents of the user's departments (all for a superuser)."""
        ids = department_ids_for(user)
        return self if ids is None else self.filter(agent__department_id__in=ids)


class AgentConfig(models.Model):
    """One version of an agent's configuration in one environment: model parameters and caching policy."""

    class Source(models.TextChoices):
        INITIAL = "initial", "Initial"
        MANUAL = "manual", "Changed by a person"
        RECOMMENDATION = "recommendation", "Applied recommendation"
        REVERT = "revert", "Reverted to an earlier version"
        API = "api", "Changed through the API"

    class Invalidation(models.TextChoices):
        TTL = "ttl", "When the TTL runs out"
        DEPLOY = "deploy", "On every new agent version"
        MANUAL = "manual", "Only when flushed by hand"

    # The fields that make up a configuration (compared by diffs, copied by reverts, served to agents).
    SETTINGS = (
        "model",
        "temperature",
        "max_tokens",
        "timeout_ms",
        "batch_size",
        "concurrency",
        "response_cache",
        "prompt_cache",
        "embedding_cache",
        "cache_ttl_s",
        "cache_invalidation",
    )

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="configs")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    version = models.PositiveIntegerField(editable=False)
    model = models.CharField(max_length=128, blank=True, help_text="e.g. gpt-4o-mini; empty: the agent's default.")
    temperature = models.FloatField(default=0.2, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    max_tokens = models.PositiveIntegerField(
        default=1024, validators=[MinValueValidator(1), MaxValueValidator(200_000)]
    )
    timeout_ms = models.PositiveIntegerField(
        default=30_000, validators=[MinValueValidator(100), MaxValueValidator(600_000)]
    )
    batch_size = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(1024)])
    concurrency = models.PositiveIntegerField(default=8, validators=[MinValueValidator(1), MaxValueValidator(4096)])
    response_cache = models.BooleanField(default=False)
    prompt_cache = models.BooleanField(default=False)
    embedding_cache = models.BooleanField(default=False)
    cache_ttl_s = models.PositiveIntegerField(
        default=3600, validators=[MinValueValidator(1), MaxValueValidator(30 * 86400)], help_text="Cache entry TTL."
    )
    cache_invalidation = models.CharField(max_length=8, choices=Invalidation.choices, default=Invalidation.TTL)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL, editable=False)
    restores = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        help_text="The earlier version a revert copied.",
    )
    note = models.CharField(max_length=300, blank=True, help_text="Why: shown in the history and on the charts.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AgentScopedQuerySet.as_manager()

    class Meta:
        ordering = ["agent", "environment", "-version"]
        verbose_name = "agent configuration"
        constraints = [
            models.UniqueConstraint(fields=["agent", "environment", "version"], name="agentconfig_version_once"),
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug} {self.environment} v{self.version}"

    def settings_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.SETTINGS}

    def diff(self, other: AgentConfig | None) -> list[tuple[str, Any, Any]]:
        """(setting, before, after) for each setting that differs from `other` (the earlier version)."""
        before = other.settings_dict() if other is not None else {}
        return [
            (name, before.get(name), value) for name, value in self.settings_dict().items() if before.get(name) != value
        ]


class ProfilingSessionQuerySet(AgentScopedQuerySet):
    def active(self, now: datetime | None = None) -> ProfilingSessionQuerySet:
        found = self.filter(status=ProfilingSession.Status.ACTIVE)
        return found.filter(expires_at__gt=now) if now is not None else found


class ProfilingSession(models.Model):
    """Full-detail traces for one agent and environment for up to an hour, then a bottleneck report.

    While active, the agent's config endpoint asks for 100% sampling and phase and dependency timing,
    and ingest marks the agent's traces in that environment as profiled. It ends by itself at
    `expires_at` (a beat sweeper checks every minute; ending is idempotent) or earlier when stopped.
    """

    MAX_DURATION = timedelta(hours=1)

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        ENDED = "ended", "Ended"

    class EndReason(models.TextChoices):
        EXPIRED = "expired", "Ran its duration"
        STOPPED = "stopped", "Stopped early"

    class ReportStatus(models.TextChoices):
        NONE = "", "Not yet"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="profiling_sessions")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    duration_s = models.PositiveIntegerField(validators=[MinValueValidator(60), MaxValueValidator(3600)])
    reason = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE, editable=False)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    started_at = models.DateTimeField(editable=False)
    expires_at = models.DateTimeField(editable=False)
    ended_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Null with an end: the system ended it (the sweeper).
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    end_reason = models.CharField(max_length=8, choices=EndReason.choices, blank=True, editable=False)
    report = models.JSONField(null=True, blank=True, editable=False)
    report_status = models.CharField(
        max_length=8, choices=ReportStatus.choices, default=ReportStatus.NONE, blank=True, editable=False
    )

    objects = ProfilingSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "environment"],
                condition=models.Q(status="active"),
                name="profiling_one_active_per_agent_environment",
            ),
        ]
        indexes = [models.Index(fields=["status", "expires_at"], name="profiling_status_expires_idx")]

    def __str__(self) -> str:
        return f"profiling {self.agent.slug} {self.environment} from {self.started_at:%Y-%m-%d %H:%M} UTC"

    def clean(self) -> None:
        if self.duration_s and timedelta(seconds=self.duration_s) > self.MAX_DURATION:
            raise ValidationError({"duration_s": "Profiling runs for at most one hour."})

    @property
    def window_end(self) -> datetime:
        """Where its traces end: when it ended, or will."""
        return self.ended_at or self.expires_at


class RegressionFlag(models.Model):
    """A version suspected of making an agent slower or less reliable (A4.4), with its evidence.

    Flagged by an engineer from the version benchmark chart, or by the analytics. An engineer then
    confirms it (an Incident is opened and the department's channels are told) or dismisses it as a
    false positive, with a reason. One open flag per agent, environment and version.
    """

    class Status(models.TextChoices):
        SUSPECTED = "suspected", "Suspected"
        CONFIRMED = "confirmed", "Confirmed"
        DISMISSED = "dismissed", "Dismissed"

    class Source(models.TextChoices):
        ENGINEER = "engineer", "Flagged by an engineer"
        ANALYTICS = "analytics", "Detected by the analytics"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="regression_flags")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    version = models.CharField(max_length=64)
    baseline_version = models.CharField(max_length=64, blank=True, help_text="The version it is compared with.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SUSPECTED, editable=False)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.ENGINEER, editable=False)
    summary = models.CharField(max_length=300, blank=True)
    # {"window": {...}, "candidate": {count, p50_ms, p95_ms, p99_ms, error_rate}, "baseline": {...}, "changes": {...}}
    evidence = models.JSONField(default=dict, blank=True, editable=False)
    flagged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    flagged_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    decided_at = models.DateTimeField(null=True, blank=True, editable=False)
    dismiss_reason = models.CharField(max_length=300, blank=True, editable=False)

    objects = AgentScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-flagged_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "environment", "version"],
                condition=models.Q(status__in=["suspected", "confirmed"]),
                name="regressionflag_one_open_per_version",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug} {self.version} ({self.environment}): {self.status}"


class Incident(models.Model):
    """Opened when an engineer confirms a regression: who, when, what, and when it was resolved."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    flag = models.OneToOneField(RegressionFlag, on_delete=models.CASCADE, related_name="incident")
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN, editable=False)
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    opened_at = models.DateTimeField(auto_now_add=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    resolved_at = models.DateTimeField(null=True, blank=True, editable=False)
    notes = models.TextField(blank=True)

    class QuerySet(models.QuerySet["Incident"]):
        def visible_to(self, user: Any) -> Any:
            ids = department_ids_for(user)
            return self if ids is None else self.filter(flag__agent__department_id__in=ids)

    objects = QuerySet.as_manager()

    class Meta:
        ordering = ["-opened_at"]

    def __str__(self) -> str:
        return self.title


class Recommendation(models.Model):
    """A proposed configuration change with its reason and expected effect (A4.5, A4.7).

    Written by the analytics from an agent's own evidence; a person applies it (a new configuration
    version, after a confirmation showing before and after) or dismisses it.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        APPLIED = "applied", "Applied"
        DISMISSED = "dismissed", "Dismissed"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="recommendations")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    # What the analytics proposed ("prompt_cache", "timeout", "concurrency"); empty for one written by hand.
    kind = models.CharField(max_length=16, blank=True, editable=False)
    title = models.CharField(max_length=200)
    rationale = models.TextField(help_text="The evidence, with its numbers.")
    expected_effect = models.CharField(max_length=600, blank=True)
    # {"setting": value, ...}: only AgentConfig.SETTINGS
    changes = models.JSONField()
    evidence = models.JSONField(default=dict, blank=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    decided_at = models.DateTimeField(null=True, blank=True, editable=False)
    applied_config = models.ForeignKey(
        AgentConfig, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )

    objects = AgentScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.agent.slug}: {self.title}"

    def clean(self) -> None:
        if not isinstance(self.changes, dict) or not self.changes:
            raise ValidationError({"changes": "Name at least one setting to change."})
        unknown = sorted(set(self.changes) - set(AgentConfig.SETTINGS))
        if unknown:
            raise ValidationError({"changes": f"Unknown setting(s): {', '.join(unknown)}."})


class LoadTest(models.Model):
    """A scheduled open-model load test of an agent's endpoint (A4.6), its live progress and its results.

    Requests are sent at a constant arrival rate (after an optional linear ramp), whatever the target
    answers; each latency is measured from the request's intended send time, so a slow target cannot
    hide its queueing (no coordinated omission). At most `concurrency` requests are in flight.
    """

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        STOPPED = "stopped", "Stopped early"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="load_tests")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    target_url = models.URLField(max_length=500, help_text="The agent's endpoint; its host must be on the allowlist.")
    rate_rps = models.FloatField(validators=[MinValueValidator(0.1)], help_text="Arrivals per second.")
    ramp_s = models.PositiveIntegerField(default=0, help_text="Seconds to ramp up linearly to the rate.")
    duration_s = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    concurrency = models.PositiveIntegerField(
        default=32, validators=[MinValueValidator(1), MaxValueValidator(512)], help_text="At most this many in flight."
    )
    timeout_s = models.FloatField(default=30.0, validators=[MinValueValidator(0.1), MaxValueValidator(300.0)])
    request_template = models.JSONField(default=dict, blank=True, help_text="The JSON body sent with each request.")
    scheduled_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SCHEDULED, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    stop_requested = models.BooleanField(default=False, editable=False)
    # Live progress, written about once a second while it runs.
    sent = models.PositiveIntegerField(default=0, editable=False)
    completed = models.PositiveIntegerField(default=0, editable=False)
    failures = models.PositiveIntegerField(default=0, editable=False)
    results = models.JSONField(null=True, blank=True, editable=False)
    detail = models.CharField(max_length=300, blank=True, editable=False)

    objects = AgentScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-scheduled_at"]
        indexes = [models.Index(fields=["status", "scheduled_at"], name="loadtest_status_when_idx")]

    def __str__(self) -> str:
        return f"load test of {self.agent.slug} ({self.environment}) at {self.scheduled_at:%Y-%m-%d %H:%M} UTC"

    def clean(self) -> None:
        from perfops import netguard

        limits = settings.PERFOPS
        errors: dict[str, str] = {}
        if self.duration_s and self.duration_s > limits["LOADTEST_MAX_DURATION_S"]:
            errors["duration_s"] = (
                f"At most {limits['LOADTEST_MAX_DURATION_S']} seconds (PERFOPS_LOADTEST_MAX_DURATION_S)."
            )
        if self.rate_rps and self.rate_rps > limits["LOADTEST_MAX_RATE"]:
            errors["rate_rps"] = f"At most {limits['LOADTEST_MAX_RATE']} requests/s (PERFOPS_LOADTEST_MAX_RATE)."
        if self.ramp_s and self.duration_s and self.ramp_s > self.duration_s:
            errors["ramp_s"] = "The ramp cannot be longer than the test."
        if self.target_url:
            try:
                netguard.check_url(self.target_url)
            except netguard.UnsafeURL as exc:
                errors["target_url"] = str(exc)
        if not isinstance(self.request_template, dict):
            errors["request_template"] = "Must be a JSON object."
        if errors:
            raise ValidationError(errors)

    @property
    def expected_requests(self) -> int:
        """Arrivals the schedule holds: the ramp at half the rate on average, then the full rate."""
        ramp = min(self.ramp_s, self.duration_s)
        return int(self.rate_rps * (ramp / 2 + (self.duration_s - ramp)))

    @property
    def ends_at(self) -> datetime:
        return (self.started_at or self.scheduled_at) + timedelta(seconds=self.duration_s)


class ReportQuerySet(models.QuerySet["Report"]):
    def visible_to(self, user: Any) -> ReportQuerySet:
        """A report holds what its creator could see: it is theirs (and a superuser's) only."""
        if getattr(user, "is_superuser", False):
            return self
        return self.filter(created_by=user) if getattr(user, "is_authenticated", False) else self.none()


class Report(models.Model):
    """A performance report of a filter set (A4.8), generated in the background as PDF or CSV."""

    class Format(models.TextChoices):
        PDF = "pdf", "PDF"
        CSV = "csv", "CSV"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Being written"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    format = models.CharField(max_length=4, choices=Format.choices)
    # The dashboard's filter parameters (normalised), e.g. {"range": "7d", "department": "payments"}.
    filters = models.JSONField(default=dict, blank=True)
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED, editable=False)
    progress = models.PositiveSmallIntegerField(default=0, editable=False)
    step = models.CharField(max_length=120, blank=True, editable=False)
    detail = models.CharField(max_length=300, blank=True, editable=False)
    content = models.BinaryField(null=True, blank=True, editable=False)
    size = models.PositiveIntegerField(default=0, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ReportQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.title} ({self.format})"

    @property
    def filename(self) -> str:
        return f"perfops-report-{self.pk}-{self.created_at:%Y%m%dT%H%MZ}.{self.format}"


class VersionCheck(models.Model):
    """The analytics' verdict on a new version against the one before it (pass, fail, insufficient).

    One per agent, environment and version: "insufficient" is re-checked as requests arrive, a final
    verdict is kept, so a dismissed flag is not raised again by the next run.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="version_checks")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    version = models.CharField(max_length=64)
    baseline_version = models.CharField(max_length=64, blank=True)
    verdict = models.CharField(max_length=12)
    evidence = models.JSONField(default=dict)
    checked_at = models.DateTimeField()

    objects = AgentScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-checked_at"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "environment", "version"], name="versioncheck_once"),
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug} {self.version} ({self.environment}): {self.verdict}"
