"""OTLP/HTTP traces: decode an export request, map GenAI spans to trace records, join children that came early.

Both encodings decode into one span type (OtlpSpan). Per trace id, the trace span (the
`invoke_agent` span, else the root) becomes a record that goes through the JSON API's validation
and storage; its descendants become phases and calls. An SDK exports children before their root
and splits a trace over several requests, so descendants whose trace span is not in the request
wait in PendingSpan (reduced to a ChildSpan) until it comes. Those that come after their trace was
stored are merged into it by sweep_pending(), which also expires orphans.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from perfops.metrics.dirty import mark_dirty
from perfops.telemetry import timings
from perfops.telemetry.choices import DependencyKind, DependencyStatus, ErrorType, TraceStatus
from perfops.telemetry.ingest.body import IngestError
from perfops.telemetry.ingest.records import (
    MAX_ATTRIBUTE_VALUE,
    MAX_ATTRIBUTES,
    MAX_DEPENDENCIES,
    MAX_DEPENDENCY_NAME,
    MAX_MODEL_LEN,
    MAX_PHASES,
    MAX_TOKENS,
    PHASE_NAME,
    TraceRecord,
    Window,
    validate_record,
)
from perfops.telemetry.ingest.store import may_write, store_records
from perfops.telemetry.models import Agent, PendingSpan, Trace
from perfops.telemetry.partitions import ensure_partitions, stored_trace_ids

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A request can name tens of thousands of traces; keep each IN (...) list well under SQLite's limit.
_CHUNK = 2000
_MAX_REASONS_SHOWN = 5

LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
ENVIRONMENT_ALIASES = {
    "prod": "production",
    "production": "production",
    "stage": "staging",
    "staging": "staging",
    "dev": "development",
    "development": "development",
}
# Root-span attributes that fill a field of the record, so they are not repeated in its attributes.
_MAPPED_ATTRIBUTES = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.agent.id",
        "gen_ai.agent.version",
        "gen_ai.request.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "deployment.environment.name",
        "deployment.environment",
        "service.name",
        "service.version",
    }
)
# Message content (prompts, completions, tool arguments) is large and may be personal data; perfops
# measures performance and never stores it. perfops.* attributes are instructions, not data.
_DROPPED_PREFIXES = (
    "perfops.",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.prompt",
    "gen_ai.completion",
)
_NOT_SLUG = re.compile(r"[^a-z0-9_-]+")
_SEPARATORS = re.compile(r"[\s_.\-]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Encoding(StrEnum):
    PROTOBUF = "protobuf"
    JSON = "json"


MEDIA_TYPES = {
    "application/x-protobuf": Encoding.PROTOBUF,
    "application/protobuf": Encoding.PROTOBUF,
    "application/json": Encoding.JSON,
}


# --- Decoding ---------------------------------------------------------------------------------


@dataclass(slots=True)
class OtlpSpan:
    """One decoded span, whichever encoding it came in."""

    trace_id: str  # 32 lowercase hex characters
    span_id: str  # 16 lowercase hex characters
    parent_id: str  # '' for a root span
    name: str
    kind: int
    start_ns: int
    end_ns: int
    failed: bool
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]  # shared by every span of one resource


@dataclass(slots=True)
class Refusal:
    """Spans refused together, and why (a line of partial_success.error_message)."""

    span_id: str
    reason: str
    spans: int = 1

    def __str__(self) -> str:
        return f"span {self.span_id}: {self.reason}"


def decode_request(body: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """Parse an ExportTraceServiceRequest in either encoding; IngestError 400 when the body is not one."""
    if encoding is Encoding.PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except (DecodeError, ValueError, RecursionError):
            raise IngestError(400, "The body is not a valid protobuf ExportTraceServiceRequest.") from None
    return _decode_json(body)


def _decode_json(body: bytes) -> ExportTraceServiceRequest:
    if not body:
        raise IngestError(400, "The body is empty.")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, f"The body is not valid JSON: {exc}.") from None
    if type(document) is not dict:
        raise IngestError(400, "The body must be a JSON object (an ExportTraceServiceRequest).")
    for span in _json_spans(document):
        # OTLP/JSON writes ids as hex, where the protobuf JSON mapping expects base64.
        for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
            if key in span:
                span[key] = _hex_id_as_base64(span[key])
        # Never used, and links carry ids in hex too.
        span.pop("events", None)
        span.pop("links", None)
    message = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise IngestError(400, f"The body is not an OTLP/JSON ExportTraceServiceRequest: {exc}"[:500]) from None
    return message


# Decodes to one byte, so a malformed JSON id is refused later as an id of the wrong length.
_BAD_ID = base64.b64encode(b"\xff").decode()


def _hex_id_as_base64(value: object) -> str:
    if value is None or value == "":
        return ""
    if type(value) is str:
        try:
            return base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            pass
    return _BAD_ID


def _json_list(container: dict[str, Any], *keys: str) -> list[Any]:
    for key in keys:
        value = container.get(key)
        if type(value) is list:
            return value
    return []


def _json_spans(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every span object of an OTLP/JSON document; malformed parts are left for the parser to refuse."""
    for resource_spans in _json_list(document, "resourceSpans", "resource_spans"):
        if type(resource_spans) is dict:
            for scope_spans in _json_list(resource_spans, "scopeSpans", "scope_spans"):
                if type(scope_spans) is dict:
                    for span in _json_list(scope_spans, "spans"):
                        if type(span) is dict:
                            yield span


