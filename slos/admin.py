from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from perfops.access.admin_scoping import ConfirmedChangeAdmin, DepartmentScopedAdmin
from slos import openslo
from slos.confirm import describe
from slos.forms import AlertRuleForm, PerformanceBudgetForm, SLOForm
from slos.models import SLO, AlertRule, Delivery, NotificationChannel, PerformanceBudget


class ConfirmedSaveAdmin(ConfirmedChangeAdmin):
    """SLOs, rules and budgets: the confirmation shows their effect on today's data."""

    def describe(self, request: HttpRequest, candidate: Any) -> Any:
        return describe(candidate, request.user, timezone.now())

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change and hasattr(obj, "created_by_id"):
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


class AlertRuleInline(admin.TabularInline):
    """The SLO's burn-rate rules, editable (threshold, windows, pending and keep-firing periods)."""

    model = AlertRule
    extra = 0
    fields = [
        "name",
        "severity",
        "threshold",
        "window_s",
        "short_window_s",
        "pending_s",
        "keep_firing_s",
        "enabled",
        "channels",
        "state",
        "last_value",
    ]
    readonly_fields = ["state", "last_value"]
    verbose_name = "burn-rate alert rule"

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "channels":
            # As on AlertRuleForm: only channels of the person's departments, never another's names or webhooks.
            kwargs["queryset"] = NotificationChannel.objects.visible_to(request.user)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


@admin.register(SLO)
class SLOAdmin(ConfirmedSaveAdmin):
    form = SLOForm
    inlines = [AlertRuleInline]
    list_display = ["name", "scope", "department", "environment", "objective", "created_by", "updated_at"]
    list_filter = ["scope", "kind", "environment", "window_days"]
    search_fields = ["name", "agent__slug", "team__slug", "department__slug"]
    list_select_related = ["department", "created_by"]
    autocomplete_fields = ["agent"]
    readonly_fields = ["created_by", "created_at", "updated_at"]
    actions = ["export_openslo"]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if change and "window_days" in form.changed_data:
            # Saving the SLO replaced its burn-rate rules for the new window (slos.signals): the inline
            # forms hold the old rules, which must not be written back.
            form.save_m2m()
            for formset in formsets:  # read by the admin's change message
                formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
            return
        super().save_related(request, form, formsets, change)

    @admin.action(description="Export the selected SLOs as OpenSLO YAML")
    def export_openslo(self, request: HttpRequest, queryset: Any) -> HttpResponse:
        response = HttpResponse(
            openslo.export_slos(queryset.select_related("department", "team", "agent")),
            content_type="application/yaml; charset=utf-8",
        )
        response["Content-Disposition"] = 'attachment; filename="perfops-slos.yaml"'
        return response


@admin.register(AlertRule)
class AlertRuleAdmin(ConfirmedSaveAdmin):
    """Every rule: burn-rate rules of SLOs, budget rules, and standalone latency, error and throughput rules."""

    form = AlertRuleForm
    list_display = ["name", "metric", "condition", "severity", "scope_label", "state", "value_text", "enabled"]
    list_filter = ["metric", "severity", "state", "enabled", "environment"]
    search_fields = ["name", "agent__slug", "team__slug", "department__slug", "slo__name", "budget__name"]
    list_select_related = ["department", "team", "agent", "slo", "budget"]
    autocomplete_fields = ["agent"]
    readonly_fields = ["slo", "budget", "state", "state_since", "episode", "last_value", "last_evaluated_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        fields = [name for name in AlertRuleForm.base_fields if name != "filters"]
        return [*fields, *self.readonly_fields, "created_by"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "created_by"]


@admin.register(PerformanceBudget)
class PerformanceBudgetAdmin(ConfirmedSaveAdmin):
    form = PerformanceBudgetForm
    list_display = ["name", "scope", "department", "team", "environment", "objective", "created_by"]
    list_filter = ["scope", "environment", "aggregate", "quantile"]
    search_fields = ["name", "team__slug", "department__slug"]
    list_select_related = ["department", "team", "created_by"]
    readonly_fields = ["created_by", "created_at", "updated_at"]


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

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = super().get_fields(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            # A read-only view prints every field's value as text, and the signing secret is write-only.
            return [name for name in fields if name != "secret"]
        return fields


@admin.register(Delivery)
class DeliveryAdmin(DepartmentScopedAdmin):
    """Every send attempt, read-only: what went where and what came back."""

    department_path = "channel__department_id"
    list_display = ["subject", "key", "channel", "attempt", "ok", "detail", "at"]
    list_filter = ["ok"]
    list_select_related = ["event", "event__rule", "channel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
