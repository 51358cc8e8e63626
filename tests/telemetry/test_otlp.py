"""POST /v1/traces: OTLP/HTTP export requests, built here as protobuf messages, mapped to stored traces."""

from __future__ import annotations

import base64
import gzip
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.db import OperationalError, connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from google.protobuf import json_format
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from perfops.telemetry.ingest import otlp
from perfops.telemetry.models import Agent, PendingSpan, Trace
from perfops.telemetry.tasks import sweep_pending_spans
from tests import factories

URL = "/v1/traces"
pytestmark = pytest.mark.django_db

INTERNAL = Span.SPAN_KIND_INTERNAL
CLIENT = Span.SPAN_KIND_CLIENT
SERVER = Span.SPAN_KIND_SERVER
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RESOURCE = {"service.name": "support-bot", "service.version": "1.4.0", "deployment.environment.name": "production"}


# --- Building export requests ------------------------------------------------------------------


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(item) for item in value)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(key_values(value))
        return out
    return AnyValue(string_value=value)


def key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()]


@dataclass
class Tree:
    """A trace under construction: spans placed at millisecond offsets from its start, a minute ago."""

    trace_id: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    start_ns: int = field(default_factory=lambda: time.time_ns() - 60 * 10**9)
    spans: list[Span] = field(default_factory=list)

    @property
    def hex(self) -> str:
        return self.trace_id.hex()

    @property
    def started_at(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.start_ns // 1000)

    def add(
        self,
        name: str,
        start_ms: float,
        duration_ms: float,
        *,
        parent: Span | None = None,
        attributes: dict[str, Any] | None = None,
        kind: Span.SpanKind.ValueType = INTERNAL,
        error: bool = False,
        message: str = "",
    ) -> Span:
        span = Span(
            trace_id=self.trace_id,
            span_id=secrets.token_bytes(8),
            parent_span_id=parent.span_id if parent is not None else b"",
            name=name,
            kind=kind,
            start_time_unix_nano=self.start_ns + round(start_ms * 1e6),
            end_time_unix_nano=self.start_ns + round((start_ms + duration_ms) * 1e6),
            attributes=key_values(attributes or {}),
        )
        if error:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = message
        self.spans.append(span)
        return span

    def root(self, duration_ms: float = 812.5, **attributes: Any) -> Span:
        """An invoke_agent span; keyword attributes use '__' for '.'."""
        base = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "support-bot"}
        base.update({key.replace("__", "."): value for key, value in attributes.items()})
        return self.add("invoke_agent support-bot", 0, duration_ms, attributes=base)


