"""When did an agent's latency or error rate step up, version or not? Change points of hourly series (chart 4.14).

Pure statistics on hourly series (oldest first): no database.

- Latency works on log p95 with the hour-of-day curve removed: two harmonics fitted with a level per
  calendar day, so a drift does not bend the curve, and fitted again with the steps found, which are
  then searched for again (a step inside a day otherwise leans on the curve and moves by hours).
  Hours are weighted by the inverse of their variance, A / requests + B: the sampling noise of a p95
  of n requests plus the hour-to-hour noise that more requests do not remove, both from the median
  squared difference of successive hours (a step moves one difference, not their median). Hours
  without requests (NaN) are left out.
- Errors work on the hourly failures and requests: the binomial likelihood ratio of two proportions
  against one.
- Binary segmentation on seeded intervals (Kovacs et al. 2020): a segment's candidate is the best split
  over the segment, its halves and the halves between them (intervals of 48 hours and more), 6 hours
  with requests at least on either side, by the weighted difference of means in standard errors
  (latency) or the likelihood ratio (errors). The small intervals find an incident that came and went,
  which barely moves the means of the whole week. The candidate is kept when shuffles of the segment's
  hours, in blocks of 3 (the noise neighbouring hours share stays together), reach its statistic in
  under 1% of 500 shuffles (stopped early once 10 have: clearly not significant); both sides are then
  searched again. The shuffles keep the heavy tails, the extra-binomial noise and the short-range
  correlation of the real hours, which a chi-square reference would not.
- Reported: upward changes only (regressions) whose effect clears the minimum (p95 x1.15, errors +1
  point), the levels robust (weighted medians of the de-seasonalized log p95, at a typical hour of the
  day; pooled shares for errors), most recent first, at most 3. A drift of a few percent is never
  reported; a change hidden by an opposite one in the same segment can be missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from perfops.analytics.anomaly import percent

P95, ERROR_RATE = "p95", "error_rate"
MIN_SEGMENT_HOURS = 6
ALPHA = 0.01
PERMUTATIONS = 500  # the largest confidence is then 1 - 1/501: 99.8%
BATCH = 100
STOP_AFTER = 10  # exceedances: the p-value is above 1% for sure, stop permuting
MAX_CHANGES = 3
MIN_INTERVAL_HOURS = 48
BLOCK_HOURS = 3
MAX_SPLITS = 8  # change points of either direction per series, before keeping the upward ones
MIN_DAYS_FOR_PROFILE = 2
MIN_HOURS_COVERED = 18
MAX_HOUR_EFFECT = math.log(3.0)
NORMAL_MEDIAN_SQUARE = 0.4549  # median of a chi-square with one degree of freedom


@dataclass(frozen=True)
class ChangePoint:
    """A step up of one metric, where it starts and how sure we are."""

    index: int  # first hour of the new regime
    at: datetime
    metric: str  # "p95" or "error_rate"
    before: float  # level before (ms or share)
    after: float  # level after
    effect: float  # ratio after/before for p95, difference in points for errors
    confidence: float  # 1 - permutation p-value, 0..1
    reason: str


# A statistic of a split from the sums left and right of it: (numerator, denominator) per hour, the
# weighted log p95 and the weight for latency, the failures and the requests for errors.
Statistic = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _mean_shift(left: np.ndarray, left_w: np.ndarray, right: np.ndarray, right_w: np.ndarray) -> np.ndarray:
    """|weighted mean right - left| in standard errors (weights are inverse variances, up to a factor)."""
    difference = right / right_w - left / left_w
    result: np.ndarray = np.abs(difference) * np.sqrt(left_w * right_w / (left_w + right_w))
    return result


def _x_log_x(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = x * np.log(np.where(x > 0, x, 1.0))
    return result


def _log_likelihood(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Binomial log-likelihood of k failures out of n at the share k / n (without the constant)."""
    result: np.ndarray = _x_log_x(k) + _x_log_x(n - k) - _x_log_x(n)
    return result


