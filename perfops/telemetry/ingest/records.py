"""Validation of trace records into normalised TraceRecords, or field errors.

This is the ingest hot path (50,000 records a second), so it has two routes to one result:

- decode_clean_batch(): msgspec decodes a whole JSON batch straight into typed structs, checking
  types, ranges, enumerations and patterns in C, then applies the value rules a type cannot
  express (shared with the route below). It answers only "every record is valid, here they are",
  or None.
- validate_record(): plain checks over one parsed JSON object that name every problem with its
  field. It serves batches with any invalid record (and OTLP, whose records are built as dicts),
  and is the one source of error messages.

Both produce the same TraceRecord for the same input; tests/telemetry/test_records.py checks it.
The rules are mirrored for the API docs in schema.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from perfops.telemetry.choices import SLUG_REGEX, DependencyKind, DependencyStatus, Environment, ErrorType, TraceStatus

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
_ZERO_ID = "0" * 32
_INT64 = (-(2**63), 2**63)

# A trace id as stored: 32 lowercase hex digits.
TRACE_ID = re.compile(r"[0-9a-f]{32}")

_SLUG = re.compile(SLUG_REGEX)
# RFC 3339's shape (fromisoformat alone also takes ISO week dates and the basic format).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
PHASE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")

ENVIRONMENTS = frozenset(Environment.values)
STATUSES = frozenset(TraceStatus.values)
ERROR_TYPES = frozenset(ErrorType.values)
DEPENDENCY_KINDS = frozenset(DependencyKind.values)
DEPENDENCY_STATUSES = frozenset(DependencyStatus.values)
DEFAULT_ERROR_TYPE = {
    TraceStatus.TIMEOUT.value: ErrorType.TIMEOUT.value,
    TraceStatus.ERROR.value: ErrorType.OTHER.value,
}

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


class Call(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One dependency call made while serving a request (stored as a JSON object)."""

    name: Annotated[str, Meta(min_length=1, max_length=MAX_DEPENDENCY_NAME)]
    kind: DependencyKind
    start_ms: Annotated[float, Meta(ge=0)] = 0.0
    duration_ms: Annotated[float, Meta(ge=0)]
    status: DependencyStatus = DependencyStatus.OK


class TraceRecord(msgspec.Struct, gc=False):
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
    dependencies: list[Call]
    model: str
    input_tokens: int | None
    output_tokens: int | None
    cache_hit: bool
    attributes: dict[str, Any]
    department: str | None = None
    team: str | None = None
    profiled: bool = False
    index: int = 0


@dataclass(frozen=True, slots=True)
class Window:
    """The accepted range of started_at: not older than retention, not further ahead than clock skew."""

    oldest: datetime
    newest: datetime

    @classmethod
    def around(cls, now: datetime, retention_days: int, max_future_s: int) -> Window:
        return cls(oldest=now - timedelta(days=retention_days), newest=now + timedelta(seconds=max_future_s))


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 timestamp with an offset, as an aware UTC datetime; None when it is not one.

    RFC 3339 allows a lower-case 't' and 'z'; fractions beyond microseconds are truncated.
    """
    if type(value) is not str or len(value) < 20 or len(value) > 40 or not _RFC3339.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):  # e.g. month 13, or year 9999 with a negative offset
        return None


def total_ms(durations: Iterable[float]) -> float:
    """The exact sum of durations; infinity when it overflows a float (longer than any request)."""
    try:
        return math.fsum(durations)
    except OverflowError:  # fsum raises where plain addition would give inf: 1e308 + 1e308
        return math.inf


def slack_ms(latency_ms: float) -> float:
    """How far phases and calls may round past the end-to-end latency."""
    return 1.0 + latency_ms * 0.001


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


# --- The fast route: a whole batch of valid records ------------------------------------------


class _WireRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The JSON form of a record, for the fast route; anything it refuses goes to validate_record.

    Types, lengths and ranges only: msgspec checks a `pattern` by calling Python's re for every
    value (measured: 70% of the decode), so _from_wire checks the patterns with validate_record's
    own compiled expressions and memos.
    """

    trace_id: Annotated[str, Meta(min_length=32, max_length=32)]
    agent: str
    environment: Environment
    started_at: str
    latency_ms: Annotated[float, Meta(ge=0, le=MAX_LATENCY_MS)]
    status: TraceStatus
    version: Annotated[str, Meta(min_length=1, max_length=MAX_SHORT_TEXT)] = DEFAULT_VERSION
    intent: str = ""
    error_type: ErrorType | None = None
    phases: Annotated[dict[str, Annotated[float, Meta(ge=0)]], Meta(max_length=MAX_PHASES)] = {}
    dependencies: Annotated[list[Call], Meta(max_length=MAX_DEPENDENCIES)] = []
    model: Annotated[str, Meta(max_length=MAX_MODEL_LEN)] = ""
    input_tokens: Annotated[int, Meta(ge=0, le=MAX_TOKENS)] | None = None
    output_tokens: Annotated[int, Meta(ge=0, le=MAX_TOKENS)] | None = None
    cache_hit: bool = False
    attributes: Annotated[
        dict[
            Annotated[str, Meta(min_length=1, max_length=MAX_ATTRIBUTE_KEY)],
            Annotated[str, Meta(max_length=MAX_ATTRIBUTE_VALUE)] | int | float | bool | None,
        ],
        Meta(max_length=MAX_ATTRIBUTES),
    ] = {}
    department: str | None = None
    team: str | None = None