def read_spans(request: ExportTraceServiceRequest) -> tuple[list[OtlpSpan], list[Refusal]]:
    """The request's spans with valid ids and times, and a refusal for each of the others."""
    spans: list[OtlpSpan] = []
    refused: list[Refusal] = []
    seen: set[tuple[bytes, bytes]] = set()
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                problem = _span_problem(span)
                if problem:
                    refused.append(Refusal(span.span_id.hex() or "(no id)", problem))
                    continue
                key = (span.trace_id, span.span_id)
                if key in seen:  # the same span twice in one request: a sender's retry, counted once
                    continue
                seen.add(key)
                parent = span.parent_span_id
                spans.append(
                    OtlpSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        # Some senders write an all-zero parent for a root.
                        parent_id=parent.hex() if parent.strip(b"\0") else "",
                        name=span.name,
                        kind=span.kind,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        failed=span.status.code == Status.STATUS_CODE_ERROR,
                        status_message=span.status.message,
                        attributes=_attributes(span.attributes),
                        resource=resource,
                    )
                )
    return spans, refused


def _span_problem(span: Span) -> str:
    if len(span.trace_id) != 16:
        return "trace_id: Must be 16 bytes (32 hexadecimal characters in JSON)."
    if not span.trace_id.strip(b"\0"):
        return "trace_id: Must not be all zeros."
    if len(span.span_id) != 8:
        return "span_id: Must be 8 bytes (16 hexadecimal characters in JSON)."
    if not span.span_id.strip(b"\0"):
        return "span_id: Must not be all zeros."
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "parent_span_id: Must be empty or 8 bytes (16 hexadecimal characters in JSON)."
    if not span.start_time_unix_nano:
        return "start_time_unix_nano: This field is required."
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_time_unix_nano: The span ends before it starts."
    return ""


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None or which == "bytes_value":
        return None  # bytes mean nothing on a dashboard
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {pair.key: _value(pair.value) for pair in value.kvlist_value.values}
    return getattr(value, which)


# --- Child spans ------------------------------------------------------------------------------


@dataclass(slots=True)
class ChildSpan:
    """A descendant of a trace span, reduced to what the trace record needs; PendingSpan stores this."""

    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    failed: bool
    kind: str = ""  # the dependency kind; '' when the span is not a call
    name: str = ""  # the dependency name
    phase: str = ""
    model: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str = ""  # error.type, else the status message

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["span_id"]  # a column of its own
        return data

    @classmethod
    def from_json(cls, span_id: str, data: Mapping[str, Any]) -> ChildSpan:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data and key != "span_id"}
        return cls(span_id=span_id, **known)


def _text(value: object) -> str:
    if value is None or isinstance(value, (list, dict)):
        return ""
    return str(value)


def _printable(text: str, limit: int) -> str:
    """One line of at most `limit` characters: a child's odd name must not cost its whole trace."""
    if not text.isprintable():
        text = "".join(char if char.isprintable() else " " for char in text)
    return text[:limit]


