"""REST endpoints of the interventions: what agents poll, configuration changes, profiling.

Agents poll `GET /api/v1/agents/<slug>/config` with their ingest (or a read) token and get a 304
while nothing changed. Changes need the `automation` scope, held by an engineer or a manager; a
`dry_run` answers what would change without changing it (the API's confirmation step).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from auditlog.context import set_actor
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from interventions import configs, environments, loadtest, profiling, regressions, reports
from interventions.confirm import describe_config, describe_load_test, describe_profiling
from interventions.models import (
    AgentConfig,
    Incident,
    LoadTest,
    ProfilingSession,
    Recommendation,
    RegressionFlag,
    Report,
)
from perfops.access.authentication import AutomationScope, ReadScope, request_has_scope
from perfops.access.models import Scope
from perfops.dashboard.traces import csv_safe
from perfops.telemetry.choices import Environment
from perfops.telemetry.models import Agent

ENVIRONMENT = OpenApiParameter(
    "environment", OpenApiTypes.STR, enum=Environment.values, description="Default production."
)


class PollScope(permissions.BasePermission):
    """The config endpoint answers the agent's own ingest token, or any read token."""

    message = "Polling the configuration needs the 'ingest' or 'read' scope."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request_has_scope(request, Scope.INGEST) or request_has_scope(request, Scope.READ)


def _agent(request: Request, slug: str) -> Agent:
    return get_object_or_404(Agent.objects.visible_to(request.user), slug=slug)


def _environment(request: Request) -> str:
    value = request.query_params.get("environment", Environment.PRODUCTION)
    if value not in Environment.values:
        raise serializers.ValidationError({"environment": [f"Must be one of {', '.join(Environment.values)}."]})
    return str(value)


class AgentConfigSerializer(serializers.ModelSerializer[AgentConfig]):
    agent: Any = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)
    restores: Any = serializers.SlugRelatedField(slug_field="version", read_only=True)

    class Meta:
        model = AgentConfig
        fields = ["agent", "environment", "version", *AgentConfig.SETTINGS, "source", "restores", "note"]
        fields += ["created_by", "created_at"]
        read_only_fields = fields


class ConfigChangeSerializer(serializers.ModelSerializer[AgentConfig]):
    """The settings to change (any subset), why, and whether only to preview."""

    dry_run = serializers.BooleanField(default=False, write_only=True)

    class Meta:
        model = AgentConfig
        fields = ["environment", *AgentConfig.SETTINGS, "note", "dry_run"]
        extra_kwargs = {name: {"required": False} for name in [*AgentConfig.SETTINGS, "environment"]}


