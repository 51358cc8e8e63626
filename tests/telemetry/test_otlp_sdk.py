"""The real OpenTelemetry SDK exporting GenAI spans over OTLP/HTTP (protobuf) to a live perfops."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from perfops.telemetry.models import Agent, PendingSpan, Trace

pytestmark = pytest.mark.django_db(transaction=True)

MS = 1_000_000


class RecordingExporter(SpanExporter):
    """The OTLP exporter, remembering what each export sent and what it returned."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.batches: list[list[ReadableSpan]] = []
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(list(spans))
        outcome = self.inner.export(spans)
        self.results.append(outcome)
        return outcome

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@pytest.fixture
def sdk(live_server, ingest_token):
    exporter = RecordingExporter(
        OTLPSpanExporter(
            endpoint=f"{live_server.url}/v1/traces",
            headers={"Authorization": f"Bearer {ingest_token}"},
            timeout=10,
        )
    )
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": "checkout-svc",
                "service.version": "2.3.0",
                "deployment.environment.name": "prod",
                "perfops.department": "payments",
            }
        )
    )
    # Three spans per export and no timer: one trace is spread over several requests, children first.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=3, schedule_delay_millis=60_000))
    yield provider, exporter
    provider.shutdown()


class Recorder:
    """Spans with explicit times (offsets in ms from the trace start), so nothing sleeps."""

    def __init__(self, tracer: trace.Tracer, start_ns: int) -> None:
        self.tracer = tracer
        self.start_ns = start_ns

    def start(self, name, at_ms, parent=None, kind=SpanKind.INTERNAL, **attributes):
        context = trace.set_span_in_context(parent) if parent is not None else Context()
        return self.tracer.start_span(
            name,
            context=context,
            kind=kind,
            attributes={key.replace("__", "."): value for key, value in attributes.items()},
            start_time=self.start_ns + round(at_ms * MS),
        )

    def end(self, span, at_ms, error_type: str | None = None):
        if error_type:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end(end_time=self.start_ns + round(at_ms * MS))


