"""Property tests (hypothesis) on what ingest parses and what the dashboards compute.

- The JSON batch parser and record validator never raise: any body is refused with a 4xx reason, any
  JSON value gives a record or named errors, never both, and the fast batch route agrees with it.
- The OTLP parser never raises on arbitrary bytes or JSON, only refuses with IngestError; whatever it
  accepts maps to records (or refusals) without raising.
- Sketches merge associatively and commutatively, and their quantiles are within the promised 1% of
  the exact nearest-rank values over the whole range ingest accepts.
- Burn-rate maths: budgets, burn rates, rule thresholds, firing and exhaustion are consistent and total.

Deterministic in CI: every test is derandomised (the same examples on every run) and uses no example
database; max_examples keeps the module under half a minute.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
import numpy as np
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from perfops.metrics.sketch import RELATIVE_ACCURACY, Sketch, nearest_rank
from perfops.telemetry.api import raw_records_of, validate_batch
from perfops.telemetry.ingest import otlp
from perfops.telemetry.ingest.body import IngestError
from perfops.telemetry.ingest.records import (
    KNOWN_FIELDS,
    MAX_LATENCY_MS,
    TraceRecord,
    Window,
    decode_clean_batch,
    validate_record,
)
from slos import maths
from slos.models import until


def fast(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# A fixed clock: the examples, and so the verdicts, are the same on every run.
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = Window.around(NOW, 30, 300)
NOW_NS = int(NOW.timestamp()) * 10**9

# --- JSON values and records ------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
finite_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def valid_record() -> dict[str, Any]:
    return {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "agent": "support-bot",
        "environment": "production",
        "version": "1.4.0",
        "intent": "customer_support",
        "started_at": "2026-03-01T11:59:00.250Z",
        "latency_ms": 812.5,
        "status": "ok",
        "phases": {"auth": 12.0, "llm": 700.0},
        "dependencies": [{"name": "gpt-4o", "kind": "llm", "start_ms": 55.0, "duration_ms": 690.0, "status": "ok"}],
        "model": "gpt-4o",
        "input_tokens": 1200,
        "output_tokens": 350,
        "cache_hit": False,
        "attributes": {"customer_tier": "gold", "retries": 0},
    }


# Values that sit on the validator's edges, beside arbitrary ones.
EDGE_VALUES = [
    "",
    "0" * 32,
    "A" * 32,
    "g" * 32,
    -0.0,
    0,
    -1,
    MAX_LATENCY_MS,
    MAX_LATENCY_MS + 1,
    2**63,
    2**64,
    float("nan"),
    float("inf"),
    "2026-03-01T11:59:00Z",
    "2026-03-01t11:59:00z",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "2026-02-30T00:00:00Z",
    "2026-03-01T11:59:60Z",
    "error",
    "timeout",
    "ok",
    "llm",
    "db",
    "a\x00b",
    "\u2028",
    "x" * 1025,
    {"": 1},
    {"a\x00": 1},
    {"k": {"nested": 1}},
    [{"name": "db", "kind": "db", "duration_ms": 1}],
    [{"name": "db", "kind": "db", "start_ms": 1e308, "duration_ms": 1e308}],
    {"llm": 1e308, "auth": 1e308},
]
field_values = st.one_of(json_values, st.sampled_from(EDGE_VALUES))
field_names = st.sampled_from([*sorted(KNOWN_FIELDS), "extra", ""])


@st.composite
def mutated_records(draw: st.DrawFn) -> Any:
    """A valid record with some fields replaced, added or removed; now and then not an object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    record = valid_record()
    for name in draw(st.sets(st.sampled_from(sorted(record)), max_size=3)):
        del record[name]
    record.update(draw(st.dictionaries(field_names, field_values, max_size=4)))
    return record