def _count(value: object) -> int | None:
    """A token count; values that are not whole, non-negative numbers in range are ignored rather than
    refusing the trace."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and 0 <= value <= MAX_TOKENS:
        return value
    return None


def reduce_child(span: OtlpSpan) -> ChildSpan:
    """What a descendant span contributes: a call (by the GenAI, database and HTTP conventions), a phase, or both."""
    attributes = span.attributes
    operation = _text(attributes.get("gen_ai.operation.name"))  # an array or map names no operation
    error = _text(attributes.get("error.type")) or span.status_message
    child = ChildSpan(
        span_id=span.span_id,
        parent_id=span.parent_id,
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        failed=span.failed or bool(_text(attributes.get("error.type"))),
        phase=_text(attributes.get("perfops.phase")),
        error=error[:200],
    )
    db_system = _text(attributes.get("db.system.name") or attributes.get("db.system"))
    if operation in LLM_OPERATIONS:
        child.kind = DependencyKind.LLM
        child.name = _text(attributes.get("gen_ai.request.model")) or span.name
        child.model = _text(attributes.get("gen_ai.request.model") or attributes.get("gen_ai.response.model"))
        child.input_tokens = _count(attributes.get("gen_ai.usage.input_tokens"))
        child.output_tokens = _count(attributes.get("gen_ai.usage.output_tokens"))
    elif operation == "execute_tool":
        child.kind = DependencyKind.TOOL
        child.name = _text(attributes.get("gen_ai.tool.name")) or span.name
    elif operation == "retrieval":
        child.kind = DependencyKind.DB
        child.name = _text(attributes.get("gen_ai.data_source.id")) or span.name
    elif db_system:
        namespace = _text(attributes.get("db.namespace"))
        child.kind = DependencyKind.DB
        child.name = f"{db_system}/{namespace}" if namespace else db_system
    elif span.kind == Span.SPAN_KIND_CLIENT and ("http.request.method" in attributes or "http.method" in attributes):
        child.kind = DependencyKind.HTTP
        child.name = _text(attributes.get("server.address")) or _url_host(attributes) or span.name
    if child.kind and not child.name:
        child.name = child.kind
    child.name = _printable(child.name, MAX_DEPENDENCY_NAME)
    child.model = _printable(child.model, MAX_MODEL_LEN)
    return child


def _url_host(attributes: Mapping[str, Any]) -> str:
    url = _text(attributes.get("url.full") or attributes.get("http.url"))
    try:
        return (urlsplit(url).hostname or "") if url else ""
    except ValueError:
        return ""


def _tolerance_ns(duration_ns: int) -> int:
    """How far a child may run past its trace span: the validator's slack (1 ms + 0.1%), in nanoseconds."""
    return 1_000_000 + duration_ns // 1000


def _clamped(child: ChildSpan, start_ns: int, end_ns: int) -> tuple[float, float]:
    """The child's offset and duration in ms, inside the trace span (the tolerance lets it stick out a little)."""
    child_start = min(max(child.start_ns, start_ns), end_ns)
    child_end = max(min(child.end_ns, end_ns), child_start)
    return round((child_start - start_ns) / 1e6, 3), round((child_end - child_start) / 1e6, 3)


def _dependency(child: ChildSpan, start_ns: int, end_ns: int) -> dict[str, Any]:
    offset_ms, duration_ms = _clamped(child, start_ns, end_ns)
    status = DependencyStatus.ERROR if child.failed else DependencyStatus.OK
    return {
        "name": child.name,
        "kind": str(child.kind),
        "start_ms": offset_ms,
        "duration_ms": duration_ms,
        "status": str(status),
    }


def add_children(
    start_ns: int,
    end_ns: int,
    children: Iterable[ChildSpan],
    phases: dict[str, float],
    dependencies: list[dict[str, Any]],
) -> list[Refusal]:
    """Add each child's phase and call to a trace's, in start order; return the children that do not fit."""
    refused: list[Refusal] = []
    tolerance = _tolerance_ns(end_ns - start_ns)
    for child in sorted(children, key=lambda c: (c.start_ns, c.span_id)):
        if not child.kind and not child.phase:
            continue
        if child.phase and not PHASE_NAME.fullmatch(child.phase):
            refused.append(
                Refusal(child.span_id, "perfops.phase must be 1-32 lowercase letters, digits, '_', '-' or '.'.")
            )
            continue
        if child.start_ns < start_ns - tolerance or child.end_ns > end_ns + tolerance:
            # A call the agent did not wait for (or a skewed clock): it is not part of the request's latency.
            refused.append(Refusal(child.span_id, "Runs outside its trace span; only calls inside the request count."))
            continue
        if child.phase and child.phase not in phases and len(phases) >= MAX_PHASES:
            refused.append(Refusal(child.span_id, f"The trace already has {MAX_PHASES} phases."))
            continue
        if child.kind and len(dependencies) >= MAX_DEPENDENCIES:
            refused.append(Refusal(child.span_id, f"The trace already has {MAX_DEPENDENCIES} calls."))
            continue
        if child.phase:
            phases[child.phase] = round(phases.get(child.phase, 0.0) + _clamped(child, start_ns, end_ns)[1], 3)
        if child.kind:
            dependencies.append(_dependency(child, start_ns, end_ns))
    return refused


# --- Mapping a trace span to a record -----------------------------------------------------------


