"""API representations of SLOs, alert rules, channels, budgets and alert events.

Departments, teams, agents, SLOs and channels are named by slug or id and looked up only among
what the caller may see, so another department's object is "does not exist", never "forbidden".
Each write runs the model's own `clean()` (the same rules as the admin and the pages).
"""

from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework import serializers

from perfops.telemetry.models import Agent, Department, Team
from slos.models import SLO, AlertEvent, AlertRule, NotificationChannel, PerformanceBudget, Scope


class VisibleSlugField(serializers.SlugRelatedField):
    """A related object by slug among those the caller's departments hold."""

    def __init__(self, model: type[models.Model], **kwargs: Any) -> None:
        self.model = model
        kwargs.setdefault("slug_field", "slug")
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def get_queryset(self) -> Any:
        return self.model._default_manager.visible_to(self.context["request"].user)  # type: ignore[attr-defined]


class VisiblePrimaryKeyField(serializers.PrimaryKeyRelatedField):
    def __init__(self, model: type[models.Model], **kwargs: Any) -> None:
        self.model = model
        super().__init__(**kwargs)

    def get_queryset(self) -> Any:
        return self.model._default_manager.visible_to(self.context["request"].user)  # type: ignore[attr-defined]


class ScopedSerializer(serializers.ModelSerializer):
    """Scope fields by slug; validation by the model's clean(); the fleet scope only for a superuser."""

    department = VisibleSlugField(Department)
    team = VisibleSlugField(Team)
    agent = VisibleSlugField(Agent)
    scope_label = serializers.CharField(read_only=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        request = self.context["request"]
        model: Any = self.Meta.model
        candidate = copy.copy(self.instance) if self.instance is not None else model()
        many = {field.name for field in model._meta.many_to_many}
        for key, value in attrs.items():
            if key not in many:
                setattr(candidate, key, value)
        if candidate.scope == Scope.FLEET and not request.user.is_superuser:
            raise serializers.ValidationError({"scope": ["Only a superuser may set a fleet-wide objective or rule."]})
        try:
            candidate.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        attrs["department"] = candidate.department if candidate.scope != Scope.FLEET else None
        for key in ("threshold_ms", "short_window_s", "filters"):
            if hasattr(candidate, key) and key in {f.name for f in model._meta.fields}:
                attrs[key] = getattr(candidate, key)
        return attrs


class SLOSerializer(ScopedSerializer):
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    objective = serializers.CharField(read_only=True)
    alert_rules: Any = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = SLO
        fields = [
            "id",
            "name",
            "scope",
            "department",
            "team",
            "agent",
            "environment",
            "scope_label",
            "kind",
            "threshold_ms",
            "target",
            "window_days",
            "objective",
            "alert_rules",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]


class PerformanceBudgetSerializer(ScopedSerializer):
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    objective = serializers.CharField(read_only=True)
    alert_rules: Any = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = PerformanceBudget
        fields = [
            "id",
            "name",
            "scope",
            "department",
            "team",
            "environment",
            "scope_label",
            "quantile",
            "aggregate",
            "threshold_ms",
            "warn_at",
            "window_s",
            "objective",
            "alert_rules",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]


class AlertRuleSerializer(ScopedSerializer):
    slo = VisiblePrimaryKeyField(SLO, required=False, allow_null=True)
    channels = VisiblePrimaryKeyField(NotificationChannel, many=True, required=False)
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    condition = serializers.CharField(read_only=True)
    value_text = serializers.CharField(read_only=True)

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "name",
            "metric",
            "slo",
            "budget",
            "quantile",
            "utilization",
            "scope",
            "department",
            "team",
            "agent",
            "environment",
            "scope_label",
            "filters",
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
            "silenced_until",
            "condition",
            "state",
            "state_since",
            "last_value",
            "value_text",
            "last_evaluated_at",
            "created_by",
        ]
        read_only_fields = ["budget", "state", "state_since", "last_value", "last_evaluated_at"]
        extra_kwargs = {"scope": {"required": False}}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        slo = attrs.get("slo", getattr(self.instance, "slo", None))
        if slo is not None:
            # A rule of an SLO watches the SLO's scope.
            attrs |= {"scope": slo.scope, "team": slo.team, "agent": slo.agent, "environment": slo.environment}
        elif self.instance is not None and self.instance.budget_id is not None:
            budget = self.instance.budget
            attrs |= {"scope": budget.scope, "team": budget.team, "agent": None, "environment": budget.environment}
            attrs["department"] = budget.department
        return super().validate(attrs)


class NotificationChannelSerializer(serializers.ModelSerializer):
    department = VisibleSlugField(Department)
    secret = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=128, help_text="Write-only; never returned."
    )
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = NotificationChannel
        fields = ["id", "name", "department", "kind", "url", "format", "secret", "has_secret", "email_to", "created_at"]
        read_only_fields = ["created_at"]

    def get_has_secret(self, channel: NotificationChannel) -> bool:
        return bool(channel.secret)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        request = self.context["request"]
        if (
            attrs.get("department", getattr(self.instance, "department", None)) is None
            and not request.user.is_superuser
        ):
            raise serializers.ValidationError({"department": ["Choose one of your departments."]})
        candidate = copy.copy(self.instance) if self.instance is not None else NotificationChannel()
        for key, value in attrs.items():
            setattr(candidate, key, value)
        try:
            candidate.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        if self.instance is not None and not attrs.get("secret"):
            attrs.pop("secret", None)  # left out or empty on change: the stored secret stays
        return attrs


class AlertEventSerializer(serializers.ModelSerializer):
    rule_name = serializers.CharField(source="rule.name", read_only=True)
    severity = serializers.CharField(source="rule.severity", read_only=True)
    value_text = serializers.CharField(read_only=True)
    acknowledged_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = AlertEvent
        fields = [
            "id",
            "rule",
            "rule_name",
            "severity",
            "kind",
            "episode",
            "at",
            "value",
            "value_text",
            "dedupe_key",
            "acknowledged_by",
            "acknowledged_at",
        ]
        read_only_fields = fields


class PreviewFactSerializer(serializers.Serializer):
    label = serializers.CharField()  # type: ignore[assignment]
    value = serializers.CharField()


class PreviewRuleSerializer(serializers.Serializer):
    severity = serializers.CharField()
    condition = serializers.CharField()
    value = serializers.CharField()
    fires = serializers.BooleanField()


class PreviewSerializer(serializers.Serializer):
    """What saving would mean on today's data (the confirmation step of the pages)."""

    title = serializers.CharField()
    facts = PreviewFactSerializer(many=True)
    rules = PreviewRuleSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
