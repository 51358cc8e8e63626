"""REST metrics: summary, series and breakdowns of any filter set, scoped to the caller's departments."""

from __future__ import annotations

from typing import Any

from django.db import InterfaceError, OperationalError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from perfops.access.authentication import ReadScope
from perfops.access.scoping import department_ids_for
from perfops.metrics.cache import cached
from perfops.metrics.filters import (
    DEFAULT_ENVIRONMENT,
    DEFAULT_RANGE,
    ENVIRONMENT_VALUES,
    RANGES,
    STATUSES,
    TIERS,
    FilterError,
    parse_filters,
)
from perfops.metrics.query import GROUP_BY, TIMING_GROUPS, MetricsQuery

FILTER_PARAMETERS = [
    OpenApiParameter("range", str, enum=list(RANGES), description=f"Time range ending now (default {DEFAULT_RANGE})."),
    OpenApiParameter(
        "start", OpenApiTypes.DATETIME, description="Start of a custom range (RFC 3339 with offset); not with range."
    ),
    OpenApiParameter("end", OpenApiTypes.DATETIME, description="End of a custom range (default: now)."),
    OpenApiParameter("environment", str, enum=list(ENVIRONMENT_VALUES), description=f"Default {DEFAULT_ENVIRONMENT}."),
    OpenApiParameter("department", str, description="Department slug."),
    OpenApiParameter("team", str, description="Team slug (within the department, if one is given)."),
    OpenApiParameter("agent", str, description="Agent slug."),
    OpenApiParameter(
        "tier",
        str,
        enum=list(TIERS),
        description="Performance tier: fast <100 ms, normal <500 ms, slow <2 s, critical.",
    ),
    OpenApiParameter("status", str, enum=list(STATUSES), description="success, errors (status error) or timeouts."),
    OpenApiParameter("version", str, description="A version, or 'latest' (each agent's newest deployed version)."),
    OpenApiParameter("intent", str, description="Intent category."),
]

_FIGURES: dict[str, Any] = {
    "count": serializers.IntegerField(),
    "errors": serializers.IntegerField(),
    "timeouts": serializers.IntegerField(),
    "error_rate": serializers.FloatField(allow_null=True, help_text="(errors + timeouts) / count."),
    "throughput_rps": serializers.FloatField(help_text="Requests per second over the time that has passed."),
    "mean_ms": serializers.FloatField(allow_null=True),
    "min_ms": serializers.FloatField(allow_null=True),
    "max_ms": serializers.FloatField(allow_null=True),
    "p50_ms": serializers.FloatField(allow_null=True),
    "p95_ms": serializers.FloatField(allow_null=True),
    "p99_ms": serializers.FloatField(allow_null=True),
    "input_tokens": serializers.IntegerField(),
    "output_tokens": serializers.IntegerField(),
    "cache_hit_rate": serializers.FloatField(allow_null=True),
}
_WINDOW = inline_serializer(
    "MetricsWindow",
    {
        "start": serializers.DateTimeField(help_text="Aligned start of the window (a multiple of bucket_s)."),
        "end": serializers.DateTimeField(),
        "bucket_s": serializers.IntegerField(help_text="Series bucket width."),
        "range": serializers.CharField(allow_null=True),
    },
)
_SUMMARY = inline_serializer(
    "MetricsSummary", {"window": _WINDOW, "filters": serializers.DictField(child=serializers.CharField()), **_FIGURES}
)
_POINT_FIELDS: dict[str, Any] = {"t": serializers.DateTimeField(), **_FIGURES}
_SERIES = inline_serializer(
    "MetricsSeries",
    {
        "window": _WINDOW,
        "filters": serializers.DictField(child=serializers.CharField()),
        "group_by": serializers.CharField(allow_null=True),
        "series": inline_serializer(
            "MetricsSeriesLine",
            {"key": serializers.CharField(), "points": inline_serializer("MetricsPoint", _POINT_FIELDS, many=True)},
            many=True,
        ),
    },
)
_BREAKDOWN = inline_serializer(
    "MetricsBreakdown",
    {
        "window": _WINDOW,
        "filters": serializers.DictField(child=serializers.CharField()),
        "by": serializers.CharField(),
        "traces": serializers.IntegerField(required=False, help_text="phase / dependency: traces in the window."),
        "rows": serializers.ListField(
            child=serializers.DictField(),
            help_text="One row per value, largest first: key and the summary figures; for phase / dependency: "
            "name (and kind), calls, errors, mean_ms, mean_start_ms, per_trace_ms, share_of_latency.",
        ),
    },
)
_ERROR = inline_serializer(
    "MetricsError",
    {
        "detail": serializers.CharField(),
        "errors": serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
    },
)


def bad_request(error: FilterError) -> Response:
    return Response({"detail": "Bad parameters.", "errors": error.errors}, status=400)


