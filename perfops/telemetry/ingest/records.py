"""Validation of one trace record into a normalised TraceRecord, or field errors.

This is the ingest hot path (tens of thousands of records per second), so it is plain code over
dicts rather than a serializer framework; its rules are mirrored for the docs in schema.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from perfops.telemetry.choices import DependencyKind, DependencyStatus, Environment, ErrorType, TraceStatus

MAX_SHORT_TEXT = 64
MAX_MODEL_LEN = 128
MAX_PHASES = 32
MAX_DEPENDENCIES = 256
MAX_DEPENDENCY_NAME = 128
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY = 128
MAX_ATTRIBUTE_VALUE = 1024
MAX_TOKENS = 2_000_000_000
# Longer than any agent request we expect; what is longer is a clock bug, not a request.
MAX_LATENCY_MS = 86_400_000.0
DEFAULT_VERSION = "unversioned"

_HEX32 = re.compile(r"[0-9a-f]{32}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_PHASE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")

ENVIRONMENTS = frozenset(Environment.values)
STATUSES = frozenset(TraceStatus.values)
ERROR_TYPES = frozenset(ErrorType.values)
DEPENDENCY_KINDS = frozenset(DependencyKind.values)
DEPENDENCY_STATUSES = frozenset(DependencyStatus.values)

REQUIRED_FIELDS = ("trace_id", "agent", "environment", "started_at", "latency_ms", "status")
KNOWN_FIELDS = frozenset(
    {
        *REQUIRED_FIELDS,
        "version",
        "intent",
        "error_type",
        "phases",
        "dependencies",
        "model",
        "input_tokens",
        "output_tokens",
        "cache_hit",
        "attributes",
        "department",
        "team",
    }
)
_DEPENDENCY_FIELDS = frozenset({"name", "kind", "start_ms", "duration_ms", "status"})

Errors = dict[str, list[str]]

# Senders repeat the same agents, versions, models, phase and call names in every batch; a value
# that passed once passes again, so remember it (bounded) and skip the regex and scans next time.
_MEMO_LIMIT = 50_000
_good_slugs: set[str] = set()
_good_texts: set[str] = set()
_good_phases: set[str] = set()


def _remember(memo: set[str], value: str) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo.add(value)


@dataclass(slots=True)
class TraceRecord:
    """A validated record, ready to store once its agent is resolved."""

    trace_id: str
    agent: str
    environment: str
    version: str
    intent: str
    started_at: datetime
    latency_ms: float
    status: str
    error_type: str
    phases: dict[str, float]
    dependencies: list[dict[str, Any]]
    model: str
    input_tokens: int | None
    output_tokens: int | None
    cache_hit: bool
    attributes: dict[str, Any]
    department: str | None = None
    team: str | None = None
    profiled: bool = False
    index: int = field(default=0)


@dataclass(frozen=True, slots=True)
class Window:
    """The accepted range of started_at: not older than retention, not further ahead than clock skew."""

    oldest: datetime
    newest: datetime

    @classmethod
    def around(cls, now: datetime, retention_days: int, max_future_s: int) -> Window:
        return cls(oldest=now - timedelta(days=retention_days), newest=now + timedelta(seconds=max_future_s))


def _add(errors: Errors, key: str, reason: str) -> None:
    errors.setdefault(key, []).append(reason)


def _is_number(value: object) -> bool:
    kind = type(value)
    return (kind is float or kind is int) and math.isfinite(value)  # type: ignore[arg-type]


def _text(value: object, errors: Errors, key: str, max_len: int, *, required: bool) -> str:
    """A single-line printable string of at most max_len characters."""
    if type(value) is str and value in _good_texts and len(value) <= max_len:
        return value
    if value is None or value == "":
        if required:
            _add(errors, key, "This field is required.")
        return ""
    if type(value) is not str:
        _add(errors, key, "Must be a string.")
        return ""
    if len(value) > max_len:
        _add(errors, key, f"At most {max_len} characters.")
        return ""
    if not value.isprintable():
        _add(errors, key, "Must not contain control characters.")
        return ""
    _remember(_good_texts, value)
    return value


def _slug(value: object, errors: Errors, key: str, *, required: bool) -> str:
    if type(value) is str and value in _good_slugs:
        return value
    if value is None or value == "":
        if required:
            _add(errors, key, "This field is required.")
        return ""
    if type(value) is not str or not _SLUG.fullmatch(value):
        _add(errors, key, "Must be a slug: 1-64 lowercase letters, digits, '-' or '_'.")
        return ""
    _remember(_good_slugs, value)
    return value


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 timestamp with an offset, as an aware UTC datetime; None when it is not one."""
    if type(value) is not str or len(value) < 20 or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def validate_record(raw: object, index: int, window: Window) -> tuple[TraceRecord | None, Errors]:
    """Check one record; return the normalised record, or None and every problem found."""
    if type(raw) is not dict:
        return None, {"record": ["Must be a JSON object."]}
    errors: Errors = {}
    if not raw.keys() <= KNOWN_FIELDS:
        for name in sorted(raw.keys() - KNOWN_FIELDS, key=str)[:10]:
            _add(errors, str(name)[:64], "Unknown field.")

    trace_id = raw.get("trace_id")
    if type(trace_id) is not str or len(trace_id) != 32 or not _HEX32.fullmatch(trace_id := trace_id.lower()):
        _add(errors, "trace_id", "Must be 32 hexadecimal characters.")
        trace_id = ""
    elif trace_id == "0" * 32:
        _add(errors, "trace_id", "Must not be all zeros.")

    agent = _slug(raw.get("agent"), errors, "agent", required=True)

    environment = raw.get("environment")
    if environment not in ENVIRONMENTS:
        _add(errors, "environment", "Must be one of production, staging, development.")
        environment = ""

    version = _text(raw.get("version"), errors, "version", MAX_SHORT_TEXT, required=False) or DEFAULT_VERSION
    intent = _slug(raw.get("intent"), errors, "intent", required=False)

    started_raw = raw.get("started_at")
    started_at = parse_timestamp(started_raw)
    if started_at is None:
        if started_raw is None:
            _add(errors, "started_at", "This field is required.")
        else:
            _add(
                errors,
                "started_at",
                "Must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-31T12:00:00.5Z.",
            )
    elif started_at < window.oldest:
        _add(errors, "started_at", f"Older than the retention window (before {window.oldest.isoformat()}).")
    elif started_at > window.newest:
        _add(errors, "started_at", "Too far in the future (check the sender's clock).")

    latency = raw.get("latency_ms")
    latency_ms = 0.0
    if latency is None:
        _add(errors, "latency_ms", "This field is required.")
    elif not _is_number(latency):
        _add(errors, "latency_ms", "Must be a finite number.")
    elif latency < 0:
        _add(errors, "latency_ms", "Must not be negative.")
    elif latency > MAX_LATENCY_MS:
        _add(errors, "latency_ms", "Must be at most 86,400,000 ms (one day).")
    else:
        latency_ms = float(latency)
    # Phases and calls may round up a little against the end-to-end latency.
    slack = 1.0 + latency_ms * 0.001

    status = raw.get("status")
    if status not in STATUSES:
        _add(errors, "status", "Must be one of ok, error, timeout.")
        status = ""
    error_type = raw.get("error_type")
    if error_type is None or error_type == "":
        error_type = {"timeout": "timeout", "error": "other"}.get(status, "")
    elif status == TraceStatus.OK:
        _add(errors, "error_type", "Only failed requests (status error or timeout) carry an error type.")
        error_type = ""
    elif error_type not in ERROR_TYPES:
        _add(errors, "error_type", "Must be one of " + ", ".join(ErrorType.values) + ".")
        error_type = ""

    phases = _phases(raw.get("phases"), errors, latency_ms, slack)
    dependencies = _dependencies(raw.get("dependencies"), errors, latency_ms, slack)
    model = _text(raw.get("model"), errors, "model", MAX_MODEL_LEN, required=False)
    input_tokens = _token_count(raw.get("input_tokens"), errors, "input_tokens")
    output_tokens = _token_count(raw.get("output_tokens"), errors, "output_tokens")

    cache_hit = raw.get("cache_hit", False)
    if cache_hit is None:
        cache_hit = False
    elif type(cache_hit) is not bool:
        _add(errors, "cache_hit", "Must be true or false.")
        cache_hit = False

    attributes = _attributes(raw.get("attributes"), errors)
    department = _slug(raw.get("department"), errors, "department", required=False) or None
    team = _slug(raw.get("team"), errors, "team", required=False) or None

    if errors:
        return None, errors
    return (
        # Positional: this runs 50k times a second and keyword binding costs a microsecond.
        TraceRecord(
            trace_id,
            agent,
            environment,
            version,
            intent,
            started_at,  # type: ignore[arg-type]
            latency_ms,
            status,
            error_type,
            phases,
            dependencies,
            model,
            input_tokens,
            output_tokens,
            cache_hit,
            attributes,
            department,
            team,
            False,
            index,
        ),
        errors,
    )


