from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms import ModelForm
from django.http import HttpRequest

from perfops.access.admin_scoping import DepartmentScopedAdmin
from slos.alerts import create_rules
from slos.models import SLO, AlertRule, Delivery, NotificationChannel


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


class AlertRuleInline(admin.TabularInline):
    """The SLO's burn-rate rules, editable (threshold, windows, pending and keep-firing periods)."""

    model = AlertRule
    extra = 0
    fields = [
        "name",
        "severity",
        "burn_rate",
        "long_window_s",
        "short_window_s",
        "pending_s",
        "keep_firing_s",
        "enabled",
        "channels",
        "state",
        "last_value",
    ]
    readonly_fields = ["state", "last_value"]


@admin.register(SLO)
class SLOAdmin(DepartmentScopedAdmin):
    form = SLOForm
    inlines = [AlertRuleInline]
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

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if change and "window_days" in form.changed_data:
            create_rules(form.instance)  # the Workbook's thresholds depend on the window


class NotificationChannelForm(ModelForm):
    url = forms.URLField(required=False, max_length=500, assume_scheme="https")
    # Write-only: left empty on change, the stored secret stays.
    secret = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False), help_text="Signs webhook bodies (HMAC-SHA256)."
    )

    class Meta:
        model = NotificationChannel
        fields = ["name", "department", "kind", "url", "format", "secret", "email_to"]

    def clean_secret(self) -> str:
        return self.cleaned_data.get("secret") or (self.instance.secret if self.instance.pk else "")


@admin.register(NotificationChannel)
class NotificationChannelAdmin(DepartmentScopedAdmin):
    form = NotificationChannelForm
    list_display = ["name", "kind", "department", "format", "created_at"]
    list_filter = ["kind", "format"]
    search_fields = ["name", "url", "email_to"]


@admin.register(Delivery)
class DeliveryAdmin(DepartmentScopedAdmin):
    """Every send attempt, read-only: what went where and what came back."""

    department_path = "channel__department_id"
    list_display = ["event", "channel", "attempt", "ok", "detail", "at"]
    list_filter = ["ok"]
    list_select_related = ["event", "event__rule", "channel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
