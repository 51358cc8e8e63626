"""The two validation routes agree: whatever the fast batch decoder accepts, the detailed
validator accepts too and normalises to the same record (it alone names problems)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfops.telemetry.api import parse_json_body
from perfops.telemetry.ingest.records import Window, decode_clean_batch, parse_timestamp, validate_record
from tests import factories

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
WINDOW = Window.around(NOW, retention_days=30, max_future_s=300)

# Values each field may take: valid ones, near misses and plain garbage.
FIELD_VALUES: dict[str, list[Any]] = {
    "trace_id": [
        "4BF92F3577B34DA6A3CE929D0E0E4736",
        "0" * 32,
        "4bf92f3577b34da6a3ce929d0e0e473",
        "4bf92f3577b34da6a3ce929d0e0e4736\n",
        7,
        None,
    ],
    "agent": ["support-bot", "Support", "bot\n", "a" * 64, "a" * 65, "", None, ["x"]],
    "environment": ["staging", "prod", "", None, [], {"a": 1}],
    "version": ["2.0.0", "", "v" * 64, "v" * 65, "1.0\t", None, 3],
    "intent": ["search", "", "Search", None],
    "started_at": [
        "2026-11-26T11:59:00Z",
        "2026-11-26t11:59:00z",
        "2026-11-26 11:59:00+00:00",
        "2026-11-26T13:59:00.1234567+02:00",
        "2026-11-26T11:59:00",
        "2026-11-26T11:59Z",
        "2026-11-26T13:00:00Z",
        "2026-09-01T00:00:00Z",
        "2026-11-26T11:59:00+0000",
        "yesterday",
        1764158340,
        None,
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        "2026-W48-4T11:59:00Z",
        "20261126T115900Z",
        "2026-13-26T11:59:00Z",
    ],
    "latency_ms": [0, 0.0, 812, 812.5, -1, 86_400_000, 86_400_000.5, True, "5", None, 10**30],
    "status": ["ok", "error", "timeout", "OK", None, ["ok"]],
    "error_type": [None, "", "timeout", "llm_error", "kaboom", {}],
    "phases": [
        {},
        {"llm": 700},
        {"llm": 700.0, "auth": 12},
        {"llm": 813.0},
        {"LLM": 1.0},
        {"llm": -1},
        {"llm": "1"},
        {"llm\n": 1.0},
        {f"p{i}": 1.0 for i in range(33)},
        None,
        [],
    ],
    "dependencies": [
        [],
        [{"name": "gpt-4o", "kind": "llm", "duration_ms": 700}],
        [{"name": "db", "kind": "db", "start_ms": 10, "duration_ms": 8.0, "status": "error"}],
        [{"name": "db", "kind": "db", "start_ms": 800, "duration_ms": 100}],
        [{"name": "db", "kind": "ftp", "duration_ms": 1}],
        [{"name": "", "kind": "db", "duration_ms": 1}],
        [{"name": "d\x01b", "kind": "db", "duration_ms": 1}],
        [{"name": "db", "kind": "db", "duration_ms": 1, "status": None}],
        [{"name": "db", "kind": "db", "duration_ms": 1, "x": 1}],
        ["db"],
        None,
        [{"name": "db", "kind": [], "duration_ms": 1}],
        [{"name": "db", "kind": "db", "duration_ms": 1, "status": ["x"]}],
    ],
    "model": ["gpt-4o", "", "m" * 129, "gpt\n4", None],
    "input_tokens": [0, 1200, -1, 1.0, 2_000_000_001, True, None],
    "cache_hit": [True, False, None, 1, "yes"],
    "attributes": [
        {},
        {"tier": "gold", "n": 3, "f": 1.5, "b": True, "z": None},
        {"big": 2**64},
        {"huge": 10**23},
        {"nul": "a\x00"},
        {"nested": {"a": 1}},
        {"": 1},
        {"k\n": 1},
        {f"k{i}": i for i in range(65)},
        {"long": "x" * 1025},
        None,
    ],
    "department": ["payments", "Pay Ments", "", None],
    "team": ["checkout", "", None],
}

record_changes = st.dictionaries(
    keys=st.sampled_from(sorted(FIELD_VALUES)),
    values=st.integers(min_value=0, max_value=20),
    max_size=4,
)


def mutated(changes: dict[str, int], drop: list[str], extra: bool) -> dict[str, Any]:
    record = factories.record(started_at="2026-11-26T11:59:00.5Z")
    for field, choice in changes.items():
        options = FIELD_VALUES[field]
        record[field] = options[choice % len(options)]
    for field in drop:
        record.pop(field, None)
    if extra:
        record["surprise"] = 1
    return record


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=record_changes,
    drop=st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=2),
    extra=st.booleans(),
)
def test_the_fast_route_accepts_only_what_the_detailed_route_accepts_and_normalises_alike(changes, drop, extra):
    record = mutated(changes, drop, extra)
    body = msgspec.json.encode({"traces": [record]})
    fast = decode_clean_batch(body, WINDOW)
    document, _ = parse_json_body(body)  # what the detailed route reads
    detailed, errors = validate_record(document["traces"][0], 0, WINDOW)
    if fast is not None:
        assert errors == {}, errors
        assert fast == [detailed]


def test_a_typical_batch_takes_the_fast_route():
    records = [factories.record(started_at="2026-11-26T11:59:00Z", error_type=None) for _ in range(50)]
    records[3] |= {"status": "timeout", "phases": {}, "dependencies": []}
    fast = decode_clean_batch(orjson.dumps({"traces": records}), WINDOW)
    assert fast is not None
    assert [record.trace_id for record in fast] == [record["trace_id"] for record in records]
    assert fast[3].error_type == "timeout"


def test_one_bad_record_sends_the_whole_batch_to_the_detailed_route():
    records = [factories.record(started_at="2026-11-26T11:59:00Z"), factories.record(latency_ms=-1)]
    assert decode_clean_batch(orjson.dumps({"traces": records}), WINDOW) is None


def test_timestamps_follow_rfc_3339():
    assert parse_timestamp("2026-11-26t11:59:00z") == datetime(2026, 11, 26, 11, 59, tzinfo=UTC)
    assert parse_timestamp("2026-11-26T13:59:00+02:00") == datetime(2026, 11, 26, 11, 59, tzinfo=UTC)
    assert parse_timestamp("2026-11-26T11:59:00") is None  # no offset: ambiguous
    assert parse_timestamp("26/11/2026 11:59") is None
    assert parse_timestamp(NOW.timestamp()) is None
    assert parse_timestamp("2026-W48-4T11:59:00Z") is None  # ISO week date: not RFC 3339
    assert parse_timestamp("20261126T115900Z") is None  # ISO basic format: not RFC 3339
    assert parse_timestamp("9999-12-31T23:59:59-01:00") is None  # past year 9999 in UTC
    assert NOW - timedelta(days=30) == WINDOW.oldest
