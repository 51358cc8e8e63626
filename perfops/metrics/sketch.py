"""The latency sketch: a DDSketch-style log-bucketed histogram with 1% relative accuracy.

Bucket i holds the values in [B[i-1], B[i]) of one fixed, strictly increasing boundary array B
(bucket 0 holds exactly 0, bucket 1 the values below 1 microsecond, the last one [B[-1], inf)).
Consecutive boundaries are at most a factor gamma = (1 + a) / (1 - a) apart, so a bucket's
harmonic midpoint is within a of any value in it: any quantile read from a sketch is within 1% of
the exact nearest-rank value. Sketches merge by adding counts, so the percentile of any set of
rollup rows is as accurate as that of one.

Two departures from the textbook mapping, both for exactness:
- buckets are half-open [lo, hi), like the spec's performance tiers (fast < 100 ms <= normal ...);
- the tier edges 100, 500 and 2,000 ms are boundaries themselves (between them the ratio is
  shrunk slightly to fit a whole number of buckets), so a cut by tier counts exactly.

A stored sketch is only its non-empty buckets: packed (uint16 index, uint32 count) entries, 6 bytes
each, no header. The exact minimum and maximum travel beside it (rollup columns); every answer is
clamped to them, and the first and last ranks are answered with them exactly. Because entries carry
no per-sketch framing, any number of stored sketches are merged by joining their bytes and one
numpy bincount.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RELATIVE_ACCURACY = 0.01
# Build with a little less than 1% so float rounding at a bucket edge can never cross the promise.
_BUILD_ACCURACY = 0.0099
GAMMA = (1 + _BUILD_ACCURACY) / (1 - _BUILD_ACCURACY)
# The spec's performance tiers: fast [0, 100), normal [100, 500), slow [500, 2000), critical [2000, inf).
TIER_EDGES_MS = (100.0, 500.0, 2000.0)
# Below 1 microsecond nobody cares about 1%; ingest refuses latencies above one day.
LOWEST_MS = 1e-3
HIGHEST_MS = 1e8

ENTRY = np.dtype([("i", "<u2"), ("c", "<u4")])
ENTRY_SIZE = ENTRY.itemsize
MAX_ENTRY_COUNT = 0xFFFFFFFF


def _build_boundaries() -> np.ndarray:
    """The boundary array: geometric with ratio <= GAMMA, passing exactly through the tier edges."""
    log_gamma = math.log(GAMMA)
    first, *_, last = TIER_EDGES_MS
    below = [first / GAMMA**k for k in range(math.ceil(math.log(first / LOWEST_MS) / log_gamma), 0, -1)]
    inner: list[float] = []
    for low, high in itertools.pairwise(TIER_EDGES_MS):
        steps = math.ceil(math.log(high / low) / log_gamma)
        inner.extend(low * (high / low) ** (k / steps) for k in range(steps))
    above = [last * GAMMA**k for k in range(math.ceil(math.log(HIGHEST_MS / last) / log_gamma) + 1)]
    bounds = np.array(below + inner + above, dtype=np.float64)
    for edge in TIER_EDGES_MS:  # exact, whatever the powers above rounded to
        bounds[np.argmin(np.abs(bounds - edge))] = edge
    assert np.all(np.diff(bounds) > 0)
    assert float(np.max(bounds[1:] / bounds[:-1])) <= GAMMA * (1 + 1e-12)
    # Bucket 0 holds exactly 0 ms (answered exactly); bucket 1 the sub-microsecond rest.
    return np.concatenate([[np.nextafter(0.0, 1.0)], bounds])


BOUNDARIES = _build_boundaries()
N_BUCKETS = len(BOUNDARIES) + 1


def _representatives() -> np.ndarray:
    lower, upper = BOUNDARIES[1:-1], BOUNDARIES[2:]
    middle = 2 * lower * upper / (lower + upper)
    return np.concatenate([[0.0, BOUNDARIES[1] / 2], middle, [BOUNDARIES[-1]]])


# The value a bucket answers with: within RELATIVE_ACCURACY of anything in [B[i-1], B[i]).
REPRESENTATIVES = _representatives()


def bucket_of(values_ms: np.ndarray) -> np.ndarray:
    """The bucket index of each value (searchsorted: exact at every boundary, no log rounding)."""
    return np.searchsorted(BOUNDARIES, values_ms, side="right").astype(np.int64)


def bucket_edge(value_ms: float) -> int:
    """The index of the first bucket that starts at or above `value_ms` (a cut point)."""
    return int(np.searchsorted(BOUNDARIES, value_ms, side="left")) + 1


def tier_of(values_ms: np.ndarray) -> np.ndarray:
    """The performance tier of each latency: 0 fast, 1 normal, 2 slow, 3 critical."""
    return np.searchsorted(np.asarray(TIER_EDGES_MS), values_ms, side="right").astype(np.int64)


def nearest_rank(q: float | np.ndarray, n: int | np.ndarray) -> np.ndarray:
    """The 1-based nearest rank of quantile q among n values: ceil(q * n), at least 1.

    Rounded to 9 decimals first so that 0.95 * 20 is rank 19, not 20 by float noise.
    """
    return np.maximum(1, np.ceil(np.round(np.asarray(q, dtype=np.float64) * n, 9))).astype(np.int64)


def encode_counts(indices: np.ndarray, counts: np.ndarray) -> bytes:
    """Pack non-empty buckets as 6-byte entries (a count above 2^32 - 1 is split over repeated entries)."""
    keep = counts > 0
    indices, counts = indices[keep], counts[keep].astype(np.int64)
    if len(counts) and counts.max() > MAX_ENTRY_COUNT:
        pieces = -(-counts // MAX_ENTRY_COUNT)
        indices = np.repeat(indices, pieces)
        whole = np.repeat(counts, pieces)
        position = np.arange(len(whole)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        counts = np.minimum(whole - position * MAX_ENTRY_COUNT, MAX_ENTRY_COUNT)
    out = np.empty(len(indices), dtype=ENTRY)
    out["i"] = indices
    out["c"] = counts
    return out.tobytes()


def decode_entries(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All entries of many stored sketches: (row of each entry, bucket index, count)."""
    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    if np.any(lengths % ENTRY_SIZE):
        raise ValueError("A stored sketch is not a whole number of entries.")
    entries = np.frombuffer(b"".join(blobs), dtype=ENTRY)
    rows = np.repeat(np.arange(len(blobs)), lengths // ENTRY_SIZE)
    return rows, entries["i"].astype(np.int64), entries["c"].astype(np.int64)


@dataclass
class Sketch:
    """A latency distribution: dense bucket counts plus the exact minimum and maximum."""

    counts: np.ndarray  # int64, N_BUCKETS
    min_ms: float = math.inf
    max_ms: float = -math.inf

    @classmethod
    def empty(cls) -> Sketch:
        return cls(np.zeros(N_BUCKETS, dtype=np.int64))

    @classmethod
    def of(cls, values_ms: Sequence[float] | np.ndarray) -> Sketch:
        values = np.asarray(values_ms, dtype=np.float64)
        if not len(values):
            return cls.empty()
        counts = np.bincount(bucket_of(values), minlength=N_BUCKETS).astype(np.int64)
        return cls(counts, float(values.min()), float(values.max()))

    @classmethod
    def decode(cls, blob: bytes, min_ms: float, max_ms: float) -> Sketch:
        return cls.merge_stored([blob], [min_ms], [max_ms])

    @classmethod
    def merge_stored(cls, blobs: Sequence[bytes], mins: Sequence[float], maxs: Sequence[float]) -> Sketch:
        """One sketch from many stored ones: a join and a bincount, no loop over rows or buckets."""
        _, indices, counts = decode_entries(blobs)
        dense = np.bincount(indices, weights=counts, minlength=N_BUCKETS).astype(np.int64)
        low = float(np.min(mins)) if len(mins) else math.inf
        high = float(np.max(maxs)) if len(maxs) else -math.inf
        return cls(dense, low, high)

    def encode(self) -> bytes:
        indices = np.flatnonzero(self.counts)
        return encode_counts(indices, self.counts[indices])

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: Sketch) -> Sketch:
        return Sketch(self.counts + other.counts, min(self.min_ms, other.min_ms), max(self.max_ms, other.max_ms))

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """Nearest-rank quantiles (q in [0, 1]); None for an empty sketch."""
        total = self.count
        if not total:
            return [None for _ in qs]
        cumulative = np.cumsum(self.counts)
        ranks = nearest_rank(np.asarray(qs), total)
        buckets = np.searchsorted(cumulative, ranks, side="left")
        values = np.clip(REPRESENTATIVES[buckets], self.min_ms, self.max_ms)
        # The first and the last rank are the exact extremes.
        values = np.where(ranks <= 1, self.min_ms, np.where(ranks >= total, self.max_ms, values))
        return [float(v) for v in values]

    def quantile(self, q: float) -> float | None:
        return self.quantiles([q])[0]

    def cut(self, low_ms: float = 0.0, high_ms: float = math.inf) -> Sketch:
        """The part of the distribution in [low_ms, high_ms): exact when both are boundaries (the tier edges)."""
        first = 0 if low_ms <= 0 else bucket_edge(low_ms)
        last = N_BUCKETS if math.isinf(high_ms) else bucket_edge(high_ms)
        counts = np.zeros_like(self.counts)
        counts[first:last] = self.counts[first:last]
        nonzero = np.flatnonzero(counts)
        if not len(nonzero):
            return Sketch.empty()
        # The whole's extremes are the part's when they fall in its end buckets; else its buckets' values stand in.
        first, last = int(nonzero[0]), int(nonzero[-1])
        low_value = self.min_ms if bucket_of(np.array([self.min_ms]))[0] == first else REPRESENTATIVES[first]
        high_value = self.max_ms if bucket_of(np.array([self.max_ms]))[0] == last else REPRESENTATIVES[last]
        return Sketch(counts, float(low_value), float(high_value))