class AgentConfigView(APIView):
    """GET: what the agent should run now (ETag / 304). POST: apply a change as a new version."""

    def get_permissions(self) -> list[Any]:
        return [AutomationScope()] if self.request.method == "POST" else [PollScope()]

    @extend_schema(
        tags=["interventions"],
        summary="The agent's current configuration and profiling state (poll with If-None-Match)",
        parameters=[ENVIRONMENT],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 304: OpenApiResponse(description="Unchanged.")},
    )
    def get(self, request: Request, slug: str) -> Response:
        agent = _agent(request, slug)
        body = configs.payload(agent, _environment(request), timezone.now())
        tag = configs.etag(body)
        if tag in {value.strip() for value in request.headers.get("If-None-Match", "").split(",")}:
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": tag})
        return Response(body, headers={"ETag": tag, "Cache-Control": "no-cache"})

    @extend_schema(
        tags=["interventions"],
        summary="Apply a configuration change (a new version); dry_run previews it",
        request=ConfigChangeSerializer,
        responses={
            201: AgentConfigSerializer,
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="dry_run: what would change."),
            409: OpenApiResponse(description="Nothing would change."),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        agent = _agent(request, slug)
        incoming = ConfigChangeSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = dict(incoming.validated_data)
        environment = data.pop("environment", Environment.PRODUCTION)
        dry_run, note = data.pop("dry_run", False), data.pop("note", "")
        if dry_run:
            base = configs.current(agent, environment)
            values = (base.settings_dict() if base else AgentConfig().settings_dict()) | data
            candidate = AgentConfig(agent=agent, environment=environment, note=note, **values)
            return Response({"dry_run": True, **describe_config(candidate, request.user).as_dict()})
        try:
            with set_actor(request.user):
                made = configs.apply(agent, environment, data, request.user, source=AgentConfig.Source.API, note=note)
        except configs.NoChange as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(AgentConfigSerializer(made).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["interventions"], parameters=[ENVIRONMENT])
class AgentConfigHistoryView(generics.ListAPIView[AgentConfig]):
    """Every configuration version of the agent in an environment, newest first."""

    permission_classes = [ReadScope]
    serializer_class = AgentConfigSerializer
    queryset = AgentConfig.objects.none()

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        agent = _agent(self.request, self.kwargs["slug"])
        return AgentConfig.objects.filter(agent=agent, environment=_environment(self.request)).select_related(
            "agent", "created_by", "restores"
        )


class AgentConfigRevertView(APIView):
    permission_classes = [AutomationScope]

    @extend_schema(
        tags=["interventions"],
        summary="Make an earlier version current again (as a new version with exactly its settings)",
        parameters=[ENVIRONMENT],
        request=None,
        responses={201: AgentConfigSerializer, 409: OpenApiResponse(description="It is already current.")},
    )
    def post(self, request: Request, slug: str, version: int) -> Response:
        agent = _agent(request, slug)
        target = get_object_or_404(AgentConfig, agent=agent, environment=_environment(request), version=version)
        try:
            with set_actor(request.user):
                made = configs.revert(target, request.user)
        except configs.NoChange:
            return Response({"detail": f"v{version} is already current."}, status=status.HTTP_409_CONFLICT)
        return Response(AgentConfigSerializer(made).data, status=status.HTTP_201_CREATED)


class ProfilingSessionSerializer(serializers.ModelSerializer[ProfilingSession]):
    agent: Any = serializers.SlugRelatedField(slug_field="slug", queryset=Agent.objects.none())
    started_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)
    ended_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)
    dry_run = serializers.BooleanField(default=False, write_only=True)

    class Meta:
        model = ProfilingSession
        fields = ["id", "agent", "environment", "duration_s", "reason", "status", "started_by", "started_at"]
        fields += ["expires_at", "ended_at", "ended_by", "end_reason", "report_status", "dry_run"]
        read_only_fields = ["status", "started_at", "expires_at", "ended_at", "end_reason", "report_status"]
        # One active session per agent and environment is checked when it starts (409, not 400).
        validators: list[Any] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            self.fields["agent"].queryset = Agent.objects.visible_to(request.user)  # type: ignore[attr-defined]


@extend_schema(tags=["interventions"])
class ProfilingListView(generics.ListCreateAPIView[ProfilingSession]):
    """Profiling sessions of the caller's agents; POST starts one (automation scope)."""

    serializer_class = ProfilingSessionSerializer
    filterset_fields = ["status", "environment"]

    def get_permissions(self) -> list[Any]:
        return [AutomationScope()] if self.request.method == "POST" else [ReadScope()]

    def get_queryset(self) -> Any:
        return ProfilingSession.objects.visible_to(self.request.user).select_related("agent", "started_by", "ended_by")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data.get("dry_run"):
            candidate = ProfilingSession(
                agent=data["agent"], environment=data["environment"], duration_s=data["duration_s"]
            )
            return Response({"dry_run": True, **describe_profiling(candidate, request.user).as_dict()})
        try:
            with set_actor(request.user):
                session = profiling.start(
                    data["agent"], data["environment"], data["duration_s"], request.user, data.get("reason", "")
                )
        except profiling.AlreadyActive as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(session).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["interventions"])
