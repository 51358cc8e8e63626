"""Malformed ingest payloads against the real endpoints: no 5xx, exact counts, no valid record lost, bounded memory.

Each kind is sent to POST /api/v1/traces (JSON) or POST /v1/traces (OTLP/HTTP, protobuf or JSON) with an
ingest token. For every kind the test checks the status code, the counts the API reports (JSON: accepted,
duplicates and the refused indexes; OTLP: the traces stored and partial_success.rejected_spans), and that
exactly the valid records of the request are stored: every one of them, and nothing else. Record-level
faults are sent between two valid records, so each of those kinds is also a mixed batch.

The gzip bomb (1 GiB inflated from about 1 MiB) and the 21 MiB body are measured with tracemalloc. The
21 MiB body comes from a stream that makes its bytes as they are read, so the measurement is the server's
alone. The figures are written to test-output/security/ingest_malformed.json.
"""

from __future__ import annotations

import base64
import functools
import gzip
import io
import json
import secrets
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from django.conf import settings
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from perfops.telemetry.models import Trace
from tests import factories

pytestmark = pytest.mark.django_db

URLS = {"json": "/api/v1/traces", "otlp": "/v1/traces"}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MIB = 1024 * 1024
OUT = Path(__file__).resolve().parents[2] / "test-output" / "security"

# Inflating stops at the body limit (10 MiB): the server holds what it inflated so far and zlib's output
# buffer for it (about twice the limit) and a few copies of the compressed body, never the inflated bomb.
GZIP_BOMB_PEAK_LIMIT = 3 * settings.PERFOPS["INGEST_MAX_BYTES"]
# A body whose Content-Length is over the limit is refused before a byte of it is read.
BIG_BODY_PEAK_LIMIT = 2 * MIB

FIGURES: list[dict[str, Any]] = []
MEMORY: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_figures():
    yield
    if not FIGURES:
        return
    by_status: dict[str, int] = {}
    for row in FIGURES:
        by_status[str(row["status"])] = by_status.get(str(row["status"]), 0) + 1
    summary = {
        "kinds_tested": len(FIGURES),
        "kinds_by_endpoint": {name: sum(1 for row in FIGURES if row["endpoint"] == name) for name in URLS},
        "answered_as_expected": sum(1 for row in FIGURES if row["as_expected"]),
        "server_errors": sum(1 for row in FIGURES if row["status"] >= 500),
        "statuses": dict(sorted(by_status.items())),
        "records_lost": sum(row["lost"] for row in FIGURES),
        "invalid_records_stored": sum(row["wrongly_stored"] for row in FIGURES),
        "memory": MEMORY,
        "kinds": FIGURES,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ingest_malformed.json").write_text(json.dumps(summary, indent=2))


@pytest.fixture
def support_bot(payments):
    return factories.agent("support-bot", payments, intent_category="customer_support")


# --- What is sent, and what must come back ------------------------------------------------------


@dataclass
class Sent:
    """A request body, and the trace ids that must (and must not) end up stored."""

    body: bytes
    content_type: str | None = JSON
    headers: dict[str, Any] = field(default_factory=dict)
    stored: set[str] = field(default_factory=set)  # hex trace ids the request must store
    refused: set[str] = field(default_factory=set)  # well-formed trace ids that must not be stored
    refused_indexes: list[int] = field(default_factory=list)  # JSON: the records refused, by position
    prior: list[bytes] = field(default_factory=list)  # sent (and stored) first: retries


@dataclass(frozen=True)
class Case:
    kind: str
    endpoint: str  # "json" or "otlp"
    build: Callable[[], Sent]
    status: int
    accepted: int = 0  # JSON: "accepted"; OTLP: traces stored by the request
    duplicates: int = 0  # JSON only
    rejected: int = 0  # JSON: records in "rejected"; OTLP: partial_success.rejected_spans

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.kind}"


CASES: list[Case] = []


def case(kind: str, endpoint: str, status: int, **counts: int) -> Callable[[Callable[[], Sent]], Callable[[], Sent]]:
    def register(build: Callable[[], Sent]) -> Callable[[], Sent]:
        CASES.append(Case(kind, endpoint, build, status, **counts))
        return build

    return register


# --- JSON batches -------------------------------------------------------------------------------


def batch(*records: Any) -> bytes:
    return msgspec.json.encode({"traces": list(records)})


