"""The forms of SLOs, alert rules and performance budgets: one set for the admin and the pages alike.

Each form knows who fills it (`user`): the department, team, agent and channel choices are those
of the person's departments, and fleet-wide objects need a superuser.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from perfops.access.scoping import department_ids_for
from perfops.metrics.filters import STATUSES, TIERS
from perfops.telemetry.models import Agent, Department, Team
from slos.models import SLO, AlertRule, NotificationChannel, PerformanceBudget, Scope


class ScopedForm(forms.ModelForm):
    """A form over a Scoped model, limited to the user's departments."""

    user: Any = None

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if user is not None:
            self.user = user
        if self.user is None:
            return
        ids = department_ids_for(self.user)
        if ids is not None:
            limits: dict[str, Any] = {
                "department": Department.objects.filter(pk__in=ids),
                "team": Team.objects.filter(department_id__in=ids),
                "agent": Agent.objects.filter(department_id__in=ids),
                "channels": NotificationChannel.objects.filter(department_id__in=ids),
            }
            for name, queryset in limits.items():
                if name in self.fields:
                    self.fields[name].queryset = queryset  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("scope") == Scope.FLEET and self.user is not None and not self.user.is_superuser:
            raise ValidationError({"scope": "Only a superuser may set a fleet-wide objective or rule."})
        return data

    def _update_errors(self, errors: ValidationError) -> None:
        # Model.clean() names fields a form may not show (a rule's slo, budget and filters); Django would raise
        # ValueError for those (a 500), so they are shown above the form instead.
        if hasattr(errors, "error_dict"):
            for name in [name for name in errors.error_dict if name != NON_FIELD_ERRORS and name not in self.fields]:
                errors.error_dict.setdefault(NON_FIELD_ERRORS, []).extend(errors.error_dict.pop(name))
        super()._update_errors(errors)  # type: ignore[misc]  # private in Django, so not in django-stubs


SCOPE_FIELDS = ["scope", "department", "team", "agent", "environment"]


class SLOForm(ScopedForm):
    class Meta:
        model = SLO
        fields = ["name", *SCOPE_FIELDS, "kind", "threshold_ms", "target", "window_days"]


class PerformanceBudgetForm(ScopedForm):
    class Meta:
        model = PerformanceBudget
        fields = ["name", "scope", "department", "team", "environment", "quantile", "aggregate", "threshold_ms"]
        fields += ["warn_at", "window_s"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "scope" in self.fields:  # not in the admin's read-only view
            self.fields["scope"].choices = [(s.value, s.label) for s in (Scope.DEPARTMENT, Scope.TEAM)]  # type: ignore[attr-defined]


class AlertRuleForm(ScopedForm):
    """A rule: what it watches, when it fires and resolves, who hears about it.

    The extra filters are four plain fields here and one JSON object on the model.
    """

    filter_version = forms.CharField(required=False, max_length=64, label="Version filter")
    filter_intent = forms.CharField(required=False, max_length=64, label="Intent filter")
    filter_tier = forms.ChoiceField(required=False, choices=[("", "any")] + [(t, t) for t in TIERS], label="Tier")
    filter_status = forms.ChoiceField(
        required=False, choices=[("", "any")] + [(s, s) for s in STATUSES], label="Status filter"
    )

    class Meta:
        model = AlertRule
        fields = [
            "name",
            "metric",
            "quantile",
            "utilization",
            *SCOPE_FIELDS,
            "comparison",
            "threshold",
            "recovery_threshold",
            "window_s",
            "short_window_s",
            "pending_s",
            "keep_firing_s",
            "severity",
            "channels",
            "enabled",
        ]
        help_texts = {
            "threshold": (
                "In the metric's unit: ms, x (burn rate), a share 0..1 (error rate, budget), req/s, days (capacity)."
            ),
            "pending_s": "The condition must hold this long before the rule fires.",
            "keep_firing_s": "The rule resolves only after the condition has failed this long.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for key, value in (self.instance.filters or {}).items():
            if f"filter_{key}" in self.fields:
                self.initial.setdefault(f"filter_{key}", value)
        if "metric" not in self.fields:
            return  # the admin's read-only view (a viewer's) has no fields to set up
        owned = self.instance.pk is not None and self.instance.owner is not None
        if owned:
            # A rule of an SLO or a budget watches its owner's scope with its owner's metric.
            for name in (*SCOPE_FIELDS, "metric", "quantile", "utilization"):
                self.fields[name].disabled = True
            for key in AlertRule.FILTER_KEYS:
                self.fields[f"filter_{key}"].disabled = True
        else:
            standalone = [
                (m.value, m.label)
                for m in AlertRule.Metric
                if m not in (AlertRule.Metric.BURN_RATE, AlertRule.Metric.BUDGET_CONSUMED, AlertRule.Metric.PERF_BUDGET)
            ]
            self.fields["metric"].choices = standalone  # type: ignore[attr-defined]
        for name in ("scope", "department", "team", "agent"):
            self.fields[name].required = name == "scope" and not owned

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not (self.instance.pk and self.instance.owner is not None):
            self.instance.filters = {
                key: data[f"filter_{key}"] for key in AlertRule.FILTER_KEYS if data.get(f"filter_{key}")
            }
        return data
