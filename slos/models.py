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

# Capacity rules: the forecast is fitted on 28 days of hourly throughput and looks 30 days ahead.
CAPACITY_HISTORY_S = 28 * 86400
CAPACITY_REACH_DAYS = 30


class ScopedQuerySet(models.QuerySet[Any]):
    def visible_to(self, user: Any) -> Any:
        """Rows of the user's departments; fleet-wide rows (no department) only for a superuser."""
        ids = department_ids_for(user)
        return self if ids is None else self.filter(department_id__in=ids)


class Scope(models.TextChoices):
    FLEET = "fleet", "Fleet"
    DEPARTMENT = "department", "Department"
    TEAM = "team", "Team"
    AGENT = "agent", "Agent"


class Scoped(models.Model):
    """What a configuration row covers: the fleet, a department, a team or an agent, in one environment.

    The department is set for every scope but the fleet (from the team or agent), so that department
    scoping of lists, admin and API is one filter on `department_id`.
    """

    Scope = Scope

    scope = models.CharField(max_length=16, choices=Scope.choices)
    department = models.ForeignKey(
        Department, on_delete=models.CASCADE, null=True, blank=True, related_name="%(class)ss"
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="%(class)ss")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, null=True, blank=True, related_name="%(class)ss")
    environment = models.CharField(max_length=16, choices=Environment.choices, default=Environment.PRODUCTION)

    class Meta:
        abstract = True

    def scope_errors(self, allowed: tuple[str, ...] = tuple(Scope.values)) -> dict[str, str]:
        """What is wrong with the scope fields; also derives the department from a team or agent."""
        errors: dict[str, str] = {}
        if self.scope not in allowed:
            names = ", ".join(Scope(value).label.lower() for value in allowed)
            return {"scope": f"Must be one of: {names}."}
        needed = {Scope.DEPARTMENT: "department", Scope.TEAM: "team", Scope.AGENT: "agent"}
        field = needed.get(Scope(self.scope))
        if field and getattr(self, f"{field}_id") is None:
            errors[field] = f"A {field} scope needs its {field}."
        for other in ("team", "agent"):
            if other != field and getattr(self, f"{other}_id") is not None:
                errors[other] = f"Only a {other} scope names a {other}."
        if errors:
            return errors
        self.derive_department()
        return errors

    def derive_department(self) -> None:
        if self.scope == Scope.FLEET:
            self.department = None
        elif self.team is not None:
            self.department_id = self.team.department_id
        elif self.agent is not None:
            self.department_id = self.agent.department_id

    @property
    def scope_label(self) -> str:
        """e.g. "agent pay-bot (production)" or "fleet (staging)"."""
        target = {Scope.DEPARTMENT: self.department, Scope.TEAM: self.team, Scope.AGENT: self.agent}.get(
            Scope(self.scope)
        )
        name = f"{self.scope} {getattr(target, 'slug', '')}".strip()
        return f"{name} ({self.environment})"

    def scope_filters(self, start: datetime, end: datetime, **extra: Any) -> MetricFilters:
        """The metrics filter set of this scope over [start, end), with extra filters (version, intent, ...)."""
        return MetricFilters(
            range=None,
            start=start,
            end=end,
            environment=self.environment,
            department=(
                self.department.slug
                if self.department is not None and self.scope in (Scope.DEPARTMENT, Scope.TEAM)
                else None
            ),
            team=self.team.slug if self.team else None,
            agent=self.agent.slug if self.agent else None,
            **extra,
        )


