from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms import ModelForm
from django.http import HttpRequest

from perfops.access.admin_scoping import DepartmentScopedAdmin
from slos.models import SLO


class SLOForm(ModelForm):
    class Meta:
        model = SLO
        fields = [
            "name",
            "scope",
            "department",
            "team",
            "agent",
            "environment",
            "kind",
            "threshold_ms",
            "target",
            "window_days",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        request = getattr(self, "request", None)
        if data.get("scope") == SLO.Scope.FLEET and request is not None and not request.user.is_superuser:
            raise ValidationError({"scope": "Only a superuser may set a fleet-wide SLO."})
        return data


@admin.register(SLO)
class SLOAdmin(DepartmentScopedAdmin):
    form = SLOForm
    list_display = ["name", "scope", "department", "environment", "objective", "created_by", "updated_at"]
    list_filter = ["scope", "kind", "environment", "window_days"]
    search_fields = ["name", "agent__slug", "team__slug", "department__slug"]
    list_select_related = ["department", "created_by"]
    autocomplete_fields = ["agent"]
    readonly_fields = ["created_by", "created_at", "updated_at"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.request = request  # type: ignore[attr-defined]
        return form

    def save_model(self, request: HttpRequest, obj: SLO, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)
