"""Read raw traces of a time range as numpy columns, as fast as the database can hand them over.

PostgreSQL: one statement that aggregates each column into an array (binary, fixed width, read
with np.frombuffer), the two free-text dimensions into newline-joined strings and every trace's
packed timings into one bytea. A row-by-row fetch costs several microseconds a trace in Python;
this costs the server about one and the client next to nothing. SQLite: an ordinary cursor.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import psycopg
from django.db import connection
from psycopg.adapt import Loader
from psycopg.pq import Format

from perfops.metrics.cells import ENVIRONMENTS, ERROR_TYPES, STATUSES, RawTraces, codes_for
from perfops.telemetry import timings

# PostgreSQL's epoch for timestamps is 2000-01-01; numpy's is 1970-01-01.
_PG_EPOCH_US = 946_684_800 * 1_000_000


def _first_letter_codes(vocabulary: tuple[str, ...]) -> np.ndarray:
    """A lookup from ascii(value) (the first letter; 0 for "") to the value's code."""
    lookup = np.full(128, -1, dtype=np.int64)
    for code, value in enumerate(vocabulary):
        letter = ord(value[0]) if value else 0
        if lookup[letter] != -1:
            raise AssertionError(f"{value!r} shares its first letter with another value")
        lookup[letter] = code
    return lookup


_ENV_BY_LETTER = _first_letter_codes(ENVIRONMENTS)
_STATUS_BY_LETTER = _first_letter_codes(STATUSES)
_ERROR_BY_LETTER = _first_letter_codes(ERROR_TYPES)

_PG_SQL = """
SELECT array_agg(started_at), array_agg(agent_id), array_agg(ascii(environment)), array_agg(latency_ms),
       array_agg(ascii(status)), array_agg(ascii(error_type)), array_agg(coalesce(input_tokens, -1)),
       array_agg(coalesce(output_tokens, -1)), array_agg(cache_hit), array_agg(profiled),
       string_agg(version, E'\\n'), string_agg(intent, E'\\n'), string_agg(timings, ''::bytea),
       array_agg(length(timings)), count(*)
FROM telemetry_trace WHERE started_at >= %s AND started_at < %s
"""


class RawBytes(Loader):
    """Hand binary values over untouched (the arrays are decoded with numpy instead)."""

    format = Format.BINARY

    def load(self, data: bytes | bytearray | memoryview) -> bytes:
        return bytes(data)


# timestamptz[], int4[], float8[], int8[], bool[], text, bytea
_RAW_OIDS = (1185, 1007, 1022, 1016, 1000, 25, 17)


def pg_array(data: bytes | None, dtype: str, n: int) -> np.ndarray:
    """A one-dimensional binary array without NULLs: a 20-byte header, then (length, value) pairs."""
    if not n or data is None:
        return np.zeros(0, dtype=np.dtype(dtype).newbyteorder("="))
    pairs = np.frombuffer(data, dtype=np.dtype([("length", ">i4"), ("value", dtype)]), offset=20, count=n)
    return pairs["value"].astype(np.dtype(dtype).newbyteorder("="))


def dictionary_codes(text: str | None, n: int) -> tuple[np.ndarray, list[str]]:
    """Dictionary-encode a newline-joined column."""
    if not n or text is None:
        return np.zeros(0, dtype=np.int64), []
    index: defaultdict[str, int] = defaultdict(itertools.count().__next__)
    codes = np.fromiter(map(index.__getitem__, text.split("\n")), dtype=np.int64, count=n)
    return codes, list(index)


def read_traces(start: datetime, end: datetime) -> RawTraces:
    """Every trace that started in [start, end)."""
    if connection.vendor == "postgresql":
        return _read_postgresql(start, end)
    return _read_sqlite(start, end)


