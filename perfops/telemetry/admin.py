"""Telemetry in the admin: the org structure, agents and their capacity, deployments, traces."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin import RelatedOnlyFieldListFilter
from django.db import models
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from perfops.access.admin_scoping import CappedCountPaginator, DepartmentScopedAdmin
from perfops.access.scoping import department_ids_for
from perfops.telemetry.models import Agent, AgentCapacity, Department, Deployment, PendingSpan, Team, Trace


@admin.register(Department)
class DepartmentAdmin(DepartmentScopedAdmin):
    department_path = "pk"
    list_display = ["name", "slug", "team_count", "agent_count", "member_count", "created_at"]
    search_fields = ["name", "slug"]
    filter_horizontal = ["members"]
    prepopulated_fields = {"slug": ["name"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                teams_n=Count("teams", distinct=True),
                agents_n=Count("agents", distinct=True),
                members_n=Count("members", distinct=True),
            )
        )

    @admin.display(description="teams", ordering="teams_n")
    def team_count(self, department: Any) -> int:
        return department.teams_n

    @admin.display(description="agents", ordering="agents_n")
    def agent_count(self, department: Any) -> int:
        return department.agents_n

    @admin.display(description="members", ordering="members_n")
    def member_count(self, department: Any) -> int:
        return department.members_n

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Departments bound everyone's scope, so only superusers create or remove them.
        return bool(request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)


@admin.register(Team)
class TeamAdmin(DepartmentScopedAdmin):
    list_display = ["name", "slug", "department", "agent_count"]
    list_filter = [("department", RelatedOnlyFieldListFilter)]
    search_fields = ["name", "slug", "department__name"]
    list_select_related = ["department"]
    prepopulated_fields = {"slug": ["name"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).annotate(agents_n=Count("agents"))

    @admin.display(description="agents", ordering="agents_n")
    def agent_count(self, team: Any) -> int:
        return team.agents_n


class AgentCapacityInline(admin.TabularInline):
    model = AgentCapacity
    extra = 0


class DeploymentInline(admin.TabularInline):
    model = Deployment
    extra = 0
    fields = ["environment", "version", "deployed_at", "first_seen_at", "source"]
    readonly_fields = ["first_seen_at", "source"]
    ordering = ["environment", "-first_seen_at"]
    show_change_link = True


@admin.register(Agent)
class AgentAdmin(DepartmentScopedAdmin):
    list_display = [
        "slug",
        "name",
        "department",
        "team",
        "owner",
        "intent_category",
        "auto_registered",
        "created_at",
    ]
    # RelatedOnly: a filter lists only values of rows the person may see, never other departments' names.
    list_filter = [
        ("department", RelatedOnlyFieldListFilter),
        "auto_registered",
        "intent_category",
        ("team", RelatedOnlyFieldListFilter),
    ]
    search_fields = ["slug", "name", "owner__username", "description"]
    list_select_related = ["department", "team", "owner"]
    inlines = [AgentCapacityInline, DeploymentInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = ["auto_registered", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "department", "team", "owner", "intent_category", "description"]}),
        ("Operations", {"fields": ["endpoint_url", "auto_registered", "created_at", "updated_at"]}),
    ]


@admin.register(AgentCapacity)
class AgentCapacityAdmin(DepartmentScopedAdmin):
    department_path = "agent__department_id"
    list_display = ["agent", "environment", "requests_per_s"]
    list_filter = ["environment", ("agent__department", RelatedOnlyFieldListFilter)]
    search_fields = ["agent__slug"]
    list_select_related = ["agent"]
    autocomplete_fields = ["agent"]


@admin.register(Deployment)
class DeploymentAdmin(DepartmentScopedAdmin):
    department_path = "agent__department_id"
    list_display = ["agent", "environment", "version", "deployed_at", "first_seen_at", "source", "created_at"]
    list_filter = ["environment", "source", ("agent__department", RelatedOnlyFieldListFilter)]
    search_fields = ["agent__slug", "version", "notes"]
    list_select_related = ["agent"]
    autocomplete_fields = ["agent"]
    readonly_fields = ["first_seen_at", "created_at"]
    date_hierarchy = "created_at"

    def save_model(self, request: HttpRequest, obj: Deployment, form: Any, change: bool) -> None:
        if not change:
            obj.source = "admin"
        super().save_model(request, obj, form, change)


def _pretty_json(value: object) -> str:
    return format_html("<pre class='perfops-json'>{}</pre>", json.dumps(value, indent=2, sort_keys=True))


@admin.register(Trace)
class TraceAdmin(DepartmentScopedAdmin):
    """Read-only: traces are what agents reported, not something people edit."""

    department_path = "agent__department_id"
    list_display = [
        "short_id",
        "agent",
        "environment",
        "version",
        "status",
        "error_type",
        "latency_ms",
        "started_at",
    ]
    list_filter = ["environment", "status", "error_type", "started_at", "cache_hit", "profiled"]
    search_fields = ["agent__slug", "version"]
    search_help_text = "A full 32-hex trace id, or an agent slug or version."
    list_select_related = ["agent"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    readonly_fields = [
        "trace_id",
        "agent",
        "environment",
        "version",
        "intent",
        "started_at",
        "latency_ms",
        "status",
        "error_type",
        "phases_view",
        "dependencies_view",
        "model",
        "input_tokens",
        "output_tokens",
        "cache_hit",
        "profiled",
        "attributes_view",
        "received_at",
    ]
    exclude = ["phases", "dependencies", "attributes"]

    @admin.display(description="trace id", ordering="trace_id")
    def short_id(self, trace: Trace) -> str:
        return trace.trace_id.hex

    @admin.display(description="phases (ms)")
    def phases_view(self, trace: Trace) -> str:
        return _pretty_json(trace.phases)

    @admin.display(description="dependency calls")
    def dependencies_view(self, trace: Trace) -> str:
        return _pretty_json(trace.dependencies)

    @admin.display(description="attributes")
    def attributes_view(self, trace: Trace) -> str:
        return _pretty_json(trace.attributes)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        term = search_term.strip().lower().replace("-", "")
        if len(term) == 32 and all(c in "0123456789abcdef" for c in term):
            return queryset.filter(trace_id=term), False
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Traces are what agents reported: nobody deletes one by hand.
        return False


@admin.register(PendingSpan)
class PendingSpanAdmin(admin.ModelAdmin):
    """OTLP child spans waiting for their root span (they expire after OTLP_ORPHAN_TTL_S)."""

    list_display = ["trace_id", "span_id", "received_at"]
    search_fields = ["span_id"]
    readonly_fields = ["trace_id", "span_id", "span", "received_at"]
    paginator = CappedCountPaginator
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Not department-scoped data (no agent is known yet): superusers only.
        return department_ids_for(request.user) is None and bool(request.user.is_superuser)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)