def check_outcome(record: TraceRecord | None, errors: dict[str, list[str]]) -> None:
    assert (record is None) == bool(errors), (record, errors)
    for key, reasons in errors.items():
        assert isinstance(key, str)
        assert reasons
        assert all(isinstance(reason, str) and reason for reason in reasons)
    if record is not None:
        assert WINDOW.oldest <= record.started_at <= WINDOW.newest
        assert 0 <= record.latency_ms <= MAX_LATENCY_MS
        assert len(record.trace_id) == 32
        assert record.trace_id != "0" * 32
        # Storable: no NUL character (PostgreSQL text and jsonb refuse it).
        assert not has_nul([record.version, record.model, record.attributes, record.dependencies, record.phases])


def has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(key) or has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(item) for item in value)
    if isinstance(value, msgspec.Struct):
        return has_nul(msgspec.structs.asdict(value))
    return False


@fast(400)
@given(raw=mutated_records())
def test_the_validator_never_raises_on_a_mutated_record(raw):
    record, errors = validate_record(raw, 3, WINDOW)
    check_outcome(record, errors)
    if record is not None:
        assert record.index == 3


@pytest.mark.parametrize("name", [*sorted(KNOWN_FIELDS), "extra"])
def test_every_edge_value_in_every_field_is_answered_by_both_routes(name):
    # Exhaustive where sampling is thin: each edge value in each field (1e308 + 1e308 phases once raised).
    for value in EDGE_VALUES:
        raw = valid_record() | {name: value}
        check_outcome(*validate_record(raw, 0, WINDOW))
        try:
            body = msgspec.json.encode({"traces": [raw]})
        except (ValueError, TypeError, OverflowError):
            continue
        accepted = decode_clean_batch(body, WINDOW)
        if accepted is not None:
            assert accepted == [validate_record(msgspec.json.decode(body)["traces"][0], 0, WINDOW)[0]]


@fast(300)
@given(raw=json_values)
def test_the_validator_never_raises_on_any_json_value(raw):
    check_outcome(*validate_record(raw, 0, WINDOW))


@fast(300)
@given(records=st.lists(mutated_records(), min_size=1, max_size=4))
def test_the_fast_route_accepts_only_what_the_validator_accepts(records):
    try:
        body = msgspec.json.encode({"traces": records})
    except (ValueError, TypeError, OverflowError):
        return  # NaN and friends: not JSON, the lenient parser's business (covered by the API tests)
    # What the sender's encoder wrote is what the server reads back.
    parsed = msgspec.json.decode(body)["traces"]
    outcomes = [validate_record(raw, index, WINDOW) for index, raw in enumerate(parsed)]
    fast_route = decode_clean_batch(body, WINDOW)
    # None is not a verdict (the batch is then checked record by record), but what it accepts, the validator
    # accepts, as the same records.
    if fast_route is not None:
        assert fast_route == [record for record, _ in outcomes]


@st.composite
def json_batches(draw: st.DrawFn) -> bytes:
    """A batch as a lenient sender writes it: NaN and Infinity literals, huge integers, lone surrogates."""
    text = json.dumps({"traces": draw(st.lists(mutated_records(), max_size=4))})
    if draw(st.booleans()):
        text = text.replace('"1.4.0"', '"\\ud800"')
    cut = draw(st.integers(0, len(text) + 5))
    return text.encode()[:cut] if draw(st.integers(0, 4)) == 0 else text.encode()


@fast(300)
@given(body=st.binary(max_size=300) | json_batches())
def test_the_json_batch_parser_never_raises(body):
    try:
        raw_records, lenient = raw_records_of(body)
    except IngestError as exc:
        refused: IngestError | None = exc
    else:
        refused = None
    if refused is not None:
        assert 400 <= refused.status < 500
        return
    valid, rejected = validate_batch(raw_records, lenient=lenient)
    assert len(valid) + len(rejected) == len(raw_records)
    # What is accepted can be stored: encodable, so no lone surrogate slipped through the lenient parser.
    for record in valid:
        msgspec.json.encode(record)


# --- OTLP -------------------------------------------------------------------------------------

