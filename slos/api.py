"""REST endpoints of SLOs, alert rules, notification channels, performance budgets and alert events.

Reads need the `read` scope, writes the `configure` scope and the person's model permission; every
list and lookup is confined to the caller's departments (another department's object is a 404).
`preview` endpoints answer what saving would mean on today's data without saving anything, the
API's form of the pages' confirmation step.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from auditlog.context import set_actor
from django.db import models
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from perfops.access.authentication import ConfigureScope, ReadScope, request_has_scope
from perfops.access.models import Scope
from slos import budgets, compliance, confirm, openslo
from slos.filters import AlertEventFilter, AlertRuleFilter
from slos.models import SLO, AlertEvent, AlertRule, NotificationChannel, PerformanceBudget
from slos.serializers import (
    AlertEventSerializer,
    AlertRuleSerializer,
    NotificationChannelSerializer,
    PerformanceBudgetSerializer,
    PreviewSerializer,
    SLOSerializer,
)


class ConfiguredViewSet(viewsets.ModelViewSet):
    """CRUD confined to the caller's departments; the audit log names the token's person as actor."""

    permission_classes = [ConfigureScope]
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def get_queryset(self) -> Any:
        model: Any = self.get_serializer_class().Meta.model  # type: ignore[attr-defined]
        return model._default_manager.visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer[Any]) -> None:
        extra = {"created_by": self.request.user} if hasattr(serializer.Meta.model, "created_by") else {}  # type: ignore[attr-defined]
        with set_actor(self.request.user):
            serializer.save(**extra)

    def perform_update(self, serializer: serializers.BaseSerializer[Any]) -> None:
        with set_actor(self.request.user):
            serializer.save()

    def perform_destroy(self, instance: models.Model) -> None:
        with set_actor(self.request.user):
            instance.delete()

    def _preview(self, request: Request) -> Response:
        """Validate like a create and describe the effect; nothing is stored."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = {k: v for k, v in serializer.validated_data.items() if k != "channels"}
        candidate = serializer.Meta.model(**data)  # type: ignore[attr-defined]
        return Response(confirm.describe(candidate, request.user, timezone.now()).as_dict())


PREVIEW = extend_schema(
    summary="Preview a create without saving",
    description="Validates the body like a create and answers what it would mean on today's data "
    "(for an SLO: its budget and whether its burn-rate rules would fire). Nothing is stored.",
    responses={200: PreviewSerializer},
)


class PreviewableViewSet(ConfiguredViewSet):
    """Adds `POST .../preview`: what a create would mean today, for anyone who may read (nothing is stored)."""

    @PREVIEW
    @action(detail=False, methods=["post"], url_path="preview")
    def preview(self, request: Request) -> Response:
        return self._preview(request)

    def get_permissions(self) -> list[Any]:
        if self.action == "preview":
            return [ReadScope()]
        return list(super().get_permissions())