class _WireBatch(msgspec.Struct, forbid_unknown_fields=True):
    traces: list[_WireRecord]


_batch_decoder = msgspec.json.Decoder(_WireBatch)


def decode_clean_batch(body: bytes, window: Window) -> list[TraceRecord] | None:
    """The records of a batch in which every record is valid; None when anything at all is wrong.

    None is not a verdict: the caller then parses the batch record by record with validate_record,
    which stores what is valid and says what is not.
    """
    try:
        batch = _batch_decoder.decode(body)
    except msgspec.DecodeError:  # also ValidationError
        return None
    records = []
    for index, wire in enumerate(batch.traces):
        record = _from_wire(wire, index, window)
        if record is None:
            return None
        records.append(record)
    return records or None


def _from_wire(wire: _WireRecord, index: int, window: Window) -> TraceRecord | None:
    """The value rules a type cannot express, exactly as validate_record applies them."""
    trace_id = wire.trace_id.lower()
    if trace_id == _ZERO_ID or not TRACE_ID.fullmatch(trace_id):
        return None
    if not (_is_slug(wire.agent) and _is_slug(wire.intent, empty_ok=True)):
        return None
    if not (_is_slug(wire.department, empty_ok=True) and _is_slug(wire.team, empty_ok=True)):
        return None
    started_at = parse_timestamp(wire.started_at)
    if started_at is None or not window.oldest <= started_at <= window.newest:
        return None
    if not (wire.version.isprintable() and wire.model.isprintable()):
        return None
    status = wire.status.value  # plain strings in records, as validate_record makes them
    error_type: str
    if wire.error_type is None:
        error_type = DEFAULT_ERROR_TYPE.get(status, "")
    elif status == TraceStatus.OK:
        return None
    else:
        error_type = wire.error_type.value
    latency_ms = wire.latency_ms
    limit = latency_ms + slack_ms(latency_ms)
    for name in wire.phases:
        if name not in _good_phases:
            if not PHASE_NAME.fullmatch(name):
                return None
            _remember(_good_phases, name)
    if total_ms(wire.phases.values()) > limit:
        return None
    for call in wire.dependencies:
        if call.start_ms + call.duration_ms > limit or not call.name.isprintable():
            return None
    for key, value in wire.attributes.items():
        if not key.isprintable() or not _attribute_value_ok(value):
            return None
    return TraceRecord(
        trace_id,
        wire.agent,
        wire.environment.value,
        wire.version,
        wire.intent,
        started_at,
        latency_ms,
        status,
        error_type,
        wire.phases,
        wire.dependencies,
        wire.model,
        wire.input_tokens,
        wire.output_tokens,
        wire.cache_hit,
        wire.attributes,
        wire.department or None,
        wire.team or None,
        False,
        index,
    )


def _is_slug(value: str | None, *, empty_ok: bool = False) -> bool:
    """The slug rule of validate_record's _slug, sharing its memo."""
    if not value:
        return empty_ok
    if value in _good_slugs:
        return True
    if _SLUG.fullmatch(value):
        _remember(_good_slugs, value)
        return True
    return False