def mixed(*bad: Any, text: Callable[[bytes], bytes] | None = None) -> Sent:
    """good, bad, good, bad, ..., good: the bad records at the odd indexes; `text` edits the encoded body."""
    good = [factories.record() for _ in range(len(bad) + 1)]
    records: list[Any] = [good[0]]
    for position, item in enumerate(bad):
        records += [item, good[position + 1]]
    body = batch(*records)
    return Sent(
        body if text is None else text(body),
        stored={g["trace_id"] for g in good},
        refused={b["trace_id"] for b in bad if isinstance(b, dict) and isinstance(b.get("trace_id"), str)},
        refused_indexes=list(range(1, 2 * len(bad), 2)),
    )


def one_bad(**overrides: Any) -> Callable[[], Sent]:
    return lambda: mixed(factories.record(**overrides))


def record_case(kind: str, **overrides: Any) -> None:
    """A record with one fault between two valid ones: 200, two stored, the middle one refused."""
    CASES.append(Case(kind, "json", one_bad(**overrides), 200, accepted=2, rejected=1))


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"k": value}
    return value


def iso(moment: datetime) -> str:
    return factories.iso(moment)


NOW = datetime.now(UTC)
HEX_ID = "ab" * 16

record_case("trace id too short", trace_id="abc")
record_case("trace id not hexadecimal", trace_id="g" * 32)
record_case("trace id all zeros", trace_id="0" * 32)
record_case("trace id a number", trace_id=12345)
record_case("trace id with markup", trace_id="<script>alert(1)</script>")
record_case("negative latency (ends before it starts)", latency_ms=-5)
record_case("latency over one day", latency_ms=90_000_000)
record_case("latency as a string", latency_ms="812.5")
record_case("latency a boolean", latency_ms=True)
record_case("started_at far in the past (1970)", started_at="1970-01-01T00:00:00Z")
record_case("started_at older than retention", started_at=iso(NOW - timedelta(days=45)))
record_case("started_at far in the future (2999)", started_at="2999-12-31T23:59:59Z")
record_case("started_at an hour ahead", started_at=iso(NOW + timedelta(hours=1)))
record_case("started_at overflows (year 9999, negative offset)", started_at="9999-12-31T23:59:59-01:00")
record_case("started_at year 0", started_at="0000-01-01T00:00:00Z")
record_case("started_at without a time zone", started_at="2026-01-31T12:00:00")
record_case("started_at a unix number", started_at=1_700_000_000)
record_case("10,000 attributes", attributes={f"k{i}": i for i in range(10_000)})
record_case("1 MiB attribute value", attributes={"big": "x" * MIB})
record_case("1 MiB attribute key", attributes={"k" * MIB: 1})
record_case("deeply nested attribute (200 levels)", attributes={"deep": nested(200)})
record_case("NUL in an attribute", attributes={"nul": "a\x00b"})
record_case("control characters in the version", version="1.0\r\n=cmd")
record_case("unknown fields", latency=5, extra={"x": 1})
record_case("every field the wrong type", **{k: [k] for k in ("agent", "environment", "status", "version", "model")})
record_case("integer beyond 64 bits", input_tokens=2**70)
record_case("attribute integer beyond 64 bits", attributes={"huge": 10**23})
record_case("phases longer than the request", latency_ms=100.0, phases={"llm": 900.0})
record_case(
    "a call ending after the request", dependencies=[{"name": "db", "kind": "db", "start_ms": 800, "duration_ms": 100}]
)
record_case("257 calls", dependencies=[{"name": "db", "kind": "db", "duration_ms": 0.1}] * 257)
record_case("33 phases", phases={f"p{i}": 0.1 for i in range(33)})
record_case("phases whose sum overflows a float", phases={"llm": 1e308, "auth": 1e308})
record_case("agent name with markup", agent="<script>alert(1)</script>")
record_case("error type on a successful request", status="ok", error_type="timeout")
record_case("unknown environment", environment="prod")
record_case("empty record fields", agent="", trace_id="", started_at="", status="")


@case("a record that is not an object", "json", 200, accepted=4, rejected=3)
def _not_objects() -> Sent:
    return mixed("not a record", None, [factories.record()])


@case("an empty record", "json", 200, accepted=2, rejected=1)
def _empty_record() -> Sent:
    return mixed({})


@case("NaN latency", "json", 200, accepted=2, rejected=1)
def _nan() -> Sent:
    return mixed(factories.record(latency_ms=123.0), text=lambda body: body.replace(b"123.0", b"NaN", 1))