def is_invoke_agent(span: OtlpSpan) -> bool:
    return span.attributes.get("gen_ai.operation.name") == "invoke_agent" or span.name.startswith("invoke_agent")


def trace_span_of(group: Sequence[OtlpSpan]) -> OtlpSpan | None:
    """The span that stands for the request: the outermost invoke_agent span, else the root; None if neither came."""
    candidates = [span for span in group if is_invoke_agent(span)] or [span for span in group if not span.parent_id]
    if not candidates:
        return None
    return min(candidates, key=lambda span: (span.start_ns, -span.end_ns, span.span_id))


def slugify(value: str) -> str:
    """An agent name as a slug: lowercase, anything else to '-', starting with a letter or digit, at most 64."""
    return _NOT_SLUG.sub("-", value.strip().lower()).strip("-_")[:64]


def _environment(span: OtlpSpan) -> tuple[str, str]:
    """The environment and, when it cannot be mapped, why."""
    for source in (span.resource, span.attributes):
        for key in ("deployment.environment.name", "deployment.environment"):
            raw = source.get(key)
            if raw is not None:
                environment = ENVIRONMENT_ALIASES.get(_text(raw).strip().lower())
                if environment:
                    return environment, ""
                return "", (
                    f"environment: {key} is {_text(raw)[:40]!r}; use production, staging or development "
                    "(or prod, stage, dev)."
                )
    return "", (
        "environment: Set the resource attribute deployment.environment.name to production, staging or development."
    )


def _error_category(texts: Iterable[str]) -> str:
    """The error type that an error.type or status message names, or '' when it names none."""
    for text in texts:
        folded = _SEPARATORS.sub("", text.lower())
        if "timeout" in folded or "timedout" in folded or "deadlineexceeded" in folded:
            return ErrorType.TIMEOUT
        if "429" in folded or "ratelimit" in folded or "toomanyrequests" in folded:
            return ErrorType.RATE_LIMITED
        if "validation" in folded:
            return ErrorType.VALIDATION
    return ""


def _outcome(span: OtlpSpan, children: Sequence[ChildSpan]) -> tuple[str, str | None]:
    """Status and error type: named by error.type or a status message, else by the kind of call that failed first."""
    raw = _text(span.attributes.get("error.type"))
    if not span.failed and not raw:
        return TraceStatus.OK, None
    failing = sorted((child for child in children if child.failed), key=lambda c: c.start_ns)
    category = _error_category([raw, span.status_message, *(child.error for child in failing)])
    if not category:
        first_kind = next((child.kind for child in failing if child.kind), "")
        if first_kind == DependencyKind.LLM:
            category = ErrorType.LLM_ERROR
        elif first_kind:
            category = ErrorType.DEPENDENCY_ERROR
        else:
            category = ErrorType.OTHER
    return (TraceStatus.TIMEOUT if category == ErrorType.TIMEOUT else TraceStatus.ERROR), category


def _flat(value: Any) -> Any:
    """An attribute value the record can hold: arrays and maps as JSON text, long text cut; None to drop it."""
    if isinstance(value, (list, dict)):
        value = orjson.dumps(value).decode()
    if type(value) is str:
        return value.replace("\x00", "")[:MAX_ATTRIBUTE_VALUE]
    if type(value) is float and not math.isfinite(value):
        return None
    return value


def _record_attributes(span: OtlpSpan, agent_key: str) -> dict[str, Any]:
    """The root span's attributes that no field took, first 64 by key (error.type always kept first)."""
    attributes: dict[str, Any] = {}
    raw_error = _flat(span.attributes.get("error.type"))
    if raw_error not in (None, ""):
        attributes["error.type"] = raw_error
    for key in sorted(span.attributes):
        if len(attributes) >= MAX_ATTRIBUTES:
            break
        if key in _MAPPED_ATTRIBUTES or key == agent_key or key in attributes or key.startswith(_DROPPED_PREFIXES):
            continue
        value = _flat(span.attributes[key])
        if value is not None and key and len(key) <= 128 and key.isprintable():
            attributes[key] = value
    return attributes


def _first(span: OtlpSpan, key: str) -> Any:
    value = span.attributes.get(key)
    return span.resource.get(key) if value is None else value


@dataclass(slots=True)
class Mapped:
    """A trace span turned into a JSON-API record (or why it cannot be), and the children left out."""

    record: dict[str, Any] | None
    problem: str = ""
    refused_children: list[Refusal] = field(default_factory=list)