class SLO(Scoped):
    """An objective for a scope (fleet, department, team or agent) in one environment over a rolling window.

    Latency: the share of requests that succeed faster than `threshold_ms` ("P95 < 500 ms" is 95% of
    requests under 500 ms). Availability: the share of requests that are not errors or timeouts.
    """

    class Kind(models.TextChoices):
        LATENCY = "latency", "Latency"
        AVAILABILITY = "availability", "Availability"

    class Window(models.IntegerChoices):
        DAYS_7 = 7, "7 days"
        DAYS_28 = 28, "28 days"
        DAYS_30 = 30, "30 days"

    name = models.CharField(max_length=128)
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

    objects = ScopedQuerySet.as_manager()

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
        errors = self.scope_errors() if self.scope else {}
        if self.kind == self.Kind.LATENCY and self.threshold_ms is None:
            errors["threshold_ms"] = "A latency SLO needs a threshold."
        if self.kind == self.Kind.AVAILABILITY:
            self.threshold_ms = None
        if errors:
            raise ValidationError(errors)

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
        return self.scope_filters(now - (window or self.window), now)


class PerformanceBudget(Scoped):
    """A latency budget for a department or team (A4.10): e.g. average P95 across its agents < 600 ms.

    Consumption is the aggregate percentile over the budget's window divided by the limit: 1.0 is
    exactly at the budget, above is a breach. Two alert rules come with it: close (at `warn_at`) and breached.
    """

    class Aggregate(models.TextChoices):
        MEAN = "mean", "Average across its agents"
        MAX = "max", "Every agent (the slowest one)"

    class Quantile(models.TextChoices):
        P50 = "0.5", "P50"
        P90 = "0.9", "P90"
        P95 = "0.95", "P95"
        P99 = "0.99", "P99"

    class Window(models.IntegerChoices):
        HOUR = 3600, "1 hour"
        HOURS_6 = 21600, "6 hours"
        DAY = 86400, "24 hours"
        WEEK = 604800, "7 days"

    name = models.CharField(max_length=128)
    quantile = models.CharField(max_length=4, choices=Quantile.choices, default=Quantile.P95)
    aggregate = models.CharField(max_length=8, choices=Aggregate.choices, default=Aggregate.MEAN)
    threshold_ms = models.FloatField(validators=[MinValueValidator(1.0)], help_text="The limit, in milliseconds.")
    warn_at = models.FloatField(
        default=0.9,
        validators=[MinValueValidator(0.5), MaxValueValidator(0.99)],
        help_text="Share of the limit that counts as close to it (0.9: at 540 ms of a 600 ms budget).",
    )
    window_s = models.PositiveIntegerField(choices=Window.choices, default=Window.DAY)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = self.scope_errors((Scope.DEPARTMENT, Scope.TEAM)) if self.scope else {}
        if errors:
            raise ValidationError(errors)

    @property
    def q(self) -> float:
        return float(self.quantile)

    @property
    def objective(self) -> str:
        """e.g. "average P95 across its agents under 600 ms over 24 hours"."""
        which = "average" if self.aggregate == self.Aggregate.MEAN else "every agent's"
        label = self.Quantile(self.quantile).label
        across = " across its agents" if self.aggregate == self.Aggregate.MEAN else ""
        return f"{which} {label}{across} under {self.threshold_ms:g} ms over {self.get_window_s_display()}"


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

    objects = ScopedQuerySet.as_manager()

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


