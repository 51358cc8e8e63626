"""API representations of the telemetry models."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from rest_framework import serializers

from perfops.telemetry.choices import DeploymentSource, Environment
from perfops.telemetry.models import Agent, AgentCapacity, Deployment, Trace


class AgentCapacitySerializer(serializers.ModelSerializer[AgentCapacity]):
    class Meta:
        model = AgentCapacity
        fields = ["environment", "requests_per_s"]


class AgentSerializer(serializers.ModelSerializer[Agent]):
    department: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    team: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    owner: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    capacities = AgentCapacitySerializer(many=True, read_only=True)

    class Meta:
        model = Agent
        fields = [
            "slug",
            "name",
            "department",
            "team",
            "owner",
            "intent_category",
            "endpoint_url",
            "description",
            "auto_registered",
            "capacities",
            "created_at",
        ]
        read_only_fields = fields


class VisibleAgentField(serializers.SlugRelatedField[Agent]):
    """An agent by slug, looked up only among the agents the caller may see (others: 'does not exist')."""

    def get_queryset(self) -> Any:
        request = self.context["request"]
        return Agent.objects.visible_to(request.user)


class DeploymentSerializer(serializers.ModelSerializer[Deployment]):
    agent = VisibleAgentField(slug_field="slug")
    environment = serializers.ChoiceField(choices=Environment.choices)
    deployed_at = serializers.DateTimeField(required=False, allow_null=True)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "agent",
            "environment",
            "version",
            "deployed_at",
            "first_seen_at",
            "source",
            "notes",
            "created_at",
        ]
        read_only_fields = ["id", "first_seen_at", "source", "created_at"]
        # The unique (agent, environment, version) is handled as an upsert in save(), not a 400.
        validators: list[Any] = []

    def save(self, **kwargs: Any) -> Deployment:
        """Report a deployment: create it, or set deployed_at on the one ingest already saw."""
        data = {**self.validated_data, **kwargs}
        defaults = {
            "deployed_at": data.get("deployed_at"),
            "notes": data.get("notes", ""),
            "source": DeploymentSource.API,
        }
        try:
            with transaction.atomic():
                deployment, created = Deployment.objects.get_or_create(
                    agent=data["agent"],
                    environment=data["environment"],
                    version=data["version"],
                    defaults=defaults,
                )
        except IntegrityError:
            deployment, created = (
                Deployment.objects.get(agent=data["agent"], environment=data["environment"], version=data["version"]),
                False,
            )
        if not created:
            changed = []
            if "deployed_at" in data:
                deployment.deployed_at = data["deployed_at"]
                changed.append("deployed_at")
            if data.get("notes"):
                deployment.notes = data["notes"]
                changed.append("notes")
            if changed:
                deployment.save(update_fields=changed)
        self.instance = deployment
        self.created = created
        return deployment


class DependencyCallSerializer(serializers.Serializer[dict[str, Any]]):
    name = serializers.CharField()
    kind = serializers.CharField()
    start_ms = serializers.FloatField()
    duration_ms = serializers.FloatField()
    status = serializers.CharField()


class TraceSerializer(serializers.ModelSerializer[Trace]):
    trace_id = serializers.SerializerMethodField()
    agent: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    phases = serializers.DictField(child=serializers.FloatField())
    dependencies = DependencyCallSerializer(many=True)
    attributes = serializers.DictField()

    class Meta:
        model = Trace
        fields = [
            "trace_id",
            "agent",
            "environment",
            "version",
            "intent",
            "started_at",
            "latency_ms",
            "status",
            "error_type",
            "phases",
            "dependencies",
            "model",
            "input_tokens",
            "output_tokens",
            "cache_hit",
            "profiled",
            "attributes",
            "received_at",
        ]
        read_only_fields = fields

    def get_trace_id(self, trace: Trace) -> str:
        return trace.trace_id.hex