def export(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(key_values(RESOURCE if resource is None else resource))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tests"
    scope_spans.spans.extend(spans)
    return request


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """The OTLP/JSON encoding: camelCase, enums as integers, int64 as strings, ids in hex."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return orjson.dumps(document)


def post(client, request: ExportTraceServiceRequest | bytes, *, content_type="application/x-protobuf", **extra):
    body = request if isinstance(request, bytes) else request.SerializeToString()
    return client.generic("POST", URL, body, content_type=content_type, **extra)


def result(response) -> ExportTraceServiceResponse:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/x-protobuf"
    return ExportTraceServiceResponse.FromString(response.content)


def rpc_status(response) -> status_pb2.Status:
    assert response["Content-Type"] == "application/x-protobuf"
    return status_pb2.Status.FromString(response.content)


def agent_trace(tree: Tree) -> list[Span]:
    """A customer-support request with four phases and a call of each kind (the db and llm calls nested)."""
    root = tree.root(
        gen_ai__agent__name="Support Bot",
        gen_ai__agent__version="1.4.0",
        perfops__intent="customer_support",
        customer_tier="gold",
        retries=0,
    )
    auth = tree.add("auth", 0, 12, parent=root, attributes={"perfops.phase": "auth"})
    tree.add(
        "SELECT orders",
        2,
        8,
        parent=auth,
        kind=CLIENT,
        attributes={"db.system.name": "postgresql", "db.namespace": "orders"},
    )
    tree.add("preprocess", 12, 40.5, parent=root, attributes={"perfops.phase": "preprocess"})
    llm = tree.add("llm", 52.5, 700, parent=root, attributes={"perfops.phase": "llm"})
    tree.add(
        "chat gpt-4o",
        55,
        690,
        parent=llm,
        kind=CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 350,
        },
    )
    post_phase = tree.add("postprocess", 752.5, 30, parent=root, attributes={"perfops.phase": "postprocess"})
    tool = tree.add(
        "execute_tool lookup_order",
        755,
        20,
        parent=post_phase,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order"},
    )
    tree.add(
        "GET",
        760,
        10,
        parent=tool,
        kind=CLIENT,
        attributes={"http.request.method": "GET", "url.full": "https://api.shipping.example/v1/track/1"},
    )
    return tree.spans


EXPECTED_DEPENDENCIES = [
    {"name": "postgresql/orders", "kind": "db", "start_ms": 2.0, "duration_ms": 8.0, "status": "ok"},
    {"name": "gpt-4o", "kind": "llm", "start_ms": 55.0, "duration_ms": 690.0, "status": "ok"},
    {"name": "lookup_order", "kind": "tool", "start_ms": 755.0, "duration_ms": 20.0, "status": "ok"},
    {"name": "api.shipping.example", "kind": "http", "start_ms": 760.0, "duration_ms": 10.0, "status": "ok"},
]


@pytest.fixture
def support_bot(payments):
    return factories.agent("support-bot", payments, intent_category="customer_support")


# --- The mapping -------------------------------------------------------------------------------


def test_an_agent_trace_is_stored_field_by_field(ingest_api, support_bot):
    tree = Tree()
    response = post(ingest_api, export(*agent_trace(tree)))

    assert not result(response).HasField("partial_success")
    trace = Trace.objects.get(trace_id=tree.hex)
    assert trace.agent == support_bot
    assert trace.environment == "production"
    assert trace.version == "1.4.0"
    assert trace.intent == "customer_support"
    assert trace.started_at == tree.started_at
    assert trace.latency_ms == 812.5
    assert trace.status == "ok"
    assert trace.error_type == ""
    assert trace.phases == {"auth": 12.0, "preprocess": 40.5, "llm": 700.0, "postprocess": 30.0}
    assert trace.dependencies == EXPECTED_DEPENDENCIES
    assert trace.model == "gpt-4o"
    assert (trace.input_tokens, trace.output_tokens) == (1200, 350)
    assert trace.cache_hit is False
    assert trace.attributes == {"customer_tier": "gold", "retries": 0, "gen_ai.agent.name": "Support Bot"}
    assert not PendingSpan.objects.exists()


def test_the_otlp_json_encoding_stores_the_same_trace_and_answers_in_json(ingest_api, support_bot):
    tree = Tree()
    response = post(ingest_api, otlp_json(export(*agent_trace(tree))), content_type="application/json")

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {}
    trace = Trace.objects.get(trace_id=tree.hex)
    assert trace.latency_ms == 812.5
    assert trace.phases == {"auth": 12.0, "preprocess": 40.5, "llm": 700.0, "postprocess": 30.0}
    assert trace.dependencies == EXPECTED_DEPENDENCIES
    assert (trace.input_tokens, trace.output_tokens) == (1200, 350)


def test_a_hand_written_otlp_json_document_is_understood(ingest_api, support_bot):
    start_ns = time.time_ns() - 30 * 10**9
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "support-bot"}},
                        {"key": "deployment.environment.name", "value": {"stringValue": "staging"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "",
                                "name": "invoke_agent support",
                                "kind": 1,
                                "startTimeUnixNano": str(start_ns),
                                "endTimeUnixNano": str(start_ns + 250_000_000),
                                "attributes": [
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}},
                                    {"key": "perfops.cache_hit", "value": {"boolValue": True}},
                                    {"key": "score", "value": {"doubleValue": 0.5}},
                                ],
                                "events": [{"name": "ignored", "timeUnixNano": str(start_ns)}],
                                "status": {"code": 1},
                                "unknownField": "is ignored",
                            },
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "0102030405060708",
                                "parentSpanId": "eee19b7ec3c1b174",
                                "name": "embeddings",
                                "kind": 3,
                                "startTimeUnixNano": str(start_ns + 10_000_000),
                                "endTimeUnixNano": str(start_ns + 30_000_000),
                                "attributes": [
                                    {"key": "gen_ai.operation.name", "value": {"stringValue": "embeddings"}},
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "text-embed-3"}},
                                ],
                                "links": [{"traceId": "00", "spanId": "zz"}],
                            },
                        ],
                    }
                ],
            }
        ]
    }
    response = post(ingest_api, orjson.dumps(document), content_type="application/json")

    assert response.status_code == 200, response.content
    assert response.json() == {}
    trace = Trace.objects.get(trace_id="5b8efff798038103d269b633813fc60c")
    assert (trace.environment, trace.latency_ms, trace.input_tokens, trace.cache_hit) == ("staging", 250.0, 42, True)
    assert trace.model == "text-embed-3"
    assert trace.dependencies == [
        {"name": "text-embed-3", "kind": "llm", "start_ms": 10.0, "duration_ms": 20.0, "status": "ok"}
    ]
    assert trace.attributes == {"score": 0.5}


@pytest.mark.parametrize(
    ("attributes", "kind", "expected"),
    [
        ({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}, CLIENT, ("gpt-4o", "llm")),
        ({"gen_ai.operation.name": "text_completion"}, CLIENT, ("the call", "llm")),
        ({"gen_ai.operation.name": "generate_content", "gen_ai.request.model": "gemini"}, CLIENT, ("gemini", "llm")),
        ({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e5"}, CLIENT, ("e5", "llm")),
        ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "weather"}, INTERNAL, ("weather", "tool")),
        ({"gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "kb"}, CLIENT, ("kb", "db")),
        ({"gen_ai.operation.name": "retrieval"}, CLIENT, ("the call", "db")),
        ({"db.system": "redis"}, CLIENT, ("redis", "db")),
        ({"db.system.name": "postgresql", "db.namespace": "orders"}, CLIENT, ("postgresql/orders", "db")),
        ({"http.request.method": "POST", "server.address": "api.example.com"}, CLIENT, ("api.example.com", "http")),
        ({"http.request.method": "GET", "url.full": "https://x.example:8443/a?b=1"}, CLIENT, ("x.example", "http")),
        ({"http.method": "GET", "http.url": "http://legacy.example/path"}, CLIENT, ("legacy.example", "http")),
        ({"http.request.method": "GET"}, CLIENT, ("the call", "http")),
    ],
)
def test_each_kind_of_child_span_becomes_its_call(ingest_api, support_bot, attributes, kind, expected):
    tree = Tree()
    root = tree.root(duration_ms=100)
    tree.add("the call", 10, 25.5, parent=root, attributes=attributes, kind=kind)
    result(post(ingest_api, export(*tree.spans)))

    name, dependency_kind = expected
    assert Trace.objects.get().dependencies == [
        {"name": name, "kind": dependency_kind, "start_ms": 10.0, "duration_ms": 25.5, "status": "ok"}
    ]


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        ({"http.request.method": "GET"}, SERVER),  # an incoming request is not a call the agent made
        ({"some.thing": 1}, INTERNAL),
        ({"gen_ai.operation.name": "create_agent"}, INTERNAL),
    ],
)
def test_other_child_spans_are_neither_calls_nor_phases(ingest_api, support_bot, attributes, kind):
    tree = Tree()
    root = tree.root(duration_ms=100)
    tree.add("something", 10, 20, parent=root, attributes=attributes, kind=kind)
    assert not result(post(ingest_api, export(*tree.spans))).HasField("partial_success")
    trace = Trace.objects.get()
    assert (trace.dependencies, trace.phases) == ([], {})


def test_a_failed_call_has_status_error(ingest_api, support_bot):
    tree = Tree()
    root = tree.root(duration_ms=100)
    tree.add("GET", 10, 20, parent=root, kind=CLIENT, attributes={"http.request.method": "GET"}, error=True)
    result(post(ingest_api, export(*tree.spans)))
    trace = Trace.objects.get()
    assert trace.dependencies[0]["status"] == "error"
    # The agent recovered: the request itself succeeded.
    assert (trace.status, trace.error_type) == ("ok", "")


def test_a_repeated_phase_is_summed(ingest_api, support_bot):
    tree = Tree()
    root = tree.root(duration_ms=100)
    tree.add("llm 1", 0, 30, parent=root, attributes={"perfops.phase": "llm"})
    tree.add("tools", 30, 10, parent=root, attributes={"perfops.phase": "tools"})
    tree.add("llm 2", 40, 25.25, parent=root, attributes={"perfops.phase": "llm"})
    result(post(ingest_api, export(*tree.spans)))
    assert Trace.objects.get().phases == {"llm": 55.25, "tools": 10.0}


def test_grandchildren_count_and_spans_of_other_traces_do_not(ingest_api, support_bot):
    tree, other = Tree(), Tree()
    root = tree.root(duration_ms=100)
    step = tree.add("step", 0, 90, parent=root)
    deeper = tree.add("deeper", 1, 80, parent=step)
    tree.add("SELECT", 5, 3, parent=deeper, kind=CLIENT, attributes={"db.system.name": "sqlite"})
    other.add("SELECT", 5, 3, parent=root, kind=CLIENT, attributes={"db.system.name": "mysql"})
    result(post(ingest_api, export(*tree.spans, *other.spans)))
    assert [d["name"] for d in Trace.objects.get(trace_id=tree.hex).dependencies] == ["sqlite"]


def test_the_invoke_agent_span_below_a_server_span_is_the_trace(ingest_api, support_bot):
    tree = Tree()
    server = tree.add("POST /chat", 0, 1000, kind=SERVER, attributes={"http.request.method": "POST"})
    agent = tree.add(
        "invoke_agent support-bot", 100, 500, parent=server, attributes={"gen_ai.operation.name": "invoke_agent"}
    )
    tree.add("before", 10, 20, parent=server, attributes={"db.system": "redis"}, kind=CLIENT)
    tree.add("inside", 150, 20, parent=agent, attributes={"db.system": "redis"}, kind=CLIENT)

    assert not result(post(ingest_api, export(*tree.spans))).HasField("partial_success")
    trace = Trace.objects.get()
    assert trace.latency_ms == 500.0
    assert trace.started_at == tree.started_at + timedelta(milliseconds=100)
    assert trace.dependencies == [
        {"name": "redis", "kind": "db", "start_ms": 50.0, "duration_ms": 20.0, "status": "ok"}
    ]
    assert not PendingSpan.objects.exists()


def test_a_root_span_is_the_trace_when_no_span_is_invoke_agent(ingest_api, support_bot):
    tree = Tree()
    root = tree.add("handle", 0, 300, kind=SERVER)
    tree.add("chat", 10, 200, parent=root, attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
    result(post(ingest_api, export(*tree.spans)))
    trace = Trace.objects.get()
    assert (trace.agent.slug, trace.latency_ms, trace.model) == ("support-bot", 300.0, "m")


@pytest.mark.parametrize(
    ("root_error", "child", "expected"),
    [
        ("TimeoutError", None, ("timeout", "timeout")),
        ("httpx.ReadTimeout", None, ("timeout", "timeout")),
        ("DEADLINE_EXCEEDED", None, ("timeout", "timeout")),
        ("openai.RateLimitError", None, ("error", "rate_limited")),
        ("429", None, ("error", "rate_limited")),
        ("rate_limit_exceeded", None, ("error", "rate_limited")),
        ("pydantic.ValidationError", None, ("error", "validation")),
        ("AgentError", ({"gen_ai.operation.name": "chat"}, "BadRequest"), ("error", "llm_error")),
        ("AgentError", ({"gen_ai.operation.name": "chat"}, "429"), ("error", "rate_limited")),
        ("AgentError", ({"db.system": "postgresql"}, "psycopg.OperationalError"), ("error", "dependency_error")),
        ("AgentError", ({"gen_ai.operation.name": "execute_tool"}, "KeyError"), ("error", "dependency_error")),
        ("AgentError", ({"http.request.method": "GET"}, "503"), ("error", "dependency_error")),
        ("KeyError", None, ("error", "other")),
        (None, None, ("error", "other")),  # status ERROR without error.type
    ],
)
def test_errors_map_to_a_status_and_an_error_type(ingest_api, support_bot, root_error, child, expected):
    tree = Tree()
    attributes = {"gen_ai.operation.name": "invoke_agent"}
    if root_error:
        attributes["error.type"] = root_error
    root = tree.add("invoke_agent", 0, 100, attributes=attributes, error=True)
    if child is not None:
        child_attributes, child_error = child
        tree.add("call", 10, 20, parent=root, kind=CLIENT, attributes={**child_attributes, "error.type": child_error})
    result(post(ingest_api, export(*tree.spans)))

    trace = Trace.objects.get()
    assert (trace.status, trace.error_type) == expected
    if root_error:
        assert trace.attributes["error.type"] == root_error


def test_a_status_message_can_name_the_error(ingest_api, support_bot):
    tree = Tree()
    tree.add("invoke_agent", 0, 100, error=True, message="upstream timed out after 30 s")
    result(post(ingest_api, export(*tree.spans)))
    assert (Trace.objects.get().status, Trace.objects.get().error_type) == ("timeout", "timeout")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("deployment.environment.name", "prod", "production"),
        ("deployment.environment.name", "production", "production"),
        ("deployment.environment.name", "Production", "production"),
        ("deployment.environment.name", "stage", "staging"),
        ("deployment.environment.name", "staging", "staging"),
        ("deployment.environment.name", "dev", "development"),
        ("deployment.environment.name", " development ", "development"),
        ("deployment.environment", "prod", "production"),
    ],
)
def test_the_environment_comes_from_the_resource(ingest_api, support_bot, key, value, expected):
    tree = Tree()
    tree.root()
    result(post(ingest_api, export(*tree.spans, resource={"service.name": "x", key: value})))
    assert Trace.objects.get().environment == expected


@pytest.mark.parametrize(
    ("resource", "reason_part"),
    [
        ({"deployment.environment.name": "qa"}, "deployment.environment.name is 'qa'"),
        ({"deployment.environment": "test"}, "deployment.environment is 'test'"),
        ({}, "Set the resource attribute deployment.environment.name"),
    ],
)
def test_a_trace_without_a_known_environment_is_refused_with_its_children(
    ingest_api, support_bot, resource, reason_part
):
    tree, good = Tree(), Tree()
    root = tree.root()
    tree.add("a", 1, 2, parent=root, attributes={"perfops.phase": "a"})
    tree.add("b", 3, 2, parent=root)
    good.root()

    partial = result(post(ingest_api, export(*tree.spans, resource=resource), HTTP_X_IGNORED="1")).partial_success
    assert partial.rejected_spans == 3
    assert partial.error_message.startswith(f"span {tree.spans[0].span_id.hex()}: environment: ")
    assert reason_part in partial.error_message
    assert "(2 other spans of its trace refused with it)" in partial.error_message
    assert not Trace.objects.exists()
    # The valid trace beside it in another request is unaffected.
    assert not result(post(ingest_api, export(*good.spans))).HasField("partial_success")


@pytest.mark.parametrize(
    ("span_attributes", "resource", "slug"),
    [
        ({"gen_ai.agent.id": "Billing Bot", "gen_ai.agent.name": "x"}, {}, "billing-bot"),
        ({"gen_ai.agent.name": "Billing Assistant (EU)"}, {}, "billing-assistant-eu"),
        ({}, {"service.name": "billing_svc"}, "billing_svc"),
        ({"gen_ai.agent.name": "Ünïcode  Agent"}, {}, "n-code-agent"),
        ({"gen_ai.agent.id": "a" * 80}, {}, "a" * 64),
    ],
)
def test_the_agent_slug_comes_from_the_agent_id_name_or_service(ingest_api, payments, span_attributes, resource, slug):
    tree = Tree()
    tree.add("invoke_agent", 0, 10, attributes={"gen_ai.operation.name": "invoke_agent", **span_attributes})
    result(post(ingest_api, export(*tree.spans, resource={"deployment.environment.name": "dev", **resource})))
    assert Trace.objects.get().agent.slug == slug


def test_a_trace_that_names_no_agent_is_refused(ingest_api, payments):
    tree = Tree()
    tree.add("invoke_agent", 0, 10, attributes={"gen_ai.operation.name": "invoke_agent"})
    partial = result(post(ingest_api, export(*tree.spans, resource={"deployment.environment.name": "dev"})))
    assert partial.partial_success.rejected_spans == 1
    assert "agent: Set gen_ai.agent.id or gen_ai.agent.name" in partial.partial_success.error_message


def test_version_intent_department_and_team_may_come_from_the_resource(ingest_api, payments):
    factories.team(payments, "checkout")
    tree = Tree()
    tree.add("invoke_agent", 0, 10, attributes={"gen_ai.operation.name": "invoke_agent", "perfops.cache_hit": True})
    resource = {
        **RESOURCE,
        "service.name": "refund-helper",
        "service.version": "2.0.1",
        "perfops.intent": "refunds",
        "perfops.department": "payments",
        "perfops.team": "checkout",
    }
    result(post(ingest_api, export(*tree.spans, resource=resource)))

    trace = Trace.objects.get()
    assert (trace.version, trace.intent, trace.cache_hit) == ("2.0.1", "refunds", True)
    agent = Agent.objects.get(slug="refund-helper")
    assert agent.team is not None
    assert (agent.department.slug, agent.team.slug, agent.auto_registered) == ("payments", "checkout", True)


def test_the_span_version_wins_over_the_service_version(ingest_api, support_bot):
    tree = Tree()
    tree.root(gen_ai__agent__version="3.0.0")
    result(post(ingest_api, export(*tree.spans)))
    assert Trace.objects.get().version == "3.0.0"


def test_the_root_model_and_usage_win_over_the_calls(ingest_api, support_bot):
    tree = Tree()
    root = tree.root(gen_ai__request__model="router", gen_ai__usage__input_tokens=5, gen_ai__usage__output_tokens=6)
    llm = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10}
    tree.add("chat", 10, 10, parent=root, attributes={**llm, "gen_ai.request.model": "small"})
    result(post(ingest_api, export(*tree.spans)))
    trace = Trace.objects.get()
    assert (trace.model, trace.input_tokens, trace.output_tokens) == ("router", 5, 6)


def test_without_root_usage_the_tokens_of_the_llm_calls_are_summed(ingest_api, support_bot):
    tree = Tree()
    root = tree.root()
    for offset, (model, tokens_in, tokens_out) in enumerate([("small", 100, 10), ("large", 200, 20)]):
        tree.add(
            "chat",
            10 + offset * 100,
            50,
            parent=root,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": tokens_in,
                "gen_ai.usage.output_tokens": tokens_out,
            },
        )
    tree.add(
        "tool",
        300,
        5,
        parent=root,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.usage.input_tokens": 9},
    )
    result(post(ingest_api, export(*tree.spans)))
    trace = Trace.objects.get()
    assert (trace.model, trace.input_tokens, trace.output_tokens) == ("small", 300, 30)


def test_without_any_usage_the_token_counts_stay_empty(ingest_api, support_bot):
    tree = Tree()
    tree.root()
    result(post(ingest_api, export(*tree.spans)))
    trace = Trace.objects.get()
    assert (trace.model, trace.input_tokens, trace.output_tokens) == ("", None, None)


def test_remaining_root_attributes_are_kept_flat_and_bounded(ingest_api, support_bot):
    tree = Tree()
    tree.root(
        tags=["a", "b"],
        config={"k": 1},
        long="x" * 2000,
        raw=b"\x00\x01",
        gen_ai__input__messages='[{"role": "user"}]',
        gen_ai__prompt__0__content="secret",
        perfops__whatever="ignored",
        **{f"zz{i:02}": i for i in range(70)},
    )
    assert not result(post(ingest_api, export(*tree.spans))).HasField("partial_success")
    attributes = Trace.objects.get().attributes
    assert len(attributes) == 64
    assert attributes["config"] == '{"k":1}'
    assert attributes["long"] == "x" * 1024
    assert attributes["tags"] == '["a","b"]'
    # Sorted by key, the first 64 are kept.
    assert "zz60" in attributes
    assert "zz61" not in attributes
    assert not {"raw", "gen_ai.input.messages", "gen_ai.prompt.0.content", "perfops.whatever"} & attributes.keys()


def test_an_array_attribute_is_kept_as_json_text(ingest_api, support_bot):
    tree = Tree()
    tree.root(tags=["a", "b"], sizes=[1, 2.5, True])
    result(post(ingest_api, export(*tree.spans)))
    attributes = Trace.objects.get().attributes
    assert attributes == {"tags": '["a","b"]', "sizes": "[1,2.5,true]"}


# --- Partial success ---------------------------------------------------------------------------


def test_bad_spans_are_refused_one_by_one_and_valid_ones_beside_them_are_kept(ingest_api, support_bot):
    good = Tree()
    agent_trace(good)
    broken = Tree()
    ends_first = broken.add("backwards", 10, 5)
    ends_first.end_time_unix_nano = ends_first.start_time_unix_nano - 1
    short_trace_id = Span(
        trace_id=b"\x01" * 8, span_id=b"\x02" * 8, name="x", start_time_unix_nano=1, end_time_unix_nano=2
    )
    zero_trace_id = Span(
        trace_id=bytes(16), span_id=b"\x02" * 8, name="x", start_time_unix_nano=1, end_time_unix_nano=2
    )
    zero_span_id = Span(trace_id=b"\x03" * 16, span_id=bytes(8), name="x", start_time_unix_nano=1, end_time_unix_nano=2)
    long_parent = Span(
        trace_id=b"\x03" * 16,
        span_id=b"\x04" * 8,
        parent_span_id=b"\x05" * 9,
        name="x",
        start_time_unix_nano=1,
        end_time_unix_nano=2,
    )
    no_start = Span(trace_id=b"\x03" * 16, span_id=b"\x06" * 8, name="x")

    partial = result(
        post(
            ingest_api,
            export(*good.spans, ends_first, short_trace_id, zero_trace_id, zero_span_id, long_parent, no_start),
        )
    ).partial_success

    assert partial.rejected_spans == 6
    message = partial.error_message
    assert f"span {ends_first.span_id.hex()}: end_time_unix_nano: The span ends before it starts." in message
    assert "trace_id: Must be 16 bytes" in message
    assert "trace_id: Must not be all zeros." in message
    assert "span_id: Must not be all zeros." in message
    assert "parent_span_id: Must be empty or 8 bytes" in message
    assert message.endswith("; and 1 more")
    assert Trace.objects.get().trace_id.hex == good.hex


def test_bad_ids_in_otlp_json_are_refused_as_spans_not_as_a_request(ingest_api, support_bot):
    good = Tree()
    good.root()
    document = orjson.loads(otlp_json(export(*good.spans)))
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "traceId": "not-hex", "spanId": "0102030405060708"})
    spans.append({**spans[0], "traceId": "ab" * 16, "spanId": "0102"})
    spans.append({**spans[0], "traceId": "ab" * 16, "spanId": 7})

    response = post(ingest_api, orjson.dumps(document), content_type="application/json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["partialSuccess"]["rejectedSpans"] == "3"
    assert "trace_id: Must be 16 bytes" in body["partialSuccess"]["errorMessage"]
    assert Trace.objects.count() == 1


def test_record_rules_refuse_a_trace_with_the_validators_reason(ingest_api, support_bot):
    tree = Tree()
    tree.root(perfops__intent="Customer Support", duration_ms=50)
    partial = result(post(ingest_api, export(*tree.spans))).partial_success
    assert partial.rejected_spans == 1
    assert partial.error_message == (
        f"span {tree.spans[0].span_id.hex()}: intent: Must be a slug: 1-64 lowercase letters, digits, '-' or '_'."
    )


def test_a_trace_older_than_retention_is_refused(ingest_api, support_bot):
    tree = Tree(start_ns=time.time_ns() - 45 * 86_400 * 10**9)
    tree.root()
    partial = result(post(ingest_api, export(*tree.spans))).partial_success
    assert partial.rejected_spans == 1
    assert "started_at: Older than the retention window" in partial.error_message


def test_children_outside_their_trace_span_are_refused_alone(ingest_api, support_bot):
    tree = Tree()
    root = tree.root(duration_ms=100)
    tree.add("inside", 10, 20, parent=root, attributes={"db.system": "redis"}, kind=CLIENT)
    late = tree.add("fire and forget", 90, 500, parent=root, attributes={"db.system": "redis"}, kind=CLIENT)
    # Within the validator's tolerance (1 ms + 0.1%) a call is clamped to the request, not refused.
    tree.add("edge", 99, 1.5, parent=root, attributes={"perfops.phase": "edge"})

    partial = result(post(ingest_api, export(*tree.spans))).partial_success

    assert partial.rejected_spans == 1
    assert partial.error_message.startswith(f"span {late.span_id.hex()}: Runs outside its trace span")
    trace = Trace.objects.get()
    assert [d["start_ms"] for d in trace.dependencies] == [10.0]
    assert trace.phases == {"edge": 1.0}


def test_calls_beyond_the_limit_are_refused_and_the_trace_kept(ingest_api, support_bot):
    tree = Tree()
    root = tree.root(duration_ms=1000)
    for i in range(260):
        tree.add(f"q{i}", i, 1, parent=root, attributes={"db.system": "redis"}, kind=CLIENT)
    partial = result(post(ingest_api, export(*tree.spans))).partial_success
    assert partial.rejected_spans == 4
    assert "The trace already has 256 calls." in partial.error_message
    assert len(Trace.objects.get().dependencies) == 256


def test_an_agent_of_another_department_is_refused(ingest_api, support_bot, research):
    factories.agent("lab-bot", research)
    tree = Tree()
    root = tree.root(gen_ai__agent__id="lab-bot")
    tree.add("x", 1, 2, parent=root)
    partial = result(post(ingest_api, export(*tree.spans))).partial_success
    assert partial.rejected_spans == 2
    assert "agent: Agent 'lab-bot' is not one this token may write to." in partial.error_message
    assert not Trace.objects.exists()


# --- Traces split over several requests ----------------------------------------------------------


def test_children_sent_before_their_root_are_joined(ingest_api, support_bot):
    tree = Tree()
    root, *children = agent_trace(tree)

    first = result(post(ingest_api, export(*children[:4])))
    second = result(post(ingest_api, export(*children[4:])))

    # Waiting children count as accepted.
    assert not first.HasField("partial_success")
    assert not second.HasField("partial_success")
    assert not Trace.objects.exists()
    assert PendingSpan.objects.count() == len(children)

    assert not result(post(ingest_api, export(root))).HasField("partial_success")
    trace = Trace.objects.get()
    assert trace.phases == {"auth": 12.0, "preprocess": 40.5, "llm": 700.0, "postprocess": 30.0}
    assert trace.dependencies == EXPECTED_DEPENDENCIES
    assert (trace.model, trace.input_tokens, trace.output_tokens) == ("gpt-4o", 1200, 350)
    assert not PendingSpan.objects.exists()


def test_the_pending_children_are_joined_with_children_in_the_roots_request(ingest_api, support_bot):
    tree = Tree()
    root, *children = agent_trace(tree)
    result(post(ingest_api, export(*children[:3])))
    result(post(ingest_api, export(*children[3:], root)))
    assert Trace.objects.get().dependencies == EXPECTED_DEPENDENCIES
    assert not PendingSpan.objects.exists()


def test_a_child_retried_while_waiting_is_kept_once(ingest_api, support_bot):
    tree = Tree()
    root = tree.root(duration_ms=100)
    call = tree.add("q", 10, 5, parent=root, attributes={"db.system": "redis"}, kind=CLIENT)
    result(post(ingest_api, export(call)))
    result(post(ingest_api, export(call)))
    assert PendingSpan.objects.count() == 1
    result(post(ingest_api, export(root, call)))
    assert len(Trace.objects.get().dependencies) == 1


def test_a_retried_export_is_not_counted_twice(ingest_api, support_bot):
    tree = Tree()
    request = export(*agent_trace(tree))
    result(post(ingest_api, request))
    assert not result(post(ingest_api, request)).HasField("partial_success")
    sweep_pending_spans()

    assert Trace.objects.get().dependencies == EXPECTED_DEPENDENCIES
    assert not PendingSpan.objects.exists()


def test_a_span_around_the_stored_invoke_agent_span_does_not_make_a_second_trace(ingest_api, support_bot):
    tree = Tree()
    server = tree.add("POST /chat", 0, 1000, kind=SERVER)
    agent = tree.add("invoke_agent", 100, 500, parent=server, attributes={"gen_ai.operation.name": "invoke_agent"})
    result(post(ingest_api, export(agent)))
    result(post(ingest_api, export(server)))
    sweep_pending_spans()
    trace = Trace.objects.get()
    assert trace.latency_ms == 500.0
    assert not PendingSpan.objects.exists()


def test_a_late_child_is_merged_by_the_sweeper(ingest_api, support_bot):
    tree = Tree()
    spans = agent_trace(tree)
    result(post(ingest_api, export(*spans)))
    stored = Trace.objects.get()
    late = tree.add(
        "late lookup",
        790,
        20,
        parent=spans[0],
        attributes={"db.system": "redis", "perfops.phase": "audit"},
        kind=CLIENT,
    )
    assert not result(post(ingest_api, export(late))).HasField("partial_success")
    assert PendingSpan.objects.count() == 1

    assert sweep_pending_spans() == {"traces_updated": 1, "spans_merged": 1, "spans_discarded": 0, "orphans_expired": 0}

    trace = Trace.objects.get()
    # The sweeper knows the trace's start to the microsecond only.
    late_call = {"name": "redis", "kind": "db", "start_ms": pytest.approx(790.0, abs=0.0011), "duration_ms": 20.0}
    assert trace.dependencies == [*EXPECTED_DEPENDENCIES, {**late_call, "status": "ok"}]
    assert trace.phases == {"auth": 12.0, "preprocess": 40.5, "llm": 700.0, "postprocess": 30.0, "audit": 20.0}
    assert trace.received_at >= stored.received_at
    assert not PendingSpan.objects.exists()
    # Idempotent: a second sweep changes nothing.
    assert sweep_pending_spans() == {"traces_updated": 0, "spans_merged": 0, "spans_discarded": 0, "orphans_expired": 0}
    assert Trace.objects.get().dependencies == trace.dependencies


def test_a_late_call_retried_after_its_merge_is_not_counted_twice(ingest_api, support_bot):
    tree = Tree()
    root = tree.root(duration_ms=100)
    result(post(ingest_api, export(root)))
    late = tree.add("q", 10, 5, parent=root, attributes={"db.system": "redis"}, kind=CLIENT)
    result(post(ingest_api, export(late)))
    sweep_pending_spans()
    result(post(ingest_api, export(late)))
    assert sweep_pending_spans()["spans_discarded"] == 1
    assert len(Trace.objects.get().dependencies) == 1


def test_the_sweeper_discards_late_spans_outside_their_trace(ingest_api, support_bot):
    tree = Tree()
    root = tree.root(duration_ms=100)
    result(post(ingest_api, export(root)))
    after = tree.add("after", 150, 20, parent=root, attributes={"db.system": "redis"}, kind=CLIENT)
    result(post(ingest_api, export(after)))

    assert sweep_pending_spans()["spans_discarded"] == 1
    assert Trace.objects.get().dependencies == []
    assert not PendingSpan.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_sweep_skips_the_spans_another_sweep_holds(ingest_api, support_bot):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL; SQLite runs one writer at a time")
    tree = Tree()
    root = tree.root(duration_ms=100)
    result(post(ingest_api, export(root)))
    result(post(ingest_api, export(tree.add("q", 10, 5, parent=root, attributes={"db.system": "redis"}, kind=CLIENT))))
    held, release = threading.Event(), threading.Event()

    def other_sweep() -> None:
        try:
            with transaction.atomic():
                list(PendingSpan.objects.select_for_update())
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other_sweep)
    thread.start()
    try:
        assert held.wait(10)
        assert sweep_pending_spans()["spans_merged"] == 0  # skipped, without waiting for the lock
    finally:
        release.set()
        thread.join()
    assert sweep_pending_spans()["spans_merged"] == 1
    assert len(Trace.objects.get().dependencies) == 1


def test_orphans_expire_after_the_ttl(ingest_api, support_bot, caplog):
    tree = Tree()
    root = tree.root(duration_ms=100)
    orphan = tree.add("q", 10, 5, parent=root, attributes={"db.system": "redis"}, kind=CLIENT)
    result(post(ingest_api, export(orphan)))
    ttl_s = settings.PERFOPS["OTLP_ORPHAN_TTL_S"]

    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=ttl_s - 30)):
        assert sweep_pending_spans()["orphans_expired"] == 0
    assert PendingSpan.objects.count() == 1

    later = datetime.now(UTC) + timedelta(seconds=ttl_s + 30)
    with caplog.at_level(logging.INFO, logger="perfops.telemetry.ingest.otlp"), time_machine.travel(later):
        assert sweep_pending_spans()["orphans_expired"] == 1
    assert not PendingSpan.objects.exists()
    assert f"expired 1 OTLP spans whose trace span never came (older than {ttl_s} s)" in caplog.text


def test_the_management_command_sweeps_once(ingest_api, support_bot, capsys):
    tree = Tree()
    root = tree.root(duration_ms=100)
    result(post(ingest_api, export(root)))
    result(post(ingest_api, export(tree.add("q", 10, 5, parent=root, attributes={"db.system": "redis"}, kind=CLIENT))))

    call_command("sweep_pending_spans")

    assert "Merged 1 late spans into 1 traces, discarded 0, expired 0 orphans." in capsys.readouterr().out
    assert len(Trace.objects.get().dependencies) == 1


def test_ingest_takes_the_same_queries_for_2_or_20_traces(ingest_api, support_bot):
    def request_of(count: int) -> ExportTraceServiceRequest:
        spans = []
        for _ in range(count):
            tree = Tree()
            root, *children = agent_trace(tree)
            spans += children[:4]
            spans.append(root)
        return export(*spans)

    result(post(ingest_api, request_of(1)))  # warm up: the token's last use, the agent's deployment
    with CaptureQueriesContext(connection) as small:
        result(post(ingest_api, request_of(2)))
    with CaptureQueriesContext(connection) as large:
        result(post(ingest_api, request_of(20)))
    assert len(large) == len(small)
    assert Trace.objects.count() == 23


# --- The request ---------------------------------------------------------------------------------


def test_gzip_bodies_are_accepted(ingest_api, support_bot):
    tree = Tree()
    body = gzip.compress(export(*agent_trace(tree)).SerializeToString())
    result(post(ingest_api, body, HTTP_CONTENT_ENCODING="gzip"))
    assert Trace.objects.get().trace_id.hex == tree.hex


def test_gzip_json_bodies_are_accepted(ingest_api, support_bot):
    tree = Tree()
    body = gzip.compress(otlp_json(export(*agent_trace(tree))))
    response = post(ingest_api, body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert Trace.objects.count() == 1


@override_settings(PERFOPS={**settings.PERFOPS, "INGEST_MAX_BYTES": 64 * 1024})
def test_a_gzip_bomb_answers_413(ingest_api, support_bot):
    bomb = gzip.compress(b"\x00" * (50 * 1024 * 1024))
    response = post(ingest_api, bomb, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413
    assert "inflates" in rpc_status(response).message


def test_an_empty_request_is_accepted(ingest_api):
    assert not result(post(ingest_api, ExportTraceServiceRequest())).HasField("partial_success")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/grpc"])
def test_the_wrong_content_type_answers_415(ingest_api, support_bot, content_type):
    response = post(ingest_api, export(*agent_trace(Tree())), content_type=content_type)
    assert response.status_code == 415
    assert response.json() == {"code": 3, "message": "Send OTLP as application/x-protobuf or application/json."}


def test_an_unsupported_content_encoding_answers_415(ingest_api, support_bot):
    response = post(ingest_api, export(*agent_trace(Tree())), HTTP_CONTENT_ENCODING="br")
    assert response.status_code == 415
    assert rpc_status(response).code == 3


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05\x01", b"not protobuf at all"])
def test_malformed_protobuf_answers_400_with_a_status(ingest_api, support_bot, body):
    response = post(ingest_api, body)
    assert response.status_code == 400
    status = rpc_status(response)
    assert status.code == 3
    assert status.message == "The body is not a valid protobuf ExportTraceServiceRequest."


@pytest.mark.parametrize(
    ("body", "reason_part"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[]", "JSON object"),
        (b'{"resourceSpans": 5}', "not an OTLP/JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}', "not an OTLP/JSON"),
    ],
)
def test_malformed_json_answers_400_in_json(ingest_api, support_bot, body, reason_part):
    response = post(ingest_api, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == 3
    assert reason_part in response.json()["message"]


def test_without_a_token_it_answers_401(api, support_bot):
    response = post(api, export(*agent_trace(Tree())))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert rpc_status(response).code == 16


def test_an_unknown_token_answers_401_in_json_for_json(api, support_bot):
    api.credentials(HTTP_AUTHORIZATION="Bearer pfo_nope")
    response = post(api, b"{}", content_type="application/json")
    assert response.status_code == 401
    assert response.json() == {"code": 16, "message": "Invalid token."}


def test_a_read_only_token_answers_403(api, engineer, support_bot):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.token(engineer, ['read'])}")
    response = post(api, export(*agent_trace(Tree())))
    assert response.status_code == 403
    assert rpc_status(response).code == 7
    assert "ingest" in rpc_status(response).message


def test_an_unavailable_database_answers_503(ingest_api, support_bot, monkeypatch):
    def broken(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(otlp, "store_records", broken)
    response = post(ingest_api, export(*agent_trace(Tree())))
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert rpc_status(response).code == 14


def test_pending_children_are_not_kept_when_storage_fails(ingest_api, support_bot, monkeypatch):
    tree = Tree()
    root, *children = agent_trace(tree)
    result(post(ingest_api, export(*children[:2])))

    def broken(*args, **kwargs):
        raise OperationalError("deadlock detected")

    monkeypatch.setattr(otlp, "store_records", broken)
    assert post(ingest_api, export(*children[2:], root)).status_code == 503
    # Nothing of the failed request was kept: the waiting children still wait for the retry.
    assert PendingSpan.objects.count() == 2
    monkeypatch.undo()
    result(post(ingest_api, export(*children[2:], root)))
    assert Trace.objects.get().dependencies == EXPECTED_DEPENDENCIES


def test_only_post_is_allowed(ingest_api):
    response = ingest_api.get(URL, HTTP_CONTENT_TYPE="application/json")
    assert response.status_code == 405


def test_child_span_json_round_trips():
    child = otlp.ChildSpan(span_id="ab" * 8, parent_id="cd" * 8, start_ns=1, end_ns=2, failed=True, kind="llm")
    assert otlp.ChildSpan.from_json(child.span_id, orjson.loads(orjson.dumps(child.to_json()))) == child


def test_a_loop_of_parents_is_outside_the_trace():
    placed = otlp.place({"a": "b", "b": "a", "c": "top", "d": "c", "e": "gone"}, top="top", top_parent="")
    assert placed == {"a": "outside", "b": "outside", "c": "descendant", "d": "descendant", "e": "unknown"}


def test_uuid_ids_match_the_hex_trace_id(ingest_api, support_bot):
    tree = Tree()
    tree.root()
    result(post(ingest_api, export(*tree.spans)))
    assert Trace.objects.filter(trace_id=uuid.UUID(hex=tree.hex)).exists()


def test_a_long_status_message_is_valid_protobuf():
    from perfops.telemetry.api_otlp import RpcStatus

    status = status_pb2.Status.FromString(RpcStatus(16, "é" * 300).to_protobuf())
    assert (status.code, status.message) == (16, "é" * 300)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="planner settings are PostgreSQL's")
def test_looking_up_stored_traces_leaves_the_callers_planner_settings_alone(db):
    from perfops.telemetry.partitions import stored_trace_ids

    today = timezone.now().date()
    with transaction.atomic(), connection.cursor() as cursor:
        stored_trace_ids(["ab" * 16], today, today)
        cursor.execute("SHOW enable_seqscan")
        assert cursor.fetchone()[0] == "on"


def _api_for(person, scopes=("ingest",)):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.token(person, list(scopes))}")
    return client


def _injected(tree: Tree, parent: Span) -> Span:
    return tree.add(
        "execute_tool injected",
        100,
        5,
        parent=parent,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "injected", "perfops.phase": "pwned"},
        kind=CLIENT,
    )


def test_another_departments_waiting_child_does_not_join_a_trace(ingest_api, support_bot, outsider):
    tree = Tree()
    root, *children = agent_trace(tree)
    # Trace ids travel in traceparent headers: an outsider can know one and post a child first.
    result(post(_api_for(outsider), export(_injected(tree, root))))
    result(post(ingest_api, export(root, *children)))

    trace = Trace.objects.get()
    assert "pwned" not in trace.phases
    assert "injected" not in {call["name"] for call in trace.dependencies}
    assert not PendingSpan.objects.exists()


def test_another_departments_late_child_is_discarded_by_the_sweeper(ingest_api, support_bot, outsider):
    tree = Tree()
    spans = agent_trace(tree)
    result(post(ingest_api, export(*spans)))
    result(post(_api_for(outsider), export(_injected(tree, spans[0]))))

    assert sweep_pending_spans() == {"traces_updated": 0, "spans_merged": 0, "spans_discarded": 1, "orphans_expired": 0}
    assert "pwned" not in Trace.objects.get().phases


def test_a_colleague_may_send_part_of_a_trace(ingest_api, support_bot, manager):
    # Another service of the same department, exporting with its own token.
    tree = Tree()
    root, *children = agent_trace(tree)
    result(post(_api_for(manager), export(*children)))
    result(post(ingest_api, export(root)))
    assert Trace.objects.get().dependencies == EXPECTED_DEPENDENCIES


def test_an_odd_child_name_does_not_cost_the_trace(ingest_api, support_bot):
    tree = Tree()
    root, *children = agent_trace(tree)
    odd = tree.add(
        "execute_tool search",
        200,
        10,
        parent=root,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search\nweb"},
        kind=CLIENT,
    )
    response = result(post(ingest_api, export(root, *children, odd)))
    assert not response.HasField("partial_success")
    assert "search web" in {call["name"] for call in Trace.objects.get().dependencies}


def test_an_invalid_phase_name_refuses_only_that_child(ingest_api, support_bot):
    tree = Tree()
    root, *children = agent_trace(tree)
    odd = tree.add("odd", 200, 10, parent=root, attributes={"perfops.phase": "Not A Phase"})
    response = result(post(ingest_api, export(root, *children, odd)))
    assert response.partial_success.rejected_spans == 1
    assert "perfops.phase" in response.partial_success.error_message
    assert Trace.objects.get().phases == {"auth": 12.0, "preprocess": 40.5, "llm": 700.0, "postprocess": 30.0}


def test_an_operation_name_that_is_not_text_is_ignored(ingest_api, support_bot):
    tree = Tree()
    root, *children = agent_trace(tree)
    odd = tree.add("odd", 200, 10, parent=root, attributes={"gen_ai.operation.name": ["chat"]}, kind=CLIENT)
    assert post(ingest_api, export(root, *children, odd)).status_code == 200
    assert Trace.objects.get().dependencies == EXPECTED_DEPENDENCIES