def _token_count(value: object, errors: Errors, key: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0 or value > MAX_TOKENS:
        _add(errors, key, f"Must be a whole number from 0 to {MAX_TOKENS:,}.")
        return None
    return value


def _phases(value: object, errors: Errors, latency_ms: float, slack: float) -> dict[str, float]:
    if value is None:
        return {}
    if type(value) is not dict:
        _add(errors, "phases", "Must be an object of phase name to milliseconds.")
        return {}
    if len(value) > MAX_PHASES:
        _add(errors, "phases", f"At most {MAX_PHASES} phases.")
        return {}
    phases: dict[str, float] = {}
    total = 0.0
    for name, ms in value.items():
        if name in _good_phases and type(ms) is float and 0.0 <= ms < math.inf:
            phases[name] = ms
            total += ms
            continue
        if not _PHASE.fullmatch(name):
            _add(
                errors,
                "phases",
                f"Phase name {name[:40]!r} must be 1-32 lowercase letters, digits, '_', '-' or '.'.",
            )
            continue
        if not _is_number(ms) or ms < 0:
            _add(errors, f"phases.{name}", "Must be a finite, non-negative number of milliseconds.")
            continue
        _remember(_good_phases, name)
        phases[name] = float(ms)
        total += ms
    if total > latency_ms + slack and "latency_ms" not in errors:
        _add(errors, "phases", f"The phases add up to {total:g} ms, more than the request's {latency_ms:g} ms.")
    return phases


def _dependencies(value: object, errors: Errors, latency_ms: float, slack: float) -> list[dict[str, Any]]:
    if value is None:
        return []
    if type(value) is not list:
        _add(errors, "dependencies", "Must be a list of calls.")
        return []
    if len(value) > MAX_DEPENDENCIES:
        _add(errors, "dependencies", f"At most {MAX_DEPENDENCIES} calls.")
        return []
    calls: list[dict[str, Any]] = []
    limit = latency_ms + slack
    for position, call in enumerate(value):
        # Fast path: a complete, well-formed call is stored as sent.
        if type(call) is dict and len(call) == 5 and call.keys() == _DEPENDENCY_FIELDS:
            start = call["start_ms"]
            duration = call["duration_ms"]
            name = call["name"]
            if (
                type(name) is str
                and name in _good_texts
                and len(name) <= MAX_DEPENDENCY_NAME
                and call["kind"] in DEPENDENCY_KINDS
                and call["status"] in DEPENDENCY_STATUSES
                and type(start) is float
                and type(duration) is float
                and 0.0 <= start < math.inf
                and 0.0 <= duration < math.inf
                and start + duration <= limit
            ):
                calls.append(call)
                continue
        key = f"dependencies[{position}]"
        if type(call) is not dict:
            _add(errors, key, "Must be an object with name, kind, start_ms, duration_ms and status.")
            continue
        extra = call.keys() - _DEPENDENCY_FIELDS
        if extra:
            _add(errors, key, f"Unknown field(s): {', '.join(sorted(map(str, extra)))[:200]}.")
            continue
        name = _text(call.get("name"), errors, f"{key}.name", MAX_DEPENDENCY_NAME, required=True)
        kind = call.get("kind")
        if kind not in DEPENDENCY_KINDS:
            _add(errors, f"{key}.kind", "Must be one of llm, db, http, tool.")
        start = call.get("start_ms", 0)
        duration = call.get("duration_ms")
        if not _is_number(start) or start < 0:
            _add(errors, f"{key}.start_ms", "Must be a finite, non-negative offset in milliseconds.")
            start = None
        if duration is None:
            _add(errors, f"{key}.duration_ms", "This field is required.")
        elif not _is_number(duration) or duration < 0:
            _add(errors, f"{key}.duration_ms", "Must be a finite, non-negative number of milliseconds.")
            duration = None
        status = call.get("status") or DependencyStatus.OK
        if status not in DEPENDENCY_STATUSES:
            _add(errors, f"{key}.status", "Must be ok or error.")
        ends_late = start is not None and duration is not None and start + duration > latency_ms + slack
        if ends_late and "latency_ms" not in errors:
            end_ms = start + duration
            _add(errors, key, f"The call ends at {end_ms:g} ms, after the request ended ({latency_ms:g} ms).")
        calls.append({"name": name, "kind": kind, "start_ms": start, "duration_ms": duration, "status": str(status)})
    return calls


def _attributes(value: object, errors: Errors) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        _add(errors, "attributes", "Must be an object of key to string, number, boolean or null.")
        return {}
    if len(value) > MAX_ATTRIBUTES:
        _add(errors, "attributes", f"At most {MAX_ATTRIBUTES} attributes (got {len(value)}).")
        return {}
    for key, item in value.items():
        if len(key) > MAX_ATTRIBUTE_KEY or not key or not key.isprintable():
            _add(errors, "attributes", f"Keys must be 1-{MAX_ATTRIBUTE_KEY} printable characters.")
            return {}
        kind = type(item)
        if kind is str:
            if len(item) > MAX_ATTRIBUTE_VALUE:
                _add(errors, f"attributes.{key}", f"At most {MAX_ATTRIBUTE_VALUE} characters.")
            elif "\x00" in item:
                _add(errors, f"attributes.{key}", "Must not contain NUL characters.")
        elif kind is float:
            if not math.isfinite(item):
                _add(errors, f"attributes.{key}", "Must be a finite number.")
        elif kind is int:
            if not -(2**63) <= item < 2**63:
                _add(errors, f"attributes.{key}", "Integer out of the 64-bit range.")
        elif kind is not bool and item is not None:
            _add(errors, f"attributes.{key}", "Must be a string, number, boolean or null (no nesting).")
    return value
