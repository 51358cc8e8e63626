from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.forms import ModelForm
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from perfops.access.admin_scoping import DepartmentScopedAdmin
from slos import openslo
from slos.alerts import create_rules
from slos.confirm import describe
from slos.forms import AlertRuleForm, PerformanceBudgetForm, SLOForm
from slos.models import SLO, AlertRule, Delivery, NotificationChannel, PerformanceBudget


class ConfirmedSaveAdmin(DepartmentScopedAdmin):
    """Saving asks first: a valid add or change form shows what it will do on today's data, then saves.

    The confirmation page re-posts the same form data with `_confirmed`; nothing is stored before.
    """

    confirm_template = "admin/slos/confirm.html"

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.user = request.user  # type: ignore[attr-defined]
        return form

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if request.method == "POST" and "_confirmed" not in request.POST:
            obj = self.get_object(request, unquote(object_id)) if object_id else None
            if object_id and obj is None:
                raise Http404
            allowed = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
            if not allowed:
                raise PermissionDenied
            form = self.get_form(request, obj, change=obj is not None)(request.POST, request.FILES, instance=obj)
            if form.is_valid():
                candidate = form.save(commit=False)
                preview = describe(candidate, request.user, timezone.now())
                context = {
                    **self.admin_site.each_context(request),
                    "opts": self.opts,
                    "title": f"Confirm: {preview.title}",
                    "preview": preview,
                    "change": obj is not None,
                    "post_items": [
                        (key, value)
                        for key, values in request.POST.lists()
                        if key != "csrfmiddlewaretoken"
                        for value in values
                    ],
                }
                return TemplateResponse(request, self.confirm_template, context)
        return super().changeform_view(request, object_id, form_url, extra_context)

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
        super().save_related(request, form, formsets, change)
        if change and "window_days" in form.changed_data:
            create_rules(form.instance)  # the Workbook's thresholds depend on the window

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
