"""The latency sketch: accuracy against exact nearest-rank quantiles, merging, cuts, storage."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfops.metrics.sketch import (
    BOUNDARIES,
    ENTRY_SIZE,
    N_BUCKETS,
    RELATIVE_ACCURACY,
    TIER_EDGES_MS,
    Sketch,
    bucket_of,
    decode_entries,
    encode_counts,
    grouped_quantiles,
    nearest_rank,
    tier_of,
)

# 0.01 ms to one hour, as the spec's latencies go; ties come from sampled_from and repeats.
latency = st.floats(min_value=0.01, max_value=3_600_000.0, allow_nan=False, allow_infinity=False)
latencies = st.lists(
    st.one_of(latency, st.sampled_from([0.01, 1.0, 99.999, 100.0, 500.0, 1999.99, 2000.0, 3_600_000.0])),
    min_size=1,
    max_size=300,
)
quantile = st.floats(min_value=0.0, max_value=1.0)
QS = [0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]


def exact(values, q):
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    return float(ordered[nearest_rank(q, len(ordered)) - 1])


def assert_close(estimate, truth):
    assert abs(estimate - truth) <= RELATIVE_ACCURACY * truth, (estimate, truth)


def stored(values):
    sketch = Sketch.of(values)
    return sketch.encode(), sketch.min_ms, sketch.max_ms


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(latencies, min_size=1, max_size=6), qs=st.lists(quantile, min_size=1, max_size=5))
def test_every_quantile_of_a_merged_sketch_is_within_one_percent(parts, qs):
    blobs, mins, maxs = zip(*(stored(part) for part in parts), strict=True)
    merged = Sketch.merge_stored(blobs, mins, maxs)
    everything = [v for part in parts for v in part]
    for q, estimate in zip(qs + QS, merged.quantiles(qs + QS), strict=True):
        assert_close(estimate, exact(everything, q))


@given(value=latency, repeats=st.integers(min_value=1, max_value=50))
def test_a_single_repeated_value_is_answered_exactly(value, repeats):
    sketch = Sketch.of([value] * repeats)
    assert sketch.quantiles(QS) == [value] * len(QS)


@settings(max_examples=200, deadline=None)
@given(a=latencies, b=latencies, c=latencies)
def test_merging_is_associative_and_commutative(a, b, c):
    x, y, z = Sketch.of(a), Sketch.of(b), Sketch.of(c)
    left = x.merge(y).merge(z)
    right = x.merge(y.merge(z))
    swapped = z.merge(x).merge(y)
    for other in (right, swapped):
        assert np.array_equal(left.counts, other.counts)
        assert (left.min_ms, left.max_ms) == (other.min_ms, other.max_ms)
    assert np.array_equal(left.counts, Sketch.of(a + b + c).counts)


@settings(max_examples=200, deadline=None)
@given(values=latencies)
def test_a_cut_by_performance_tier_counts_exactly(values):
    sketch = Sketch.of(values)
    edges = (0.0, *TIER_EDGES_MS, math.inf)
    arr = np.asarray(values)
    for low, high in itertools.pairwise(edges):
        truth = arr[(arr >= low) & (arr < high)]
        part = sketch.cut(low, high)
        assert part.count == len(truth)
        if len(truth):
            for q, estimate in zip(QS, part.quantiles(QS), strict=True):
                assert_close(estimate, exact(truth, q))


def test_tier_edges_belong_to_the_upper_tier():
    assert tier_of(np.array([99.999, 100.0, 499.99, 500.0, 1999.9, 2000.0])).tolist() == [0, 1, 1, 2, 2, 3]
    for edge in TIER_EDGES_MS:
        assert edge in BOUNDARIES
        assert bucket_of(np.array([edge]))[0] == bucket_of(np.array([np.nextafter(edge, 0)]))[0] + 1


def test_the_bucket_mapping_keeps_one_percent_everywhere():
    ratios = BOUNDARIES[2:] / BOUNDARIES[1:-1]  # from 1 microsecond up
    assert ratios.max() <= (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
    assert N_BUCKETS < 65_536  # indices are stored as uint16


@given(values=latencies)
def test_stored_bytes_round_trip_and_hold_only_non_empty_buckets(values):
    sketch = Sketch.of(values)
    blob = sketch.encode()
    assert len(blob) == ENTRY_SIZE * np.count_nonzero(sketch.counts)
    again = Sketch.decode(blob, sketch.min_ms, sketch.max_ms)
    assert np.array_equal(again.counts, sketch.counts)


def test_counts_beyond_32_bits_survive_storage():
    counts = np.array([5_000_000_000, 7], dtype=np.int64)
    blob = encode_counts(np.array([10, 11]), counts)
    merged = Sketch.merge_stored([blob, blob], [1.0, 1.0], [2.0, 2.0])
    assert merged.counts[10] == 10_000_000_000
    assert merged.counts[11] == 14


def test_zero_latency_is_answered_exactly():
    sketch = Sketch.of([0.0, 0.0, 0.0, 5.0])
    assert sketch.quantiles([0.5, 0.75, 1.0]) == [0.0, 0.0, 5.0]


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(latencies, min_size=1, max_size=8), qs=st.lists(quantile, min_size=1, max_size=4))
def test_grouped_quantiles_agree_with_one_sketch_per_group(parts, qs):
    blobs, mins, maxs = zip(*(stored(part) for part in parts), strict=True)
    rows, buckets, counts = decode_entries(blobs)
    groups = np.arange(len(parts)) % 3
    n_groups = int(groups.max()) + 1
    low = np.array([min(m for m, g in zip(mins, groups, strict=True) if g == k) for k in range(n_groups)])
    high = np.array([max(m for m, g in zip(maxs, groups, strict=True) if g == k) for k in range(n_groups)])
    got = grouped_quantiles(groups[rows], buckets, counts, n_groups, qs, low, high)
    for k in range(n_groups):
        members = [i for i in range(len(parts)) if groups[i] == k]
        merged = Sketch.merge_stored(
            [blobs[i] for i in members], [mins[i] for i in members], [maxs[i] for i in members]
        )
        assert got[k].tolist() == merged.quantiles(qs)


def test_an_empty_sketch_has_no_quantiles():
    assert Sketch.empty().quantiles([0.5]) == [None]
    assert Sketch.merge_stored([], [], []).count == 0


def test_a_stored_sketch_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="whole number"):
        Sketch.decode(b"\x01\x02\x03", 1.0, 1.0)
