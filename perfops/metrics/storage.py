"""Write rollup cells to the rollup table and read them back, in bulk.

PostgreSQL writes go in with one binary COPY whose bytes are assembled by numpy (no Python work
per row); reads come back as arrays from one aggregating statement, as raw traces do. SQLite uses
executemany and an ordinary cursor. Everything here runs inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from django.db import connection

from perfops.metrics import sketch
from perfops.metrics.cells import ENVIRONMENTS, STORED_TIMING, Cells, unpack_timings, with_blank_first
from perfops.metrics.levels import View
from perfops.metrics.raw import RawBytes, dictionary_codes, pg_array

TABLE = "metrics_rollup"
COLUMNS = (
    "grain_s",
    "view",
    "bucket_epoch_s",
    "environment",
    "department_id",
    "team_id",
    "agent_id",
    "version",
    "intent",
    "status",
    "error_type",
    "tier",
    "count",
    "errors",
    "timeouts",
    "latency_sum_ms",
    "latency_min_ms",
    "latency_max_ms",
    "sketch",
    "timings",
    "input_tokens_sum",
    "output_tokens_sum",
    "traces_with_tokens",
    "cache_hits",
    "profiled",
)
_ALL_VIEWS = tuple(int(v) for v in View)


def delete_rows(grain: int, start_s: int, end_s: int, views: Sequence[int] = _ALL_VIEWS) -> int:
    """Delete the rows of these views and this grain with buckets in [start_s, end_s)."""
    views_sql = ", ".join(["%s"] * len(views))
    envs_sql = ", ".join(["%s"] * len(ENVIRONMENTS))
    with connection.cursor() as cursor:
        # Every column of the (view, grain, environment, bucket) index is named, so this is a few index ranges.
        cursor.execute(
            f"DELETE FROM {TABLE} WHERE view IN ({views_sql}) AND grain_s = %s "  # noqa: S608
            f"AND environment IN ({envs_sql}) AND bucket_epoch_s >= %s AND bucket_epoch_s < %s",
            [*views, grain, *range(len(ENVIRONMENTS)), start_s, end_s],
        )
        return int(cursor.rowcount)


def analyze() -> None:
    """Refresh the planner's statistics of the rollup table (after a catch-up; hourly with retention).

    Without them the per-version join and the agent reads are planned as if the table were empty,
    which on 10 million rolled-up traces made a version=latest query 35 times slower. Autovacuum
    does this too, where it runs.
    """
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TABLE}")


def insert_cells(grain: int, view: int, cells: Cells) -> int:
    """Insert cells as rows of one grain and view."""
    if not len(cells):
        return 0
    if connection.vendor == "postgresql":
        payload = _pg_binary_rows(grain, view, cells)
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT binary)") as copy,
        ):
            copy.write(payload)
        return len(cells)
    rows = zip(
        [grain] * len(cells),
        [view] * len(cells),
        cells.bucket.tolist(),
        cells.env.tolist(),
        cells.department.tolist(),
        cells.team.tolist(),
        cells.agent.tolist(),
        [cells.versions[c] for c in cells.version.tolist()],
        [cells.intents[c] for c in cells.intent.tolist()],
        cells.status.tolist(),
        cells.error_type.tolist(),
        cells.tier.tolist(),
        cells.count.tolist(),
        cells.errors.tolist(),
        cells.timeouts.tolist(),
        cells.latency_sum.tolist(),
        cells.latency_min.tolist(),
        cells.latency_max.tolist(),
        cells.sketch_bytes(),
        cells.timing_bytes(),
        cells.input_tokens.tolist(),
        cells.output_tokens.tolist(),
        cells.with_tokens.tolist(),
        cells.cache_hits.tolist(),
        cells.profiled.tolist(),
        strict=True,
    )
    marks = ", ".join(["%s"] * len(COLUMNS))
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({marks})", list(rows))  # noqa: S608
    return len(cells)


# --- PostgreSQL binary COPY, assembled with numpy -------------------------------------------------

_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_TRAILER = b"\xff\xff"


def _text_column(codes: np.ndarray, vocabulary: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row UTF-8 bytes of dictionary-coded text, as (concatenated bytes, lengths)."""
    encoded = [value.encode() for value in vocabulary]
    sizes = np.array([len(b) for b in encoded], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    pool = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
    lengths = sizes[codes]
    return _gather(pool, offsets[codes], lengths), lengths


def _gather(pool: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate pool[starts[i] : starts[i] + lengths[i]] for all i, without a loop."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.uint8)
    firsts = np.cumsum(lengths) - lengths
    return pool[np.repeat(starts - firsts, lengths) + np.arange(total)]


def _pg_binary_rows(grain: int, view: int, cells: Cells) -> bytes:
    n = len(cells)
    # Rows go in by agent, environment and time: one agent's rows of a slice share heap pages, so an
    # agent page or a version filter over 30 days reads tens of pages per agent, not thousands.
    order = np.lexsort((cells.bucket, cells.env, cells.agent))
    sketch_data, sketch_lengths = _reordered(*cells.packed_sketches(), order)
    timing_data, timing_lengths = _reordered(*cells.packed_timings(), order)

    def column(values: np.ndarray) -> np.ndarray:
        return values[order]

    fields: list[tuple[str, Any]] = [
        (">i4", np.full(n, grain)),
        (">i2", np.full(n, view)),
        (">i8", column(cells.bucket)),
        (">i2", column(cells.env)),
        (">i4", column(cells.department)),
        (">i4", column(cells.team)),
        (">i4", column(cells.agent)),
        ("text", _text_column(column(cells.version), cells.versions)),
        ("text", _text_column(column(cells.intent), cells.intents)),
        (">i2", column(cells.status)),
        (">i2", column(cells.error_type)),
        (">i2", column(cells.tier)),
        (">i8", column(cells.count)),
        (">i8", column(cells.errors)),
        (">i8", column(cells.timeouts)),
        (">f8", column(cells.latency_sum)),
        (">f8", column(cells.latency_min)),
        (">f8", column(cells.latency_max)),
        ("bytes", (sketch_data, sketch_lengths)),
        ("bytes", (timing_data, timing_lengths)),
        (">i8", column(cells.input_tokens)),
        (">i8", column(cells.output_tokens)),
        (">i8", column(cells.with_tokens)),
        (">i8", column(cells.cache_hits)),
        (">i8", column(cells.profiled)),
    ]
    row_length = np.full(n, 2, dtype=np.int64)
    for kind, value in fields:
        row_length += 4 + (value[1] if kind in ("text", "bytes") else np.dtype(kind).itemsize)
    ends = np.cumsum(row_length)
    buf = np.empty(len(_HEADER) + int(ends[-1]) + len(_TRAILER), dtype=np.uint8)
    buf[: len(_HEADER)] = np.frombuffer(_HEADER, dtype=np.uint8)
    buf[-len(_TRAILER) :] = np.frombuffer(_TRAILER, dtype=np.uint8)
    position = ends - row_length + len(_HEADER)
    _put(buf, position, np.full(n, len(fields), dtype=">i2"))
    position += 2
    for kind, value in fields:
        if kind in ("text", "bytes"):
            data, lengths = value
            _put(buf, position, lengths.astype(">i4"))
            position += 4
            total = int(lengths.sum())
            if total:
                firsts = np.cumsum(lengths) - lengths
                buf[np.repeat(position - firsts, lengths) + np.arange(total)] = data
            position += lengths
        else:
            width = np.dtype(kind).itemsize
            _put(buf, position, np.full(n, width, dtype=">i4"))
            position += 4
            _put(buf, position, np.asarray(value).astype(kind))
            position += width
    return buf.tobytes()


def _reordered(data: bytes, lengths: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell byte strings (concatenated, with lengths) in another cell order."""
    pool = np.frombuffer(data, dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    return _gather(pool, starts[order], lengths[order]), lengths[order]


def _put(buf: np.ndarray, position: np.ndarray, values: np.ndarray) -> None:
    width = values.dtype.itemsize
    buf[position[:, None] + np.arange(width)] = values.view(np.uint8).reshape(-1, width)


# --- Reading rows back into cells ----------------------------------------------------------------

# Everything but the keys of the view and grain (the caller filters on them) and the two blobs.
_READ_COLUMNS = tuple(c for c in COLUMNS if c not in ("grain_s", "view", "sketch", "timings"))
# (column, array type in PostgreSQL's binary format)
_PG_TYPES: tuple[str, ...] = (">i8", ">i2", ">i4", ">i4", ">i4", "text", "text", ">i2", ">i2", ">i2")
_PG_TYPES += (">i8", ">i8", ">i8", ">f8", ">f8", ">f8", ">i8", ">i8", ">i8", ">i8", ">i8")


Series = tuple[int, int, str, int]  # (agent_id, environment code, version, from this bucket on)


def read_cells(
    where: str, params: Sequence[Any], *, with_timings: bool = True, series: Sequence[Series] | None = None
) -> Cells:
    """The rollup rows matching a WHERE clause (built by the caller with placeholders only) as cells.

    With `series`, only rows of those (agent, environment, version) from their bucket on: joined with a
    VALUES list, so each is one index range (an OR of hundreds of terms would be re-checked per row).
    """
    source, source_params = TABLE, []
    if series is not None:
        values = ", ".join(["(%s, %s, %s, %s)"] * len(series)) or "(0, 0, '', 0)"
        source = (
            f"{TABLE} JOIN (VALUES {values}) AS wanted(w_agent, w_env, w_version, w_since) "
            "ON agent_id = w_agent AND environment = w_env AND version = w_version AND bucket_epoch_s >= w_since"
        )
        if connection.vendor != "postgresql":  # SQLite names VALUES columns column1, column2, ...
            source = (
                f"{TABLE} JOIN (VALUES {values}) AS wanted ON agent_id = wanted.column1 AND environment = "
                "wanted.column2 AND version = wanted.column3 AND bucket_epoch_s >= wanted.column4"
            )
        source_params = [value for term in series for value in term] or []
        if not series:
            where = f"1 = 0 AND {where}"
    all_params = [*source_params, *params]
    if connection.vendor == "postgresql":
        return _read_pg(source, where, all_params, with_timings)
    return _read_sqlite(source, where, all_params, with_timings)


def _read_pg(source: str, where: str, params: Sequence[Any], with_timings: bool) -> Cells:
    aggregates = []
    for column, kind in zip(_READ_COLUMNS, _PG_TYPES, strict=True):
        aggregates.append(f"string_agg({column}, E'\\n')" if kind == "text" else f"array_agg({column})")
    aggregates += ["string_agg(sketch, ''::bytea)", "array_agg(length(sketch))", "count(*)"]
    if with_timings:
        aggregates += ["string_agg(timings, ''::bytea)", "array_agg(length(timings))"]
    sql = f"SELECT {', '.join(aggregates)} FROM {source} WHERE {where}"  # noqa: S608
    connection.ensure_connection()
    raw_connection = connection.connection
    assert raw_connection is not None
    # Django's cursors bind parameters client-side, which cannot ask for binary results.
    with psycopg.Cursor(raw_connection) as cursor:
        for oid in (1016, 1007, 1005, 1022, 25, 17):  # int8[], int4[], int2[], float8[], text, bytea
            cursor.adapters.register_loader(oid, RawBytes)
        cursor.execute(sql, list(params), binary=True)
        row = cursor.fetchone()
    assert row is not None
    n = int(row[len(_READ_COLUMNS) + 2] or 0)
    values: dict[str, Any] = {}
    for i, (column, kind) in enumerate(zip(_READ_COLUMNS, _PG_TYPES, strict=True)):
        if kind == "text":
            values[column] = dictionary_codes(row[i].decode() if row[i] is not None else None, n)
        else:
            values[column] = pg_array(row[i], kind, n)
    base = len(_READ_COLUMNS)
    sketch_blob = row[base] or b""
    sketch_lengths = pg_array(row[base + 1], ">i4", n).astype(np.int64)
    timing_blob, timing_lengths = b"", np.zeros(n, dtype=np.int64)
    if with_timings:
        timing_blob = row[base + 3] or b""
        timing_lengths = pg_array(row[base + 4], ">i4", n).astype(np.int64)
    return _assemble(values, sketch_blob, sketch_lengths, timing_blob, timing_lengths)


def _read_sqlite(source: str, where: str, params: Sequence[Any], with_timings: bool) -> Cells:
    columns_sql = ", ".join([*_READ_COLUMNS, "sketch", "timings" if with_timings else "x''"])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns_sql} FROM {source} WHERE {where}", list(params))  # noqa: S608
        rows = cursor.fetchall()
    n = len(rows)
    columns = list(zip(*rows, strict=True)) if n else [() for _ in range(len(_READ_COLUMNS) + 2)]
    values: dict[str, Any] = {}
    for i, (column, kind) in enumerate(zip(_READ_COLUMNS, _PG_TYPES, strict=True)):
        if kind == "text":
            values[column] = dictionary_codes("\n".join(columns[i]) if n else None, n)
        else:
            values[column] = np.array(columns[i], dtype=np.float64 if kind == ">f8" else np.int64)
    sketches = [bytes(b) for b in columns[-2]]
    timing_blobs = [bytes(b or b"") for b in columns[-1]]
    return _assemble(
        values,
        b"".join(sketches),
        np.array([len(b) for b in sketches], dtype=np.int64),
        b"".join(timing_blobs),
        np.array([len(b) for b in timing_blobs], dtype=np.int64),
    )


def _assemble(
    values: dict[str, Any],
    sketch_blob: bytes,
    sketch_lengths: np.ndarray,
    timing_blob: bytes,
    timing_lengths: np.ndarray,
) -> Cells:
    versions_codes, versions = values["version"]
    intents_codes, intents = values["intent"]
    n = len(sketch_lengths)
    out = Cells(
        bucket=values["bucket_epoch_s"].astype(np.int64),
        env=values["environment"].astype(np.int64),
        department=values["department_id"].astype(np.int64),
        team=values["team_id"].astype(np.int64),
        agent=values["agent_id"].astype(np.int64),
        status=values["status"].astype(np.int64),
        error_type=values["error_type"].astype(np.int64),
        tier=values["tier"].astype(np.int64),
        count=values["count"].astype(np.int64),
        errors=values["errors"].astype(np.int64),
        timeouts=values["timeouts"].astype(np.int64),
        latency_sum=values["latency_sum_ms"].astype(np.float64),
        latency_min=values["latency_min_ms"].astype(np.float64),
        latency_max=values["latency_max_ms"].astype(np.float64),
        input_tokens=values["input_tokens_sum"].astype(np.int64),
        output_tokens=values["output_tokens_sum"].astype(np.int64),
        with_tokens=values["traces_with_tokens"].astype(np.int64),
        cache_hits=values["cache_hits"].astype(np.int64),
        profiled=values["profiled"].astype(np.int64),
    )
    # Dictionaries keep "" at code 0, like every Cells.
    out.versions, out.version = with_blank_first(versions, versions_codes)
    out.intents, out.intent = with_blank_first(intents, intents_codes)
    entries = np.frombuffer(sketch_blob, dtype=sketch.ENTRY)
    out.sketch_cell = np.repeat(np.arange(n), sketch_lengths // sketch.ENTRY_SIZE)
    out.sketch_bucket = entries["i"].astype(np.int64)
    out.sketch_count = entries["c"].astype(np.int64)
    out.timing = unpack_timings(timing_blob)
    out.timing_cell = np.repeat(np.arange(n), timing_lengths // STORED_TIMING.itemsize)
    return out