def grouped_quantiles(
    group: np.ndarray,
    bucket: np.ndarray,
    count: np.ndarray,
    n_groups: int,
    qs: Sequence[float],
    mins: np.ndarray,
    maxs: np.ndarray,
) -> np.ndarray:
    """Nearest-rank quantiles of many merged sketches at once: (n_groups, len(qs)), NaN where a group is empty.

    `group`, `bucket`, `count` are the sketch entries of all rows, each entry tagged with its group;
    `mins` / `maxs` are each group's exact extremes. Dense (a cumulative sum per group over the bucket
    range in use) when that fits in a few million cells, else sparse (one sort of the entries).
    """
    out = np.full((n_groups, len(qs)), np.nan)
    if not len(group) or not n_groups:
        return out
    q = np.asarray(qs, dtype=np.float64)
    low = int(bucket.min())
    span = int(bucket.max()) - low + 1
    if n_groups * span <= 4_000_000:
        dense = np.bincount(group * span + (bucket - low), weights=count, minlength=n_groups * span)
        cumulative = np.cumsum(dense.reshape(n_groups, span), axis=1)
        totals = cumulative[:, -1]
        ranks = nearest_rank(q[None, :], totals[:, None])
        found = np.empty((n_groups, len(q)), dtype=np.int64)
        for j in range(len(q)):  # a handful of quantiles, each vectorised over every group
            found[:, j] = np.argmax(cumulative >= ranks[:, j : j + 1], axis=1)
        indices = found + low
    else:
        key = group * span + (bucket - low)
        unique, inverse = np.unique(key, return_inverse=True)
        summed = np.bincount(inverse, weights=count, minlength=len(unique))
        cumulative = np.cumsum(summed)
        owner = unique // span
        starts = np.searchsorted(owner, np.arange(n_groups), side="left")
        ends = np.searchsorted(owner, np.arange(n_groups), side="right")
        before = np.where(starts > 0, cumulative[np.maximum(starts - 1, 0)], 0.0)
        totals = np.where(ends > starts, cumulative[np.maximum(ends - 1, 0)] - before, 0.0)
        ranks = nearest_rank(q[None, :], totals[:, None])
        positions = np.searchsorted(cumulative, before[:, None] + ranks, side="left")
        positions = np.minimum(positions, len(unique) - 1)
        indices = unique[positions] % span + low
    values = np.clip(REPRESENTATIVES[indices], mins[:, None], maxs[:, None])
    # The first and the last rank are the exact extremes.
    values = np.where(ranks <= 1, mins[:, None], np.where(ranks >= totals[:, None], maxs[:, None], values))
    values[totals <= 0] = np.nan
    return values
