"""The rollup: recompute buckets from raw traces and replace their rows; build coarser grains from finer.

Two entry points share every step:
- `tick()` (Celery beat, every few seconds): claims the dirty 30-second buckets that ingest marked
  (perfops.metrics.dirty), recomputes each from the raw traces, then builds the 5-minute, hourly
  and daily buckets that have closed or whose finer buckets changed.
- `catch_up(since)` (`manage.py rollup --since`): recomputes a whole range, an hour slice at a time,
  computing every grain of a slice from its raw traces in memory.

A bucket is always recomputed and replaced in one transaction, never incremented, so a retried,
doubled or killed run cannot count anything twice or lose it. Only one run writes at a time: it holds
a lease on the RollupState row (a conditional update, renewed in every write transaction), so a
run that lost its lease (it was too slow, or presumed dead) rolls back instead of writing stale rows.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from perfops.metrics import cells as cellmod
from perfops.metrics import dirty
from perfops.metrics.cells import Cells
from perfops.metrics.dirty import Claim
from perfops.metrics.levels import BASE, COARSE, DERIVED_VIEWS, FINER, Grain, View, ceil_to, floor_to, kept_from
from perfops.metrics.models import DirtyBucket, Rollup, RollupState
from perfops.metrics.raw import read_traces
from perfops.metrics.storage import analyze, delete_rows, insert_cells, read_cells

logger = logging.getLogger(__name__)

LEASE_S = 120
# Base buckets recomputed per raw read (one hour), and per tick (a day's worth; the rest next tick).
RUN_BUCKETS = 120
TICK_BUCKETS = 2880
# Catch-up aims at this many traces per slice (memory stays around a few hundred MB).
SLICE_TRACES = 400_000


class LeaseLost(Exception):
    """Another run holds the rollup now; this one must not write."""


@dataclass
class RunResult:
    """What a rollup run did."""

    buckets: int = 0  # buckets recomputed from raw traces (30-second ones, or coarser where those are not kept)
    coarse: int = 0  # 5-minute, hourly and daily buckets built from finer ones
    traces: int = 0  # raw traces read
    rows: int = 0  # rollup rows written
    seconds: float = 0.0
    skipped: str = ""  # why nothing was done
    marks_left: int = 0  # dirty buckets still waiting (settling, or over this run's limit)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class Write:
    """Rows of one grain replacing every row of that grain in [start_s, end_s)."""

    grain: int
    start_s: int
    end_s: int
    parts: list[tuple[View, Cells]]
    views: Sequence[int] = field(default_factory=lambda: [int(v) for v in View])


class Lease:
    """The right to write rollups, held on the RollupState row until `until` (renewed as work goes on)."""

    def __init__(self, seconds: int = LEASE_S) -> None:
        self.owner = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.seconds = seconds

    def acquire(self) -> bool:
        RollupState.get()
        now = timezone.now()
        free = Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=self.owner)
        claimed = RollupState.objects.filter(free, pk=RollupState.SINGLETON).update(
            lease_owner=self.owner, lease_until=now + timedelta(seconds=self.seconds)
        )
        return claimed == 1

    def acquire_waiting(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.acquire():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def renew(self) -> None:
        """Inside a write transaction: extend the lease, or raise LeaseLost (the row lock also orders writers)."""
        now = timezone.now()
        renewed = RollupState.objects.filter(
            pk=RollupState.SINGLETON, lease_owner=self.owner, lease_until__gt=now
        ).update(lease_until=now + timedelta(seconds=self.seconds))
        if renewed != 1:
            raise LeaseLost("the rollup lease expired or was taken over")

    @classmethod
    def held_by(cls, owner: str) -> Lease:
        """The lease another process of the same run holds (a catch-up's workers write under it)."""
        lease = cls()
        lease.owner = owner
        return lease

    def release(self) -> None:
        RollupState.objects.filter(pk=RollupState.SINGLETON, lease_owner=self.owner).update(
            lease_owner="", lease_until=None
        )


def agent_homes() -> tuple[np.ndarray, np.ndarray]:
    """Each agent's department and team (0: none), as arrays indexed by agent id."""
    from perfops.telemetry.models import Agent

    rows = list(Agent.objects.order_by().values_list("id", "department_id", "team_id"))
    size = max((row[0] for row in rows), default=0) + 1
    departments = np.zeros(size, dtype=np.int64)
    teams = np.zeros(size, dtype=np.int64)
    for pk, department_id, team_id in rows:
        departments[pk] = department_id
        teams[pk] = team_id or 0
    return departments, teams


def with_views(agent_cells: Cells) -> list[tuple[View, Cells]]:
    """The agent view and every pre-merged view derived from it."""
    return [(View.AGENT, agent_cells)] + [(view, agent_cells.regroup(view=view)) for view in DERIVED_VIEWS]


def _at(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def _commit(lease: Lease, writes: Sequence[Write], taken: Claim | None = None) -> int:
    """Replace the rows of every write and delete the notes they answer, in one transaction; returns rows written."""
    from django.db import connection

    written = 0
    with transaction.atomic():
        lease.renew()
        for write in writes:
            delete_rows(write.grain, write.start_s, write.end_s, write.views)
            for view, cells in write.parts:
                written += insert_cells(write.grain, view, cells)
        if taken is not None and taken.buckets:
            with connection.cursor() as cursor:
                cursor.execute(*taken.release_sql())
        RollupState.objects.filter(pk=RollupState.SINGLETON).update(generation=F("generation") + 1)
    return written


def _runs(buckets: Iterable[int], width: int, max_len: int) -> list[tuple[int, int]]:
    """Consecutive buckets as [start, end) ranges of at most max_len buckets."""
    out: list[tuple[int, int]] = []
    for bucket in sorted(set(buckets)):
        if out and out[-1][1] == bucket and (out[-1][1] - out[-1][0]) // width < max_len:
            out[-1] = (out[-1][0], bucket + width)
        else:
            out.append((bucket, bucket + width))
    return out


def _settle_s() -> int:
    return int(settings.PERFOPS["ROLLUP_SETTLE_S"])


@dataclass(frozen=True)
class Windows:
    """From when each grain's rows exist (perfops.metrics.levels.kept_from), at one moment."""

    s30_from: int
    m5_from: int

    @classmethod
    def at(cls, now: datetime) -> Windows:
        return cls(kept_from(Grain.S30, now), kept_from(Grain.M5, now))

    def finest(self, epoch_s: int) -> Grain:
        """The finest grain kept at this moment: the grain a change there is recomputed at from raw traces."""
        if epoch_s >= self.s30_from:
            return Grain.S30
        if epoch_s >= self.m5_from:
            return Grain.M5
        return Grain.H1

    def kept(self, grain: int) -> int:
        kept: dict[int, int] = {Grain.S30: self.s30_from, Grain.M5: self.m5_from}
        return kept.get(grain, 0)


def _from_raw(grain: Grain, start_s: int, end_s: int, homes: tuple[np.ndarray, np.ndarray]) -> tuple[Cells, int]:
    raw = read_traces(_at(start_s), _at(end_s))
    return cellmod.from_traces(raw, grain, *homes), len(raw)


def tick(now: datetime | None = None, *, settle_s: int | None = None, limit: int = TICK_BUCKETS) -> RunResult:
    """Recompute the settled dirty buckets and build the coarse buckets that closed or changed."""
    settle = _settle_s() if settle_s is None else settle_s
    return _leased(0.0, lambda lease, result: _tick(lease, now or timezone.now(), settle, limit, result))


def _leased(wait_s: float, work: Callable[[Lease, RunResult], None]) -> RunResult:
    """Run `work` under the rollup lease (waiting up to wait_s for it), recording how it went on the state row."""
    started = time.perf_counter()
    result = RunResult()
    lease = Lease()
    if not (lease.acquire_waiting(wait_s) if wait_s else lease.acquire()):
        result.skipped = "another rollup run holds the lease"
        return result
    try:
        work(lease, result)
    except Exception as exc:
        _record_error(exc)
        raise
    finally:
        lease.release()
    result.seconds = time.perf_counter() - started
    _record_run(result)
    return result


def _record_error(exc: Exception) -> None:
    RollupState.objects.filter(pk=RollupState.SINGLETON).update(
        last_error=f"{type(exc).__name__}: {exc}"[:2000], last_error_at=timezone.now()
    )


def _tick(lease: Lease, now: datetime, settle_s: int, limit: int, result: RunResult) -> None:
    settled = now - timedelta(seconds=settle_s)
    oldest_raw = int((now - timedelta(days=settings.PERFOPS["RAW_RETENTION_DAYS"])).timestamp())
    # Raw traces this old are gone (or about to be): recomputing would replace good rollups with nothing.
    DirtyBucket.objects.filter(bucket_epoch_s__lt=oldest_raw).delete()
    taken = dirty.claim(settled_before=settled, limit=limit)
    windows = Windows.at(now)
    homes = agent_homes()
    # Each bucket is recomputed at the finest grain still kept at its time, a run of buckets per raw read.
    changed: dict[int, set[int]] = {Grain.S30: set(), Grain.M5: set(), Grain.H1: set(), Grain.D1: set()}
    by_grain: dict[Grain, dict[int, list[int]]] = {}
    for bucket in taken.buckets:
        grain = windows.finest(bucket)
        by_grain.setdefault(grain, {}).setdefault(floor_to(bucket, grain), []).append(bucket)
    for grain, units in sorted(by_grain.items()):
        for start_s, end_s in _runs(units, grain, max(1, RUN_BUCKETS * BASE // grain)):
            agent_cells, traces = _from_raw(grain, start_s, end_s, homes)
            answered = [b for unit in range(start_s, end_s, grain) for b in units.get(unit, [])]
            release = dirty.Claim(answered, taken.horizon, taken.own, taken.last_id)
            result.rows += _commit(lease, [Write(grain, start_s, end_s, with_views(agent_cells))], release)
            result.traces += traces
            result.buckets += (end_s - start_s) // grain
            changed[grain].update(range(start_s, end_s, grain))
    result.marks_left = dirty.pending()

    state = RollupState.get()
    built_to = floor_to(int((settled - timedelta(seconds=BASE)).timestamp()), BASE)
    built_from = (
        int(state.coarse_through.timestamp()) if state.coarse_through else floor_to(built_to - 86_400, Grain.D1)
    )
    built_from = min(built_from, built_to)
    _build_coarse(lease, built_from, built_to, windows, changed, result)
    RollupState.objects.filter(pk=RollupState.SINGLETON).update(coarse_through=_at(built_to))


def _build_coarse(
    lease: Lease, built_from: int, built_to: int, windows: Windows, changed: dict[int, set[int]], result: RunResult
) -> None:
    """Build every coarse bucket that closed in (built_from, built_to] or holds a changed finer bucket.

    A bucket is built from the finer grain's stored rows, so only where those are kept; before that its
    changes were recomputed from raw traces at this grain already (see _tick).
    """
    for grain in COARSE:
        finer = FINER[grain]
        first_end = ceil_to(built_from + 1, grain)
        wanted = {end - grain for end in range(first_end, built_to + 1, grain)}
        wanted |= {floor_to(b, grain) for b in changed[finer] if floor_to(b, grain) + grain <= built_to}
        wanted = {b for b in wanted if b >= windows.kept(finer)}
        for start_s, end_s in _runs(wanted, grain, 48 if grain == Grain.D1 else 288):
            agent_cells = read_agent_cells(finer, start_s, end_s).regroup(grain=grain)
            result.rows += _commit(lease, [Write(grain, start_s, end_s, with_views(agent_cells))])
            result.coarse += (end_s - start_s) // grain
        changed[grain] |= wanted


def read_agent_cells(grain: int, start_s: int, end_s: int) -> Cells:
    """The stored agent-view rows of a grain in [start_s, end_s), as cells."""
    envs = ", ".join(["%s"] * len(cellmod.ENVIRONMENTS))
    return read_cells(
        f"view = %s AND grain_s = %s AND environment IN ({envs}) AND bucket_epoch_s >= %s AND bucket_epoch_s < %s",
        [int(View.AGENT), grain, *range(len(cellmod.ENVIRONMENTS)), start_s, end_s],
    )


def backfill_view(view: View, buckets_per_commit: int = 96) -> int:
    """Build a pre-merged view from the stored agent-view rows (a view added after data was rolled up)."""
    written = 0
    for grain in Grain:
        buckets = list(
            Rollup.objects.filter(view=View.AGENT, grain_s=grain)
            .order_by()
            .values_list("bucket_epoch_s", flat=True)
            .distinct()
        )
        for start_s, end_s in _runs(buckets, grain, buckets_per_commit):
            with transaction.atomic():
                delete_rows(grain, start_s, end_s, [int(view)])
                written += insert_cells(grain, view, read_agent_cells(grain, start_s, end_s).regroup(view=view))
    return written


def _record_run(result: RunResult) -> None:
    RollupState.objects.filter(pk=RollupState.SINGLETON).update(
        last_run_at=timezone.now(),
        last_run_seconds=result.seconds,
        last_run_buckets=result.buckets + result.coarse,
        last_run_traces=result.traces,
    )


Progress = Callable[[int, int, int, float], None]  # (seconds of data done, of total, traces so far, elapsed)


def catch_up(
    since: datetime,
    until: datetime | None = None,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
    wait_s: float = 60.0,
    jobs: int = 1,
) -> RunResult:
    """Recompute every bucket from `since` to `until` (default: now) from the raw traces.

    With jobs > 1 the slices are spread over that many worker processes (PostgreSQL: each reads
    and writes over its own connection, under this run's lease).
    """
    moment = now or timezone.now()
    return _leased(wait_s, lambda lease, result: _catch_up(lease, since, until, moment, progress, result, jobs))


def catch_up_window(since: datetime, until: datetime | None, now: datetime) -> tuple[int, int]:
    """The [start, end) that a catch-up really covers: whole hours, not before the raw retention, not after now."""
    oldest_raw = now - timedelta(days=settings.PERFOPS["RAW_RETENTION_DAYS"])
    # The hour the retention edge cuts through is left alone: part of its traces are gone.
    start = max(floor_to(int(since.timestamp()), Grain.H1), ceil_to(int(oldest_raw.timestamp()), Grain.H1))
    # Up to the end of the running 30-second bucket: what has arrived of it is in the charts at once.
    end = ceil_to(math.ceil(min(until or now, now).timestamp()), BASE)
    return start, max(start, end)


def plan_slices(start_s: int, end_s: int) -> list[tuple[int, int]]:
    """Hour-aligned slices of about SLICE_TRACES traces: whole days where traffic is light, hours where it is not."""
    per_day = estimate_traces_per_day(start_s, end_s)
    slices = []
    day = floor_to(start_s, Grain.D1)
    while day < end_s:
        low, high = max(day, start_s), min(day + Grain.D1, end_s)
        hours = max(1, -(-(high - low) // Grain.H1))
        pieces = min(hours, max(1, -(-per_day.get(day, 0) * hours // 24 // SLICE_TRACES)))
        step = -(-hours // pieces) * Grain.H1
        for piece_start in range(low, high, step):
            slices.append((piece_start, min(piece_start + step, high)))
        day += Grain.D1
    return slices


def estimate_traces_per_day(start_s: int, end_s: int) -> dict[int, int]:
    """Traces per UTC day: the planner's estimate of each day partition (PostgreSQL), else a count."""
    from django.db import connection

    from perfops.telemetry import partitions

    out: dict[int, int] = {}
    if partitions.is_partitioned():
        days = [_at(d).date() for d in range(floor_to(start_s, Grain.D1), end_s, Grain.D1)]
        names = {partitions.partition_name(day): int(_day_start(day)) for day in days}
        with connection.cursor() as cursor:
            cursor.execute("SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s)", [list(names)])
            for name, tuples in cursor.fetchall():
                out[names[name]] = int(tuples)
        if all(value >= 0 for value in out.values()):
            return out
    with connection.cursor() as cursor:
        for day in range(floor_to(start_s, Grain.D1), end_s, Grain.D1):
            if out.get(day, -1) >= 0:
                continue
            params: list[Any] = [_at(day), _at(day + Grain.D1)]
            if connection.vendor != "postgresql":
                params = [moment.strftime("%Y-%m-%d %H:%M:%S.%f") for moment in params]
            cursor.execute("SELECT count(*) FROM telemetry_trace WHERE started_at >= %s AND started_at < %s", params)
            out[day] = int(cursor.fetchone()[0])
    return out


def _day_start(day: Any) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _catch_up(
    lease: Lease,
    since: datetime,
    until: datetime | None,
    now: datetime,
    progress: Progress | None,
    result: RunResult,
    jobs: int,
) -> None:
    start_s, end_s = catch_up_window(since, until, now)
    # Notes in the window taken before any raw trace is read: once every slice is in, the ticks need
    # not recompute these buckets again (notes written meanwhile stay, as in a tick).
    taken = dirty.claim(settled_before=None, start_s=start_s, end_s=end_s, limit=10**9)
    slices = plan_slices(start_s, end_s)
    clock = time.perf_counter()
    done_s = 0
    days_built: set[int] = set()
    for piece in _run_slices(lease.owner, now, slices, jobs):
        result.traces += piece.traces
        result.rows += piece.rows
        result.buckets += piece.buckets
        result.coarse += piece.coarse
        days_built.update(piece.days)
        done_s += piece.end_s - piece.start_s
        if progress:
            progress(done_s, end_s - start_s, result.traces, time.perf_counter() - clock)
    # Days no single slice held whole: merged from their stored hours.
    days = [d for d in range(floor_to(start_s, Grain.D1), floor_to(end_s, Grain.D1), Grain.D1) if d not in days_built]
    for day_start, day_end in _runs(days, Grain.D1, 31):
        agent_cells = read_agent_cells(Grain.H1, day_start, day_end).regroup(grain=Grain.D1)
        result.rows += _commit(lease, [Write(Grain.D1, day_start, day_end, with_views(agent_cells))])
        result.coarse += (day_end - day_start) // Grain.D1
    _commit(lease, [], taken)
    analyze()
    state = RollupState.get()
    through = floor_to(end_s, Grain.H1)
    if state.coarse_through is None or int(state.coarse_through.timestamp()) < through:
        RollupState.objects.filter(pk=RollupState.SINGLETON).update(coarse_through=_at(through))


@dataclass
class SliceResult:
    start_s: int
    end_s: int
    traces: int = 0
    rows: int = 0
    buckets: int = 0
    coarse: int = 0
    days: list[int] = field(default_factory=list)


def _run_slices(owner: str, now: datetime, slices: list[tuple[int, int]], jobs: int) -> Iterable[SliceResult]:
    """Each slice's result as it completes, in this process or in `jobs` worker processes."""
    from django.db import connection

    if jobs <= 1 or len(slices) < 2 or connection.in_atomic_block:
        windows, homes = Windows.at(now), agent_homes()
        lease = Lease.held_by(owner)
        for start_s, end_s in slices:
            yield catch_up_slice(lease, start_s, end_s, windows, homes)
        return
    import multiprocessing

    from perfops.metrics.workers import init_worker, slice_in_worker

    # spawn: a worker must not share this process's database connection.
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs, initializer=init_worker, initargs=(owner, now)) as pool:
        yield from pool.imap_unordered(slice_in_worker, slices)


def catch_up_slice(
    lease: Lease, start_s: int, end_s: int, windows: Windows, homes: tuple[np.ndarray, np.ndarray]
) -> SliceResult:
    """Recompute [start_s, end_s) (hour-aligned start) at every kept grain from one read of its raw traces."""
    out = SliceResult(start_s, end_s)
    finest = windows.finest(end_s - 1)
    started = time.perf_counter()
    raw = read_traces(_at(start_s), _at(end_s))
    read_done = time.perf_counter()
    cells = cellmod.from_traces(raw, finest, *homes)
    out.traces = len(raw)
    writes = []
    for grain in (Grain.S30, Grain.M5, Grain.H1, Grain.D1):
        if grain < finest:
            continue
        if grain > finest:
            cells = cells.regroup(grain=grain)
        # Only whole buckets, and only where the grain is kept.
        first, last = ceil_to(max(start_s, windows.kept(grain)), grain), floor_to(end_s, grain)
        if last > first:
            inside = cellmod.select(cells, (cells.bucket >= first) & (cells.bucket < last))
            writes.append(Write(grain, first, last, with_views(inside)))
            if grain == Grain.D1:
                out.days = list(range(first, last, grain))
                out.coarse += len(out.days)
            else:
                out.buckets += (last - first) // grain
    computed = time.perf_counter()
    out.rows = _commit(lease, writes)
    written = time.perf_counter()
    logger.debug(
        "slice %s-%s at %ss: %d traces, read %.2f s, compute %.2f s, write %.2f s (%d rows)",
        _at(start_s),
        _at(end_s),
        int(finest),
        out.traces,
        read_done - started,
        computed - read_done,
        written - computed,
        out.rows,
    )
    return out


def reattribute_agent(agent_id: int, *, wait_s: float = 300.0) -> RunResult:
    """After an agent moved to another department or team: relabel its rows and rebuild the views it feeds."""
    from django.db import connection

    from perfops.telemetry.models import Agent

    started = time.perf_counter()
    result = RunResult()
    lease = Lease()
    if not lease.acquire_waiting(wait_s):
        result.skipped = "another rollup run holds the lease"
        return result
    try:
        home = Agent.objects.filter(pk=agent_id).values_list("department_id", "team_id").first()
        if home is None:
            return result
        with transaction.atomic():
            lease.renew()
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE metrics_rollup SET department_id = %s, team_id = %s WHERE view = %s AND agent_id = %s",
                    [home[0], home[1] or 0, int(View.AGENT), agent_id],
                )
        for grain in Grain:
            buckets = list(
                Rollup.objects.filter(view=View.AGENT, agent_id=agent_id, grain_s=grain)
                .order_by()
                .values_list("bucket_epoch_s", flat=True)
                .distinct()
            )
            for start_s, end_s in _runs(buckets, grain, 288):
                agent_cells = read_agent_cells(grain, start_s, end_s)
                parts = [(view, agent_cells.regroup(view=view)) for view in DERIVED_VIEWS]
                write = Write(grain, start_s, end_s, parts, views=[int(view) for view in DERIVED_VIEWS])
                result.rows += _commit(lease, [write])
                result.coarse += (end_s - start_s) // grain
    finally:
        lease.release()
    result.seconds = time.perf_counter() - started
    return result
