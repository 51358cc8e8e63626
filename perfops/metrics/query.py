"""The one query layer: a filter set and a person in; summaries, series, breakdowns, histograms out.

Every chart, the REST metrics API, SLOs, alerts, budgets, regression detection and reports read
performance through this module, and it is the only code that reads rollups. It:
1. resolves the filters against what the person may see (their departments; unknown or foreign
   names are refused alike);
2. picks the smallest pre-merged view that keeps every dimension the filters and the grouping need;
3. cuts the time window into segments, each read at the coarsest grain that is built, kept and
   fits the series' bucket width (days, then hours, 5 minutes, 30 seconds at the edges), so a query
   merges a bounded number of rows whatever the range;
4. merges the rows' sketches and sums with numpy, per group and time bucket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from django.db.models.functions import Coalesce
from django.utils import timezone

from perfops.access.scoping import department_ids_for
from perfops.metrics import cells as cellmod
from perfops.metrics import sketch
from perfops.metrics.cells import Cells
from perfops.metrics.filters import LATEST, STATUSES, TIERS, FilterError, MetricFilters
from perfops.metrics.levels import BASE, VIEW_DIMS, VIEWS_BY_SIZE, Grain, View, ceil_to, floor_to
from perfops.metrics.models import RollupState, Tier
from perfops.metrics.rollup import Windows
from perfops.metrics.storage import read_cells

MAX_POINTS = 300
# Series bucket widths, smallest first: the first that is a multiple of the finest grain kept at the
# window's start and gives at most MAX_POINTS points is used (1 h: 30 s, 6 h: 2 min, 24 h: 5 min,
# 7 d: 1 h, 30 d: 3 h).
WIDTHS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 14400, 21600, 43200, 86400, 172800, 604800)
QUANTILES = (0.5, 0.95, 0.99)
HEATMAP_QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
GROUP_BY = ("agent", "department", "team", "version", "environment", "intent", "error_type", "status", "tier")
TIMING_GROUPS = ("phase", "dependency")
_GROUP_DIMENSION = {"agent": "agent", "department": "department", "team": "team", "version": "version"}
_GROUP_DIMENSION["intent"] = "intent"


@dataclass(frozen=True)
class Scope:
    """The filters resolved to ids and codes, within what the person may see."""

    departments: tuple[int, ...] | None  # None: no restriction
    teams: tuple[int, ...] | None
    agents: tuple[int, ...] | None
    # A version filter (a version, or each agent's latest): the (agent, environment code, version) that
    # match, each with the epoch second of its first trace (no row of it can be older).
    versions: tuple[tuple[int, int, str, int], ...] | None
    intent: str | None
    environments: tuple[int, ...]
    statuses: tuple[int, ...] | None
    tiers: tuple[int, ...] | None
    empty: bool = False  # nothing can match (no department, no agent with the version)

    def needs(self) -> set[str]:
        needed = set()
        if self.departments is not None:
            needed.add("department")
        if self.teams is not None:
            needed.add("team")
        if self.agents is not None:
            needed.add("agent")
        if self.versions is not None:
            needed |= {"agent", "version"}
        if self.intent is not None:
            needed.add("intent")
        if self.statuses is not None or self.tiers is not None:
            needed.add("outcome")
        return needed


def resolve_scope(filters: MetricFilters, user: Any) -> Scope:
    """Turn slugs into ids among what `user` may see; an unknown or foreign name is a FilterError."""
    from perfops.telemetry.models import Agent, Department, Deployment, Team

    allowed = department_ids_for(user)
    departments: tuple[int, ...] | None = None if allowed is None else tuple(sorted(allowed))
    errors: dict[str, list[str]] = {}
    if filters.department:
        found = list(Department.objects.visible_to(user).filter(slug=filters.department).values_list("pk", flat=True))
        if not found:
            errors["department"] = [f"No department '{filters.department}' is visible to you."]
        departments = tuple(found)
    teams = None
    if filters.team:
        team_qs = Team.objects.visible_to(user).filter(slug=filters.team)
        if filters.department:
            team_qs = team_qs.filter(department__slug=filters.department)
        teams = tuple(sorted(team_qs.values_list("pk", flat=True)))
        if not teams:
            errors["team"] = [
                f"No team '{filters.team}' is visible to you" + (" in that department." if filters.department else ".")
            ]
    agents = None
    if filters.agent:
        found = list(Agent.objects.visible_to(user).filter(slug=filters.agent).values_list("pk", flat=True))
        if not found:
            errors["agent"] = [f"No agent '{filters.agent}' is visible to you."]
        agents = tuple(found)
    if errors:
        raise FilterError(errors)
    environments = tuple(cellmod.ENVIRONMENTS.index(e) for e in filters.environments)
    versions = None
    empty = departments == ()
    if filters.version:
        deployments = (
            Deployment.objects.visible_to(user)
            .filter(environment__in=filters.environments)
            .annotate(effective_at=Coalesce("deployed_at", "first_seen_at"))
            .filter(effective_at__isnull=False)
        )
        if agents is not None:
            deployments = deployments.filter(agent_id__in=agents)
        if filters.version != LATEST:
            deployments = deployments.filter(version=filters.version)
        chosen: dict[tuple[int, str], tuple[str, datetime | None]] = {}
        # Oldest first, so for `latest` the newest deployment of each agent and environment wins.
        rows = deployments.order_by("effective_at", "pk").values_list(
            "agent_id", "environment", "version", "first_seen_at"
        )
        for agent_id, environment, name, first_seen in rows:
            chosen[(agent_id, environment)] = (name, first_seen)
        # A version deployed but without traffic yet has no rows: nothing to read for that agent.
        versions = tuple(
            sorted(
                (a, cellmod.ENVIRONMENTS.index(e), name, int(first_seen.timestamp()))
                for (a, e), (name, first_seen) in chosen.items()
                if first_seen is not None
            )
        )
        agents = tuple(sorted({a for a, *_ in versions}))
        empty = empty or not versions
    return Scope(
        departments=departments,
        teams=teams,
        agents=agents,
        versions=versions,
        intent=filters.intent,
        environments=environments,
        statuses=(cellmod.STATUSES.index(STATUSES[filters.status]),) if filters.status else None,
        tiers=(TIERS[filters.tier],) if filters.tier else None,
        empty=empty,
    )


def choose_view(scope: Scope, group_by: str | Sequence[str] | None = None) -> View:
    """The smallest view that keeps every dimension the scope filters on and the grouping needs."""
    needed = scope.needs()
    for by in (group_by,) if group_by is None or isinstance(group_by, str) else group_by:
        if by in _GROUP_DIMENSION:
            needed.add(_GROUP_DIMENSION[by])
        if by in ("status", "error_type", "tier"):
            needed.add("outcome")
    return next(view for view in VIEWS_BY_SIZE if needed <= VIEW_DIMS[view])


@dataclass(frozen=True)
class Plan:
    """Where and how finely to read: the aligned window, the series bucket width and the segments."""

    view: View
    start_s: int  # aligned start of the window (a multiple of width_s)
    end_s: int  # end of the window, exclusive (never after now, rounded up to the grain kept there)
    width_s: int
    now_s: float
    segments: tuple[tuple[int, int, int], ...]  # (grain, start, end)

    @property
    def points(self) -> int:
        return max(1, -(-(self.end_s - self.start_s) // self.width_s))

    def covered_s(self) -> float:
        """Seconds of the window that have happened (the last bucket may still be running)."""
        return max(min(self.end_s, self.now_s) - self.start_s, 1.0)


def plan(
    filters: MetricFilters,
    scope: Scope,
    now: datetime,
    group_by: str | Sequence[str] | None = None,
    max_points: int = MAX_POINTS,
    totals: bool = False,
) -> Plan:
    """Choose the view, the bucket width and the segments of rollup rows that cover the window.

    `totals` plans one bucket over the whole window (a breakdown, a histogram): the window starts at
    the finest kept edge and whole days in it are read as day rows, whatever a series would use.
    """
    start, end = filters.window(now)
    windows = Windows.at(now)
    start_s = int(start.timestamp())
    now_s = now.timestamp()
    finest_at_start = windows.finest(start_s)
    end_s = math.ceil(end.timestamp())
    end_s = ceil_to(end_s, windows.finest(max(end_s - 1, start_s)))
    end_s = min(end_s, ceil_to(math.ceil(now_s), BASE))
    if totals:
        origin = floor_to(start_s, finest_at_start)
        segments_: list[tuple[int, int, int]] = []
        _cover(
            origin, end_s, (Grain.D1, Grain.H1, Grain.M5, Grain.S30), Grain.D1, windows, _coarse_through(), segments_
        )
        return Plan(
            view=choose_view(scope, group_by),
            start_s=origin,
            end_s=end_s,
            width_s=max(end_s - origin, 1),
            now_s=now_s,
            segments=tuple(segments_),
        )
    width = WIDTHS[-1]
    for candidate in WIDTHS:
        if candidate % finest_at_start == 0 and ceil_to(end_s, candidate) - floor_to(start_s, candidate) <= (
            max_points * candidate
        ):
            width = candidate
            break
    origin = floor_to(start_s, width)
    built_to = _coarse_through()
    segments: list[tuple[int, int, int]] = []
    _cover(origin, end_s, (Grain.D1, Grain.H1, Grain.M5, Grain.S30), width, windows, built_to, segments)
    return Plan(
        view=choose_view(scope, group_by),
        start_s=origin,
        end_s=end_s,
        width_s=width,
        now_s=now_s,
        segments=tuple(segments),
    )


def _coarse_through() -> int:
    through = RollupState.objects.filter(pk=RollupState.SINGLETON).values_list("coarse_through", flat=True).first()
    return int(through.timestamp()) if through else 0


def _cover(
    start_s: int,
    end_s: int,
    grains: Sequence[Grain],
    width: int,
    windows: Windows,
    built_to: int,
    out: list[tuple[int, int, int]],
) -> None:
    """Cover [start_s, end_s) with the coarsest usable grain in the middle and finer ones at the edges."""
    if start_s >= end_s:
        return
    grain, finer = grains[0], grains[1:]
    if not finer:
        out.append((grain, start_s, end_s))
        return
    low = ceil_to(max(start_s, windows.kept(grain)), grain)
    high = floor_to(min(end_s, built_to), grain)
    if width % grain == 0 and low < high:
        _cover(start_s, low, finer, width, windows, built_to, out)
        out.append((grain, low, high))
        _cover(high, end_s, finer, width, windows, built_to, out)
    else:
        _cover(start_s, end_s, finer, width, windows, built_to, out)


# --- reading --------------------------------------------------------------------------------------


def _where(scope: Scope, view: View, grain: int, start_s: int, end_s: int) -> tuple[str, list[Any]]:
    """The WHERE clause of one segment (placeholders only; ids, codes and strings are parameters)."""
    clauses = [
        "view = %s",
        "grain_s = %s",
        f"environment IN ({', '.join(['%s'] * len(scope.environments))})",
        "bucket_epoch_s >= %s",
        "bucket_epoch_s < %s",
    ]
    params: list[Any] = [int(view), grain, *scope.environments, start_s, end_s]
    for column, values in (
        ("department_id", scope.departments),
        ("team_id", scope.teams),
        ("agent_id", scope.agents),
        ("status", scope.statuses),
        ("tier", scope.tiers),
    ):
        if values is not None:
            clauses.append(f"{column} IN ({', '.join(['%s'] * len(values))})")
            params.extend(values)
    if scope.intent is not None:
        clauses.append("intent = %s")
        params.append(scope.intent)
    return " AND ".join(clauses), params


def fetch(scope: Scope, the_plan: Plan, *, with_timings: bool = False) -> Cells:
    """The rollup rows of every segment of the plan, filtered, as one table of cells."""
    if scope.empty:
        return Cells()
    parts = []
    for grain, start_s, end_s in the_plan.segments:
        where, params = _where(scope, the_plan.view, grain, start_s, end_s)
        series = None
        if scope.versions is not None:
            # Each matching agent, environment and version from its first trace's bucket on: an index range
            # each, rather than every row of those agents filtered by version.
            series = [
                (agent_id, environment, name, floor_to(since, grain))
                for agent_id, environment, name, since in scope.versions
                if environment in scope.environments
            ]
        parts.append(read_cells(where, params, with_timings=with_timings, series=series))
    return cellmod.concat(parts)


# --- results --------------------------------------------------------------------------------------


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat().replace("+00:00", "Z")


def _number(value: float, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


@dataclass
class Stats:
    """Per-group totals and percentiles (arrays over groups)."""

    count: np.ndarray
    errors: np.ndarray
    timeouts: np.ndarray
    latency_sum: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    quantiles: np.ndarray  # (groups, len(qs))
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    with_tokens: np.ndarray
    cache_hits: np.ndarray
    qs: tuple[float, ...]

    def row(self, i: int, seconds: float) -> dict[str, Any]:
        count = int(self.count[i])
        failures = int(self.errors[i] + self.timeouts[i])
        out: dict[str, Any] = {
            "count": count,
            "errors": int(self.errors[i]),
            "timeouts": int(self.timeouts[i]),
            "error_rate": _number(failures / count, 6) if count else None,
            "throughput_rps": _number(count / seconds, 4),
            "mean_ms": _number(self.latency_sum[i] / count) if count else None,
            "min_ms": _number(self.minimum[i]) if count else None,
            "max_ms": _number(self.maximum[i]) if count else None,
        }
        for q, value in zip(self.qs, self.quantiles[i], strict=True):
            out[quantile_key(q)] = _number(value)
        out["input_tokens"] = int(self.input_tokens[i])
        out["output_tokens"] = int(self.output_tokens[i])
        out["cache_hit_rate"] = _number(self.cache_hits[i] / count, 6) if count else None
        return out


def quantile_key(q: float) -> str:
    """p50_ms, p95_ms, p99_ms, p99.9_ms ..."""
    return f"p{q * 100:g}_ms"


def stats(found: Cells, group: np.ndarray, n_groups: int, qs: Sequence[float] = QUANTILES) -> Stats:
    """Totals and merged-sketch percentiles of the cells, per group (group[i] of row i)."""

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=values, minlength=n_groups) if n_groups else np.zeros(0)

    minimum = np.full(n_groups, np.inf)
    maximum = np.full(n_groups, -np.inf)
    if len(found):
        np.minimum.at(minimum, group, found.latency_min)
        np.maximum.at(maximum, group, found.latency_max)
    quantiles = sketch.grouped_quantiles(
        group[found.sketch_cell], found.sketch_bucket, found.sketch_count, n_groups, qs, minimum, maximum
    )
    return Stats(
        count=np.rint(total(found.count)).astype(np.int64),
        errors=np.rint(total(found.errors)).astype(np.int64),
        timeouts=np.rint(total(found.timeouts)).astype(np.int64),
        latency_sum=total(found.latency_sum),
        minimum=minimum,
        maximum=maximum,
        quantiles=quantiles,
        input_tokens=np.rint(total(found.input_tokens)).astype(np.int64),
        output_tokens=np.rint(total(found.output_tokens)).astype(np.int64),
        with_tokens=np.rint(total(found.with_tokens)).astype(np.int64),
        cache_hits=np.rint(total(found.cache_hits)).astype(np.int64),
        qs=tuple(qs),
    )


@dataclass
class Labels:
    """Readable names for the ids and codes of a dimension."""

    names: dict[str, dict[int, str]] = field(default_factory=dict)

    @classmethod
    def for_cells(cls, found: Cells, dimension: str) -> tuple[np.ndarray, list[str]]:
        """Each row's group code in `dimension` and the group's label, in code order."""
        from perfops.telemetry.models import Agent, Department, Team

        if dimension in ("agent", "department", "team"):
            ids = getattr(found, dimension)
            unique, inverse = np.unique(ids, return_inverse=True)
            model: Any = {"agent": Agent, "department": Department, "team": Team}[dimension]
            slugs = dict(model.objects.filter(pk__in=unique.tolist()).values_list("pk", "slug"))
            return inverse, [slugs.get(int(pk), "(none)" if pk == 0 else f"#{pk}") for pk in unique.tolist()]
        if dimension in ("version", "intent"):
            codes = getattr(found, dimension)
            vocabulary = found.versions if dimension == "version" else found.intents
            unique, inverse = np.unique(codes, return_inverse=True)
            return inverse, [vocabulary[int(c)] or "(none)" for c in unique.tolist()]
        vocab = {
            "environment": (found.env, list(cellmod.ENVIRONMENTS)),
            "status": (found.status, list(cellmod.STATUSES)),
            "error_type": (found.error_type, [e or "none" for e in cellmod.ERROR_TYPES]),
            "tier": (found.tier, [t.name.lower() for t in Tier]),
        }[dimension]
        codes, names = vocab
        unique, inverse = np.unique(codes, return_inverse=True)
        return inverse, [names[int(c)] for c in unique.tolist()]


class MetricsQuery:
    """One filter set for one person at one moment; each method reads what it needs and computes."""

    def __init__(self, filters: MetricFilters, user: Any, *, now: datetime | None = None) -> None:
        self.filters = filters
        self.user = user
        self.now = now or timezone.now()
        self.scope = resolve_scope(filters, user)
        self._fetched: dict[tuple[View, tuple[tuple[int, int, int], ...], bool], Cells] = {}

    def plan(
        self, group_by: str | Sequence[str] | None = None, max_points: int = MAX_POINTS, *, totals: bool = False
    ) -> Plan:
        return plan(self.filters, self.scope, self.now, group_by, max_points, totals)

    def fetch(self, the_plan: Plan, *, with_timings: bool = False) -> Cells:
        """The plan's rows; read once per query object (a summary and a series of one filter set share them)."""
        key = (the_plan.view, the_plan.segments, with_timings)
        if key not in self._fetched:
            if not with_timings and (the_plan.view, the_plan.segments, True) in self._fetched:
                return self._fetched[(the_plan.view, the_plan.segments, True)]
            self._fetched[key] = fetch(self.scope, the_plan, with_timings=with_timings)
        return self._fetched[key]

    def _window(self, the_plan: Plan) -> dict[str, Any]:
        return {
            "start": _iso(the_plan.start_s),
            "end": _iso(min(the_plan.end_s, the_plan.now_s)),
            "bucket_s": the_plan.width_s,
            "range": self.filters.range,
        }

    def summary(self, qs: Sequence[float] = QUANTILES) -> dict[str, Any]:
        """Totals over the whole window: count, errors, timeouts, error rate, percentiles, throughput."""
        the_plan = self.plan()
        found = self.fetch(the_plan)
        result = stats(found, np.zeros(len(found), dtype=np.int64), 1, qs)
        return {"window": self._window(the_plan), **result.row(0, the_plan.covered_s())}

    def series(
        self,
        group_by: str | None = None,
        *,
        limit: int = 10,
        qs: Sequence[float] = QUANTILES,
        max_points: int = MAX_POINTS,
    ) -> dict[str, Any]:
        """The same figures per time bucket, optionally one series per value of a dimension (top `limit`).

        `max_points` caps the buckets (a 7-day sparkline asks for 7 or 8 and reads day rows).
        """
        if group_by is not None and group_by not in GROUP_BY:
            raise FilterError({"group_by": [f"Must be one of {', '.join(GROUP_BY)}."]})
        the_plan = self.plan(group_by, max_points)
        found = self.fetch(the_plan)
        points = the_plan.points
        point = np.clip((found.bucket - the_plan.start_s) // the_plan.width_s, 0, points - 1)
        if group_by is None:
            codes, labels = np.zeros(len(found), dtype=np.int64), ["all"]
        else:
            codes, labels = Labels.for_cells(found, group_by)
            codes, labels = _top(found, codes, labels, limit)
        n_series = len(labels)
        result = stats(found, codes * points + point, n_series * points, qs)
        starts = the_plan.start_s + np.arange(points) * the_plan.width_s
        seconds = np.clip(np.minimum(starts + the_plan.width_s, the_plan.now_s) - starts, 1.0, None)
        series = []
        for s, label in enumerate(labels):
            rows = []
            for p in range(points):
                rows.append({"t": _iso(int(starts[p])), **result.row(s * points + p, float(seconds[p]))})
            series.append({"key": label, "points": rows})
        return {"window": self._window(the_plan), "group_by": group_by, "series": series}

    def breakdown(self, by: str, *, qs: Sequence[float] = QUANTILES, max_points: int | None = None) -> dict[str, Any]:
        """Totals per value of a dimension (agent, department, ..., or phase / dependency), largest first.

        With `max_points`, over the span of the series of that many points (its rows, read once for
        both when they come from one query object) rather than exactly the window.
        """
        if by in TIMING_GROUPS:
            return self.timing_breakdown(by)
        if by not in GROUP_BY:
            raise FilterError({"by": [f"Must be one of {', '.join(GROUP_BY + TIMING_GROUPS)}."]})
        the_plan = self.plan(by, max_points) if max_points else self.plan(by, totals=True)
        found = self.fetch(the_plan)
        codes, labels = Labels.for_cells(found, by)
        result = stats(found, codes, len(labels), qs)
        rows = [{"key": label, **result.row(i, the_plan.covered_s())} for i, label in enumerate(labels)]
        rows.sort(key=lambda row: (-row["count"], row["key"]))
        return {"window": self._window(the_plan), "by": by, "rows": rows}

    def good_events(self, threshold_ms: float | None, by: str | None = None) -> dict[str, dict[str, int]]:
        """SLI event counts over the window: {group: {"total", "good"}} (group "all" without `by`).

        Good is "not an error or timeout" and, with a threshold, also "faster than it": counted from
        the sketch buckets that end at or below the threshold, so a request in the bucket that holds
        the threshold (at most 1% above it) counts as bad, never the other way round.
        """
        if by is not None and by not in GROUP_BY:
            raise FilterError({"by": [f"Must be one of {', '.join(GROUP_BY)}."]})
        needs_outcome = threshold_ms is not None
        the_plan = self.plan(by, totals=True)
        if needs_outcome and "outcome" not in VIEW_DIMS[the_plan.view]:
            # The latency of failed requests must not count as good: the outcome is needed in the key.
            view = next(v for v in VIEWS_BY_SIZE if (VIEW_DIMS[the_plan.view] | {"outcome"}) <= VIEW_DIMS[v])
            the_plan = Plan(view, the_plan.start_s, the_plan.end_s, the_plan.width_s, the_plan.now_s, the_plan.segments)
        found = self.fetch(the_plan)
        if by is None:
            codes, labels = np.zeros(len(found), dtype=np.int64), ["all"]
        else:
            codes, labels = Labels.for_cells(found, by)
        n = len(labels)
        total = np.bincount(codes, weights=found.count, minlength=n) if len(found) else np.zeros(n)
        failed = np.bincount(codes, weights=found.errors + found.timeouts, minlength=n) if len(found) else np.zeros(n)
        if threshold_ms is None:
            good = total - failed
        else:
            ok_rows = found.status == cellmod.STATUSES.index("ok")
            below = int(np.searchsorted(sketch.BOUNDARIES, threshold_ms, side="right"))
            entry_ok = ok_rows[found.sketch_cell] & (found.sketch_bucket < below)
            good = np.bincount(codes[found.sketch_cell][entry_ok], weights=found.sketch_count[entry_ok], minlength=n)
        return {
            label: {"total": round(float(total[i])), "good": round(float(good[i]))}
            for i, label in enumerate(labels)
            if total[i]
        }

    def cross(self, first: str, second: str, *, qs: Sequence[float] = ()) -> dict[str, Any]:
        """Totals per pair of dimension values (e.g. error type x agent for the error treemap), largest first."""
        for by in (first, second):
            if by not in GROUP_BY:
                raise FilterError({"by": [f"Must be one of {', '.join(GROUP_BY)}."]})
        the_plan = self.plan((first, second), totals=True)
        found = self.fetch(the_plan)
        codes_a, labels_a = Labels.for_cells(found, first)
        codes_b, labels_b = Labels.for_cells(found, second)
        width = len(labels_b)
        result = stats(found, codes_a * width + codes_b, len(labels_a) * width, qs)
        rows = [
            {first: labels_a[i // width], second: labels_b[i % width], **result.row(i, the_plan.covered_s())}
            for i in np.flatnonzero(result.count).tolist()
        ]
        rows.sort(key=lambda row: (-row["count"], row[first], row[second]))
        return {"window": self._window(the_plan), "by": [first, second], "rows": rows}

    def timing_breakdown(self, by: str) -> dict[str, Any]:
        """Where the time goes: per phase, or per dependency (kind and name), over the whole window."""
        from perfops.telemetry.models import TimingLabel

        the_plan = self.plan(totals=True)
        found = self.fetch(the_plan, with_timings=True)
        traces = int(found.count.sum())
        latency_sum = float(found.latency_sum.sum())
        entries = found.timing
        rows: list[dict[str, Any]] = []
        if len(entries):
            unique, inverse = np.unique(entries["label"], return_inverse=True)
            sums = {
                name: np.bincount(inverse, weights=entries[name], minlength=len(unique))
                for name in ("calls", "errors", "start_sum_ms", "duration_sum_ms")
            }
            names = {
                pk: (kind, name)
                for pk, kind, name in TimingLabel.objects.filter(pk__in=unique.tolist()).values_list(
                    "pk", "kind", "name"
                )
            }
            for i, label in enumerate(unique.tolist()):
                kind, name = names.get(label, ("?", f"#{label}"))
                if (by == "phase") != (kind == "phase"):
                    continue
                calls = float(sums["calls"][i])
                duration = float(sums["duration_sum_ms"][i])
                row = {
                    "name": name,
                    "calls": round(calls),
                    "errors": round(float(sums["errors"][i])),
                    "mean_ms": _number(duration / calls) if calls else None,
                    "mean_start_ms": _number(float(sums["start_sum_ms"][i]) / calls) if calls else None,
                    "per_trace_ms": _number(duration / traces) if traces else None,
                    "share_of_latency": _number(duration / latency_sum, 6) if latency_sum else None,
                }
                if by == "dependency":
                    row = {
                        "kind": kind,
                        **row,
                        "error_rate": _number(float(sums["errors"][i]) / calls, 6) if calls else None,
                    }
                rows.append(row)
        order = (
            (lambda r: (r["mean_start_ms"] or 0.0, r["name"]))
            if by == "phase"
            else (lambda r: (-(r["per_trace_ms"] or 0.0), r["name"]))
        )
        rows.sort(key=order)
        return {"window": self._window(the_plan), "by": by, "traces": traces, "rows": rows}

    def histogram(self, *, max_bins: int = 60, qs: Sequence[float] = QUANTILES) -> dict[str, Any]:
        """The latency distribution in log-spaced bins, with percentile markers and exact tier counts."""
        the_plan = self.plan(totals=True)
        found = self.fetch(the_plan)
        merged = sketch.Sketch(
            np.bincount(found.sketch_bucket, weights=found.sketch_count, minlength=sketch.N_BUCKETS).astype(np.int64),
            float(found.latency_min.min()) if len(found) else math.inf,
            float(found.latency_max.max()) if len(found) else -math.inf,
        )
        bins = []
        used = np.flatnonzero(merged.counts)
        if len(used):
            first, last = int(used[0]), int(used[-1])
            step = max(1, -(-(last - first + 1) // max_bins))
            for low in range(first, last + 1, step):
                high = min(low + step, last + 1)
                lower_edge = 0.0 if low == 0 else float(sketch.BOUNDARIES[low - 1])
                upper_edge = float(sketch.BOUNDARIES[min(high - 1, len(sketch.BOUNDARIES) - 1)])
                bins.append(
                    {
                        "low_ms": _number(max(lower_edge, merged.min_ms)),
                        "high_ms": _number(min(upper_edge, merged.max_ms) if high - 1 == last else upper_edge),
                        "count": int(merged.counts[low:high].sum()),
                    }
                )
        edges = (0.0, *sketch.TIER_EDGES_MS, math.inf)
        tiers = {
            tier.name.lower(): merged.cut(low, high).count
            for tier, low, high in zip(Tier, edges, edges[1:], strict=False)
        }
        markers = {
            quantile_key(q): _number(v) if v is not None else None
            for q, v in zip(qs, merged.quantiles(qs), strict=True)
        }
        return {
            "window": self._window(the_plan),
            "count": merged.count,
            "bins": bins,
            "tiers": tiers,
            "percentiles": markers,
        }

    def heatmap(self, qs: Sequence[float] = HEATMAP_QUANTILES) -> dict[str, Any]:
        """Latency per percentile (rows) per time bucket (columns)."""
        result = self.series(qs=qs)
        points = result["series"][0]["points"]
        return {
            "window": result["window"],
            "times": [p["t"] for p in points],
            "percentiles": [quantile_key(q) for q in qs],
            "latency_ms": [[p[quantile_key(q)] for p in points] for q in qs],
            "counts": [p["count"] for p in points],
        }


def _top(found: Cells, codes: np.ndarray, labels: list[str], limit: int) -> tuple[np.ndarray, list[str]]:
    """Keep the `limit` largest groups by traces; the rest become one group called 'other'."""
    if len(labels) <= limit:
        return codes, labels
    totals = np.bincount(codes, weights=found.count, minlength=len(labels))
    order = np.argsort(-totals, kind="stable")
    keep = order[:limit]
    remap = np.full(len(labels), limit, dtype=np.int64)
    remap[keep] = np.arange(limit)
    return remap[codes], [labels[i] for i in keep.tolist()] + ["other"]
