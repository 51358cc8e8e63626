"""The telemetry domain: who owns which agent, what is deployed where, and one row per request."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Coalesce, Now

from perfops.access.scoping import department_ids_for
from perfops.telemetry.choices import SLUG_REGEX, DeploymentSource, Environment, ErrorType, TimingKind, TraceStatus
from perfops.telemetry.fields import PlainJSONField

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    AnyUser = AbstractBaseUser | AnonymousUser

slug_validator = RegexValidator(
    rf"\A{SLUG_REGEX}\Z", "Use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit."
)


class DepartmentQuerySet(models.QuerySet["Department"]):
    def visible_to(self, user: AnyUser) -> DepartmentQuerySet:
        """Departments the user may see: all for a superuser, their memberships otherwise."""
        ids = department_ids_for(user)
        return self if ids is None else self.filter(pk__in=ids)


class Department(models.Model):
    """An organisational unit that owns teams and agents; people are scoped to departments."""

    UNASSIGNED = "unassigned"

    slug = models.CharField(max_length=64, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=128)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        related_name="departments",
        blank=True,
        help_text="People who may see and act on this department's agents (their role comes from their group).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DepartmentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def unassigned(cls) -> Department:
        """The department that automatically registered agents land in when none is named."""
        department, _ = cls.objects.get_or_create(
            slug=cls.UNASSIGNED, defaults={"name": "Unassigned (auto-registered)"}
        )
        return department


class TeamQuerySet(models.QuerySet["Team"]):
    def visible_to(self, user: AnyUser) -> TeamQuerySet:
        ids = department_ids_for(user)
        return self if ids is None else self.filter(department_id__in=ids)


class Team(models.Model):
    """A team inside a department."""

    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="teams")
    slug = models.CharField(max_length=64, validators=[slug_validator])
    name = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TeamQuerySet.as_manager()

    class Meta:
        ordering = ["department__name", "name"]
        constraints = [models.UniqueConstraint(fields=["department", "slug"], name="team_unique_slug_per_department")]

    def __str__(self) -> str:
        return f"{self.department.name} / {self.name}"


class AgentQuerySet(models.QuerySet["Agent"]):
    def visible_to(self, user: AnyUser) -> AgentQuerySet:
        """Agents of the user's departments (all for a superuser)."""
        ids = department_ids_for(user)
        return self if ids is None else self.filter(department_id__in=ids)