POOL_IDS = [bytes([n]) * 8 for n in range(1, 6)]
TRACE_IDS = [bytes([0xA0 + n]) * 16 for n in range(3)]
ATTRIBUTE_KEYS = [
    "gen_ai.operation.name",
    "gen_ai.agent.id",
    "gen_ai.agent.name",
    "gen_ai.agent.version",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.tool.name",
    "gen_ai.data_source.id",
    "perfops.phase",
    "perfops.intent",
    "perfops.department",
    "perfops.team",
    "perfops.cache_hit",
    "db.system.name",
    "db.namespace",
    "http.request.method",
    "server.address",
    "url.full",
    "error.type",
    "service.name",
    "service.version",
    "deployment.environment.name",
    "deployment.environment",
]
ATTRIBUTE_TEXT = [
    "invoke_agent",
    "chat",
    "execute_tool",
    "retrieval",
    "support-bot",
    "production",
    "prod",
    "mars",
    "llm",
    "LLM Phase",
    "postgresql",
    "GET",
    "http://[::1",
    "https://api.example/x",
    "timeout",
    "429",
    "<script>",
    "a\x00b",
    "x" * 2000,
]


def any_values(depth: int = 2) -> st.SearchStrategy[AnyValue]:
    leaves = st.one_of(
        st.sampled_from(ATTRIBUTE_TEXT).map(lambda v: AnyValue(string_value=v)),
        st.text(max_size=20).map(lambda v: AnyValue(string_value=v)),
        st.booleans().map(lambda v: AnyValue(bool_value=v)),
        st.integers(-(2**63), 2**63 - 1).map(lambda v: AnyValue(int_value=v)),
        st.floats().map(lambda v: AnyValue(double_value=v)),
        st.binary(max_size=8).map(lambda v: AnyValue(bytes_value=v)),
        st.just(AnyValue()),
    )
    if depth == 0:
        return leaves

    def array(items: list[AnyValue]) -> AnyValue:
        out = AnyValue()
        out.array_value.values.extend(items)
        return out

    def kvlist(pairs: list[KeyValue]) -> AnyValue:
        out = AnyValue()
        out.kvlist_value.values.extend(pairs)
        return out

    inner = any_values(depth - 1)
    return st.one_of(
        leaves,
        st.lists(inner, max_size=3).map(array),
        st.lists(st.builds(KeyValue, key=st.text(max_size=8), value=inner), max_size=3).map(kvlist),
    )


attributes = st.lists(
    st.builds(KeyValue, key=st.one_of(st.sampled_from(ATTRIBUTE_KEYS), st.text(max_size=12)), value=any_values()),
    max_size=8,
)
timestamps = st.one_of(
    st.integers(NOW_NS - 3600 * 10**9, NOW_NS),
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, 2**63, 2**64 - 1]),
)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    start = draw(timestamps)
    end = min(max(start + draw(st.integers(-(10**9), 10**12)), 0), 2**64 - 1)
    span = Span(
        trace_id=draw(st.sampled_from(TRACE_IDS) | st.binary(max_size=17)),
        span_id=draw(st.sampled_from(POOL_IDS) | st.binary(max_size=9)),
        parent_span_id=draw(st.sampled_from([b"", b"\x00" * 8, *POOL_IDS]) | st.binary(max_size=9)),
        name=draw(st.sampled_from(["invoke_agent support-bot", "llm", "GET", ""]) | st.text(max_size=20)),
        kind=cast("Span.SpanKind.ValueType", draw(st.integers(0, 7))),  # 6 and 7: kinds no SDK sends
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=draw(attributes),
    )
    span.status.code = cast("Status.StatusCode.ValueType", draw(st.integers(0, 3)))
    span.status.message = draw(st.sampled_from(["", "deadline exceeded", "rate limited"]) | st.text(max_size=10))
    return span