class _MetricsView(APIView):
    """Shared by the metrics endpoints: strict parameter parsing, scoping, the per-chart cache."""

    permission_classes = [ReadScope]
    chart = ""
    extra_parameters: tuple[str, ...] = ()
    blank_parameters_are_absent = True  # parse_filters reads "" as not given; the OpenAPI schema says so

    def get(self, request: Request) -> Response:
        params = {key: request.query_params.get(key, "") for key in request.query_params}
        extras = {key: params.pop(key) for key in self.extra_parameters if key in params}
        try:
            filters = parse_filters(params, strict=True)
            options = self.parse_options(extras)
            query = MetricsQuery(filters, request.user)
            scope = department_ids_for(request.user)
            parts = {
                "filters": filters.normalised(),
                "options": options,
                "scope": "all" if scope is None else sorted(scope),
            }
            body = cached(self.chart, parts, lambda: self.compute(query, options))
        except FilterError as exc:
            return bad_request(exc)
        except (OperationalError, InterfaceError):
            return Response(
                {"detail": "Storage is unavailable; retry shortly."}, status=503, headers={"Retry-After": "5"}
            )
        return Response({**body, "filters": filters.normalised()})

    def parse_options(self, extras: dict[str, str]) -> dict[str, Any]:
        return {}

    def compute(self, query: MetricsQuery, options: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


def _errors_400() -> OpenApiResponse:
    return OpenApiResponse(_ERROR, description="A bad parameter: each one named, with the reason.")


class MetricsSummaryView(_MetricsView):
    """GET /api/v1/metrics/summary"""

    chart = "api.summary"

    @extend_schema(
        operation_id="metrics_summary",
        summary="Summary of a filter set",
        description="Count, errors, timeouts, error rate, p50/p95/p99 latency and throughput over the window. "
        "Percentiles are within 1% of the exact nearest-rank value.",
        parameters=FILTER_PARAMETERS,
        responses={200: _SUMMARY, 400: _errors_400()},
        tags=["metrics"],
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def compute(self, query: MetricsQuery, options: dict[str, Any]) -> dict[str, Any]:
        return query.summary()


class MetricsSeriesView(_MetricsView):
    """GET /api/v1/metrics/series"""

    chart = "api.series"
    extra_parameters = ("group_by", "limit")

    @extend_schema(
        operation_id="metrics_series",
        summary="Time series of a filter set",
        description="The summary's figures per time bucket (about 100-300 buckets: 30 s for 1h, 2 min for 6h, 5 min "
        "for 24h, 1 h for 7d, 3 h for 30d), optionally one series per value of group_by (the `limit` largest, "
        "the rest as 'other').",
        parameters=[
            *FILTER_PARAMETERS,
            OpenApiParameter("group_by", str, enum=list(GROUP_BY), description="One series per value of this."),
            OpenApiParameter("limit", int, description="Series kept with group_by (1-50, default 10)."),
        ],
        responses={200: _SERIES, 400: _errors_400()},
        tags=["metrics"],
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def parse_options(self, extras: dict[str, str]) -> dict[str, Any]:
        errors: dict[str, list[str]] = {}
        group_by = extras.get("group_by") or None
        if group_by is not None and group_by not in GROUP_BY:
            errors["group_by"] = [f"Must be one of {', '.join(GROUP_BY)}."]
        limit = 10
        if extras.get("limit"):
            try:
                limit = int(extras["limit"])
            except ValueError:
                limit = 0
            if not 1 <= limit <= 50:
                errors["limit"] = ["Must be a whole number from 1 to 50."]
        if errors:
            raise FilterError(errors)
        return {"group_by": group_by, "limit": limit}

    def compute(self, query: MetricsQuery, options: dict[str, Any]) -> dict[str, Any]:
        return query.series(options["group_by"], limit=options["limit"])


class MetricsBreakdownView(_MetricsView):
    """GET /api/v1/metrics/breakdown"""

    chart = "api.breakdown"
    extra_parameters = ("by",)

    @extend_schema(
        operation_id="metrics_breakdown",
        summary="Breakdown of a filter set by a dimension",
        description="The summary's figures per agent, department, team, version, environment, intent, error type, "
        "status or tier; or where the time goes per phase or per dependency call.",
        parameters=[
            *FILTER_PARAMETERS,
            OpenApiParameter("by", str, enum=[*GROUP_BY, *TIMING_GROUPS], required=True, description="The dimension."),
        ],
        responses={200: _BREAKDOWN, 400: _errors_400()},
        tags=["metrics"],
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def parse_options(self, extras: dict[str, str]) -> dict[str, Any]:
        by = extras.get("by") or ""
        if by not in (*GROUP_BY, *TIMING_GROUPS):
            reason = "Required." if not by else f"Must be one of {', '.join((*GROUP_BY, *TIMING_GROUPS))}."
            raise FilterError({"by": [reason]})
        return {"by": by}

    def compute(self, query: MetricsQuery, options: dict[str, Any]) -> dict[str, Any]:
        return query.breakdown(options["by"])