@case("Infinity and -Infinity", "json", 200, accepted=3, rejected=2)
def _infinity() -> Sent:
    bad = [factories.record(latency_ms=123.0), factories.record(phases={"llm": 7.25})]
    return mixed(*bad, text=lambda body: body.replace(b"123.0", b"Infinity").replace(b"7.25", b"-Infinity"))


@case("a latency beyond float range (1e400)", "json", 200, accepted=2, rejected=1)
def _huge_latency() -> Sent:
    return mixed(factories.record(latency_ms=123.0), text=lambda body: body.replace(b"123.0", b"1e400", 1))


@case("a phase beyond float range (1e400)", "json", 200, accepted=2, rejected=1)
def _huge_phase() -> Sent:
    return mixed(factories.record(phases={"llm": 7.25}), text=lambda body: body.replace(b"7.25", b"1e400", 1))


@case("a lone surrogate in a string", "json", 200, accepted=2, rejected=1)
def _surrogate() -> Sent:
    return mixed(factories.record(version="SURROGATE"), text=lambda body: body.replace(b"SURROGATE", rb"\ud800"))


@case("five valid and five invalid records interleaved", "json", 200, accepted=6, rejected=5)
def _interleaved() -> Sent:
    return mixed(
        factories.record(latency_ms=-1),
        factories.record(trace_id="nope"),
        factories.record(status="fine"),
        factories.record(environment="mars"),
        factories.record(cache_hit="yes"),
    )


@case("the same record twice in a batch", "json", 200, accepted=1, duplicates=1)
def _repeated() -> Sent:
    rec = factories.record()
    return Sent(batch(rec, rec), stored={rec["trace_id"]})


@case("a reused trace id with other content", "json", 200, accepted=1, duplicates=1)
def _reused_id() -> Sent:
    rec = factories.record()
    return Sent(batch(rec, {**rec, "latency_ms": 1.0, "phases": {}, "dependencies": []}), stored={rec["trace_id"]})


@case("a retried batch", "json", 200, accepted=0, duplicates=3)
def _retried() -> Sent:
    records = [factories.record() for _ in range(3)]
    body = batch(*records)
    return Sent(body, stored={r["trace_id"] for r in records}, prior=[body])


@case("nothing valid in the batch", "json", 400, rejected=2)
def _nothing_valid() -> Sent:
    bad = [factories.record(status="fine"), factories.record(latency_ms=-3)]
    return Sent(batch(*bad), refused={b["trace_id"] for b in bad}, refused_indexes=[0, 1])


def body_case(kind: str, body: bytes, status: int = 400, **extra: Any) -> None:
    """A body refused as a whole: nothing stored, nothing counted."""
    CASES.append(Case(kind, "json", lambda: Sent(body, **extra), status))