def _read_postgresql(start: datetime, end: datetime) -> RawTraces:
    connection.ensure_connection()
    raw_connection = connection.connection
    assert raw_connection is not None
    # Django's cursors bind parameters client-side, which cannot ask for binary results.
    with psycopg.Cursor(raw_connection) as cursor:
        for oid in _RAW_OIDS:
            cursor.adapters.register_loader(oid, RawBytes)
        cursor.execute(_PG_SQL, [start, end], binary=True)
        row = cursor.fetchone()
    assert row is not None
    n = int(row[14] or 0)
    versions_text = row[10].decode() if row[10] is not None else None
    intents_text = row[11].decode() if row[11] is not None else None
    version, versions = dictionary_codes(versions_text, n)
    intent, intents = dictionary_codes(intents_text, n)
    lengths = pg_array(row[13], ">i4", n).astype(np.int64)
    blob = row[12] or b""
    timing_row = np.repeat(np.arange(n), lengths // timings.ENTRY_SIZE)
    return RawTraces(
        started_us=pg_array(row[0], ">i8", n) + _PG_EPOCH_US,
        agent=pg_array(row[1], ">i8", n),
        env=_ENV_BY_LETTER[pg_array(row[2], ">i4", n)],
        version=version,
        intent=intent,
        latency_ms=pg_array(row[3], ">f8", n),
        status=_STATUS_BY_LETTER[pg_array(row[4], ">i4", n)],
        error_type=_ERROR_BY_LETTER[pg_array(row[5], ">i4", n)],
        input_tokens=pg_array(row[6], ">i4", n).astype(np.int64),
        output_tokens=pg_array(row[7], ">i4", n).astype(np.int64),
        cache_hit=pg_array(row[8], "?", n),
        profiled=pg_array(row[9], "?", n),
        timing_row=timing_row,
        timing=np.frombuffer(blob, dtype=timings.ENTRY),
        versions=versions,
        intents=intents,
    )


def _sqlite_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _read_sqlite(start: datetime, end: datetime) -> RawTraces:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT started_at, agent_id, environment, version, intent, latency_ms, status, error_type, "
            "input_tokens, output_tokens, cache_hit, profiled, timings FROM telemetry_trace "
            "WHERE started_at >= %s AND started_at < %s",
            [_sqlite_time(start), _sqlite_time(end)],
        )
        rows = cursor.fetchall()
    n = len(rows)
    if not n:
        columns: list[tuple[object, ...]] = [() for _ in range(13)]
    else:
        columns = list(zip(*rows, strict=True))
    blobs = [bytes(blob or b"") for blob in columns[12]]  # type: ignore[call-overload]
    timing_row, entries = timings.decode(blobs) if blobs else (np.zeros(0, dtype=np.int64), timings.decode([])[1])
    version, versions = dictionary_codes("\n".join(columns[3]) if n else None, n)  # type: ignore[arg-type]
    intent, intents = dictionary_codes("\n".join(columns[4]) if n else None, n)  # type: ignore[arg-type]
    # Django stores "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC; numpy parses it straight to microseconds.
    started = np.array(columns[0], dtype="datetime64[us]").astype(np.int64) if n else np.zeros(0, dtype=np.int64)
    return RawTraces(
        started_us=started,
        agent=np.array(columns[1], dtype=np.int64),
        env=codes_for(columns[2], ENVIRONMENTS),  # type: ignore[arg-type]
        version=version,
        intent=intent,
        latency_ms=np.array(columns[5], dtype=np.float64),
        status=codes_for(columns[6], STATUSES),  # type: ignore[arg-type]
        error_type=codes_for(columns[7], ERROR_TYPES),  # type: ignore[arg-type]
        input_tokens=np.array([-1 if v is None else v for v in columns[8]], dtype=np.int64),
        output_tokens=np.array([-1 if v is None else v for v in columns[9]], dtype=np.int64),
        cache_hit=np.array(columns[10], dtype=bool),
        profiled=np.array(columns[11], dtype=bool),
        timing_row=timing_row,
        timing=entries,
        versions=versions,
        intents=intents,
    )
