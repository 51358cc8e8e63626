"""The rollup in the admin, for operators: its state (lease, last run, last error) and the pending work.

Read-only and for superusers: rollups are derived data, recomputed from traces, never edited.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from perfops.metrics import dirty
from perfops.metrics.models import RollupState


@admin.register(RollupState)
class RollupStateAdmin(admin.ModelAdmin):
    list_display: list[Any] = [
        "generation",
        "last_run_at",
        "last_run_seconds",
        "last_run_buckets",
        "last_run_traces",
        "coarse_through",
        "pending_buckets",
        "lease_owner",
        "lease_until",
        "last_error_at",
    ]
    readonly_fields = [*list_display, "last_error"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return self.readonly_fields

    @admin.display(description="buckets waiting")
    def pending_buckets(self, state: RollupState) -> int:
        return dirty.pending()

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
