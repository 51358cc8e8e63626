"""The deploy gate for CI/CD clients: may this version go further? pass, fail or not enough data, with why."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from perfops.access.authentication import ReadScope
from perfops.analytics import regression, samples
from perfops.telemetry.choices import Environment
from perfops.telemetry.models import Agent


class VersionGateView(APIView):
    """GET /api/v1/gates/version?agent=&environment=&candidate=&baseline=: a pipeline stops a rollout on "fail"."""

    permission_classes = [ReadScope]

    @extend_schema(
        tags=["analytics"],
        summary="Deploy gate: is the candidate version slower or failing more than the baseline?",
        description="Compares the newest requests (up to 5,000 each, last 7 days) of both versions of the agent "
        "in the environment: latency location and tail, and errors, corrected for the time of day. "
        "`verdict` is pass, fail or insufficient (fewer than 200 requests on a side); `reasons` say why "
        "with their numbers. Without `baseline`, the version deployed before the candidate.",
        parameters=[
            OpenApiParameter("agent", OpenApiTypes.STR, required=True),
            OpenApiParameter("environment", OpenApiTypes.STR, enum=Environment.values),
            OpenApiParameter("candidate", OpenApiTypes.STR, required=True),
            OpenApiParameter("baseline", OpenApiTypes.STR),
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT),
            400: OpenApiResponse(OpenApiTypes.OBJECT),
            404: OpenApiResponse(description="No such agent, or not one of yours."),
        },
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        errors = {key: ["Required."] for key in ("agent", "candidate") if not params.get(key)}
        environment = params.get("environment", Environment.PRODUCTION)
        if environment not in Environment.values:
            errors["environment"] = [f"Must be one of {', '.join(Environment.values)}."]
        if errors:
            raise serializers.ValidationError(errors)
        agent = get_object_or_404(Agent.objects.visible_to(request.user), slug=params["agent"])
        candidate = params["candidate"]
        baseline = params.get("baseline")
        if not baseline:
            from interventions.regressions import baseline_of

            before = baseline_of(agent, environment, candidate)
            baseline = before.version if before is not None and before.version != candidate else ""
        if not baseline:
            return Response(
                {
                    "verdict": regression.INSUFFICIENT,
                    "agent": agent.slug,
                    "environment": environment,
                    "candidate": candidate,
                    "baseline": None,
                    "reasons": ["No earlier version of this agent in this environment to compare with."],
                }
            )
        now = timezone.now()
        decision = regression.compare(
            samples.sample(agent, environment, baseline, now),
            samples.sample(agent, environment, candidate, now),
            regression.hour_profile(samples.history(agent, environment, baseline, now)),
        )
        body = {"agent": agent.slug, "environment": environment, "candidate": candidate, "baseline": baseline}
        return Response(body | decision.as_dict())