def _attribute_value_ok(value: object) -> bool:
    kind = type(value)
    if kind is str:
        return "\x00" not in value  # type: ignore[operator]
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is int:
        return _INT64[0] <= value < _INT64[1]  # type: ignore[operator]
    return True


# --- The detailed route: one parsed record, every problem named -------------------------------

Errors = dict[str, list[str]]


def _add(errors: Errors, key: str, reason: str) -> None:
    errors.setdefault(key, []).append(reason)


def _is_number(value: object) -> bool:
    """A finite JSON number (not a boolean); integers beyond 64 bits count as out of range."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    return kind is int and _INT64[0] <= value < _INT64[1]  # type: ignore[operator]


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


def validate_record(raw: object, index: int, window: Window) -> tuple[TraceRecord | None, Errors]:
    """Check one record; return the normalised record, or None and every problem found."""
    if type(raw) is not dict:
        return None, {"record": ["Must be a JSON object."]}
    errors: Errors = {}
    if not raw.keys() <= KNOWN_FIELDS:
        for name in sorted(raw.keys() - KNOWN_FIELDS, key=str)[:10]:
            _add(errors, str(name)[:64], "Unknown field.")

    trace_id = raw.get("trace_id")
    if type(trace_id) is not str or len(trace_id) != 32 or not TRACE_ID.fullmatch(trace_id := trace_id.lower()):
        _add(errors, "trace_id", "Must be 32 hexadecimal characters.")
        trace_id = ""
    elif trace_id == _ZERO_ID:
        _add(errors, "trace_id", "Must not be all zeros.")

    agent = _slug(raw.get("agent"), errors, "agent", required=True)

    environment = raw.get("environment")
    if type(environment) is not str or environment not in ENVIRONMENTS:
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
    slack = slack_ms(latency_ms)

    status = raw.get("status")
    if type(status) is not str or status not in STATUSES:
        _add(errors, "status", "Must be one of ok, error, timeout.")
        status = ""
    error_type = raw.get("error_type")
    if error_type is None or error_type == "":
        error_type = DEFAULT_ERROR_TYPE.get(status, "")
    elif status == TraceStatus.OK:
        _add(errors, "error_type", "Only failed requests (status error or timeout) carry an error type.")
        error_type = ""
    elif type(error_type) is not str or error_type not in ERROR_TYPES:
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
    for name, ms in value.items():
        if name in _good_phases and type(ms) is float and 0.0 <= ms < math.inf:
            phases[name] = ms
            continue
        if not PHASE_NAME.fullmatch(name):
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
    total = total_ms(phases.values())
    if total > latency_ms + slack and "latency_ms" not in errors:
        _add(errors, "phases", f"The phases add up to {total:g} ms, more than the request's {latency_ms:g} ms.")
    return phases


def _dependencies(value: object, errors: Errors, latency_ms: float, slack: float) -> list[Call]:
    if value is None:
        return []
    if type(value) is not list:
        _add(errors, "dependencies", "Must be a list of calls.")
        return []
    if len(value) > MAX_DEPENDENCIES:
        _add(errors, "dependencies", f"At most {MAX_DEPENDENCIES} calls.")
        return []
    calls: list[Call] = []
    limit = latency_ms + slack
    for position, call in enumerate(value):
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
        if type(kind) is not str or kind not in DEPENDENCY_KINDS:
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
        status = call.get("status") or DependencyStatus.OK.value
        if type(status) is not str or status not in DEPENDENCY_STATUSES:
            _add(errors, f"{key}.status", "Must be ok or error.")
        if start is None or duration is None or f"{key}.kind" in errors or f"{key}.status" in errors:
            continue
        start_ms, duration_ms = float(start), float(duration)
        if start_ms + duration_ms > limit and "latency_ms" not in errors:
            end_ms = start_ms + duration_ms
            _add(errors, key, f"The call ends at {end_ms:g} ms, after the request ended ({latency_ms:g} ms).")
        calls.append(
            Call(
                name=name,
                kind=DependencyKind(str(kind)),
                start_ms=start_ms,
                duration_ms=duration_ms,
                status=DependencyStatus(str(status)),
            )
        )
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
            if not _INT64[0] <= item < _INT64[1]:
                _add(errors, f"attributes.{key}", "Integer out of the 64-bit range.")
        elif kind is not bool and item is not None:
            _add(errors, f"attributes.{key}", "Must be a string, number, boolean or null (no nesting).")
    return value