def agent_of(span: OtlpSpan) -> tuple[str, str]:
    """The attribute that names the trace's agent, and the agent's slug ('' when none does)."""
    agent_key, agent_value = next(
        ((key, span.attributes[key]) for key in ("gen_ai.agent.id", "gen_ai.agent.name") if span.attributes.get(key)),
        ("service.name", span.resource.get("service.name")),
    )
    return agent_key, slugify(_text(agent_value))


def map_trace(span: OtlpSpan, children: Sequence[ChildSpan]) -> Mapped:
    """Map a trace span and its descendants to the record that the JSON API takes."""
    agent_key, agent = agent_of(span)
    environment, problem = _environment(span)
    if not agent:
        problem = (problem + " " if problem else "") + (
            "agent: Set gen_ai.agent.id or gen_ai.agent.name on the span, or the resource attribute service.name."
        )
    if problem:
        return Mapped(None, problem)

    phases: dict[str, float] = {}
    dependencies: list[dict[str, Any]] = []
    refused = add_children(span.start_ns, span.end_ns, children, phases, dependencies)
    llm_calls = sorted((child for child in children if child.kind == DependencyKind.LLM), key=lambda c: c.start_ns)
    status, error_type = _outcome(span, children)
    version = span.attributes.get("gen_ai.agent.version") or span.resource.get("service.version")
    record = {
        "trace_id": span.trace_id,
        "agent": agent,
        "environment": environment,
        "version": _text(version) or None,
        "intent": _first(span, "perfops.intent"),
        "department": _first(span, "perfops.department"),
        "team": _first(span, "perfops.team"),
        "started_at": _as_datetime(span.start_ns).isoformat(),
        "latency_ms": round((span.end_ns - span.start_ns) / 1e6, 3),
        "status": str(status),
        "error_type": error_type and str(error_type),
        "phases": phases,
        "dependencies": dependencies,
        "model": _text(span.attributes.get("gen_ai.request.model"))
        or next((child.model for child in llm_calls if child.model), ""),
        "input_tokens": _tokens(span, "gen_ai.usage.input_tokens", [c.input_tokens for c in llm_calls]),
        "output_tokens": _tokens(span, "gen_ai.usage.output_tokens", [c.output_tokens for c in llm_calls]),
        "cache_hit": span.attributes.get("perfops.cache_hit"),
        "attributes": _record_attributes(span, agent_key),
    }
    return Mapped(record, "", refused)


def _tokens(span: OtlpSpan, key: str, from_calls: list[int | None]) -> int | None:
    own = _count(span.attributes.get(key))
    if own is not None:
        return own
    counted = [count for count in from_calls if count is not None]
    return sum(counted) if counted else None


