"""OpenAPI descriptions of the ingest payloads (documentation only: records.py does the validating)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from perfops.telemetry.choices import SLUG_REGEX, DependencyKind, DependencyStatus, Environment, ErrorType, TraceStatus
from perfops.telemetry.ingest import records as rules

_SLUG = rf"^{SLUG_REGEX}$"


class DependencyCallIn(serializers.Serializer[dict[str, Any]]):
    name = serializers.CharField(max_length=rules.MAX_DEPENDENCY_NAME, help_text="e.g. gpt-4o, postgres, search-api.")
    kind = serializers.ChoiceField(choices=DependencyKind.choices)
    start_ms = serializers.FloatField(min_value=0, required=False, help_text="Offset from the request start.")
    duration_ms = serializers.FloatField(min_value=0)
    status = serializers.ChoiceField(choices=DependencyStatus.choices, required=False)


class TraceRecordIn(serializers.Serializer[dict[str, Any]]):
    trace_id = serializers.RegexField(r"^[0-9a-fA-F]{32}$", help_text="32 hex characters, unique per request.")
    agent = serializers.RegexField(_SLUG, help_text="Agent slug; unknown agents are registered automatically.")
    environment = serializers.ChoiceField(choices=Environment.choices)
    version = serializers.CharField(max_length=rules.MAX_SHORT_TEXT, required=False)
    intent = serializers.RegexField(_SLUG, required=False, help_text="Intent category; defaults to the agent's.")
    started_at = serializers.DateTimeField(
        help_text="RFC 3339 with an offset; within the raw retention window and at most 5 minutes ahead."
    )
    latency_ms = serializers.FloatField(min_value=0, max_value=rules.MAX_LATENCY_MS)
    status = serializers.ChoiceField(choices=TraceStatus.choices)
    error_type = serializers.ChoiceField(
        choices=ErrorType.choices, required=False, help_text="Only for status error / timeout."
    )
    phases = serializers.DictField(
        child=serializers.FloatField(min_value=0),
        required=False,
        help_text="Milliseconds per phase (auth, preprocess, llm, postprocess, ...); their sum ≤ latency_ms.",
    )
    dependencies = DependencyCallIn(many=True, required=False, max_length=rules.MAX_DEPENDENCIES)  # type: ignore[call-arg]
    model = serializers.CharField(max_length=rules.MAX_MODEL_LEN, required=False)
    input_tokens = serializers.IntegerField(min_value=0, max_value=rules.MAX_TOKENS, required=False)
    output_tokens = serializers.IntegerField(min_value=0, max_value=rules.MAX_TOKENS, required=False)
    cache_hit = serializers.BooleanField(required=False)
    attributes = serializers.DictField(
        required=False,
        help_text=f"At most {rules.MAX_ATTRIBUTES} flat key/values (string, number, boolean, null).",
    )
    department = serializers.RegexField(_SLUG, required=False, help_text="Home of a new agent (default: unassigned).")
    team = serializers.RegexField(_SLUG, required=False, help_text="Team of a new agent, inside its department.")


class TraceBatchIn(serializers.Serializer[dict[str, Any]]):
    traces = TraceRecordIn(
        many=True,
        help_text=f"1 to {settings.PERFOPS['INGEST_MAX_RECORDS']:,} records; at most "
        f"{settings.PERFOPS['INGEST_MAX_BYTES'] / 1048576:g} MiB after gzip decompression.",
    )


class RejectedRecord(serializers.Serializer[dict[str, Any]]):
    index = serializers.IntegerField(help_text="Position of the record in `traces`.")
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))  # type: ignore[assignment]


class IngestResult(serializers.Serializer[dict[str, Any]]):
    accepted = serializers.IntegerField(help_text="Records stored by this request.")
    duplicates = serializers.IntegerField(help_text="Records already stored (a retry); not counted twice.")
    rejected = RejectedRecord(many=True)
    detail = serializers.CharField(required=False, help_text="Why the whole request was refused.")
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="The request-level problem by field (body, traces, content_type).",
    )


class IngestError(serializers.Serializer[dict[str, Any]]):
    detail = serializers.CharField()
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()), required=False
    )
