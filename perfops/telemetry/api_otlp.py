"""OTLP/HTTP trace ingest: POST /v1/traces, protobuf or JSON, answered in the encoding it came in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from perfops.access.authentication import IngestScope
from perfops.telemetry.ingest import otlp
from perfops.telemetry.ingest.body import IngestError, media_type, read_body
from perfops.telemetry.ingest.otlp import Encoding

# google.rpc.Code for the HTTP statuses this endpoint answers with.
RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 8, 415: 3, 429: 8, 503: 14}
RPC_UNKNOWN = 2


@dataclass(frozen=True, slots=True)
class RpcStatus:
    """The body of an OTLP error response (google.rpc.Status)."""

    code: int
    message: str

    def to_protobuf(self) -> bytes:
        # Field 1 code (varint), field 2 message (string). Written by hand because the generated class
        # lives in googleapis-common-protos, which perfops does not otherwise need.
        out = bytearray()
        if self.code:
            out += b"\x08" + _varint(self.code)
        message = self.message.encode()
        if message:
            out += b"\x12" + _varint(len(message)) + message
        return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _as_status(data: Any, renderer_context: Mapping[str, Any] | None) -> RpcStatus:
    """A refusal raised by DRF itself (no token, wrong scope, wrong method) as an RpcStatus."""
    response = (renderer_context or {}).get("response")
    code = RPC_CODES.get(response.status_code, RPC_UNKNOWN) if response is not None else RPC_UNKNOWN
    detail = data.get("detail", data) if isinstance(data, dict) else data
    return RpcStatus(code, str(detail))


class OtlpProtobufRenderer(BaseRenderer):
    media_type = "application/x-protobuf"
    format = "otlp"  # one format for both: the encoding follows the request, never ?format=
    charset = None
    render_style = "binary"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Mapping[str, Any] | None = None
    ) -> bytes:
        if isinstance(data, Message):
            return data.SerializeToString()
        status = data if isinstance(data, RpcStatus) else _as_status(data, renderer_context)
        return status.to_protobuf()


class OtlpJsonRenderer(BaseRenderer):
    media_type = "application/json"
    format = "otlp"
    charset = None

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Mapping[str, Any] | None = None
    ) -> bytes:
        if isinstance(data, Message):
            return orjson.dumps(json_format.MessageToDict(data))
        status = data if isinstance(data, RpcStatus) else _as_status(data, renderer_context)
        return orjson.dumps({"code": status.code, "message": status.message})


def _encoding(request: Request) -> Encoding | None:
    return otlp.MEDIA_TYPES.get(media_type(request._request))


class OtlpResponse(Response):
    """A response that keeps its Content-Type when the body is empty, as an empty protobuf message is."""

    @property
    def rendered_content(self) -> Any:
        content = super().rendered_content
        if not content and self.accepted_media_type:
            self["Content-Type"] = self.accepted_media_type
        return content


def refusal(status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An OTLP error response: a google.rpc.Status in the request's encoding."""
    status = RpcStatus(RPC_CODES.get(status_code, RPC_UNKNOWN), message)
    return OtlpResponse(status, status=status_code, headers=headers)


def unavailable() -> Response:
    """The database is down or restarting: tell the exporter to retry rather than failing with a 500."""
    return refusal(503, "Storage is unavailable; retry shortly.", {"Retry-After": "5"})


class OtlpTracesView(APIView):
    """POST /v1/traces: an OTLP ExportTraceServiceRequest from an OpenTelemetry SDK or collector."""

    permission_classes = [IngestScope]
    # The body is read by read_body (bounded, gzip-aware) and decoded by otlp.decode_request.
    parser_classes: list[Any] = []
    renderer_classes = [OtlpProtobufRenderer, OtlpJsonRenderer]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        """OTLP answers in the request's encoding, whatever Accept says; JSON when the encoding is unknown."""
        renderer: BaseRenderer = (
            OtlpProtobufRenderer() if _encoding(request) is Encoding.PROTOBUF else OtlpJsonRenderer()
        )
        return renderer, str(renderer.media_type)

    @extend_schema(
        operation_id="otlp_export_traces",
        summary="Export spans over OTLP/HTTP",
        description="The OpenTelemetry protocol's trace export (ExportTraceServiceRequest), as "
        "`application/x-protobuf` or `application/json` (OTLP/JSON: hex ids), optionally gzip. The "
        "`invoke_agent` span (else the root span) of each trace becomes one trace; its descendants become "
        "phases and calls. The answer is an ExportTraceServiceResponse in the request's encoding; refused "
        "spans are counted in `partial_success`. Errors are a google.rpc.Status. Needs a token with the "
        "`ingest` scope.",
        request={"application/x-protobuf": OpenApiTypes.BINARY, "application/json": OpenApiTypes.OBJECT},
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="ExportTraceServiceResponse."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="Not an ExportTraceServiceRequest (Status)."),
            401: OpenApiResponse(OpenApiTypes.OBJECT, description="No token, or an unknown or expired token."),
            403: OpenApiResponse(OpenApiTypes.OBJECT, description="The token lacks the ingest scope."),
            413: OpenApiResponse(OpenApiTypes.OBJECT, description="Larger than 10 MiB (after gzip)."),
            415: OpenApiResponse(OpenApiTypes.OBJECT, description="Neither protobuf nor JSON, or not gzip."),
            503: OpenApiResponse(OpenApiTypes.OBJECT, description="Storage unavailable; retry after Retry-After."),
        },
        tags=["ingest"],
    )
    def post(self, request: Request) -> Response:
        encoding = _encoding(request)
        if encoding is None:
            return refusal(415, "Send OTLP as application/x-protobuf or application/json.")
        try:
            body = read_body(request._request, settings.PERFOPS["INGEST_MAX_BYTES"])
            export = otlp.decode_request(body, encoding)
        except IngestError as exc:
            return refusal(exc.status, exc.message)
        try:
            outcome = otlp.ingest(export, request.user)
        except (OperationalError, InterfaceError):
            return unavailable()
        response = ExportTraceServiceResponse()
        if outcome.refusals:
            response.partial_success.rejected_spans = outcome.rejected_spans
            response.partial_success.error_message = outcome.error_message()
        return OtlpResponse(response)

    def handle_exception(self, exc: Exception) -> Response:
        # The token is looked up before post() runs: a database that is down answers 503 there too.
        if isinstance(exc, (OperationalError, InterfaceError)):
            return unavailable()
        return super().handle_exception(exc)