@st.composite
def exports(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(draw(attributes))
        resource_spans.scope_spans.add().spans.extend(draw(st.lists(spans(), max_size=6)))
    return request


@st.composite
def agent_exports(draw: st.DrawFn) -> ExportTraceServiceRequest:
    """A plausible agent trace (so records come out and get validated) with arbitrary spans beside and below."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource = {"service.name": "support-bot", "deployment.environment.name": draw(st.sampled_from(["prod", "dev"]))}
    resource_spans.resource.attributes.extend(
        KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in resource.items()
    )
    start = draw(st.integers(NOW_NS - 3600 * 10**9, NOW_NS))
    root = Span(
        trace_id=TRACE_IDS[0],
        span_id=POOL_IDS[0],
        name="invoke_agent support-bot",
        start_time_unix_nano=start,
        end_time_unix_nano=start + draw(st.integers(0, 60 * 10**9)),
        attributes=draw(attributes),
    )
    children = draw(st.lists(spans(), max_size=8))
    for child in children:
        if draw(st.booleans()):
            child.trace_id = TRACE_IDS[0]
            child.parent_span_id = draw(st.sampled_from(POOL_IDS))
            child.start_time_unix_nano = start + draw(st.integers(-(10**6), 10**10))
            child.end_time_unix_nano = child.start_time_unix_nano + draw(st.integers(0, 10**10))
    resource_spans.scope_spans.add().spans.extend([root, *children])
    return request


def map_request(request: ExportTraceServiceRequest) -> tuple[int, int]:
    """The pure part of otlp.ingest: spans grouped into traces, mapped and validated (no database).

    Returns (records, refusals).
    """
    read, refusals = otlp.read_spans(request)
    groups: dict[str, list[otlp.OtlpSpan]] = {}
    for item in read:
        groups.setdefault(item.trace_id, []).append(item)
    records = 0
    for group in groups.values():
        top = otlp.trace_span_of(group)
        if top is None:
            continue
        parents = {item.span_id: item.parent_id for item in group if item is not top}
        placed = otlp.place(parents, top.span_id, top.parent_id)
        children = [otlp.reduce_child(item) for item in group if placed.get(item.span_id) == otlp.DESCENDANT]
        for child in children:
            assert otlp.ChildSpan.from_json(child.span_id, child.to_json()) == child
        mapped = otlp.map_trace(top, children)
        if mapped.record is None:
            assert mapped.problem
            refusals.append(otlp.Refusal(top.span_id, mapped.problem))
            continue
        record, errors = validate_record(mapped.record, records, WINDOW)
        check_outcome(record, errors)
        records += record is not None
    return records, len(refusals)


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for item in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in item:
                        item[key] = base64.b64decode(item[key]).hex()
    return msgspec.json.encode(document)


def decode_or_refuse(body: bytes, encoding: otlp.Encoding) -> ExportTraceServiceRequest | None:
    """The parser's contract: a request, or an IngestError with a 4xx status; nothing else escapes."""
    try:
        return otlp.decode_request(body, encoding)
    except IngestError as exc:
        refused = exc
    assert 400 <= refused.status < 500
    assert refused.message
    return None


@fast(200)
@given(request=st.one_of(exports(), agent_exports()))
def test_any_export_maps_to_records_or_refusals_without_raising(request):
    decoded = decode_or_refuse(request.SerializeToString(), otlp.Encoding.PROTOBUF)
    assert decoded is not None
    assert decoded == request
    map_request(decoded)


@fast(80)
@given(request=st.one_of(exports(), agent_exports()))
def test_any_export_in_otlp_json_decodes_like_protobuf(request):
    # NaN doubles are written as "NaN" strings by the JSON mapping, so they take the same route.
    decoded = decode_or_refuse(otlp_json(request), otlp.Encoding.JSON)
    assert decoded is not None
    assert map_request(decoded) == map_request(request)


@fast(400)
@given(body=st.binary(max_size=600))
def test_the_protobuf_parser_never_raises_on_arbitrary_bytes(body):
    decoded = decode_or_refuse(body, otlp.Encoding.PROTOBUF)
    if decoded is not None:
        map_request(decoded)


@fast(120)
@given(
    request=exports(), cut=st.integers(0, 10_000), noise=st.binary(min_size=1, max_size=8), at=st.integers(0, 10_000)
)
def test_the_protobuf_parser_never_raises_on_damaged_exports(request, cut, noise, at):
    body = request.SerializeToString()
    for damaged in (body[: cut % (len(body) + 1)], body[:at] + noise + body[at + len(noise) :]):
        decoded = decode_or_refuse(damaged, otlp.Encoding.PROTOBUF)
        if decoded is not None:
            map_request(decoded)


@fast(300)
@given(body=st.binary(max_size=300) | finite_json.map(msgspec.json.encode))
def test_the_otlp_json_parser_never_raises_on_arbitrary_input(body):
    decoded = decode_or_refuse(body, otlp.Encoding.JSON)
    if decoded is not None:
        map_request(decoded)


@fast(150)
@given(
    spans_json=st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "traceId",
                    "spanId",
                    "parentSpanId",
                    "name",
                    "kind",
                    "startTimeUnixNano",
                    "endTimeUnixNano",
                    "attributes",
                    "status",
                    "events",
                    "links",
                ]
            ),
            finite_json,
            max_size=6,
        ),
        max_size=4,
    ),
)
def test_the_otlp_json_parser_never_raises_on_odd_spans(spans_json):
    body = msgspec.json.encode({"resourceSpans": [{"scopeSpans": [{"spans": spans_json}]}]})
    decoded = decode_or_refuse(body, otlp.Encoding.JSON)
    if decoded is not None:
        map_request(decoded)


