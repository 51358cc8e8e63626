"""Rollup cells as numpy columns: built from raw traces, regrouped to coarser grains and views.

A cell is one rollup row to be: its key (bucket, environment, department, team, agent, version,
intent, status, error type, tier) and its sums, plus two sparse tables hanging off it: the
latency sketch entries (cell, bucket, count) and the timing entries (cell, label, calls, errors,
summed start and duration). Every step is a handful of numpy sorts and bincounts over all rows at
once; nothing loops over traces, cells or buckets in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from perfops.metrics import sketch
from perfops.metrics.levels import ANY_STATUS, ANY_TIER, VIEW_DIMS, View
from perfops.telemetry import timings
from perfops.telemetry.choices import Environment, ErrorType, TraceStatus

ENVIRONMENTS: tuple[str, ...] = tuple(Environment.values)
STATUSES: tuple[str, ...] = tuple(TraceStatus.values)
ERROR_TYPES: tuple[str, ...] = ("", *ErrorType.values)

# A rollup row's timings: per label, the calls (or phase occurrences), failures and summed times.
# Summed in float64 while cells are built and merged ...
TIMING = np.dtype(
    [("label", "<u4"), ("calls", "<f8"), ("errors", "<f8"), ("start_sum_ms", "<f8"), ("duration_sum_ms", "<f8")]
)
# ... and stored in 20 bytes an entry (the timings are most of a rollup row's bytes): counts as uint32 (an
# entry beyond 2^32 - 1 calls is split in several with the same label), sums as float32 (7 digits).
STORED_TIMING = np.dtype(
    [("label", "<u4"), ("calls", "<u4"), ("errors", "<u4"), ("start_sum_ms", "<f4"), ("duration_sum_ms", "<f4")]
)
_MAX_CALLS = 0xFFFFFFFF

KEY_FIELDS = ("bucket", "env", "department", "team", "agent", "version", "intent", "status", "error_type", "tier")
SUM_FIELDS = (
    "count",
    "errors",
    "timeouts",
    "latency_sum",
    "input_tokens",
    "output_tokens",
    "with_tokens",
    "cache_hits",
    "profiled",
)


def codes_for(values: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    """Codes of known values (the fixed vocabularies of environment, status and error type)."""
    index = {value: code for code, value in enumerate(vocabulary)}
    return np.fromiter((index[value] for value in values), dtype=np.int64, count=len(values))


def _empty_int() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _empty_float() -> np.ndarray:
    return np.zeros(0, dtype=np.float64)


@dataclass
class Cells:
    """Rollup cells of one grain and one view, as columns."""

    bucket: np.ndarray = field(default_factory=_empty_int)  # epoch seconds
    env: np.ndarray = field(default_factory=_empty_int)  # index into ENVIRONMENTS
    department: np.ndarray = field(default_factory=_empty_int)
    team: np.ndarray = field(default_factory=_empty_int)
    agent: np.ndarray = field(default_factory=_empty_int)
    version: np.ndarray = field(default_factory=_empty_int)  # index into .versions
    intent: np.ndarray = field(default_factory=_empty_int)  # index into .intents
    status: np.ndarray = field(default_factory=_empty_int)  # index into STATUSES
    error_type: np.ndarray = field(default_factory=_empty_int)  # index into ERROR_TYPES
    tier: np.ndarray = field(default_factory=_empty_int)
    count: np.ndarray = field(default_factory=_empty_int)
    errors: np.ndarray = field(default_factory=_empty_int)  # traces with status error
    timeouts: np.ndarray = field(default_factory=_empty_int)
    latency_sum: np.ndarray = field(default_factory=_empty_float)
    latency_min: np.ndarray = field(default_factory=_empty_float)
    latency_max: np.ndarray = field(default_factory=_empty_float)
    input_tokens: np.ndarray = field(default_factory=_empty_int)
    output_tokens: np.ndarray = field(default_factory=_empty_int)
    with_tokens: np.ndarray = field(default_factory=_empty_int)
    cache_hits: np.ndarray = field(default_factory=_empty_int)
    profiled: np.ndarray = field(default_factory=_empty_int)
    # Sketch entries, sorted by (cell, bucket).
    sketch_cell: np.ndarray = field(default_factory=_empty_int)
    sketch_bucket: np.ndarray = field(default_factory=_empty_int)
    sketch_count: np.ndarray = field(default_factory=_empty_int)
    # Timing entries, sorted by (cell, label).
    timing_cell: np.ndarray = field(default_factory=_empty_int)
    timing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=TIMING))
    # Dictionaries of the version and intent codes; code 0 is always "" (not kept by the view).
    versions: list[str] = field(default_factory=lambda: [""])
    intents: list[str] = field(default_factory=lambda: [""])

    def __len__(self) -> int:
        return len(self.bucket)

    def keys(self) -> list[np.ndarray]:
        return [getattr(self, name) for name in KEY_FIELDS]

    def regroup(self, *, grain: int | None = None, view: View | None = None) -> Cells:
        """The same traffic in coarser buckets and/or with fewer dimensions (a pre-merged view)."""
        keys = {name: getattr(self, name) for name in KEY_FIELDS}
        if grain is not None:
            keys["bucket"] = self.bucket // grain * grain
        if view is not None:
            kept = VIEW_DIMS[view]
            for dim in ("department", "team", "agent", "version", "intent"):
                if dim not in kept:
                    keys[dim] = np.zeros(len(self), dtype=np.int64)
            if "outcome" not in kept:
                keys["status"] = np.full(len(self), ANY_STATUS, dtype=np.int64)
                keys["error_type"] = np.zeros(len(self), dtype=np.int64)
                keys["tier"] = np.full(len(self), ANY_TIER, dtype=np.int64)
        groups = Groups.of(fold([keys[name] for name in KEY_FIELDS])[0])
        inverse, n = groups.inverse, len(groups)
        first = groups.first
        out = Cells(**{name: keys[name][first] for name in KEY_FIELDS}, versions=self.versions, intents=self.intents)
        for name in SUM_FIELDS:
            setattr(out, name, _sum(getattr(self, name), inverse, n))
        out.latency_min = groups.minimum(self.latency_min)
        out.latency_max = groups.maximum(self.latency_max)
        out.sketch_cell, out.sketch_bucket, out.sketch_count = _merge_sketch(
            inverse[self.sketch_cell], self.sketch_bucket, self.sketch_count, n
        )
        out.timing_cell, out.timing = _merge_timings(
            inverse[self.timing_cell], self.timing["label"], _timing_sums(self.timing), n
        )
        return out

    def sketch_bytes(self) -> list[bytes]:
        """Each cell's stored sketch."""
        return _cut(*self.packed_sketches())

    def timing_bytes(self) -> list[bytes]:
        """Each cell's stored timings."""
        return _cut(*self.packed_timings())

    def packed_sketches(self) -> tuple[bytes, np.ndarray]:
        """Every cell's stored sketch, concatenated in cell order, and each one's length in bytes."""
        data = sketch.encode_counts(self.sketch_bucket, self.sketch_count)
        # A count beyond 32 bits is stored as several entries: count them per cell the same way.
        pieces = np.maximum(1, -(-self.sketch_count // sketch.MAX_ENTRY_COUNT))
        lengths = np.rint(np.bincount(self.sketch_cell, weights=pieces, minlength=len(self))).astype(np.int64)
        return data, lengths * sketch.ENTRY_SIZE

    def packed_timings(self) -> tuple[bytes, np.ndarray]:
        """Every cell's stored timings, concatenated in cell order, and each one's length in bytes."""
        entries, owner = self.timing, self.timing_cell
        pieces = np.maximum(1, -(-np.rint(entries["calls"]).astype(np.int64) // _MAX_CALLS))
        if np.any(pieces > 1):
            entries, owner = np.repeat(entries, pieces), np.repeat(owner, pieces)
            share = np.repeat(1.0 / pieces, pieces)
            entries = entries.copy()
            for name in ("calls", "errors", "start_sum_ms", "duration_sum_ms"):
                entries[name] *= share
        stored = np.empty(len(entries), dtype=STORED_TIMING)
        stored["label"] = entries["label"]
        stored["calls"] = np.rint(entries["calls"])
        stored["errors"] = np.rint(entries["errors"])
        stored["start_sum_ms"] = entries["start_sum_ms"]
        stored["duration_sum_ms"] = entries["duration_sum_ms"]
        lengths = np.bincount(owner, minlength=len(self)).astype(np.int64) * STORED_TIMING.itemsize
        return stored.tobytes(), lengths


def unpack_timings(data: bytes) -> np.ndarray:
    """Stored timings back into the float64 working form."""
    stored = np.frombuffer(data, dtype=STORED_TIMING)
    out = np.empty(len(stored), dtype=TIMING)
    for name in ("label", "calls", "errors", "start_sum_ms", "duration_sum_ms"):
        out[name] = stored[name]
    return out


def concat(parts: Sequence[Cells]) -> Cells:
    """Cells of several reads as one table (version and intent codes re-keyed to one dictionary)."""
    parts = [part for part in parts if len(part)]
    if not parts:
        return Cells()
    if len(parts) == 1:
        return parts[0]
    versions, intents = [""], [""]
    version_index, intent_index = {"": 0}, {"": 0}
    recoded = []
    offset = 0
    for part in parts:
        v_map = np.array([version_index.setdefault(v, len(version_index)) for v in part.versions], dtype=np.int64)
        i_map = np.array([intent_index.setdefault(i, len(intent_index)) for i in part.intents], dtype=np.int64)
        recoded.append((part, v_map[part.version], i_map[part.intent], offset))
        offset += len(part)
    versions = list(version_index)
    intents = list(intent_index)
    out = Cells(versions=versions, intents=intents)
    for spec in fields(Cells):
        name = spec.name
        if name in ("versions", "intents", "sketch_cell", "timing_cell", "version", "intent"):
            continue
        setattr(out, name, np.concatenate([getattr(part, name) for part, *_ in recoded]))
    out.version = np.concatenate([v for _, v, _, _ in recoded])
    out.intent = np.concatenate([i for _, _, i, _ in recoded])
    out.sketch_cell = np.concatenate([part.sketch_cell + off for part, _, _, off in recoded])
    out.timing_cell = np.concatenate([part.timing_cell + off for part, _, _, off in recoded])
    return out


def select(cells: Cells, mask: np.ndarray) -> Cells:
    """The cells where mask is true (with their sketch and timing entries)."""
    kept = np.flatnonzero(mask)
    renumber = np.full(len(cells), -1, dtype=np.int64)
    renumber[kept] = np.arange(len(kept))
    sk = renumber[cells.sketch_cell] >= 0
    tm = renumber[cells.timing_cell] >= 0
    values = {name: getattr(cells, name)[kept] for name in (*KEY_FIELDS, *SUM_FIELDS, "latency_min", "latency_max")}
    return replace(
        cells,
        **values,
        sketch_cell=renumber[cells.sketch_cell[sk]],
        sketch_bucket=cells.sketch_bucket[sk],
        sketch_count=cells.sketch_count[sk],
        timing_cell=renumber[cells.timing_cell[tm]],
        timing=cells.timing[tm],
    )


def fold(columns: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """Several integer columns as one int64 key (and its span), compacted with np.unique only if it would overflow."""
    n = len(columns[0]) if columns else 0
    key = np.zeros(n, dtype=np.int64)
    key_span = 1
    for column in columns:
        if not n:
            break
        low = int(column.min())
        span = int(column.max()) - low + 1
        if span == 1:
            continue
        if key_span * span >= 1 << 62:
            _, key = np.unique(key, return_inverse=True)
            key_span = int(key.max()) + 1
        key = key * span + (column - low)
        key_span *= span
    return key, key_span


@dataclass
class Groups:
    """Rows grouped by a key with one sort: each row's group, the sorting order and where groups start in it."""

    inverse: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    sorted_key: np.ndarray

    @classmethod
    def of(cls, key: np.ndarray) -> Groups:
        order = np.argsort(key)
        sorted_key = key[order]
        boundary = np.empty(len(key), dtype=bool)
        if len(key):
            boundary[0] = True
            np.not_equal(sorted_key[1:], sorted_key[:-1], out=boundary[1:])
        inverse = np.empty(len(key), dtype=np.int64)
        inverse[order] = np.cumsum(boundary) - 1
        return cls(inverse, order, np.flatnonzero(boundary), sorted_key)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def first(self) -> np.ndarray:
        """One row of each group."""
        return self.order[self.starts]

    def minimum(self, values: np.ndarray) -> np.ndarray:
        return np.minimum.reduceat(values[self.order], self.starts) if len(self) else _empty_float()

    def maximum(self, values: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(values[self.order], self.starts) if len(self) else _empty_float()


def group_ids(columns: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Group rows by several integer columns: (group of each row, first row of each group, groups), in key order."""
    if not len(columns) or not len(columns[0]):
        return _empty_int(), _empty_int(), 0
    groups = Groups.of(fold(columns)[0])
    return groups.inverse, groups.first, len(groups)


def _sum(values: np.ndarray, inverse: np.ndarray, n: int) -> np.ndarray:
    out = np.bincount(inverse, weights=values, minlength=n)
    return out if values.dtype.kind == "f" else np.rint(out).astype(np.int64)


def _extreme(ufunc: np.ufunc, values: np.ndarray, inverse: np.ndarray, n: int, start: float) -> np.ndarray:
    out = np.full(n, start, dtype=np.float64)
    ufunc.at(out, inverse, values)
    return out


# Above this many (cell, bucket) or (cell, label) slots, entries are merged with a sort instead of a
# dense bincount (whose arrays would take more than ~128 MB).
_DENSE_SLOTS = 16_000_000


def _merge_sketch(
    cell: np.ndarray, bucket: np.ndarray, count: np.ndarray, n_cells: int | None = None
) -> tuple[np.ndarray, ...]:
    """Sum sketch entries that share (cell, bucket); the result is sorted by cell, then bucket."""
    if not len(cell):
        return _empty_int(), _empty_int(), _empty_int()
    low = int(bucket.min())
    span = int(bucket.max()) - low + 1
    n_cells = int(cell.max()) + 1 if n_cells is None else n_cells
    key = cell * span + (bucket - low)
    if n_cells * span <= _DENSE_SLOTS:
        dense = np.bincount(key, weights=count, minlength=n_cells * span)
        slots = np.flatnonzero(dense)
        return slots // span, slots % span + low, np.rint(dense[slots]).astype(np.int64)
    unique, inverse = np.unique(key, return_inverse=True)
    counts = np.bincount(inverse, weights=count, minlength=len(unique))
    return unique // span, unique % span + low, np.rint(counts).astype(np.int64)


def _merge_timings(
    cell: np.ndarray,
    labels: np.ndarray,
    sums: dict[str, np.ndarray | None],
    n_cells: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum timing entries that share (cell, label); `sums` gives each TIMING sum's values (None: 1 each).

    The result is sorted by cell, then label.
    """
    if not len(cell):
        return _empty_int(), np.zeros(0, dtype=TIMING)
    labels = labels.astype(np.int64)
    top = int(labels.max()) + 1
    if top <= 1 << 20:  # label ids are small: compact them with a lookup table instead of a sort
        used = np.flatnonzero(np.bincount(labels, minlength=top))
        lookup = np.zeros(top, dtype=np.int64)
        lookup[used] = np.arange(len(used))
        codes = lookup[labels]
    else:
        used, codes = np.unique(labels, return_inverse=True)
    span = len(used)
    n_cells = int(cell.max()) + 1 if n_cells is None else n_cells
    key = cell * span + codes
    if n_cells * span <= _DENSE_SLOTS:
        size = n_cells * span
        slots = np.flatnonzero(np.bincount(key, minlength=size))

        def total(values: np.ndarray | None) -> np.ndarray:
            return np.bincount(key, weights=values, minlength=size)[slots]
    else:
        slots, inverse = np.unique(key, return_inverse=True)

        def total(values: np.ndarray | None) -> np.ndarray:
            return np.bincount(inverse, weights=values, minlength=len(slots))

    out = np.zeros(len(slots), dtype=TIMING)
    out["label"] = used[slots % span]
    for name in ("calls", "errors", "start_sum_ms", "duration_sum_ms"):
        out[name] = total(sums[name])
    return slots // span, out


def _timing_sums(entries: np.ndarray) -> dict[str, np.ndarray | None]:
    return {name: entries[name] for name in ("calls", "errors", "start_sum_ms", "duration_sum_ms")}


def _cut(data: bytes, lengths: np.ndarray) -> list[bytes]:
    """Cut concatenated per-cell bytes into one bytes object per cell."""
    ends = np.cumsum(lengths)
    return [data[a:b] for a, b in zip((ends - lengths).tolist(), ends.tolist(), strict=True)]


@dataclass
class RawTraces:
    """Raw trace columns as read for a rollup (started_at in epoch microseconds)."""

    started_us: np.ndarray
    agent: np.ndarray
    env: np.ndarray
    version: np.ndarray  # index into versions
    intent: np.ndarray  # index into intents
    latency_ms: np.ndarray
    status: np.ndarray
    error_type: np.ndarray
    input_tokens: np.ndarray  # -1: not reported
    output_tokens: np.ndarray
    cache_hit: np.ndarray
    profiled: np.ndarray
    timing_row: np.ndarray  # the trace of each timing entry
    timing: np.ndarray  # timings.ENTRY
    versions: list[str]
    intents: list[str]

    def __len__(self) -> int:
        return len(self.started_us)


def from_traces(raw: RawTraces, grain: int, departments: np.ndarray, teams: np.ndarray) -> Cells:
    """Agent-view cells of one grain from raw traces; departments / teams map agent id -> id (0 if unknown)."""
    if not len(raw):
        return Cells()
    # Floor division of microseconds: a trace at exactly a bucket's start belongs to that bucket.
    bucket = raw.started_us // (grain * 1_000_000) * grain
    tier = sketch.tier_of(raw.latency_ms)
    agent = raw.agent.astype(np.int64)
    in_range = agent < len(departments)
    department = np.where(in_range, departments[np.minimum(agent, len(departments) - 1)], 0)
    team = np.where(in_range, teams[np.minimum(agent, len(teams) - 1)], 0)
    # The versions and intents dictionaries must have "" at 0 like every Cells dictionary.
    versions, version = with_blank_first(raw.versions, raw.version)
    intents, intent = with_blank_first(raw.intents, raw.intent)
    key_columns = [bucket, raw.env, department, team, agent, version, intent, raw.status, raw.error_type, tier]
    cell_key, cell_span = fold(key_columns)
    sketch_bucket = sketch.bucket_of(raw.latency_ms)
    if cell_span * sketch.N_BUCKETS >= 1 << 62:
        _, cell_key = np.unique(cell_key, return_inverse=True)
    # One sort serves both the cells and their sketches: by cell, then by latency bucket.
    groups = Groups.of(cell_key * sketch.N_BUCKETS + sketch_bucket)
    entry_cell_key = groups.sorted_key[groups.starts] // sketch.N_BUCKETS
    new_cell = np.empty(len(groups), dtype=bool)
    if len(groups):
        new_cell[0] = True
        np.not_equal(entry_cell_key[1:], entry_cell_key[:-1], out=new_cell[1:])
    entry_cell = np.cumsum(new_cell) - 1
    n = int(entry_cell[-1]) + 1
    inverse = entry_cell[groups.inverse]
    first = groups.first[new_cell]
    out = Cells(**{name: column[first] for name, column in zip(KEY_FIELDS, key_columns, strict=True)})
    out.versions, out.intents = versions, intents
    reported = raw.input_tokens >= 0
    out.count = np.bincount(inverse, minlength=n).astype(np.int64)
    out.errors = _sum((raw.status == STATUSES.index("error")).astype(np.int64), inverse, n)
    out.timeouts = _sum((raw.status == STATUSES.index("timeout")).astype(np.int64), inverse, n)
    out.latency_sum = np.bincount(inverse, weights=raw.latency_ms, minlength=n)
    cell_starts = groups.starts[new_cell]
    ordered = raw.latency_ms[groups.order]
    out.latency_min = np.minimum.reduceat(ordered, cell_starts)
    out.latency_max = np.maximum.reduceat(ordered, cell_starts)
    out.input_tokens = _sum(np.where(reported, raw.input_tokens, 0), inverse, n)
    out.output_tokens = _sum(np.where(raw.output_tokens >= 0, raw.output_tokens, 0), inverse, n)
    out.with_tokens = _sum(reported.astype(np.int64), inverse, n)
    out.cache_hits = _sum(raw.cache_hit.astype(np.int64), inverse, n)
    out.profiled = _sum(raw.profiled.astype(np.int64), inverse, n)
    out.sketch_cell = entry_cell
    out.sketch_bucket = groups.sorted_key[groups.starts] % sketch.N_BUCKETS
    out.sketch_count = np.diff(np.append(groups.starts, len(raw)))
    labels = raw.timing["label"]
    failed = ((labels & timings.ERROR_BIT) > 0).astype(np.float64)
    sums: dict[str, np.ndarray | None] = {
        "calls": None,
        "errors": failed,
        "start_sum_ms": raw.timing["start_ms"].astype(np.float64),
        "duration_sum_ms": raw.timing["duration_ms"].astype(np.float64),
    }
    out.timing_cell, out.timing = _merge_timings(inverse[raw.timing_row], labels & timings.LABEL_MASK, sums, n)
    return out


def with_blank_first(vocabulary: list[str], codes: np.ndarray) -> tuple[list[str], np.ndarray]:
    if vocabulary and vocabulary[0] == "":
        return vocabulary, codes.astype(np.int64)
    if "" in vocabulary:
        position = vocabulary.index("")
        order = [position] + [i for i in range(len(vocabulary)) if i != position]
    else:
        order = [-1, *range(len(vocabulary))]
    remap = np.empty(len(vocabulary), dtype=np.int64)
    for new, old in enumerate(order):
        if old >= 0:
            remap[old] = new
    return ["" if old < 0 else vocabulary[old] for old in order], remap[codes]