def _as_datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _as_ns(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


# --- Where each span of a trace belongs ----------------------------------------------------------

DESCENDANT = "descendant"  # below the trace span: a phase or call of the request
OUTSIDE = "outside"  # above or beside the trace span (e.g. the web server span around invoke_agent)
UNKNOWN = "unknown"  # its chain of parents stops at a span that has not arrived


def place(parents: Mapping[str, str], top: str, top_parent: str) -> dict[str, str]:
    """Classify each span (span id -> parent id, the trace span `top` excluded) by its chain of parents."""
    placed: dict[str, str] = {}
    for start in parents:
        path: list[str] = []
        on_path: set[str] = set()
        node = start
        while True:
            if node in placed:
                verdict = placed[node]
                break
            path.append(node)
            on_path.add(node)
            parent = parents[node]
            if parent == top:
                verdict = DESCENDANT
            elif not parent or parent == top_parent or parent in on_path:
                verdict = OUTSIDE  # a root, the trace span's parent, or a loop in malformed ids
            elif parent not in parents:
                verdict = UNKNOWN
            else:
                node = parent
                continue
            break
        for node in path:
            placed[node] = verdict
    return placed


# --- Ingest -----------------------------------------------------------------------------------


@dataclass
class ExportOutcome:
    """What an export request came to: the spans refused and why (pending children count as accepted)."""

    refusals: list[Refusal] = field(default_factory=list)

    @property
    def rejected_spans(self) -> int:
        return sum(refusal.spans for refusal in self.refusals)

    def error_message(self) -> str:
        shown = "; ".join(str(refusal) for refusal in self.refusals[:_MAX_REASONS_SHOWN])
        more = len(self.refusals) - _MAX_REASONS_SHOWN
        return (shown + (f"; and {more} more" if more > 0 else ""))[:4000]


@dataclass(slots=True)
class _Plan:
    """A trace span on its way to storage: what to do with its trace's other spans once we know how it went."""

    top: OtlpSpan
    batch_spans: int  # spans of its trace in this request (all refused if the trace is refused)
    refused_children: list[Refusal]
    consumed: list[int]  # PendingSpan rows it used or found to lie outside the request
    unknown: list[OtlpSpan]  # spans of its trace still waiting for a parent


def ingest(request: ExportTraceServiceRequest, user: AbstractBaseUser | AnonymousUser) -> ExportOutcome:
    """Map, validate and store an export request; a handful of queries whatever the number of spans."""
    spans, refusals = read_spans(request)
    outcome = ExportOutcome(refusals=refusals)
    groups: dict[str, list[OtlpSpan]] = {}
    for span in spans:
        groups.setdefault(span.trace_id, []).append(span)
    tops = {trace_id: top for trace_id, group in groups.items() if (top := trace_span_of(group)) is not None}
    stored = _stored_trace_ids(list(tops.values()))
    waiting = _load_pending([trace_id for trace_id in tops if trace_id not in stored])
    foreign = _drop_foreign_children(waiting, tops, user)
    limits = settings.PERFOPS
    window = Window.around(timezone.now(), limits["RAW_RETENTION_DAYS"], limits["INGEST_MAX_FUTURE_S"])

    records: list[TraceRecord] = []
    plans: list[_Plan] = []
    to_wait: list[OtlpSpan] = []
    for trace_id, group in groups.items():
        top = tops.get(trace_id)
        if top is None:
            to_wait.extend(group)
            continue
        pending = waiting.get(trace_id, {})
        parents = {span.span_id: span.parent_id for span in group if span is not top}
        batch_ids = parents.keys() | {top.span_id}
        for span_id, (_, child, _) in pending.items():
            parents.setdefault(span_id, child.parent_id)
        placed = place(parents, top.span_id, top.parent_id)
        unknown = [span for span in group if placed.get(span.span_id) == UNKNOWN]
        if trace_id in stored:
            # A retry, or the span around an invoke_agent span stored earlier: nothing to store again.
            # Spans whose place is not known yet wait, and the sweeper merges those inside the trace.
            to_wait.extend(unknown)
            continue
        children = [reduce_child(span) for span in group if placed.get(span.span_id) == DESCENDANT]
        children += [
            child
            for span_id, (_, child, _) in pending.items()
            if placed[span_id] == DESCENDANT and span_id not in batch_ids
        ]
        mapped = map_trace(top, children)
        reason = mapped.problem
        if mapped.record is not None:
            record, errors = validate_record(mapped.record, len(records), window)
            if record is not None:
                records.append(record)
                used = [pk for span_id, (pk, _, _) in pending.items() if placed[span_id] != UNKNOWN]
                plans.append(_Plan(top, len(group), mapped.refused_children, used, unknown))
                continue
            reason = _describe(errors)
        outcome.refusals.append(_trace_refusal(top, reason, len(group)))

    if records:
        # Partitions first, in their own transaction: made inside ours, a rollback would undo them
        # while the partition module still remembered them as made.
        ensure_partitions({record.started_at.date() for record in records})
    with transaction.atomic():
        result = store_records(records, user)
        refused_by_store = {item["index"]: _describe(item["errors"]) for item in result.rejected}
        consumed: list[int] = list(foreign)
        for index, plan in enumerate(plans):
            if index in refused_by_store:
                outcome.refusals.append(_trace_refusal(plan.top, refused_by_store[index], plan.batch_spans))
                continue
            outcome.refusals.extend(plan.refused_children)
            consumed.extend(plan.consumed)
            to_wait.extend(plan.unknown)
        for chunk in _chunks(sorted(consumed)):
            PendingSpan.objects.filter(pk__in=chunk).delete()
        _save_pending(to_wait, user)
    return outcome


def _describe(errors: Mapping[str, list[str]]) -> str:
    return " ".join(f"{key}: {' '.join(reasons)}" for key, reasons in errors.items())


def _trace_refusal(top: OtlpSpan, reason: str, spans: int) -> Refusal:
    others = spans - 1
    suffix = f" ({others} other span{'s' if others != 1 else ''} of its trace refused with it)" if others else ""
    return Refusal(top.span_id, reason + suffix, spans)


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _stored_trace_ids(tops: Sequence[OtlpSpan]) -> set[str]:
    """The trace ids among `tops` that already have a trace."""
    if not tops:
        return set()
    # A stored trace span lies inside or around the arriving one, and no trace is longer than a day.
    oldest = _as_datetime(min(top.start_ns for top in tops)) - timedelta(days=1)
    newest = _as_datetime(max(top.end_ns for top in tops)) + timedelta(days=1)
    return stored_trace_ids((top.trace_id for top in tops), oldest.date(), newest.date())


Waiting = dict[str, dict[str, tuple[int, ChildSpan, int | None]]]


def _load_pending(trace_ids: Sequence[str]) -> Waiting:
    """Children waiting for the given traces: trace id -> span id -> (row id, child, sender id)."""
    waiting: Waiting = {}
    for chunk in _chunks(sorted(trace_ids)):
        rows = PendingSpan.objects.filter(trace_id__in=chunk).values_list(
            "pk", "trace_id", "span_id", "span", "sender_id"
        )
        for pk, trace_id, span_id, data, sender_id in rows:
            waiting.setdefault(trace_id.hex, {})[span_id] = (pk, ChildSpan.from_json(span_id, data), sender_id)
    return waiting


def _drop_foreign_children(
    waiting: Waiting, tops: Mapping[str, OtlpSpan], user: AbstractBaseUser | AnonymousUser
) -> list[int]:
    """Remove the children sent by someone who may not write to their trace's agent; return their row ids.

    A trace id is not a secret (it travels in traceparent headers), so without this anyone with an
    ingest token could add calls and phases to another department's traces.
    """
    others = {sender for spans in waiting.values() for _, _, sender in spans.values() if sender != user.pk}
    if not others:
        return []
    known = {sender for sender in others if sender is not None}
    senders = {person.pk: person for person in get_user_model().objects.filter(pk__in=known, is_active=True)}
    slugs = {trace_id: agent_of(tops[trace_id])[1] for trace_id in waiting}
    departments = dict(Agent.objects.filter(slug__in=set(slugs.values())).values_list("slug", "department_id"))
    dropped = []
    for trace_id, spans in waiting.items():
        department_id = departments.get(slugs[trace_id])  # None: a new agent, joined by its own sender only
        for span_id, (pk, _, sender) in list(spans.items()):
            if sender == user.pk:
                continue
            person = senders.get(sender) if sender is not None else None
            if person is None or department_id is None or not may_write(person, department_id):
                del spans[span_id]
                dropped.append(pk)
    if dropped:
        logger.warning("dropped %d waiting OTLP spans sent by someone who may not write to their trace", len(dropped))
    return dropped


def _save_pending(spans: Sequence[OtlpSpan], user: AbstractBaseUser | AnonymousUser) -> None:
    sender = user if user.is_authenticated else None
    # Sorted, so two requests adding the same spans take their locks in one order.
    rows = [
        PendingSpan(
            trace_id=uuid.UUID(hex=span.trace_id),
            span_id=span.span_id,
            span=reduce_child(span).to_json(),
            sender=sender,  # type: ignore[misc]
        )
        for span in sorted(spans, key=lambda s: (s.trace_id, s.span_id))
    ]
    # A retried request sends the same spans again: the unique (trace_id, span_id) keeps one.
    PendingSpan.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)