def _proportion_ratio(left: np.ndarray, left_n: np.ndarray, right: np.ndarray, right_n: np.ndarray) -> np.ndarray:
    """Binomial log-likelihood ratio of two proportions (left, right) against one."""
    result: np.ndarray = (
        _log_likelihood(left, left_n)
        + _log_likelihood(right, right_n)
        - _log_likelihood(left + right, left_n + right_n)
    )
    return result


def _seeded_splits(hours: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, split, end) of every split of the seeded intervals, 6 hours at least on either side.

    The whole series, then halves, quarters... (intervals of half the length, overlapping by half, while
    they are 48 hours or longer): an incident that came and went is a clean step in an interval around
    its start or its end, where on the whole series it barely moves either mean.
    """
    intervals = {(0, hours)}
    length = float(hours)
    while length / 2 >= MIN_INTERVAL_HOURS:
        length /= 2
        count = 2 * math.ceil(hours / length) - 1
        for start in np.linspace(0, hours - length, count):
            intervals.add((round(start), min(hours, round(start + length))))
    triples = [
        (start, split, end)
        for start, end in sorted(intervals)
        for split in range(start + MIN_SEGMENT_HOURS, end - MIN_SEGMENT_HOURS + 1)
    ]
    starts, splits, ends = np.array(triples).T
    return starts, splits, ends


def _block_orders(rng: np.random.Generator, hours: int, rows: int) -> np.ndarray:
    """Shuffles of the hours in whole blocks, so the noise that neighbouring hours share stays together."""
    starts = np.arange(0, hours, BLOCK_HOURS)
    lengths = np.minimum(starts + BLOCK_HOURS, hours) - starts
    shuffled = np.argsort(rng.random((rows, len(starts))), axis=1)
    block_lengths = lengths[shuffled].ravel()
    first = np.repeat(starts[shuffled].ravel(), block_lengths)
    offset = np.arange(len(first)) - np.repeat(np.cumsum(block_lengths) - block_lengths, block_lengths)
    orders: np.ndarray = (first + offset).reshape(rows, hours)
    return orders


def _split_statistics(
    statistic: Statistic, top: np.ndarray, bottom: np.ndarray, starts: np.ndarray, splits: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """The statistic of each (start, split, end) for each row, from running sums of the two per-hour series."""
    top_sums = np.concatenate([np.zeros((len(top), 1)), np.cumsum(top, axis=1)], axis=1)
    bottom_sums = np.concatenate([np.zeros((len(bottom), 1)), np.cumsum(bottom, axis=1)], axis=1)
    return statistic(
        top_sums[:, splits] - top_sums[:, starts],
        bottom_sums[:, splits] - bottom_sums[:, starts],
        top_sums[:, ends] - top_sums[:, splits],
        bottom_sums[:, ends] - bottom_sums[:, splits],
    )


def _segment(
    numerators: np.ndarray, denominators: np.ndarray, statistic: Statistic, seed: int = 0
) -> list[tuple[int, float]]:
    """Binary segmentation on seeded intervals: the change points (positions in the arrays), p-values.

    A segment's candidate is the split with the largest statistic over its seeded intervals. It is a
    change point when the same largest statistic of the segment's hours shuffled reaches it in under 1%
    of the shuffles; then both sides are searched again, each with shuffles of its own hours.
    """
    rng = np.random.default_rng(seed)
    found: list[tuple[int, float]] = []
    pending = [(0, len(numerators))]
    while pending and len(found) < MAX_SPLITS:
        low, high = pending.pop(0)
        if high - low < 2 * MIN_SEGMENT_HOURS:
            continue
        top, bottom = numerators[low:high], denominators[low:high]
        starts, splits, ends = _seeded_splits(high - low)
        observed = _split_statistics(statistic, top[None, :], bottom[None, :], starts, splits, ends)[0]
        best = int(np.argmax(observed))
        exceed = done = 0
        while done < PERMUTATIONS:
            orders = _block_orders(rng, high - low, BATCH)
            largest = _split_statistics(statistic, top[orders], bottom[orders], starts, splits, ends).max(axis=1)
            exceed += int((largest >= observed[best] - 1e-12).sum())
            done += BATCH
            if exceed >= STOP_AFTER:
                break
        p_value = (exceed + 1) / (done + 1)
        if p_value > ALPHA:
            continue
        position = low + int(splits[best])
        found.append((position, p_value))
        pending += [(low, position), (position, high)]
    return sorted(found)


def hour_curve(
    log_values: np.ndarray, weights: np.ndarray, hours: np.ndarray, breaks: Sequence[int] = ()
) -> np.ndarray:
    """Offset of each hour of day from the day's level (24 values, mean 0): two harmonics, a level per day.

    The per-day levels (and a step at each of `breaks`, positions in the arrays) keep a step or a drift
    from bending the curve; zeros when fewer than two days or 18 hours of the day have data (a curve
    fitted to part of the day would invent the rest).
    """
    days = hours // 24
    day_index = np.unique(days, return_inverse=True)[1]
    if day_index.max(initial=0) + 1 < MIN_DAYS_FOR_PROFILE or len(np.unique(hours % 24)) < MIN_HOURS_COVERED:
        return np.zeros(24)

    def harmonics(hour: np.ndarray) -> np.ndarray:
        angle = 2 * np.pi * hour / 24
        return np.column_stack([np.sin(angle), np.cos(angle), np.sin(2 * angle), np.cos(2 * angle)])

    position = np.arange(len(log_values))
    steps = [(position >= at).astype(np.float64) for at in breaks]
    design = np.column_stack([np.eye(day_index.max() + 1)[day_index], *steps, harmonics(hours % 24)])
    root = np.sqrt(weights)
    coefficients, *_ = np.linalg.lstsq(design * root[:, None], log_values * root, rcond=None)
    curve = harmonics(np.arange(24)) @ coefficients[-4:]
    return np.clip(curve - curve.mean(), -MAX_HOUR_EFFECT, MAX_HOUR_EFFECT)


def _variance_weights(values: np.ndarray, requests: np.ndarray) -> np.ndarray:
    """Inverse of A / requests + B, fitted to the median squared difference of successive hours.

    Two groups (the differences between busier hours and those between quieter ones) give two medians
    and so A and B; the median ignores a step and the odd outlier hour.
    """
    squares = np.diff(values) ** 2
    inverse = 1 / requests[1:] + 1 / requests[:-1]
    if len(squares) < 4:
        return np.ones_like(values)
    quiet = inverse > np.median(inverse)
    groups = [(squares[mask], inverse[mask]) for mask in (quiet, ~quiet) if mask.sum() >= 3]
    level = float(np.median(squares)) / NORMAL_MEDIAN_SQUARE / 2
    a, b = 0.0, max(level, 1e-8)
    if len(groups) == 2 and float(np.median(groups[0][1])) > 1.2 * float(np.median(groups[1][1])):
        (high_sq, high_x), (low_sq, low_x) = groups
        y1, x1 = float(np.median(high_sq)) / NORMAL_MEDIAN_SQUARE, float(np.median(high_x))
        y0, x0 = float(np.median(low_sq)) / NORMAL_MEDIAN_SQUARE, float(np.median(low_x))
        a = max((y1 - y0) / (x1 - x0), 0.0)
        b = max((y0 - a * x0) / 2, 1e-4 * level, 1e-8)
    weights: np.ndarray = 1 / (a / requests + b)
    return weights


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _when(first_hour: datetime, index: int) -> datetime:
    return first_hour + timedelta(hours=index)


def latency(
    p95_ms: np.ndarray, counts: np.ndarray, first_hour: datetime, *, min_effect: float = 1.15
) -> list[ChangePoint]:
    """Upward steps of hourly p95 (NaN or 0 requests for an empty hour), most recent first, at most 3."""
    p95 = np.asarray(p95_ms, dtype=np.float64)
    requests = np.nan_to_num(np.asarray(counts, dtype=np.float64))
    if p95.shape != requests.shape or p95.ndim != 1:
        raise ValueError("p95_ms and counts must be one-dimensional and of the same length")
    valid = (requests > 0) & np.isfinite(p95) & (p95 > 0)
    positions = np.flatnonzero(valid)
    if len(positions) < 2 * MIN_SEGMENT_HOURS:
        return []
    logs, requests = np.log(p95[valid]), requests[valid]
    hours = first_hour.hour + positions
    values = logs - hour_curve(logs, _variance_weights(logs, requests), hours)[hours % 24]
    weights = _variance_weights(values, requests)
    found = _segment(weights * values, weights, _mean_shift)
    if found:
        # Steps inside a day lean on the daily curve: fit it again knowing them, and search again.
        values = logs - hour_curve(logs, weights, hours, [position for position, _ in found])[hours % 24]
        weights = _variance_weights(values, requests)
        found = _segment(weights * values, weights, _mean_shift)
    bounds = [0, *(position for position, _ in found), len(values)]
    changes = []
    for number, (position, p_value) in enumerate(found, start=1):
        before_part, after_part = slice(bounds[number - 1], position), slice(position, bounds[number + 1])
        before = math.exp(_weighted_median(values[before_part], weights[before_part]))
        after = math.exp(_weighted_median(values[after_part], weights[after_part]))
        effect = after / before
        if effect < min_effect:
            continue
        index = int(positions[position])
        start, end = int(positions[bounds[number - 1]]), int(positions[bounds[number + 1] - 1]) + 1
        reason = (
            f"P95 stepped from {before:,.0f} ms to {after:,.0f} ms ({100 * (effect - 1):+.0f}%) at "
            f"{_when(first_hour, index):%Y-%m-%d %H:%M} UTC, {100 * (1 - p_value):.1f}% confidence, "
            f"{end - index} h after against {index - start} h before"
        )
        changes.append(ChangePoint(index, _when(first_hour, index), P95, before, after, effect, 1 - p_value, reason))
    return sorted(changes, key=lambda change: change.index, reverse=True)[:MAX_CHANGES]


def errors(
    failures: np.ndarray, requests: np.ndarray, first_hour: datetime, *, min_points: float = 1.0
) -> list[ChangePoint]:
    """Upward steps of the hourly error rate (in points), most recent first, at most 3."""
    failed = np.nan_to_num(np.asarray(failures, dtype=np.float64)).clip(min=0)
    asked = np.nan_to_num(np.asarray(requests, dtype=np.float64)).clip(min=0)
    if failed.shape != asked.shape or failed.ndim != 1:
        raise ValueError("failures and requests must be one-dimensional and of the same length")
    valid = asked > 0
    positions = np.flatnonzero(valid)
    if len(positions) < 2 * MIN_SEGMENT_HOURS:
        return []
    failed, asked = np.minimum(failed, asked)[valid], asked[valid]
    found = _segment(failed, asked, _proportion_ratio)
    bounds = [0, *(position for position, _ in found), len(failed)]
    changes = []
    for number, (position, p_value) in enumerate(found, start=1):
        before_part, after_part = slice(bounds[number - 1], position), slice(position, bounds[number + 1])
        before = float(failed[before_part].sum() / asked[before_part].sum())
        after = float(failed[after_part].sum() / asked[after_part].sum())
        points = 100 * (after - before)
        if points < min_points:
            continue
        index = int(positions[position])
        start, end = int(positions[bounds[number - 1]]), int(positions[bounds[number + 1] - 1]) + 1
        reason = (
            f"Errors stepped from {percent(before)} to {percent(after)} ({points:+.1f} points) at "
            f"{_when(first_hour, index):%Y-%m-%d %H:%M} UTC, {100 * (1 - p_value):.1f}% confidence, "
            f"{end - index} h after against {index - start} h before"
        )
        changes.append(
            ChangePoint(index, _when(first_hour, index), ERROR_RATE, before, after, points, 1 - p_value, reason)
        )
    return sorted(changes, key=lambda change: change.index, reverse=True)[:MAX_CHANGES]