class ProfilingDetailView(generics.RetrieveAPIView[ProfilingSession]):
    permission_classes = [ReadScope]
    serializer_class = ProfilingSessionSerializer

    def get_queryset(self) -> Any:
        return ProfilingSession.objects.visible_to(self.request.user).select_related("agent", "started_by", "ended_by")


class ProfilingStopView(APIView):
    permission_classes = [AutomationScope]

    @extend_schema(
        tags=["interventions"],
        summary="Stop a session early (its report follows); stopping an ended one changes nothing",
        request=None,
        responses={200: ProfilingSessionSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        session = get_object_or_404(ProfilingSession.objects.visible_to(request.user), pk=pk)
        with set_actor(request.user):
            profiling.end(session, user=request.user)
        session.refresh_from_db()
        return Response(ProfilingSessionSerializer(session, context={"request": request}).data)


class ProfilingReportView(APIView):
    permission_classes = [ReadScope]

    @extend_schema(
        tags=["interventions"],
        summary="The bottleneck report of an ended session (JSON; report.csv for its table as CSV)",
        # One view serves both paths: report answers JSON, report.csv the table as CSV.
        responses={
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR),
            404: OpenApiResponse(description="Not ready yet."),
        },
    )
    def get(self, request: Request, pk: int, as_csv: bool = False) -> Response | HttpResponse:
        session = get_object_or_404(ProfilingSession.objects.visible_to(request.user), pk=pk)
        if session.report is None:
            raise Http404("The report is written when the session ends.")
        if as_csv:
            return report_csv_response(session)
        return Response(session.report)


def report_csv_response(session: ProfilingSession) -> HttpResponse:
    """The report's table as CSV; every cell that could start a formula is made text."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in profiling.report_csv_rows(session.report or {}):
        writer.writerow([csv_safe(cell) for cell in row])
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    name = f"perfops-profile-{session.agent.slug}-{session.started_at:%Y%m%dT%H%MZ}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


class RegressionFlagSerializer(serializers.ModelSerializer[RegressionFlag]):
    agent: Any = serializers.SlugRelatedField(slug_field="slug", queryset=Agent.objects.none())
    flagged_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)
    decided_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)
    incident: Any = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    dry_run = serializers.BooleanField(default=False, write_only=True)

    class Meta:
        model = RegressionFlag
        fields = ["id", "agent", "environment", "version", "baseline_version", "status", "source", "summary"]
        fields += ["evidence", "flagged_by", "flagged_at", "decided_by", "decided_at", "dismiss_reason", "incident"]
        fields += ["dry_run"]
        read_only_fields = ["baseline_version", "status", "source", "evidence", "flagged_at", "decided_at"]
        read_only_fields += ["dismiss_reason"]
        validators: list[Any] = []  # one open flag per version: 409 when flagging, not 400

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            self.fields["agent"].queryset = Agent.objects.visible_to(request.user)  # type: ignore[attr-defined]


class IncidentSerializer(serializers.ModelSerializer[Incident]):
    opened_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)
    resolved_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Incident
        fields = ["id", "flag", "title", "status", "opened_by", "opened_at", "resolved_by", "resolved_at", "notes"]
        read_only_fields = fields


@extend_schema(tags=["interventions"])
class RegressionFlagListView(generics.ListCreateAPIView[RegressionFlag]):
    """Regression flags of the caller's agents; POST flags a version (automation; dry_run shows the evidence)."""

    serializer_class = RegressionFlagSerializer
    filterset_fields = ["status", "environment", "source", "version"]

    def get_permissions(self) -> list[Any]:
        return [AutomationScope()] if self.request.method == "POST" else [ReadScope()]

    def get_queryset(self) -> Any:
        return RegressionFlag.objects.visible_to(self.request.user).select_related(
            "agent", "flagged_by", "decided_by", "incident"
        )

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        agent, environment, version = data["agent"], data["environment"], data["version"]
        if data.get("dry_run"):
            found = regressions.evidence(agent, environment, version, request.user)
            return Response({"dry_run": True, "summary": regressions.describe(found, version), "evidence": found})
        try:
            with set_actor(request.user):
                made = regressions.flag(agent, environment, version, request.user, summary=data.get("summary", ""))
        except regressions.AlreadyFlagged as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(made).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["interventions"])