# --- The sweeper ------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What one sweep did: late spans merged into stored traces, late spans that did not fit, orphans expired."""

    traces_updated: int = 0
    spans_merged: int = 0
    spans_discarded: int = 0
    orphans_expired: int = 0


def sweep_pending(now: datetime | None = None) -> SweepResult:
    """Merge children that came after their trace was stored, then drop orphans older than OTLP_ORPHAN_TTL_S.

    Idempotent, and safe beside another sweep: each trace is merged in its own transaction that
    locks the trace and the waiting rows (other sweeps skip rows already taken), and merged rows
    are deleted in that same transaction.
    """
    now = now or timezone.now()
    result = SweepResult()
    waiting = list(PendingSpan.objects.order_by().values_list("trace_id", "received_at"))
    trace_ids = sorted({trace_id.hex for trace_id, _ in waiting})
    if trace_ids:
        # A late child arrives within a day of its trace's start, so only the days around the
        # oldest waiting row can hold its trace.
        oldest_received = min(received_at for _, received_at in waiting)
        first, last = (oldest_received - timedelta(days=1)).date(), (now + timedelta(days=1)).date()
        for trace_id in sorted(stored_trace_ids(trace_ids, first, last)):
            _merge_late_children(uuid.UUID(hex=trace_id), result)
    ttl_s = settings.PERFOPS["OTLP_ORPHAN_TTL_S"]
    result.orphans_expired, _ = PendingSpan.objects.filter(received_at__lt=now - timedelta(seconds=ttl_s)).delete()
    if result.spans_merged or result.spans_discarded:
        logger.info(
            "merged %d late OTLP spans into %d traces, discarded %d that did not fit",
            result.spans_merged,
            result.traces_updated,
            result.spans_discarded,
        )
    if result.orphans_expired:
        logger.info(
            "expired %d OTLP spans whose trace span never came (older than %d s)", result.orphans_expired, ttl_s
        )
    return result