# --- Sketches ---------------------------------------------------------------------------------

# Every latency ingest accepts: exactly 0, or 1 microsecond to one day (below 1 us the sketch promises nothing).
latency = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-3, max_value=MAX_LATENCY_MS),
    st.sampled_from([1e-3, 0.01, 99.999, 100.0, 500.0, 1999.99, 2000.0, MAX_LATENCY_MS]),
)
latencies = st.lists(latency, min_size=1, max_size=200)
quantiles = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=6)


def exact(values: list[float], q: float) -> float:
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    return float(ordered[int(nearest_rank(q, len(ordered))) - 1])


def same(a: Sketch, b: Sketch) -> bool:
    return bool(np.array_equal(a.counts, b.counts)) and (a.min_ms, a.max_ms) == (b.min_ms, b.max_ms)


@fast(200)
@given(a=latencies, b=latencies, c=latencies)
def test_merging_sketches_is_associative_and_commutative(a, b, c):
    x, y, z = Sketch.of(a), Sketch.of(b), Sketch.of(c)
    assert same(x.merge(y), y.merge(x))
    assert same(x.merge(y).merge(z), x.merge(y.merge(z)))
    assert same(x.merge(y).merge(z), Sketch.of(a + b + c))
    assert same(x.merge(Sketch.empty()), x)
    stored = Sketch.merge_stored(
        [s.encode() for s in (z, x, y)], [s.min_ms for s in (z, x, y)], [s.max_ms for s in (z, x, y)]
    )
    assert same(stored, x.merge(y).merge(z))


@fast(300)
@given(parts=st.lists(latencies, min_size=1, max_size=5), qs=quantiles)
def test_quantiles_of_merged_sketches_are_within_the_relative_accuracy(parts, qs):
    merged = Sketch.empty()
    for part in parts:
        merged = merged.merge(Sketch.of(part))
    everything = [value for part in parts for value in part]
    estimates = merged.quantiles(qs)
    for q, estimate in zip(qs, estimates, strict=True):
        truth = exact(everything, q)
        assert estimate is not None
        assert abs(estimate - truth) <= RELATIVE_ACCURACY * truth, (q, estimate, truth)
        assert min(everything) <= estimate <= max(everything)
    ordered = sorted(zip(qs, estimates, strict=True))
    assert all(e1 <= e2 for (_, e1), (_, e2) in itertools.pairwise(ordered))  # type: ignore[operator]


# --- Burn-rate maths --------------------------------------------------------------------------

targets = st.floats(min_value=0.5, max_value=0.99999)  # what an SLO may hold
ratios = st.floats(min_value=0.0, max_value=1.0)
windows = st.sampled_from([timedelta(days=days) for days in (7, 28, 30, 90)])