VALID_BATCH = batch(factories.record(trace_id=HEX_ID))
body_case("an empty body", b"")
body_case("JSON that is an array", b"[1, 2]")
body_case("JSON that is a string", b'"traces"')
body_case("JSON null", b"null")
body_case("a number", b"42")
body_case("truncated JSON", VALID_BATCH[: len(VALID_BATCH) // 2], refused={HEX_ID})
body_case("trailing garbage after the JSON", VALID_BATCH + b"}{", refused={HEX_ID})
body_case("non-UTF-8 bytes", b'{"traces": [{"agent": "\xff\xfe"}]}')
body_case("a UTF-8 byte order mark", b"\xef\xbb\xbf" + VALID_BATCH, refused={HEX_ID})
body_case("UTF-16 text", VALID_BATCH.decode().encode("utf-16"), refused={HEX_ID})
body_case("deep nesting (100,000 levels)", b"[" * 100_000)
body_case("deep nesting inside the batch (100,000 levels)", b'{"traces": [' + b"[" * 100_000)
body_case("an unknown top-level field", b'{"traces": [], "records": []}')
body_case("traces that is not a list", b'{"traces": {"a": 1}}')
body_case("an empty list of traces", b'{"traces": []}')
body_case("5,001 records", batch(*[{}] * 5001), 413)
body_case("a text/plain content type", VALID_BATCH, 415, content_type="text/plain", refused={HEX_ID})
body_case("a form content type", b"traces=1", 415, content_type="application/x-www-form-urlencoded")
body_case("no content type", VALID_BATCH, 415, content_type=None, refused={HEX_ID})
body_case("an unsupported content encoding", VALID_BATCH, 415, headers={"HTTP_CONTENT_ENCODING": "br"})
body_case("gzip declared, plain body sent", VALID_BATCH, headers={"HTTP_CONTENT_ENCODING": "gzip"})
body_case("truncated gzip", gzip.compress(VALID_BATCH)[:-12], headers={"HTTP_CONTENT_ENCODING": "gzip"})
body_case("Content-Length that is not a number", VALID_BATCH, headers={"CONTENT_LENGTH": "ten"})
body_case("Content-Length negative", VALID_BATCH, headers={"CONTENT_LENGTH": "-1"})


@case("Content-Length longer than the body (cut upload)", "json", 400)
def _short_upload() -> Sent:
    return Sent(
        VALID_BATCH,
        headers={"CONTENT_LENGTH": str(len(VALID_BATCH) + 100), "wsgi.input": io.BytesIO(VALID_BATCH)},
        refused={HEX_ID},
    )


@case("Content-Length shorter than the body", "json", 400)
def _long_upload() -> Sent:
    return Sent(VALID_BATCH, headers={"CONTENT_LENGTH": "20"}, refused={HEX_ID})


# --- OTLP export requests -----------------------------------------------------------------------

INTERNAL = Span.SPAN_KIND_INTERNAL
RESOURCE = {"service.name": "support-bot", "deployment.environment.name": "production"}


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(key_values(value))
        return out
    return AnyValue(string_value=value)


def key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()]


def span(
    trace_id: bytes,
    *,
    parent: Span | None = None,
    start_ms: float = 0.0,
    duration_ms: float = 812.5,
    start_ns: int | None = None,
    attributes: dict[str, Any] | None = None,
    name: str = "invoke_agent support-bot",
) -> Span:
    """A span `start_ms` into a trace that began a minute ago (or at `start_ns`)."""
    base_ns = time.time_ns() - 60 * 10**9 if start_ns is None else start_ns
    start = base_ns + round(start_ms * 1e6)
    return Span(
        trace_id=trace_id,
        span_id=secrets.token_bytes(8),
        parent_span_id=parent.span_id if parent is not None else b"",
        name=name,
        kind=INTERNAL,
        start_time_unix_nano=start,
        end_time_unix_nano=start + round(duration_ms * 1e6),
        attributes=key_values(attributes or {}),
    )


def agent_trace(**root_attributes: Any) -> tuple[str, list[Span]]:
    """An invoke_agent span and its llm phase: one trace of two spans."""
    trace_id = secrets.token_bytes(16)
    root = span(trace_id, attributes={"gen_ai.operation.name": "invoke_agent", **root_attributes})
    child = span(trace_id, parent=root, start_ms=10, duration_ms=700, attributes={"perfops.phase": "llm"}, name="llm")
    root.start_time_unix_nano = child.start_time_unix_nano - 10 * 10**6
    root.end_time_unix_nano = root.start_time_unix_nano + round(812.5 * 1e6)
    return trace_id.hex(), [root, child]


def export(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(key_values(RESOURCE if resource is None else resource))
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


def otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON form: camelCase, enums as integers, ids in hex."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for item in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in item:
                        item[key] = base64.b64decode(item[key]).hex()
    return document


def otlp(
    request: ExportTraceServiceRequest, *, stored: set[str] | None = None, refused: set[str] | None = None
) -> Sent:
    return Sent(request.SerializeToString(), PROTOBUF, stored=stored or set(), refused=refused or set())


def otlp_case(kind: str, status: int, body: bytes, content_type: str | None = PROTOBUF, **extra: Any) -> None:
    CASES.append(Case(kind, "otlp", lambda: Sent(body, content_type, **extra), status))


VALID_EXPORT = export(*agent_trace()[1]).SerializeToString()
otlp_case("truncated protobuf", 400, VALID_EXPORT[: len(VALID_EXPORT) // 2])
otlp_case("random bytes as protobuf", 400, bytes(range(256)) * 4)
otlp_case("a wrong wire type", 400, b"\x0b\x0c\x0d")
otlp_case("a length prefix past the end", 400, b"\x0a\xff\xff\xff\x0f\x01")
otlp_case("JSON labelled as protobuf", 400, orjson.dumps(otlp_json(export(*agent_trace()[1]))))
otlp_case("protobuf labelled as JSON", 400, VALID_EXPORT, JSON)
otlp_case("a text/plain content type", 415, VALID_EXPORT, "text/plain")
otlp_case("a gRPC content type", 415, VALID_EXPORT, "application/grpc")
otlp_case("no content type", 415, VALID_EXPORT, None)
otlp_case("an unsupported content encoding", 415, VALID_EXPORT, headers={"HTTP_CONTENT_ENCODING": "zstd"})
otlp_case("truncated gzip", 400, gzip.compress(VALID_EXPORT)[:-10], headers={"HTTP_CONTENT_ENCODING": "gzip"})
otlp_case("an empty JSON body", 400, b"", JSON)
otlp_case("OTLP/JSON that is an array", 400, b"[]", JSON)
otlp_case("OTLP/JSON with a NaN literal", 400, b'{"resourceSpans": [], "x": NaN}', JSON)
otlp_case(
    "OTLP/JSON wrong types", 400, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": []}]}]}]}', JSON
)
otlp_case("OTLP/JSON non-UTF-8", 400, b'{"resourceSpans": "\xff"}', JSON)
otlp_case("OTLP/JSON nested 100,000 levels", 400, b'{"resourceSpans": ' + b"[" * 100_000, JSON)
otlp_case("an empty protobuf export (valid, nothing in it)", 200, b"")


@case("non-UTF-8 in a protobuf string", "otlp", 400)
def _bad_utf8() -> Sent:
    trace_id, spans = agent_trace()
    body = export(*spans).SerializeToString().replace(b"support-bot", b"support-\xffot", 1)
    return Sent(body, PROTOBUF, refused={trace_id})


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def deep_export(depth: int) -> tuple[str, bytes]:
    """An export whose root span has an attribute of `depth` nested maps, written as bytes: the Python
    protobuf classes cannot even build a message deeper than the parser accepts."""
    trace_id, spans = agent_trace()
    value = AnyValue(string_value="bottom").SerializeToString()
    for _ in range(depth):
        pair = field_bytes(1, b"k") + field_bytes(2, value)  # KeyValue {key, value}
        value = field_bytes(6, field_bytes(1, pair))  # AnyValue {kvlist_value {values}}
    root = spans[0].SerializeToString() + field_bytes(9, field_bytes(1, b"deep") + field_bytes(2, value))
    resource = export().resource_spans[0].resource.SerializeToString()
    scope = field_bytes(2, root) + field_bytes(2, spans[1].SerializeToString())  # ScopeSpans.spans
    resource_spans = field_bytes(1, resource) + field_bytes(2, scope)
    return trace_id, field_bytes(1, resource_spans)


@case("attributes nested deeper than protobuf allows (200 levels)", "otlp", 400)
def _too_deep() -> Sent:
    trace_id, body = deep_export(200)
    return Sent(body, PROTOBUF, refused={trace_id})


@case("attributes nested 3,000 levels", "otlp", 400)
def _far_too_deep() -> Sent:
    trace_id, body = deep_export(3_000)
    return Sent(body, PROTOBUF, refused={trace_id})


@case("attributes nested 30 levels (kept as JSON text)", "otlp", 200, accepted=1)
def _deep_enough() -> Sent:
    trace_id, spans = agent_trace(deep=nested(30))
    return otlp(export(*spans), stored={trace_id})


@case("invalid spans beside valid traces", "otlp", 200, accepted=2, rejected=7)
def _bad_spans() -> Sent:
    goods = [agent_trace() for _ in range(2)]
    trace_id = secrets.token_bytes(16)
    ends_first = span(trace_id, duration_ms=-5)
    short_trace = span(b"\x01" * 15)
    zero_trace = span(b"\x00" * 16)
    zero_span = span(trace_id)
    zero_span.span_id = b"\x00" * 8
    short_span = span(trace_id)
    short_span.span_id = b"\x01" * 7
    long_parent = span(trace_id)
    long_parent.parent_span_id = b"\x01" * 9
    no_start = span(trace_id)
    no_start.start_time_unix_nano = 0
    bad = [ends_first, short_trace, zero_trace, zero_span, short_span, long_parent, no_start]
    spans = [s for _, pair in goods for s in pair]
    return otlp(export(*spans[:2], *bad, *spans[2:]), stored={g for g, _ in goods}, refused={trace_id.hex()})


@case("OTLP/JSON ids that are not hex", "otlp", 200, accepted=1, rejected=3)
def _bad_json_ids() -> Sent:
    trace_id, spans = agent_trace()
    document = otlp_json(export(*spans))
    items = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    items.append({**items[0], "traceId": "not-hex", "spanId": "0102030405060708"})
    items.append({**items[0], "traceId": "cd" * 16, "spanId": "0102"})
    items.append({**items[0], "traceId": "cd" * 16, "spanId": 7})
    return Sent(orjson.dumps(document), JSON, stored={trace_id}, refused={"cd" * 16})


@case("OTLP/JSON unknown fields", "otlp", 200, accepted=1)
def _json_unknown() -> Sent:
    trace_id, spans = agent_trace()
    document = otlp_json(export(*spans))
    document["surprise"] = {"a": [1, 2]}
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["colour"] = "blue"
    return Sent(orjson.dumps(document), JSON, stored={trace_id})


@case("a trace far in the past (1980)", "otlp", 200, rejected=2)
def _otlp_past() -> Sent:
    trace_id, spans = agent_trace()
    shift = spans[0].start_time_unix_nano - 315_532_800 * 10**9
    for item in spans:
        item.start_time_unix_nano -= shift
        item.end_time_unix_nano -= shift
    return otlp(export(*spans), refused={trace_id})


@case("a trace far in the future (2200)", "otlp", 200, rejected=2)
def _otlp_future() -> Sent:
    trace_id, spans = agent_trace()
    shift = 7_258_118_400 * 10**9 - spans[0].start_time_unix_nano
    for item in spans:
        item.start_time_unix_nano += shift
        item.end_time_unix_nano += shift
    return otlp(export(*spans), refused={trace_id})


@case("an end time at the uint64 maximum", "otlp", 200, rejected=1)
def _otlp_forever() -> Sent:
    trace_id = secrets.token_bytes(16)
    root = span(trace_id, attributes={"gen_ai.operation.name": "invoke_agent"})
    root.end_time_unix_nano = 2**64 - 1
    return otlp(export(root), refused={trace_id.hex()})


@case("a start time at the uint64 maximum", "otlp", 200, rejected=1)
def _otlp_start_max() -> Sent:
    trace_id = secrets.token_bytes(16)
    root = span(trace_id, attributes={"gen_ai.operation.name": "invoke_agent"})
    root.start_time_unix_nano = root.end_time_unix_nano = 2**64 - 1
    return otlp(export(root), refused={trace_id.hex()})


@case("10,000 attributes (the first 64 kept)", "otlp", 200, accepted=1)
def _otlp_many_attributes() -> Sent:
    trace_id, spans = agent_trace(**{f"k{i:05}": i for i in range(10_000)})
    return otlp(export(*spans), stored={trace_id})


@case("a 1 MiB attribute value (cut to 1,024)", "otlp", 200, accepted=1)
def _otlp_big_value() -> Sent:
    trace_id, spans = agent_trace(big="x" * MIB)
    return otlp(export(*spans), stored={trace_id})


@case("NaN and Infinity attributes (dropped)", "otlp", 200, accepted=1)
def _otlp_nan() -> Sent:
    trace_id, spans = agent_trace(a=float("nan"), b=float("inf"), c=float("-inf"))
    return otlp(export(*spans), stored={trace_id})


@case("a span sent twice in one request", "otlp", 200, accepted=1)
def _otlp_twice() -> Sent:
    trace_id, spans = agent_trace()
    return otlp(export(*spans, *spans), stored={trace_id})


@case("a retried export", "otlp", 200)
def _otlp_retry() -> Sent:
    trace_id, spans = agent_trace()
    body = export(*spans).SerializeToString()
    return Sent(body, PROTOBUF, stored={trace_id}, prior=[body])


@case("a trace that names no agent", "otlp", 200, rejected=2)
def _otlp_no_agent() -> Sent:
    trace_id, spans = agent_trace()
    return otlp(export(*spans, resource={"deployment.environment.name": "production"}), refused={trace_id})


@case("an unknown environment", "otlp", 200, rejected=2)
def _otlp_environment() -> Sent:
    trace_id, spans = agent_trace()
    return otlp(export(*spans, resource={**RESOURCE, "deployment.environment.name": "mars"}), refused={trace_id})


@case("an agent id with markup", "otlp", 200, accepted=1)
def _otlp_markup_agent() -> Sent:
    # Slugified to "script-alert-1-script", a new agent in the unassigned department.
    trace_id, spans = agent_trace(**{"gen_ai.agent.id": "<script>alert(1)</script>"})
    return otlp(export(*spans), stored={trace_id})


@case("an attribute value with NUL characters", "otlp", 200, accepted=1)
def _otlp_nul() -> Sent:
    trace_id, spans = agent_trace(nul="a\x00b\x00c")
    return otlp(export(*spans), stored={trace_id})


# --- Sending and reading the answer -------------------------------------------------------------


def send(client: Any, endpoint: str, sent: Sent) -> Any:
    return client.generic("POST", URLS[endpoint], sent.body, content_type=sent.content_type, **sent.headers)


def counts(endpoint: str, response: Any) -> tuple[int, int, int]:
    """(accepted, duplicates, rejected) as the response says them (OTLP: accepted is filled in by the caller)."""
    if endpoint == "json":
        body = response.json()
        return body["accepted"], body["duplicates"], len(body["rejected"])
    if response.status_code != 200:
        return 0, 0, 0
    if response["Content-Type"] == PROTOBUF:
        answer = ExportTraceServiceResponse.FromString(response.content)
        return 0, 0, answer.partial_success.rejected_spans
    return 0, 0, int(response.json().get("partialSuccess", {}).get("rejectedSpans", 0))


def stored_ids() -> set[str]:
    return {trace_id.hex for trace_id in Trace.objects.values_list("trace_id", flat=True)}


def test_there_are_at_least_30_kinds_on_each_endpoint():
    by_endpoint = {name: [c.kind for c in CASES if c.endpoint == name] for name in URLS}
    assert len(by_endpoint["json"]) >= 30
    assert len(by_endpoint["otlp"]) >= 30
    for kinds in by_endpoint.values():
        assert len(kinds) == len(set(kinds))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_malformed_payload_is_answered_exactly(ingest_api, support_bot, case):
    sent = case.build()
    for body in sent.prior:
        assert send(ingest_api, case.endpoint, Sent(body, sent.content_type)).status_code == 200
    before = stored_ids()

    response = send(ingest_api, case.endpoint, sent)

    after = stored_ids()
    accepted, duplicates, rejected = counts(case.endpoint, response)
    if case.endpoint == "otlp":
        accepted = len(after - before)
    lost = sent.stored - after
    wrongly_stored = after & sent.refused
    row = {
        "endpoint": case.endpoint,
        "kind": case.kind,
        "status": response.status_code,
        "expected_status": case.status,
        "accepted": accepted,
        "duplicates": duplicates,
        "rejected": rejected,
        "lost": len(lost),
        "wrongly_stored": len(wrongly_stored),
    }
    row["as_expected"] = (
        response.status_code == case.status
        and (accepted, duplicates, rejected) == (case.accepted, case.duplicates, case.rejected)
        and not lost
        and not wrongly_stored
        and after - before <= sent.stored
    )
    FIGURES.append(row)

    assert response.status_code < 500, response.content[:500]
    assert response.status_code == case.status, response.content[:500]
    assert (accepted, duplicates, rejected) == (case.accepted, case.duplicates, case.rejected), response.content[:500]
    assert not lost, "valid records were not stored"
    assert not wrongly_stored, "invalid records were stored"
    assert after - before <= sent.stored, "something was stored that the request did not hold as valid"
    if case.endpoint == "json" and sent.refused_indexes:
        assert [item["index"] for item in response.json()["rejected"]] == sent.refused_indexes
        assert all(item["errors"] for item in response.json()["rejected"])


def test_a_stored_otlp_trace_keeps_64_bounded_attributes(ingest_api, support_bot):
    # By key: big, nan (dropped), nul, then the first 62 of z000...z499.
    many = {f"z{i:03}": i for i in range(500)}
    trace_id, spans = agent_trace(big="x" * MIB, nul="a\x00b", nan=float("nan"), **many)
    assert send(ingest_api, "otlp", otlp(export(*spans))).status_code == 200
    attributes = Trace.objects.get(trace_id=trace_id).attributes
    assert len(attributes) == 64
    assert sorted(attributes)[-1] == "z061"
    assert attributes["big"] == "x" * 1024
    assert attributes["nul"] == "ab"
    assert "nan" not in attributes


# --- Memory -----------------------------------------------------------------------------------


class StreamedBody(io.RawIOBase):
    """A request body of `size` bytes made as it is read (a JSON prefix, then spaces); counts what was read."""

    def __init__(self, size: int, prefix: bytes = b'{"traces": [') -> None:
        self.size = size
        self.prefix = prefix
        self.position = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.position
        n = left if n is None or n < 0 else min(n, left)
        start = self.position
        self.position += n
        head = self.prefix[start : start + n]
        return head + b" " * (n - len(head))


def memory_row(endpoint: str, kind: str, status: int, expected: int) -> dict[str, Any]:
    """A figures row for a kind measured by the memory tests (nothing valid in it: nothing to lose)."""
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0, "lost": 0, "wrongly_stored": 0}
    return {"endpoint": endpoint, "kind": kind, "status": status, "expected_status": expected, **counts} | {
        "as_expected": status == expected,
        "memory_checked": True,
    }


def gzip_bomb(inflated_mib: int, prefix: bytes) -> bytes:
    """`prefix` then `inflated_mib` MiB of spaces, as concatenated gzip members (16 MiB each, ~16 KiB compressed)."""
    member = gzip.compress(b" " * (16 * MIB), compresslevel=9)
    return gzip.compress(prefix) + member * (inflated_mib // 16)


def peak_while(call: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize(
    ("endpoint", "content_type", "prefix"), [("json", JSON, b'{"traces": ['), ("otlp", PROTOBUF, b"")]
)
def test_a_gzip_bomb_is_refused_in_bounded_memory(ingest_api, support_bot, endpoint, content_type, prefix):
    peaks, sizes = {}, {}
    for inflated_mib in (256, 1024):
        bomb = gzip_bomb(inflated_mib, prefix)
        assert len(bomb) < inflated_mib * MIB / 700

        response, peak = peak_while(
            functools.partial(
                ingest_api.generic,
                "POST",
                URLS[endpoint],
                bomb,
                content_type=content_type,
                HTTP_CONTENT_ENCODING="gzip",
            )
        )

        MEMORY[f"{endpoint}: gzip bomb of {inflated_mib} MiB"] = {
            "compressed_bytes": len(bomb),
            "inflates_to_bytes": inflated_mib * MIB + len(prefix),
            "status": response.status_code,
            "tracemalloc_peak_bytes": peak,
            "bound_bytes": GZIP_BOMB_PEAK_LIMIT,
        }
        assert response.status_code == 413
        assert "inflates to more than" in response.content.decode(errors="replace")
        assert peak < GZIP_BOMB_PEAK_LIMIT, f"peak {peak / MIB:.1f} MiB"
        peaks[inflated_mib], sizes[inflated_mib] = peak, len(bomb)
    FIGURES.append(memory_row(endpoint, "gzip bomb (1 GiB inflated from 1 MiB)", response.status_code, 413))
    # Four times the bomb inflates 768 MiB more; the peak grows only by a few copies of the compressed bytes.
    assert peaks[1024] - peaks[256] < 4 * (sizes[1024] - sizes[256])
    assert not Trace.objects.exists()


@pytest.mark.parametrize(("endpoint", "content_type"), [("json", JSON), ("otlp", PROTOBUF)])
def test_a_21_mib_body_is_refused_without_reading_it(ingest_api, support_bot, endpoint, content_type):
    size = 21 * MIB
    assert size > settings.PERFOPS["INGEST_MAX_BYTES"]
    stream = StreamedBody(size)

    response, peak = peak_while(
        lambda: ingest_api.generic(
            "POST", URLS[endpoint], b"", content_type=content_type, CONTENT_LENGTH=str(size), **{"wsgi.input": stream}
        )
    )

    MEMORY[f"{endpoint}: 21 MiB body"] = {
        "body_bytes": size,
        "status": response.status_code,
        "bytes_read_by_server": stream.position,
        "tracemalloc_peak_bytes": peak,
        "bound_bytes": BIG_BODY_PEAK_LIMIT,
    }
    FIGURES.append(memory_row(endpoint, "a 21 MiB body", response.status_code, 413))
    assert response.status_code == 413
    assert stream.position == 0
    assert peak < BIG_BODY_PEAK_LIMIT, f"peak {peak / MIB:.1f} MiB"


def test_the_figures_cover_every_kind(ingest_api):
    # Runs after the parametrised cases (pytest keeps file order): each kind was answered as expected.
    answered = {(row["endpoint"], row["kind"]) for row in FIGURES}
    expected = {(c.endpoint, c.kind) for c in CASES}
    if not expected <= answered or len(answered) != len(CASES) + 4:
        pytest.skip("run with the whole module to check the figures")
    assert all(row["as_expected"] for row in FIGURES)
    assert not any(row["status"] >= 500 for row in FIGURES)