class Agent(models.Model):
    """An AI agent of the fleet: what sends traces, and what SLOs and interventions act on."""

    slug = models.CharField(max_length=64, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=128)
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="agents")
    team = models.ForeignKey(Team, on_delete=models.SET_NULL, null=True, blank=True, related_name="agents")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="owned_agents",
    )
    intent_category = models.CharField(
        max_length=64,
        blank=True,
        validators=[slug_validator],
        help_text="The agent's main intent (customer_support, code_generation, ...); "
        "traces that name no intent get this one.",
    )
    endpoint_url = models.URLField(
        blank=True, help_text="Where the agent answers requests (load tests call it; it must be allowlisted)."
    )
    description = models.TextField(blank=True)
    auto_registered = models.BooleanField(default=False, help_text="Created by ingest the first time a trace named it.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        team_elsewhere = self.team is not None and self.team.department_id != self.department_id
        if team_elsewhere and self.department_id is not None:
            raise ValidationError({"team": "The team must belong to the agent's department."})


class AgentCapacity(models.Model):
    """How many requests per second an agent can serve in one environment (the capacity line)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="capacities")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    requests_per_s = models.FloatField(validators=[MinValueValidator(0.001)])

    class Meta:
        verbose_name_plural = "agent capacities"
        ordering = ["agent__slug", "environment"]
        constraints = [models.UniqueConstraint(fields=["agent", "environment"], name="capacity_unique_per_environment")]

    def __str__(self) -> str:
        return f"{self.agent.slug} {self.environment}: {self.requests_per_s:g} req/s"


class DeploymentQuerySet(models.QuerySet["Deployment"]):
    def visible_to(self, user: AnyUser) -> DeploymentQuerySet:
        ids = department_ids_for(user)
        return self if ids is None else self.filter(agent__department_id__in=ids)

    def with_effective_at(self) -> DeploymentQuerySet:
        """Annotate `effective_at`: when the deploy tool says it went out, else when traffic first showed it."""
        return self.annotate(effective_at=Coalesce("deployed_at", "first_seen_at"))


class Deployment(models.Model):
    """A version of an agent in an environment: reported by a deploy tool or first seen by ingest."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="deployments")
    environment = models.CharField(max_length=16, choices=Environment.choices)
    version = models.CharField(max_length=64)
    deployed_at = models.DateTimeField(null=True, blank=True, help_text="When the deploy tool rolled it out.")
    first_seen_at = models.DateTimeField(
        null=True, blank=True, help_text="The start of the earliest trace that carried this version."
    )
    source = models.CharField(max_length=8, choices=DeploymentSource.choices, default=DeploymentSource.INGEST)
    notes = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["agent__slug", "environment", "-created_at"]
        constraints = [
            # Also the ingest upsert's conflict target and the version list of an agent page.
            models.UniqueConstraint(fields=["agent", "environment", "version"], name="deployment_unique_version")
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug} {self.version} ({self.environment})"


class TraceQuerySet(models.QuerySet["Trace"]):
    def visible_to(self, user: AnyUser) -> TraceQuerySet:
        ids = department_ids_for(user)
        return self if ids is None else self.filter(agent__department_id__in=ids)


class Trace(models.Model):
    """One agent request: when, how long, how it ended, and where the time went.

    On PostgreSQL the table is partitioned by day on started_at (migration 0002), so the
    primary key there is (trace_id, started_at): a retried record carries the same start time
    and is ignored, and retention can drop a whole day instead of deleting rows.
    """

    trace_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No database-level foreign key: a per-row RI check (and its row lock on the agent) would cost
    # ingest a large share of its throughput. Ingest resolves the agent in the same transaction,
    # and PROTECT still stops an agent with traces from being deleted through Django.
    agent = models.ForeignKey(
        Agent, on_delete=models.PROTECT, related_name="traces", db_index=False, db_constraint=False
    )
    environment = models.CharField(max_length=16, choices=Environment.choices)
    version = models.CharField(max_length=64)
    intent = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField()
    latency_ms = models.FloatField()
    status = models.CharField(max_length=8, choices=TraceStatus.choices)
    error_type = models.CharField(max_length=24, choices=ErrorType.choices, blank=True)
    # {"auth": 12.0, "llm": 840.5, ...}: milliseconds spent in each sequential phase.
    phases = PlainJSONField(default=dict, blank=True)
    # [{"name", "kind", "start_ms", "duration_ms", "status"}]: calls made while serving the request.
    dependencies = PlainJSONField(default=list, blank=True)
    model = models.CharField(max_length=128, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    cache_hit = models.BooleanField(default=False)
    profiled = models.BooleanField(default=False)
    attributes = PlainJSONField(default=dict, blank=True)
    # The phases and calls again, packed as (label, start, duration) entries (perfops.telemetry.timings):
    # the rollup sums them for millions of traces with numpy, where parsing the JSON would take 5x longer.
    timings = models.BinaryField(default=b"", db_default=b"", blank=True, editable=False)
    # When perfops stored it: the rollup uses it to find late data for already closed minutes.
    received_at = models.DateTimeField(db_default=Now(), editable=False)

    objects = TraceQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            # Users: the rollup (recompute one closed minute for every agent), the fleet-wide
            # slow-request list of a time range, and retention on SQLite.
            models.Index(fields=["started_at"], name="trace_started_idx"),
            # Users: the slow-request list (chart 4.4), the slowest requests of a window and scope: read
            # from the top of each day's index and stop at 50, instead of sorting a month of traces;
            # per agent (the agent page, similar slow requests, an agent's traces when it is deleted)
            # from the second one. Day partitions bound the time; the rollup reads by started_at.
            models.Index(fields=["latency_ms"], name="trace_latency_idx"),
            models.Index(fields=["agent", "latency_ms"], name="trace_agent_latency_idx"),
            # User: the slow-request list of errors or timeouts only (1-2% of requests: walking the
            # whole latency index for them took 300 ms a day).
            models.Index(
                fields=["latency_ms"],
                name="trace_failed_latency_idx",
                condition=models.Q(status__in=[TraceStatus.ERROR, TraceStatus.TIMEOUT]),
            ),
            # Users: the version checks, the deploy gate and regression evidence (the newest requests of one
            # version of one agent): walking the time index for a rare version read millions of rows, and
            # a pass over 691 new versions took 427 s on 10M traces.
            models.Index(fields=["agent", "environment", "version", "started_at"], name="trace_agent_version_idx"),
        ]

    def __str__(self) -> str:
        return self.trace_id.hex

    @property
    def trace_id_hex(self) -> str:
        return self.trace_id.hex


class TimingLabel(models.Model):
    """A phase name or a dependency (kind, name): the dictionary behind packed trace timings and rollups."""

    kind = models.CharField(max_length=8, choices=TimingKind.choices)
    name = models.CharField(max_length=128)

    class Meta:
        ordering = ["kind", "name"]
        constraints = [
            # Also ingest's ON CONFLICT target when a batch names a phase or call for the first time.
            models.UniqueConstraint(fields=["kind", "name"], name="timinglabel_unique_kind_name")
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class PendingSpan(models.Model):
    """An OTLP child span that arrived before its trace's root span; joined when the root comes."""

    trace_id = models.UUIDField()
    span_id = models.CharField(max_length=16)
    # The span reduced to what the trace record needs (kind, name, timing, status, phase).
    span = models.JSONField()
    # Who sent it: it may join only a trace whose agent this person may write to.
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, related_name="+")
    received_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            # User: the OTLP ingest that joins waiting children to their arriving root.
            models.Index(fields=["trace_id"], name="pendingspan_trace_idx"),
            # User: the sweeper that expires orphans older than OTLP_ORPHAN_TTL_S.
            models.Index(fields=["received_at"], name="pendingspan_received_idx"),
        ]
        constraints = [models.UniqueConstraint(fields=["trace_id", "span_id"], name="pendingspan_unique_span")]

    def __str__(self) -> str:
        return f"{self.trace_id.hex}/{self.span_id}"