class AlertRule(Scoped):
    """A condition on a metric of a scope, evaluated every minute: Normal -> Pending -> Firing -> Resolved.

    Burn-rate rules come with an SLO (the Workbook's scheme: both windows at or above the rate);
    budget rules with a performance budget; latency, error-rate and throughput rules stand alone
    with their own scope and filters. Rules of an SLO or a budget take its scope. A rule resolves
    when the condition has failed for `keep_firing_s` and, with a recovery threshold, only once the
    value is back past it (no flapping around the threshold).
    """

    class Metric(models.TextChoices):
        BURN_RATE = "burn_rate", "SLO burn rate (x)"
        BUDGET_CONSUMED = "budget_consumed", "SLO error budget consumed (share)"
        LATENCY = "latency", "Latency percentile (ms)"
        ERROR_RATE = "error_rate", "Error rate (share of requests)"
        THROUGHPUT = "throughput", "Throughput (requests/s)"
        PERF_BUDGET = "perf_budget", "Performance budget consumed (share)"
        CAPACITY = "capacity", "Days until the throughput forecast reaches a share of capacity"

    class Comparison(models.TextChoices):
        GTE = "gte", "at or above"
        LTE = "lte", "at or below"

    class Severity(models.TextChoices):
        PAGE = "page", "Page"
        TICKET = "ticket", "Ticket"
        WARNING = "warning", "Warning"

    class State(models.TextChoices):
        NORMAL = "normal", "Normal"
        PENDING = "pending", "Pending"
        FIRING = "firing", "Firing"

    # Extra filters a standalone rule may narrow by (the dashboard's parameters beyond the scope).
    FILTER_KEYS = ("version", "intent", "tier", "status")

    name = models.CharField(max_length=160)
    metric = models.CharField(max_length=16, choices=Metric.choices, default=Metric.BURN_RATE)
    slo = models.ForeignKey(SLO, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_rules")
    budget = models.ForeignKey(
        PerformanceBudget, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_rules"
    )
    quantile = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.5), MaxValueValidator(0.999)],
        help_text="Latency rules: which percentile, e.g. 0.95.",
    )
    utilization = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.1), MaxValueValidator(1.5)],
        help_text="Capacity rules: the share of the configured capacity, e.g. 0.8 for 80%.",
    )
    filters = models.JSONField(default=dict, blank=True, help_text="Extra filters: version, intent, tier, status.")
    severity = models.CharField(max_length=8, choices=Severity.choices)
    comparison = models.CharField(max_length=3, choices=Comparison.choices, default=Comparison.GTE)
    threshold = models.FloatField(validators=[MinValueValidator(0.0)])
    recovery_threshold = models.FloatField(
        null=True,
        blank=True,
        help_text="Resolve only once the value is back past this (e.g. fire at 800 ms, resolve under 700 ms).",
    )
    window_s = models.PositiveIntegerField(
        validators=[MinValueValidator(60), MaxValueValidator(30 * 86400)],
        help_text="The window the value is read over.",
    )
    short_window_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(60)],
        help_text="Burn-rate rules: the confirming short window (the Workbook uses 1/12 of the long one).",
    )
    # How long the condition must hold before firing, and keep failing to hold before resolving (no flapping).
    pending_s = models.PositiveIntegerField(default=0)
    keep_firing_s = models.PositiveIntegerField(default=0)
    enabled = models.BooleanField(default=True)
    channels = models.ManyToManyField(NotificationChannel, blank=True, related_name="rules")
    # While silenced the rule is still evaluated and its events recorded, but nobody is notified.
    silenced_until = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.NORMAL, editable=False)
    state_since = models.DateTimeField(null=True, blank=True, editable=False)
    # When the condition last held while firing (the keep-firing period counts from here).
    last_true_at = models.DateTimeField(null=True, blank=True, editable=False)
    episode = models.PositiveIntegerField(default=0, editable=False)
    last_value = models.FloatField(null=True, blank=True, editable=False)
    last_evaluated_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["slo", "budget", "-threshold", "name"]
        indexes = [models.Index(fields=["state"], name="alertrule_state_idx")]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(metric__in=["burn_rate", "budget_consumed"]) | models.Q(slo__isnull=False),
                name="alertrule_slo_metric_has_slo",
            ),
            models.CheckConstraint(
                condition=~models.Q(metric="perf_budget") | models.Q(budget__isnull=False),
                name="alertrule_budget_metric_has_budget",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.take_scope()
        if self.owner is None and self.scope:
            self.derive_department()
        super().save(*args, **kwargs)

    @property
    def owner(self) -> SLO | PerformanceBudget | None:
        return self.slo or self.budget

    def take_scope(self) -> None:
        """A rule of an SLO or a budget watches exactly its scope."""
        owner = self.owner
        if owner is not None:
            for field in ("scope", "department_id", "team_id", "agent_id", "environment"):
                setattr(self, field, getattr(owner, field))
        # Budget values are read over their owner's window, whatever the rule says.
        if self.metric == self.Metric.PERF_BUDGET and self.budget is not None:
            self.window_s = self.budget.window_s
        elif self.metric == self.Metric.BUDGET_CONSUMED and self.slo is not None:
            self.window_s = self.slo.window_days * 86400
        elif self.metric == self.Metric.CAPACITY:
            self.window_s = CAPACITY_HISTORY_S  # the history the forecast is fitted on

    def clean(self) -> None:
        errors: dict[str, str] = {}
        metric = self.Metric(self.metric) if self.metric in self.Metric.values else None
        if metric is None:
            raise ValidationError({"metric": "Choose a metric."})
        needs_slo = metric in (self.Metric.BURN_RATE, self.Metric.BUDGET_CONSUMED)
        if needs_slo and self.slo_id is None:
            errors["slo"] = "A burn-rate or error-budget rule belongs to an SLO."
        if not needs_slo and self.slo_id is not None:
            errors["slo"] = "Only burn-rate and error-budget rules belong to an SLO."
        if metric == self.Metric.PERF_BUDGET and self.budget_id is None:
            errors["budget"] = "A performance-budget rule belongs to a budget."
        if metric != self.Metric.PERF_BUDGET and self.budget_id is not None:
            errors["budget"] = "Only performance-budget rules belong to a budget."
        if metric == self.Metric.LATENCY and self.quantile is None:
            errors["quantile"] = "A latency rule needs its percentile, e.g. 0.95."
        if metric == self.Metric.CAPACITY:
            if self.utilization is None:
                errors["utilization"] = "A capacity rule needs the share of capacity, e.g. 0.8."
            if self.comparison != self.Comparison.LTE:
                errors["comparison"] = "A capacity rule fires when the date is near: 'at or below' a number of days."
            if self.threshold is not None and self.threshold > CAPACITY_REACH_DAYS:
                errors["threshold"] = f"The forecast reaches {CAPACITY_REACH_DAYS} days ahead; choose fewer days."
        if metric == self.Metric.BURN_RATE and self.short_window_s is None:
            self.short_window_s = max(60, self.window_s // 12) if self.window_s else None
        if self.short_window_s is not None and self.window_s and self.short_window_s > self.window_s:
            errors["short_window_s"] = "The short window cannot be longer than the window."
        if self.owner is None:
            if not self.scope:
                errors["scope"] = "Choose what the rule watches."
            else:
                errors |= self.scope_errors()
        errors |= self._filter_errors()
        if self.recovery_threshold is not None and self.threshold is not None:
            if self.comparison == self.Comparison.GTE and self.recovery_threshold > self.threshold:
                errors["recovery_threshold"] = "For an 'at or above' rule, recovery must be at or below the threshold."
            if self.comparison == self.Comparison.LTE and self.recovery_threshold < self.threshold:
                errors["recovery_threshold"] = "For an 'at or below' rule, recovery must be at or above the threshold."
        if errors:
            raise ValidationError(errors)

    def _filter_errors(self) -> dict[str, str]:
        from perfops.metrics.filters import FilterError, parse_filters

        if not isinstance(self.filters, dict):
            return {"filters": "Must be an object of filter names to values."}
        unknown = sorted(set(self.filters) - set(self.FILTER_KEYS))
        if unknown:
            return {
                "filters": f"Unknown filter(s): {', '.join(map(str, unknown))[:100]}; allowed: "
                f"{', '.join(self.FILTER_KEYS)}."
            }
        if self.filters and self.owner is not None:
            return {"filters": "Rules of an SLO or a budget watch its whole scope."}
        try:
            parse_filters({key: str(value) for key, value in self.filters.items()})
        except FilterError as exc:
            return {"filters": str(exc)}
        return {}

    def holds(self, value: float | None, *, recovering: bool = False) -> bool:
        """Whether `value` meets the condition; while firing, the recovery threshold (if any) is the line."""
        if value is None:
            return False
        line = self.recovery_threshold if recovering and self.recovery_threshold is not None else self.threshold
        return value >= line if self.comparison == self.Comparison.GTE else value <= line

    @property
    def value_text(self) -> str:
        """The last evaluated value with its unit."""
        return format_value(self.metric, self.last_value)

    @property
    def condition(self) -> str:
        """The rule in words, e.g. "P95 at or above 800 ms over 10 min"."""
        what = {
            self.Metric.LATENCY: f"P{(self.quantile or 0) * 100:g}",
            self.Metric.BURN_RATE: "burn rate",
            self.Metric.BUDGET_CONSUMED: "error budget consumed",
            self.Metric.ERROR_RATE: "error rate",
            self.Metric.THROUGHPUT: "throughput",
            self.Metric.PERF_BUDGET: "budget consumed",
            self.Metric.CAPACITY: f"days until {(self.utilization or 0) * 100:g}% of capacity",
        }[self.Metric(self.metric)]
        text = f"{what} {self.get_comparison_display()} {format_value(self.metric, self.threshold)}"
        if self.metric == self.Metric.CAPACITY:
            return text + f" (forecast from {span(self.window_s)} of traffic)"
        text += f" over {span(self.window_s)}"
        if self.short_window_s:
            text += f" and {span(self.short_window_s)}"
        return text


def span(seconds: int) -> str:
    """A window in words: 5 min, 6 h, 3 d."""
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds / 60:g} min"


def percent(value: float | None, digits: int = 3, *, none: str = "no requests yet") -> str:
    """A share as a percentage with `digits` significant digits."""
    return none if value is None else f"{value * 100:.{digits}g}%"


def until(delta: timedelta | None) -> str:
    """When an error budget runs out, in words."""
    if delta is None:
        return "not being spent"
    if delta <= timedelta(0):
        return "already spent"
    hours = delta.total_seconds() / 3600
    return f"in {hours:.1f} h" if hours < 48 else f"in {hours / 24:.1f} days"


def format_value(metric: str, value: float | None) -> str:
    """A metric value with its unit: 812 ms, 14.4x, 2.5%, 120 req/s, 85% of budget."""
    if value is None:
        return "no data"
    if metric == AlertRule.Metric.LATENCY:
        return f"{value:,.0f} ms" if value >= 10 else f"{value:.2f} ms"
    if metric == AlertRule.Metric.BURN_RATE:
        return f"{value:.3g}x"
    if metric == AlertRule.Metric.ERROR_RATE:
        return f"{value * 100:.3g}%"
    if metric == AlertRule.Metric.THROUGHPUT:
        return f"{value:.4g} req/s"
    if metric == AlertRule.Metric.CAPACITY:
        return f"not within {CAPACITY_REACH_DAYS} days" if value > CAPACITY_REACH_DAYS else f"{value:.3g} days"
    return f"{value * 100:.3g}% of budget"


class AlertEventQuerySet(models.QuerySet["AlertEvent"]):
    def visible_to(self, user: Any) -> AlertEventQuerySet:
        ids = department_ids_for(user)
        return self if ids is None else self.filter(rule__department_id__in=ids)


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

    @property
    def value_text(self) -> str:
        return format_value(self.rule.metric, self.value)


class Delivery(models.Model):
    """One attempt to send one message to one channel: the log of what was sent and what came back.

    A message is an alert event or another notice (an incident opened); `key` names it, so a retried
    send of the same message is recognised whatever sent it.
    """

    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="deliveries", null=True, blank=True)
    key = models.CharField(max_length=80, default="", help_text="The message: an alert event's dedupe key, or another.")
    subject = models.CharField(max_length=300, blank=True)
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveSmallIntegerField()
    at = models.DateTimeField(auto_now_add=True)
    ok = models.BooleanField()
    detail = models.CharField(max_length=300)

    class Meta:
        ordering = ["-at"]
        constraints = [
            models.UniqueConstraint(fields=["key", "channel", "attempt"], name="delivery_attempt_once"),
        ]

    def __str__(self) -> str:
        return f"{self.key} -> {self.channel} #{self.attempt}: {'ok' if self.ok else self.detail}"