_TRACE_FIELDS = (
    "trace_id",
    "agent__slug",
    "agent__department_id",
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
    "attributes",
)
# A stored trace is re-validated after a merge, whatever its age.
_ANY_TIME = Window(oldest=datetime.min.replace(tzinfo=UTC), newest=datetime.max.replace(tzinfo=UTC))


def _merge_late_children(trace_id: uuid.UUID, result: SweepResult) -> None:
    with transaction.atomic():
        rows = list(
            PendingSpan.objects.select_for_update(skip_locked=True)
            .filter(trace_id=trace_id)
            .order_by("span_id")
            .values_list("pk", "span_id", "span", "sender_id")
        )
        if not rows:
            return
        # On PostgreSQL the key is (trace_id, started_at); a reused id merges into its newest request.
        trace = (
            Trace.objects.select_for_update(of=("self",))
            .filter(trace_id=trace_id)
            .order_by("-started_at")
            .values(*_TRACE_FIELDS)
            .first()
        )
        if trace is None:  # gone meanwhile (its day dropped); the rows expire with the orphans
            return
        # started_at is stored to the microsecond: a late call's offset may differ by up to 1 µs
        # from what ingest would have computed with the root span at hand.
        start_ns = _as_ns(trace["started_at"])
        end_ns = start_ns + round(trace["latency_ms"] * 1e6)
        allowed = _senders_allowed({sender for *_, sender in rows}, trace["agent__department_id"])
        children = [ChildSpan.from_json(span_id, data) for _, span_id, data, sender in rows if sender in allowed]
        foreign = len(rows) - len(children)
        existing = trace["dependencies"]
        # A retried export can bring back a span that an earlier sweep merged: never count a call twice.
        fresh = [
            child
            for child in children
            if not (child.kind and _is_known(_dependency(child, start_ns, end_ns), existing))
        ]
        phases, dependencies = dict(trace["phases"]), list(existing)
        refused = add_children(start_ns, end_ns, fresh, phases, dependencies)
        discarded = foreign + len(children) - len(fresh) + len(refused)
        if phases != trace["phases"] or dependencies != existing:
            record, errors = validate_record(_stored_record(trace, phases, dependencies), 0, _ANY_TIME)
            if record is None:
                logger.warning("late OTLP spans do not fit trace %s: %s", trace_id.hex, _describe(errors))
                discarded = len(rows)
            else:
                packed = timings.encode(record.phases, record.dependencies)
                Trace.objects.filter(trace_id=trace_id, started_at=trace["started_at"]).update(
                    phases=record.phases, dependencies=record.dependencies, timings=packed, received_at=Now()
                )
                # The trace's rollup bucket is recomputed with the merged phases and calls.
                mark_dirty([trace["started_at"]])
                result.traces_updated += 1
        PendingSpan.objects.filter(pk__in=[pk for pk, *_ in rows]).delete()
    result.spans_merged += len(rows) - discarded
    result.spans_discarded += discarded


def _senders_allowed(senders: set[int | None], department_id: int) -> set[int | None]:
    """The senders (of late children) who may write to an agent of this department."""
    people = get_user_model().objects.filter(pk__in={s for s in senders if s is not None}, is_active=True)
    return {person.pk for person in people if may_write(person, department_id)}


def _is_known(dependency: dict[str, Any], existing: Iterable[dict[str, Any]]) -> bool:
    return any(
        call.get("name") == dependency["name"]
        and call.get("kind") == dependency["kind"]
        and call.get("duration_ms") == dependency["duration_ms"]
        and abs((call.get("start_ms") or 0.0) - dependency["start_ms"]) <= 0.002
        for call in existing
    )


def _stored_record(
    trace: dict[str, Any], phases: dict[str, float], dependencies: list[dict[str, Any]]
) -> dict[str, Any]:
    """A stored trace as a JSON-API record again, with new phases and calls, to validate the merge."""
    return {
        "trace_id": trace["trace_id"].hex,
        "agent": trace["agent__slug"],
        "environment": trace["environment"],
        "version": trace["version"],
        "intent": trace["intent"] or None,
        "started_at": trace["started_at"].astimezone(UTC).isoformat(),
        "latency_ms": trace["latency_ms"],
        "status": trace["status"],
        "error_type": trace["error_type"] or None,
        "phases": phases,
        "dependencies": dependencies,
        "model": trace["model"],
        "input_tokens": trace["input_tokens"],
        "output_tokens": trace["output_tokens"],
        "cache_hit": trace["cache_hit"],
        "attributes": trace["attributes"],
    }