@extend_schema_view(
    list=extend_schema(summary="SLOs of your departments"),
    create=extend_schema(summary="Create an SLO (its four burn-rate rules come with it)"),
    destroy=extend_schema(summary="Delete an SLO and its alert rules"),
)
@extend_schema(tags=["slos"])
class SLOViewSet(PreviewableViewSet):
    queryset = SLO.objects.select_related("department", "team", "agent", "created_by").prefetch_related("alert_rules")
    serializer_class = SLOSerializer
    filterset_fields = ["scope", "environment", "kind"]

    def get_queryset(self) -> Any:
        return self.queryset.visible_to(self.request.user)

    @extend_schema(summary="The SLO's error budget now", responses={200: PreviewSerializer})
    @action(detail=True, methods=["get"])
    def budget(self, request: Request, pk: str | None = None) -> Response:
        slo = self.get_object()
        report = compliance.report(slo, request.user, timezone.now())
        spent = report.budget
        body = confirm.describe_slo(slo, request.user, timezone.now(), saved=True).as_dict()
        body["numbers"] = {
            "good": spent.good,
            "total": spent.total,
            "allowed_bad": spent.allowed_bad,
            "bad": spent.bad,
            "compliance": spent.compliance,
            "remaining": spent.remaining,
            "burn_rate_1h": report.current_burn,
            "exhaustion_s": None if report.exhaustion is None else report.exhaustion.total_seconds(),
        }
        return Response(body)

    @extend_schema(
        summary="Export SLOs as OpenSLO v1 YAML",
        parameters=[OpenApiParameter("id", OpenApiTypes.INT, many=True, description="Only these SLOs.")],
        responses={
            (200, "application/yaml"): OpenApiResponse(
                {"type": "array", "items": {"type": "object", "additionalProperties": {}}},
                description="A YAML stream: one OpenSLO v1 document per SLO, separated by `---`.",
            )
        },
    )
    @action(detail=False, methods=["get"], url_path="openslo")
    def openslo_export(self, request: Request) -> HttpResponse | Response:
        chosen = self.get_queryset()
        ids = request.query_params.getlist("id")
        # Plain digits that fit the id column: "²" passes str.isdigit() and 10**20 overflows it (a 500 before).
        if not all(re.fullmatch(r"[0-9]{1,18}", value) for value in ids):
            return Response({"id": ["SLO ids are whole numbers."]}, status=status.HTTP_400_BAD_REQUEST)
        if ids:
            chosen = chosen.filter(pk__in=[int(value) for value in ids])
        return HttpResponse(openslo.export_slos(chosen), content_type="application/yaml; charset=utf-8")

    @extend_schema(
        summary="Import SLOs from OpenSLO v1 YAML",
        description="The body is the YAML text (Content-Type application/yaml or text/plain). With "
        "`dry_run=true` nothing is stored and the answer lists what would be created and changed. Any "
        "error refuses the whole import.",
        parameters=[OpenApiParameter("dry_run", OpenApiTypes.BOOL)],
        request={"application/yaml": OpenApiTypes.STR},
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="Created and updated SLO ids."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="The errors; nothing was imported."),
        },
    )
    @action(detail=False, methods=["post"], url_path="openslo/import", parser_classes=[JSONParser])
    def openslo_import(self, request: Request) -> Response:
        if not request.user.has_perm("slos.change_slo"):
            return Response({"detail": "Your role may not change SLOs."}, status=status.HTTP_403_FORBIDDEN)
        dry_run = request.query_params.get("dry_run", "").lower()
        if dry_run not in ("", "1", "true", "yes", "0", "false", "no"):
            return Response({"dry_run": ["Must be true or false."]}, status=status.HTTP_400_BAD_REQUEST)
        raw = request._request.body[: openslo.MAX_BYTES + 1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Response({"errors": ["The body is not UTF-8 text."]}, status=status.HTTP_400_BAD_REQUEST)
        found = openslo.plan(text, request.user)
        if found.errors:
            return Response({"errors": found.errors}, status=status.HTTP_400_BAD_REQUEST)
        plan = [
            {"action": item.action, "name": item.slo.name, "objective": item.slo.objective, "changes": item.changes}
            for item in found.planned
        ]
        if dry_run in ("1", "true", "yes"):
            return Response({"dry_run": True, "plan": plan, "notes": found.notes})
        with set_actor(request.user):
            result = openslo.apply(found.planned, request.user)
        if result.errors:
            return Response({"errors": result.errors}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            {
                "created": [slo.pk for slo in result.created],
                "updated": [slo.pk for slo in result.updated],
                "unchanged": [slo.pk for slo in result.unchanged],
                "plan": plan,
                "notes": found.notes,
            }
        )


@extend_schema(tags=["slos"])
class AlertRuleViewSet(PreviewableViewSet):
    queryset = AlertRule.objects.select_related("department", "team", "agent", "slo", "budget", "created_by")
    serializer_class = AlertRuleSerializer
    filterset_class = AlertRuleFilter

    def get_queryset(self) -> Any:
        return self.queryset.visible_to(self.request.user).prefetch_related("channels")

    def perform_destroy(self, instance: models.Model) -> None:
        assert isinstance(instance, AlertRule)
        if instance.budget_id is not None:
            raise serializers.ValidationError({"detail": "A budget's rules go with the budget: delete the budget."})
        super().perform_destroy(instance)


class FormatIsAFilter(DefaultContentNegotiation):
    """`?format=slack` filters channels by their format; DRF would read it as a renderer's name and answer 404."""

    settings: Any = SimpleNamespace(URL_FORMAT_OVERRIDE=None)


@extend_schema(tags=["slos"])
class NotificationChannelViewSet(ConfiguredViewSet):
    """Webhook and email channels; a webhook URL must pass the outbound allowlist; the secret is write-only."""

    queryset = NotificationChannel.objects.select_related("department")
    serializer_class = NotificationChannelSerializer
    filterset_fields = ["kind", "format"]
    content_negotiation_class = FormatIsAFilter


@extend_schema(tags=["slos"])
class PerformanceBudgetViewSet(PreviewableViewSet):
    queryset = PerformanceBudget.objects.select_related("department", "team", "created_by").prefetch_related(
        "alert_rules"
    )
    serializer_class = PerformanceBudgetSerializer
    filterset_fields = ["scope", "environment", "aggregate"]

    def get_queryset(self) -> Any:
        return self.queryset.visible_to(self.request.user)

    @extend_schema(
        summary="The budget's use now and per day over the last 30 days",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
    )
    @action(detail=True, methods=["get"])
    def status(self, request: Request, pk: str | None = None) -> Response:
        budget = self.get_object()
        now = timezone.now()
        found = budgets.status(budget, request.user, now)
        return Response(
            {
                "state": found.state,
                "value_ms": found.value_ms,
                "consumed": found.consumed,
                "agents": [
                    {"agent": use.agent, "latency_ms": use.latency_ms, "requests": use.requests} for use in found.agents
                ],
                "history": budgets.history(budget, request.user, now),
            }
        )


@extend_schema(tags=["slos"])
class AlertEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """What fired and resolved, newest first; engineers and managers acknowledge."""

    serializer_class = AlertEventSerializer
    permission_classes = [ReadScope]
    filterset_class = AlertEventFilter
    queryset = AlertEvent.objects.none()

    def get_queryset(self) -> Any:
        return AlertEvent.objects.visible_to(self.request.user).select_related("rule", "acknowledged_by")

    @extend_schema(summary="Acknowledge an event (once; again changes nothing)", request=None)
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: str | None = None) -> Response:
        if not request_has_scope(request, Scope.AUTOMATION):
            return Response(
                {"detail": "Acknowledging needs the 'automation' scope, held by an engineer or a manager."},
                status=status.HTTP_403_FORBIDDEN,
            )
        event = self.get_object()
        if event.acknowledged_at is None:
            event.acknowledged_by = request.user
            event.acknowledged_at = timezone.now()
            with set_actor(request.user):
                event.save(update_fields=["acknowledged_by", "acknowledged_at"])
        return Response(self.get_serializer(event).data)