@fast(300)
@given(target=targets, ratio=ratios, other=ratios)
def test_the_burn_rate_is_the_error_ratio_over_the_budget(target, ratio, other):
    budget = maths.error_budget(target)
    assert 0 < budget <= 0.5
    assert maths.burn_rate(ratio, target) * budget == pytest.approx(ratio, abs=1e-12)
    assert maths.burn_rate(budget, target) == pytest.approx(1.0)
    if ratio <= other:
        assert maths.burn_rate(ratio, target) <= maths.burn_rate(other, target)


@fast(100)
@given(target=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(math.nan)))
def test_a_target_outside_0_to_1_is_refused(target):
    with pytest.raises(ValueError, match="strictly between"):
        maths.error_budget(target)


@fast(100)
@given(window=windows)
def test_rule_thresholds_spend_the_same_budget_share_whatever_the_window(window):
    for rule in maths.rules_for(window):
        assert rule.short_window * 12 == rule.long_window
        # At the threshold, the long window spends exactly its share of the whole budget.
        assert rule.burn_rate * (rule.long_window / window) == pytest.approx(rule.budget_share, rel=1e-3)


@fast(300)
@given(
    target=targets,
    window=windows,
    low=st.dictionaries(st.sampled_from(range(8)), ratios, min_size=8, max_size=8),
    bump=st.dictionaries(st.sampled_from(range(8)), st.floats(min_value=0.0, max_value=1.0), min_size=8, max_size=8),
)
def test_firing_is_monotonic_in_the_error_ratios(target, window, low, bump):
    rules = maths.rules_for(window)
    lengths = sorted({w for rule in rules for w in (rule.long_window, rule.short_window)})
    lower = {length: low[i] for i, length in enumerate(lengths)}
    higher = {length: min(1.0, lower[length] + bump[i]) for i, length in enumerate(lengths)}
    fired = maths.firing(rules, lower, target)
    assert set(fired) <= set(maths.firing(rules, higher, target))
    for rule in fired:
        assert maths.burn_rate(lower[rule.long_window], target) >= rule.burn_rate
        assert maths.burn_rate(lower[rule.short_window], target) >= rule.burn_rate
    expected = "page" if any(r.severity == "page" for r in fired) else ("ticket" if fired else None)
    assert maths.severity(fired) == expected


@fast(400)
@given(
    target=targets,
    good_share=ratios,
    total=st.integers(0, 10**12),
    burn=st.one_of(st.floats(min_value=0.0, max_value=1e6), st.floats(min_value=0.0, max_value=1e-6)),
    window=windows,
)
def test_a_budget_and_its_exhaustion_are_consistent_and_total(target, good_share, total, burn, window):
    budget = maths.Budget(target, round(total * good_share), total)
    if not total:
        assert budget.compliance is None
        assert budget.remaining is None
        assert maths.exhaustion(budget.remaining, burn, window) is None
        return
    assert budget.compliance is not None
    assert budget.remaining is not None
    assert 0.0 <= budget.compliance <= 1.0
    assert budget.remaining <= 1.0
    assert budget.remaining == pytest.approx(1 - maths.burn_rate(budget.bad / total, target), abs=1e-9)
    left = maths.exhaustion(budget.remaining, burn, window)
    if burn <= 0:
        assert left is None
    elif budget.remaining <= 0:
        assert left == timedelta(0)
    else:
        assert left is not None
        assert left >= timedelta(0)  # a sliver of budget at a fast burn rounds to 0 microseconds
        assert until(left).startswith(("in ", "already"))
        if left < timedelta.max:
            # At burn 1 a whole budget lasts the window: what is left lasts remaining / burn windows.
            assert left / window == pytest.approx(budget.remaining / burn, rel=1e-6)


def test_a_trickle_of_errors_lasts_the_longest_time_a_timedelta_holds():
    # 1 bad request in 100 million within the hour, against a 50% target: ~1e9 days, past timedelta's range.
    burn = maths.burn_rate(1e-8, 0.5)
    assert maths.exhaustion(1.0, burn, timedelta(days=30)) == timedelta.max
    assert maths.exhaustion(1.0, 5e-324, timedelta(days=7)) == timedelta.max
