"""REST endpoints of the telemetry app: batch ingest, deployments, agents, one trace."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from auditlog.context import set_actor
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from perfops.access.authentication import IngestScope, ReadScope, ReportDeployments
from perfops.telemetry.filters import AgentFilter, DeploymentFilter
from perfops.telemetry.ingest import schema
from perfops.telemetry.ingest.body import IngestError, media_type, read_body
from perfops.telemetry.ingest.records import TRACE_ID, TraceRecord, Window, decode_clean_batch, validate_record
from perfops.telemetry.ingest.store import StoreResult, store_records
from perfops.telemetry.models import Agent, Deployment, Trace
from perfops.telemetry.serializers import AgentSerializer, DeploymentSerializer, TraceSerializer


def error_response(
    status_code: int, message: str, field: str = "body", headers: dict[str, str] | None = None
) -> Response:
    """A refused ingest request: the reason, in the same shape as a batch result so clients parse one form."""
    body = {"accepted": 0, "duplicates": 0, "rejected": [], "detail": message, "errors": {field: [message]}}
    return Response(body, status=status_code, headers=headers)


def unavailable_response() -> Response:
    """The database is down or restarting: tell the client to retry rather than failing with a 500."""
    return error_response(503, "Storage is unavailable; retry shortly.", headers={"Retry-After": "5"})


def parse_json_body(body: bytes) -> tuple[Any, bool]:
    """Parse strict JSON; fall back to the stdlib for NaN/Infinity so only the records holding them are refused.

    Returns the document and whether the lenient parser was needed.
    """
    if not body:
        raise IngestError(400, "The body is empty.")
    try:
        # msgspec, like the fast route: integers stay exact (orjson would turn 2**70 into a float).
        return msgspec.json.decode(body), False
    except (msgspec.DecodeError, RecursionError) as strict_error:
        try:
            return json.loads(body.decode("utf-8")), True
        except UnicodeDecodeError:
            raise IngestError(400, "The body is not valid UTF-8.") from None
        except (ValueError, RecursionError):
            reason = "nested too deeply" if isinstance(strict_error, RecursionError) else str(strict_error)
            raise IngestError(400, f"The body is not valid JSON: {reason}.") from None


def ingest_window() -> Window:
    """The started_at range ingest accepts now."""
    limits = settings.PERFOPS
    return Window.around(timezone.now(), limits["RAW_RETENTION_DAYS"], limits["INGEST_MAX_FUTURE_S"])


def raw_records_of(body: bytes) -> tuple[list[Any], bool]:
    """The `traces` list of a JSON batch body and whether NaN/Infinity had to be tolerated.

    Raises IngestError saying what is wrong with the body as a whole.
    """
    document, lenient = parse_json_body(body)
    if type(document) is not dict:
        raise IngestError(400, 'The body must be a JSON object: {"traces": [...]}.')
    unknown = sorted(set(document) - {"traces"})
    if unknown:
        raise IngestError(400, f"Unknown field(s): {', '.join(unknown)[:200]}.", unknown[0][:64])
    raw_records = document.get("traces")
    if type(raw_records) is not list:
        raise IngestError(400, "Required: a list of trace records.", "traces")
    if not raw_records:
        raise IngestError(400, "The batch holds no records.", "traces")
    if len(raw_records) > settings.PERFOPS["INGEST_MAX_RECORDS"]:
        limit = settings.PERFOPS["INGEST_MAX_RECORDS"]
        raise IngestError(413, f"{len(raw_records)} records; at most {limit} per request.", "traces")
    return raw_records, lenient


def validate_batch(raw_records: list[Any], *, lenient: bool) -> tuple[list[TraceRecord], list[dict[str, Any]]]:
    """Validate each record; return the good ones and the refusals by index."""
    window = ingest_window()
    valid: list[TraceRecord] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_records):
        if lenient:
            # The stdlib parser (needed for NaN) lets lone surrogates through; nothing can store them.
            try:
                msgspec.json.encode(raw)
            except UnicodeEncodeError:
                rejected.append({"index": index, "errors": {"record": ["Contains text that is not valid Unicode."]}})
                continue
        record, errors = validate_record(raw, index, window)
        if record is None:
            rejected.append({"index": index, "errors": errors})
        else:
            valid.append(record)
    return valid, rejected


def batch_response(result: StoreResult, rejected: list[dict[str, Any]]) -> Response:
    """200 when anything was stored or already stored, 400 when every record was refused."""
    refusals = sorted(rejected + result.rejected, key=lambda item: item["index"])
    code = status.HTTP_200_OK if result.accepted or result.duplicates else status.HTTP_400_BAD_REQUEST
    return Response({"accepted": result.accepted, "duplicates": result.duplicates, "rejected": refusals}, status=code)


class TraceBatchView(APIView):
    """POST /api/v1/traces: a batch of trace records as JSON (optionally gzip-compressed)."""

    permission_classes = [IngestScope]
    # The body is read by read_body (bounded, gzip-aware), never by a DRF parser; this only documents it.
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="ingest_traces",
        summary="Send a batch of traces",
        description="One record per agent request. Valid records are stored even when others in the batch are "
        "refused; each refusal names the record's index, the field and the reason. A retried batch is "
        "never counted twice. Needs a token with the `ingest` scope.",
        request=schema.TraceBatchIn,
        responses={
            200: schema.IngestResult,
            400: OpenApiResponse(schema.IngestResult, description="Nothing stored: bad body, or every record refused."),
            401: OpenApiResponse(schema.IngestError, description="No token, or an unknown, expired or revoked token."),
            403: OpenApiResponse(schema.IngestError, description="The token lacks the ingest scope."),
            413: OpenApiResponse(schema.IngestResult, description="Over 5,000 records or 10 MiB (after gzip)."),
            415: OpenApiResponse(
                schema.IngestResult, description="Not application/json, or an encoding other than gzip."
            ),
            503: OpenApiResponse(schema.IngestResult, description="Storage unavailable; retry after Retry-After."),
        },
        tags=["ingest"],
    )
    def post(self, request: Request) -> Response:
        limits = settings.PERFOPS
        try:
            if media_type(request._request) != "application/json":
                raise IngestError(415, "Send the batch as application/json.", "content_type")
            body = read_body(request._request, limits["INGEST_MAX_BYTES"])
            valid = decode_clean_batch(body, ingest_window())
            rejected: list[dict[str, Any]] = []
            if valid is None:
                # Something is wrong somewhere: check record by record to keep the good and name the bad.
                raw_records, lenient = raw_records_of(body)
                valid, rejected = validate_batch(raw_records, lenient=lenient)
            count = len(valid) + len(rejected)
            if count > limits["INGEST_MAX_RECORDS"]:
                raise IngestError(
                    413, f"{count} records; at most {limits['INGEST_MAX_RECORDS']} per request.", "traces"
                )
        except IngestError as exc:
            return error_response(exc.status, exc.message, exc.field)
        try:
            result = store_records(valid, request.user)
        except (OperationalError, InterfaceError):
            return unavailable_response()
        return batch_response(result, rejected)

    def handle_exception(self, exc: Exception) -> Response:
        # The token is looked up before post() runs: a database that is down answers 503 there too.
        if isinstance(exc, (OperationalError, InterfaceError)):
            return unavailable_response()
        return super().handle_exception(exc)


@extend_schema(tags=["telemetry"])
class AgentListView(generics.ListAPIView[Agent]):
    """Agents the caller may see."""

    permission_classes = [ReadScope]
    serializer_class = AgentSerializer
    filterset_class = AgentFilter

    def get_queryset(self) -> Any:
        return (
            Agent.objects.visible_to(self.request.user)
            .select_related("department", "team", "owner")
            .prefetch_related("capacities")
        )


@extend_schema(tags=["telemetry"])
class AgentDetailView(generics.RetrieveAPIView[Agent]):
    """One agent by slug (404 outside the caller's departments)."""

    permission_classes = [ReadScope]
    serializer_class = AgentSerializer
    lookup_field = "slug"

    def get_queryset(self) -> Any:
        return (
            Agent.objects.visible_to(self.request.user)
            .select_related("department", "team", "owner")
            .prefetch_related("capacities")
        )


@extend_schema(tags=["telemetry"])
class DeploymentListView(generics.ListCreateAPIView[Deployment]):
    """List deployments (read scope), or report one from a deploy tool (ingest or automation scope)."""

    serializer_class = DeploymentSerializer
    filterset_class = DeploymentFilter

    def get_permissions(self) -> list[Any]:
        if self.request.method == "POST":
            return [ReportDeployments()]
        return [ReadScope()]

    def get_queryset(self) -> Any:
        return Deployment.objects.visible_to(self.request.user).select_related("agent")

    @extend_schema(
        summary="Report a deployment",
        description="Creates the (agent, environment, version) deployment, or sets `deployed_at` on the one "
        "that ingest already saw. 201 when created, 200 when it existed.",
        responses={201: DeploymentSerializer, 200: DeploymentSerializer},
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # The audit middleware ran before DRF resolved the token: name the actor here.
        with set_actor(request.user):
            serializer.save()
        code = status.HTTP_201_CREATED if serializer.created else status.HTTP_200_OK  # type: ignore[attr-defined]
        return Response(serializer.data, status=code)


@extend_schema(tags=["telemetry"])
class TraceDetailView(APIView):
    """One request by its trace id."""

    permission_classes = [ReadScope]

    @extend_schema(responses={200: TraceSerializer, 404: OpenApiResponse(description="Unknown or not visible.")})
    def get(self, request: Request, trace_id: str) -> Response:
        key = trace_id.lower()
        if not TRACE_ID.fullmatch(key):
            return Response({"detail": "A trace id is 32 hexadecimal characters."}, status=404)
        # On PostgreSQL the key is (trace_id, started_at); a reused id shows its newest request.
        trace = (
            Trace.objects.visible_to(request.user)
            .select_related("agent")
            .filter(trace_id=key)
            .order_by("-started_at")
            .first()
        )
        if trace is None:
            raise Http404
        return Response(TraceSerializer(trace).data)