def test_the_sdk_exports_genai_traces_that_perfops_stores_field_by_field(sdk, payments):
    provider, exporter = sdk
    tracer = provider.get_tracer("tests.checkout")
    start_ns = time.time_ns() - 60_000 * MS
    ok = Recorder(tracer, start_ns)
    failed = Recorder(tracer, start_ns + 1000 * MS)
    slow = Recorder(tracer, start_ns + 2000 * MS)

    # The request that went well: four phases, a call of each kind.
    root = ok.start(
        "invoke_agent Checkout Assistant",
        0,
        gen_ai__operation__name="invoke_agent",
        gen_ai__agent__name="Checkout Assistant",
        perfops__intent="checkout",
        customer__tier="gold",
    )
    auth = ok.start("auth", 0, root, perfops__phase="auth")
    db = ok.start("SELECT carts", 2, auth, SpanKind.CLIENT, db__system__name="postgresql", db__namespace="shop")
    ok.end(db, 6)
    ok.end(auth, 10)
    pre = ok.start("preprocess", 10, root, perfops__phase="preprocess")
    ok.end(pre, 40)
    llm = ok.start("llm", 40, root, perfops__phase="llm")
    chat = ok.start(
        "chat gpt-4o-mini",
        45,
        llm,
        SpanKind.CLIENT,
        gen_ai__operation__name="chat",
        gen_ai__request__model="gpt-4o-mini",
        gen_ai__usage__input_tokens=800,
        gen_ai__usage__output_tokens=120,
    )
    ok.end(chat, 635)
    ok.end(llm, 640)

    # The failed request starts while the first one is still running.
    failed_root = failed.start(
        "invoke_agent Checkout Assistant", 0, gen_ai__operation__name="invoke_agent", gen_ai__agent__id="checkout"
    )
    failed_chat = failed.start(
        "chat gpt-4o-mini", 10, failed_root, SpanKind.CLIENT, gen_ai__operation__name="chat", gen_ai__request__model="m"
    )
    failed.end(failed_chat, 290, error_type="openai.InternalServerError")
    failed.end(failed_root, 300, error_type="AgentRunError")

    post = ok.start("postprocess", 640, root, perfops__phase="postprocess")
    tool = ok.start(
        "execute_tool reserve_stock",
        645,
        post,
        gen_ai__operation__name="execute_tool",
        gen_ai__tool__name="reserve_stock",
    )
    ok.end(tool, 665)
    http = ok.start(
        "GET", 670, post, SpanKind.CLIENT, http__request__method="GET", server__address="api.carrier.example"
    )
    ok.end(http, 690)
    ok.end(post, 700)
    ok.end(root, 720.25)

    slow_root = slow.start("invoke_agent", 0, gen_ai__operation__name="invoke_agent", gen_ai__agent__id="checkout")
    slow.end(slow_root, 5000, error_type="TimeoutError")

    assert provider.force_flush(30_000)

    assert exporter.results
    assert all(outcome is SpanExportResult.SUCCESS for outcome in exporter.results), exporter.results
    assert len(exporter.batches) >= 4
    # The SDK really did send the first trace's children before its root, in two earlier requests.
    ok_trace_id = root.get_span_context().trace_id
    root_batch = next(
        i
        for i, batch in enumerate(exporter.batches)
        if any(s.parent is None and s.context.trace_id == ok_trace_id for s in batch)
    )
    assert sum(any(s.context.trace_id == ok_trace_id for s in batch) for batch in exporter.batches[:root_batch]) >= 2

    assert Trace.objects.count() == 3
    assert not PendingSpan.objects.exists()
    agent = Agent.objects.get(slug="checkout-assistant")
    assert agent.department == payments

    stored = Trace.objects.get(trace_id=f"{ok_trace_id:032x}")
    assert stored.agent == agent
    assert stored.environment == "production"
    assert stored.version == "2.3.0"
    assert stored.intent == "checkout"
    assert stored.started_at == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=start_ns // 1000)
    assert abs(stored.latency_ms - 720.25) < 1
    assert (stored.status, stored.error_type) == ("ok", "")
    assert stored.phases == {"auth": 10.0, "preprocess": 30.0, "llm": 600.0, "postprocess": 60.0}
    assert stored.dependencies == [
        {"name": "postgresql/shop", "kind": "db", "start_ms": 2.0, "duration_ms": 4.0, "status": "ok"},
        {"name": "gpt-4o-mini", "kind": "llm", "start_ms": 45.0, "duration_ms": 590.0, "status": "ok"},
        {"name": "reserve_stock", "kind": "tool", "start_ms": 645.0, "duration_ms": 20.0, "status": "ok"},
        {"name": "api.carrier.example", "kind": "http", "start_ms": 670.0, "duration_ms": 20.0, "status": "ok"},
    ]
    assert (stored.model, stored.input_tokens, stored.output_tokens) == ("gpt-4o-mini", 800, 120)
    assert stored.cache_hit is False
    assert stored.attributes == {"customer.tier": "gold"}

    error = Trace.objects.get(trace_id=f"{failed_root.get_span_context().trace_id:032x}")
    assert error.agent.slug == "checkout"
    assert abs(error.latency_ms - 300) < 1
    assert (error.status, error.error_type) == ("error", "llm_error")
    assert error.dependencies == [
        {"name": "m", "kind": "llm", "start_ms": 10.0, "duration_ms": 280.0, "status": "error"}
    ]
    assert error.attributes == {"error.type": "AgentRunError"}

    timeout = Trace.objects.get(trace_id=f"{slow_root.get_span_context().trace_id:032x}")
    assert (timeout.status, timeout.error_type, timeout.latency_ms) == ("timeout", "timeout", 5000.0)