class RegressionFlagDetailView(generics.RetrieveAPIView[RegressionFlag]):
    permission_classes = [ReadScope]
    serializer_class = RegressionFlagSerializer

    def get_queryset(self) -> Any:
        return RegressionFlag.objects.visible_to(self.request.user).select_related("agent", "incident")


class DecisionSerializer(serializers.Serializer[Any]):
    title = serializers.CharField(required=False, allow_blank=True, max_length=200)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=300)


class RegressionDecisionView(APIView):
    """Confirm (opens an incident, notifies) or dismiss (with a reason) a suspected regression."""

    permission_classes = [AutomationScope]
    decision = "confirm"

    @extend_schema(
        tags=["interventions"],
        request=DecisionSerializer,
        responses={200: RegressionFlagSerializer, 409: OpenApiResponse(description="Already decided.")},
    )
    def post(self, request: Request, pk: int) -> Response:
        flagged = get_object_or_404(RegressionFlag.objects.visible_to(request.user).select_related("agent"), pk=pk)
        body = DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            with set_actor(request.user):
                if self.decision == "confirm":
                    regressions.confirm(flagged, request.user, body.validated_data.get("title", ""))
                else:
                    regressions.dismiss(flagged, request.user, body.validated_data.get("reason", ""))
        except regressions.NotPending as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except ValueError as exc:
            return Response({"reason": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        flagged.refresh_from_db()
        return Response(RegressionFlagSerializer(flagged, context={"request": request}).data)


@extend_schema(tags=["interventions"])
class IncidentListView(generics.ListAPIView[Incident]):
    permission_classes = [ReadScope]
    serializer_class = IncidentSerializer
    filterset_fields = ["status"]

    def get_queryset(self) -> Any:
        return Incident.objects.visible_to(self.request.user).select_related("opened_by", "resolved_by")


class IncidentResolveView(APIView):
    permission_classes = [AutomationScope]

    @extend_schema(tags=["interventions"], request=None, responses={200: IncidentSerializer})
    def post(self, request: Request, pk: int) -> Response:
        incident = get_object_or_404(Incident.objects.visible_to(request.user), pk=pk)
        with set_actor(request.user):
            regressions.resolve(incident, request.user)
        return Response(IncidentSerializer(incident).data)


class RecommendationSerializer(serializers.ModelSerializer[Recommendation]):
    agent: Any = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    decided_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)
    applied_config: Any = serializers.SlugRelatedField(slug_field="version", read_only=True)

    class Meta:
        model = Recommendation
        fields = ["id", "agent", "environment", "title", "rationale", "expected_effect", "changes", "status"]
        fields += ["created_at", "decided_by", "decided_at", "applied_config"]
        read_only_fields = fields


@extend_schema(tags=["interventions"])
class RecommendationListView(generics.ListAPIView[Recommendation]):
    """Configuration recommendations for the caller's agents (written by the analytics)."""

    permission_classes = [ReadScope]
    serializer_class = RecommendationSerializer
    filterset_fields = ["status", "environment"]

    def get_queryset(self) -> Any:
        return Recommendation.objects.visible_to(self.request.user).select_related("agent", "decided_by")


class RecommendationDecisionView(APIView):
    permission_classes = [AutomationScope]
    decision = "apply"

    @extend_schema(
        tags=["interventions"],
        summary="Apply (a new configuration version) or dismiss a recommendation",
        request=None,
        responses={200: RecommendationSerializer, 409: OpenApiResponse(description="Already decided.")},
    )
    def post(self, request: Request, pk: int) -> Response:
        found = get_object_or_404(Recommendation.objects.visible_to(request.user), pk=pk)
        with set_actor(request.user):
            if self.decision == "apply":
                try:
                    configs.apply_recommendation(found, request.user)
                except configs.NoChange as exc:
                    return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
            elif not configs.dismiss_recommendation(found, request.user):
                return Response({"detail": "Already decided."}, status=status.HTTP_409_CONFLICT)
        found.refresh_from_db()
        return Response(RecommendationSerializer(found).data)


class LoadTestSerializer(serializers.ModelSerializer[LoadTest]):
    agent: Any = serializers.SlugRelatedField(slug_field="slug", queryset=Agent.objects.none())
    created_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)
    scheduled_at = serializers.DateTimeField(required=False, help_text="Default: now.")
    confirm_production = serializers.BooleanField(default=False, write_only=True)
    dry_run = serializers.BooleanField(default=False, write_only=True)

    class Meta:
        model = LoadTest
        fields = ["id", "agent", "environment", "target_url", "rate_rps", "ramp_s", "duration_s", "concurrency"]
        fields += ["timeout_s", "request_template", "scheduled_at", "status", "created_by", "created_at", "started_at"]
        fields += ["finished_at", "sent", "completed", "failures", "results", "detail", "confirm_production", "dry_run"]
        read_only_fields = ["status", "created_at", "started_at", "finished_at", "sent", "completed", "failures"]
        read_only_fields += ["results", "detail"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            self.fields["agent"].queryset = Agent.objects.visible_to(request.user)  # type: ignore[attr-defined]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("environment") == "production" and not attrs.get("confirm_production"):
            raise serializers.ValidationError(
                {"confirm_production": ["A production target needs confirm_production: true."]}
            )
        candidate = LoadTest(
            **{k: v for k, v in attrs.items() if k not in ("confirm_production", "dry_run")},
        )
        candidate.scheduled_at = candidate.scheduled_at or timezone.now()
        try:
            candidate.full_clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        attrs["candidate"] = candidate
        return attrs


@extend_schema(tags=["interventions"])
class LoadTestListView(generics.ListCreateAPIView[LoadTest]):
    """Load tests of the caller's agents; POST schedules one (automation; dry_run previews it)."""

    serializer_class = LoadTestSerializer
    filterset_fields = ["status", "environment"]

    def get_permissions(self) -> list[Any]:
        return [AutomationScope()] if self.request.method == "POST" else [ReadScope()]

    def get_queryset(self) -> Any:
        return LoadTest.objects.visible_to(self.request.user).select_related("agent", "created_by")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        candidate = serializer.validated_data["candidate"]
        if serializer.validated_data.get("dry_run"):
            return Response({"dry_run": True, **describe_load_test(candidate, request.user).as_dict()})
        with set_actor(request.user):
            test = loadtest.schedule(candidate, request.user)
        return Response(self.get_serializer(test).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["interventions"])
class LoadTestDetailView(generics.RetrieveAPIView[LoadTest]):
    """A test's progress while it runs, and its results and SLO comparison after."""

    permission_classes = [ReadScope]
    serializer_class = LoadTestSerializer

    def get_queryset(self) -> Any:
        return LoadTest.objects.visible_to(self.request.user).select_related("agent", "created_by")


class LoadTestActionView(APIView):
    permission_classes = [AutomationScope]
    action = "cancel"

    @extend_schema(
        tags=["interventions"],
        summary="Cancel a scheduled test (it sends nothing) or stop a running one",
        request=None,
        responses={200: LoadTestSerializer, 409: OpenApiResponse(description="Not scheduled / not running.")},
    )
    def post(self, request: Request, pk: int) -> Response:
        test = get_object_or_404(LoadTest.objects.visible_to(request.user), pk=pk)
        with set_actor(request.user):
            done = loadtest.cancel(test, request.user) if self.action == "cancel" else loadtest.stop(test, request.user)
        if not done:
            return Response({"detail": f"The test is {test.status}."}, status=status.HTTP_409_CONFLICT)
        test.refresh_from_db()
        return Response(LoadTestSerializer(test, context={"request": request}).data)


class EnvironmentComparisonView(APIView):
    permission_classes = [ReadScope]

    @extend_schema(
        tags=["interventions"],
        summary="The agent across development, staging and production: deltas, gaps and advice",
        parameters=[OpenApiParameter("range", OpenApiTypes.STR, enum=["7d", "30d"])],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
    )
    def get(self, request: Request, slug: str) -> Response:
        agent = _agent(request, slug)
        chosen = request.query_params.get("range", "7d")
        if chosen not in ("7d", "30d"):
            raise serializers.ValidationError({"range": ["Must be 7d or 30d."]})
        days = 30 if chosen == "30d" else 7
        reference, columns = environments.compare(agent, request.user, timezone.now(), days)
        return Response(
            {
                "agent": agent.slug,
                "days": days,
                "reference": reference,
                "environments": [
                    {
                        "environment": c.environment,
                        "figures": c.figures,
                        "deltas": c.deltas,
                        "gaps": c.gaps,
                        "advice": c.advice,
                        "settings": c.settings,
                    }
                    for c in columns
                ],
            }
        )


class ReportSerializer(serializers.ModelSerializer[Report]):
    created_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Report
        fields = ["id", "format", "filters", "title", "status", "progress", "step", "detail", "size", "created_by"]
        fields += ["created_at", "finished_at"]
        read_only_fields = fields


class ReportRequestSerializer(serializers.Serializer[Any]):
    format = serializers.ChoiceField(choices=Report.Format.choices)
    filters = serializers.DictField(child=serializers.CharField(), required=False, help_text="The dashboard's filters.")
    title = serializers.CharField(required=False, allow_blank=True, max_length=200)


class ReportListView(APIView):
    permission_classes = [ReadScope]

    @extend_schema(tags=["interventions"], summary="Your reports", responses={200: ReportSerializer(many=True)})
    def get(self, request: Request) -> Response:
        found = Report.objects.visible_to(request.user).defer("content")[:100]
        return Response(ReportSerializer(found, many=True).data)

    @extend_schema(
        tags=["interventions"],
        summary="Export a performance report of a filter set (PDF or CSV), written in the background",
        request=ReportRequestSerializer,
        responses={202: ReportSerializer},
    )
    def post(self, request: Request) -> Response:
        from perfops.metrics.filters import FilterError, parse_filters

        body = ReportRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            filters = parse_filters(body.validated_data.get("filters", {}), strict=True)
        except FilterError as exc:
            return Response({"filters": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
        report = reports.request_report(
            filters, body.validated_data["format"], request.user, body.validated_data.get("title", "")
        )
        return Response(ReportSerializer(report).data, status=status.HTTP_202_ACCEPTED)


class ReportDetailView(APIView):
    permission_classes = [ReadScope]

    @extend_schema(tags=["interventions"], summary="A report's progress", responses={200: ReportSerializer})
    def get(self, request: Request, pk: int) -> Response:
        return Response(ReportSerializer(get_object_or_404(Report.objects.visible_to(request.user), pk=pk)).data)


class ReportDownloadView(APIView):
    permission_classes = [ReadScope]

    @extend_schema(
        tags=["interventions"],
        summary="The report's file, once ready",
        responses={(200, "application/pdf"): OpenApiTypes.BINARY, (200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        report = get_object_or_404(Report.objects.visible_to(request.user), pk=pk, status=Report.Status.READY)
        content_type = "application/pdf" if report.format == Report.Format.PDF else "text/csv; charset=utf-8"
        response = HttpResponse(bytes(report.content or b""), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{report.filename}"'
        return response
