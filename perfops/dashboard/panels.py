"""The dashboard's panels: one function per chart of the spec, filter set in, cacheable result out.

A panel reads through the metrics query layer (or, for single requests, perfops.dashboard.traces)
and returns a plain dict: a plotly figure, a table, key figures, an empty-state message and notes.
The dict is what the per-chart cache stores, so it holds no model objects and nothing that
depends on who asked beyond their department scope (links are built from the filters only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import numpy as np
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from perfops.access.scoping import department_ids_for
from perfops.dashboard import figures as fig
from perfops.dashboard import overlays, traces
from perfops.metrics.cache import cached
from perfops.metrics.filters import ALL, MetricFilters
from perfops.metrics.models import FAILED_STATUS_CODES
from perfops.metrics.query import MetricsQuery, resolve_scope
from perfops.telemetry.models import Deployment

PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")
PERCENTILE_NAMES = {"p50_ms": "P50", "p95_ms": "P95", "p99_ms": "P99"}
MAX_MARKERS = 24
VERSION_POINTS = 40
# The next level down when a panel compares the members of the current scope.
NEXT_LEVEL = (("team", "agent"), ("department", "team"), (None, "department"))


@dataclass
class Context:
    """One panel request: the filters, who asks, when, and the panel's own options (sort order)."""

    filters: MetricFilters
    user: Any
    now: datetime = field(default_factory=timezone.now)
    options: dict[str, str] = field(default_factory=dict)

    def query(self, **overrides: Any) -> MetricsQuery:
        return MetricsQuery(replace(self.filters, **overrides) if overrides else self.filters, self.user, now=self.now)

    @property
    def level(self) -> str:
        """fleet, subset or agent: which of the spec's three levels these filters are."""
        if self.filters.agent:
            return "agent"
        narrowed = (self.filters.department, self.filters.team, self.filters.version, self.filters.intent)
        return "subset" if any(narrowed) else "fleet"

    def params(self, **overrides: Any) -> dict[str, str]:
        """The filters as query parameters, with overrides (None removes a parameter)."""
        params = dict(self.filters.normalised())
        for key, value in overrides.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = str(value)
        if "start" in overrides and overrides["start"] is not None:
            params.pop("range", None)
        return params

    def link(self, view: str, *args: Any, **overrides: Any) -> str:
        query = urlencode(self.params(**overrides))
        return reverse(view, args=args) + (f"?{query}" if query else "")

    def drill(self, panel: str, width_s: int, **overrides: Any) -> dict[str, Any]:
        """A chart trace's drill-down: the panel `panel` over the clicked bucket [t, t + width).

        The points carry their bucket start as customdata; dashboard.js appends start and end to
        this link, so a 300-point series does not carry 300 links.
        """
        params = {k: v for k, v in self.params(**overrides).items() if k not in ("range", "start", "end")}
        return {"drill": reverse("dashboard:panel", args=[panel]) + "?" + urlencode(params), "width_s": width_s}


@dataclass(frozen=True)
class Panel:
    """A chart of the spec: where its data comes from and how long its result may be cached."""

    name: str
    title: str
    chart: str  # the spec's chart id, e.g. "4.1"
    ttl_chart: str  # key of perfops.metrics.cache.CHART_TTL_S
    build: Callable[[Context], dict[str, Any]]
    template: str = "dashboard/panels/figure.html"
    description: str = ""
    wide: bool = False
    # Reloaded every minute while the page shows a relative range (not the sortable tables: a reload
    # would undo the person's sort).
    live: bool = True

    def render_data(self, ctx: Context) -> dict[str, Any]:
        """The panel's result, from the per-chart cache when the same filters and scope asked within its TTL."""
        ttl_chart = self.ttl_chart
        if ttl_chart == "latency_kpi.fleet" and ctx.level != "fleet":
            ttl_chart = "latency_kpi.subset"
        scope = department_ids_for(ctx.user)
        parts = {
            "panel": self.name,
            "filters": ctx.filters.normalised(),
            "options": ctx.options,
            "scope": "all" if scope is None else sorted(scope),
        }
        if self.name in OVERLAY_PANELS:
            parts["overlays"] = overlays.generation()
        return cached(ttl_chart, parts, lambda: self.build(ctx))


def _empty(message: str = "No requests match these filters in this time range.") -> dict[str, Any]:
    return {"empty": message}


# --- shared pieces ----------------------------------------------------------------------------


def _series_points(series: dict[str, Any]) -> list[dict[str, Any]]:
    return series["series"][0]["points"] if series["series"] else []


def _has_traffic(result: dict[str, Any]) -> bool:
    return any(p["count"] for s in result["series"] for p in s["points"])


def _deployment_markers(ctx: Context, start_iso: str, end_iso: str) -> list[dict[str, Any]]:
    """Version rollouts in the window and the scope: the first appearance of each (version, environment)."""
    scope = resolve_scope(ctx.filters, ctx.user)
    if scope.empty:
        return []
    start, end = parse_datetime(start_iso), parse_datetime(end_iso)
    deployments = (
        Deployment.objects.visible_to(ctx.user)
        .with_effective_at()
        .filter(effective_at__gte=start, effective_at__lt=end, environment__in=ctx.filters.environments)  # type: ignore[misc]
    )
    deployments = deployments.filter(traces.agents_of(scope))
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for agent, environment, version, at in deployments.order_by("effective_at").values_list(  # type: ignore[misc]
        "agent__slug", "environment", "version", "effective_at"
    ):
        key = (version, environment)
        if key not in seen:
            seen[key] = {"at": at.isoformat(), "version": version, "environment": environment, "agents": [agent]}
        elif len(seen[key]["agents"]) < 5:
            seen[key]["agents"].append(agent)
    return sorted(seen.values(), key=lambda m: m["at"])[-MAX_MARKERS:]


def _capacity_rps(ctx: Context) -> tuple[float, int, int]:
    """Summed configured capacity of the agents in scope: (requests/s, agents with one, agents in scope)."""
    from perfops.analytics.capacity import configured_capacity

    total, in_scope, configured = configured_capacity(ctx.filters, ctx.user)
    return total, configured, in_scope


def _robust(grid: list[list[float | None]], q: float) -> float | None:
    """A quantile of a grid's known values (a colour scale's end that ignores outliers)."""
    values = [v for row in grid for v in row if v is not None]
    if not values:
        return None
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))]


def _peaks(totals: dict[str, float], count: int) -> list[tuple[str, float]]:
    """The `count` highest points that are at least a tenth of the axis apart (no stacked labels)."""
    times = sorted(totals)
    gap = max(1, len(times) // 10)
    index = {t: i for i, t in enumerate(times)}
    chosen: list[tuple[str, float]] = []
    for at, value in sorted(totals.items(), key=lambda kv: -kv[1]):
        if value > 0 and all(abs(index[at] - index[other]) >= gap for other, _ in chosen):
            chosen.append((at, value))
        if len(chosen) == count:
            break
    return chosen


def _comparison_dimension(ctx: Context) -> str:
    if ctx.filters.agent:
        return "version"
    for narrowed, by in NEXT_LEVEL:
        if narrowed is None or getattr(ctx.filters, narrowed):
            return by
    return "department"


def _per_s(value: float | None) -> str:
    """A request rate in the unit that reads best: per second, per minute or per hour."""
    if value is None:
        return "–"
    if value >= 1:
        return f"{value:,.1f}/s"
    if value * 60 >= 1:
        return f"{value * 60:.1f}/min"
    return f"{value * 3600:.1f}/h"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


# --- 4.1 latency KPI and percentiles ------------------------------------------------------------


def build_kpis(ctx: Context) -> dict[str, Any]:
    summary = ctx.query().summary()
    if not summary["count"]:
        return _empty()
    kpis = [
        ("Requests", f"{summary['count']:,}", ""),
        ("Throughput", _per_s(summary["throughput_rps"]), "requests"),
        ("Error rate", _rate(summary["error_rate"]), f"{summary['errors']:,} errors, {summary['timeouts']:,} timeouts"),
        ("P50", _ms(summary["p50_ms"]), "median latency"),
        ("P95", _ms(summary["p95_ms"]), ""),
        ("P99", _ms(summary["p99_ms"]), ""),
        ("Cache hits", _rate(summary["cache_hit_rate"]), "of requests"),
    ]
    return {"kpis": [{"label": a, "value": b, "hint": c} for a, b, c in kpis]}


def build_latency(ctx: Context) -> dict[str, Any]:
    by_environment = ctx.filters.environment == ALL
    result = ctx.query().series("environment" if by_environment else None)
    if not _has_traffic(result):
        return _empty()
    width = result["window"]["bucket_s"]
    data = []
    for i, series in enumerate(result["series"]):
        env = series["key"]
        for key in PERCENTILES:
            name = PERCENTILE_NAMES[key] + (f" {env}" if by_environment else "")
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": name,
                    "x": [p["t"] for p in series["points"]],
                    "y": [p[key] for p in series["points"]],
                    "line": {
                        "color": fig.ENVIRONMENT_COLOURS.get(env, fig.colour(i))
                        if by_environment
                        else fig.PERCENTILE_COLOURS[key],
                        "dash": fig.PERCENTILE_DASH[key],
                        "width": 2 if key == "p95_ms" else 1.5,
                    },
                    "customdata": [p["t"] for p in series["points"]],
                    "meta": ctx.drill("distribution", width, **({"environment": env} if by_environment else {})),
                    "hovertemplate": "%{y:,.1f} ms",
                    "connectgaps": False,
                }
            )
    shapes, annotations, notes = [], [], []
    for line in overlays.slo_lines(ctx.filters, ctx.user):
        shape, note = fig.horizontal_line(line.threshold_ms, f"SLO {line.name}", "#d1495b")
        shapes.append(shape)
        annotations.append(note)
    if not shapes:
        notes.append("No latency SLO covers this scope yet; its threshold line will show here.")
    changes = overlays.config_changes(ctx.filters, ctx.user, result["window"]["start"], result["window"]["end"])
    if changes:
        marks = fig.vertical_markers([(at, label) for at, label in changes], colour_="#9b5de5")
        shapes += marks["shapes"]
        annotations += marks["annotations"]
        notes.append("Purple dotted lines: configuration changes (before and after them on the same chart).")
    notes.append(
        "Click a point for the latency distribution of that time bucket; drag across the chart to zoom the page."
    )
    return {
        "figure": fig.figure(
            data,
            fig.layout(
                y_title="latency (ms)",
                x_title=f"time (UTC, {width // 60 or width} {'min' if width >= 60 else 's'} buckets)",
                shapes=shapes,
                annotations=annotations,
                # One line per environment carries its own drill link: a click must pick the line clicked.
                hovermode="closest" if by_environment else "x unified",
            ),
        ),
        "drill": True,
        "zoom": True,
        "notes": notes,
    }


# --- 4.2 errors -----------------------------------------------------------------------------------


def build_errors(ctx: Context) -> dict[str, Any]:
    query = ctx.query()
    total = query.series()
    if not _has_traffic(total):
        return _empty()
    failed = ctx.query()
    if failed.scope.statuses is None:
        failed.scope = replace(failed.scope, statuses=FAILED_STATUS_CODES)  # only failed requests' rows
    by_type = failed.series("error_type", limit=10, qs=())
    points = _series_points(total)
    width = total["window"]["bucket_s"]
    data = []
    for series in by_type["series"]:
        if series["key"] in ("none", "other") and not any(p["errors"] + p["timeouts"] for p in series["points"]):
            continue
        if series["key"] == "none":
            continue
        y = [
            round(100 * (p["errors"] + p["timeouts"]) / t["count"], 4) if t["count"] else None
            for p, t in zip(series["points"], points, strict=True)
        ]
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "stackgroup": "errors",
                "name": series["key"],
                "x": [p["t"] for p in series["points"]],
                "y": y,
                "line": {"width": 0.5, "color": fig.ERROR_COLOURS.get(series["key"], fig.NEUTRAL)},
                "customdata": [p["t"] for p in points],
                "meta": ctx.drill("contributors", width, sort="failures"),
                "hovertemplate": "%{y:.2f}%",
            }
        )
    notes = []
    if not data:
        return _empty("No errors or timeouts in this time range.")
    markers = _deployment_markers(ctx, total["window"]["start"], total["window"]["end"])
    marks = fig.vertical_markers([(m["at"], m["version"]) for m in markers])
    burn = overlays.error_budget_burn(ctx.filters, ctx.user, points)
    extra: dict[str, Any] = {}
    if burn is not None and any(value is not None for _, value in burn.points):
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"budget burn rate ({burn.slo})",
                "x": [t for t, _ in burn.points],
                "y": [v for _, v in burn.points],
                "yaxis": "y2",
                "line": {"color": fig.NEUTRAL, "dash": "dash", "width": 1.5},
                "hovertemplate": "burn %{y:.2f}×",
            }
        )
        extra["yaxis2"] = {
            "title": {"text": "budget burn rate (×)"},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
        }
        notes.append(
            f"Dashed: how fast these requests spend the error budget of {burn.slo} "
            f"({burn.target * 100:g}% target); at 1× the budget lasts the SLO window, 14.4× pages."
        )
    else:
        notes.append("Error budget burn shows here once an availability SLO covers this scope.")
    notes.append("Dotted lines: versions rolled out. Click a spike to list the agents behind it.")
    return {
        "figure": fig.figure(data, fig.layout(y_title="failed requests (%)", x_title="time (UTC)", **marks, **extra)),
        "drill": True,
        "zoom": True,
        "notes": notes,
    }


# --- 4.3 throughput -------------------------------------------------------------------------------


def build_throughput(ctx: Context) -> dict[str, Any]:
    by_environment = ctx.filters.environment == ALL
    query = ctx.query()
    result = query.series("environment" if by_environment else None)
    if not _has_traffic(result):
        return _empty()
    width = result["window"]["bucket_s"]
    data = []
    totals: dict[str, float] = {}
    for i, series in enumerate(result["series"]):
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": series["key"] if by_environment else "requests/s",
                "x": [p["t"] for p in series["points"]],
                "y": [p["throughput_rps"] for p in series["points"]],
                "line": {"color": fig.ENVIRONMENT_COLOURS.get(series["key"], fig.colour(i)), "width": 2},
                "customdata": [p["t"] for p in series["points"]],
                "meta": ctx.drill(
                    "contributors", width, sort="count", **({"environment": series["key"]} if by_environment else {})
                ),
                "hovertemplate": "%{y:.2f} req/s",
            }
        )
        for p in series["points"]:
            totals[p["t"]] = totals.get(p["t"], 0.0) + (p["throughput_rps"] or 0.0)
    capacity, configured, in_scope = _capacity_rps(ctx)
    shapes, annotations, notes = [], [], []
    for at, value in _peaks(totals, 3):
        if value > 0:
            annotations.append(
                {
                    "x": at,
                    "y": value,
                    "text": f"peak {_per_s(value)}",
                    "showarrow": True,
                    "arrowhead": 2,
                    "ax": 0,
                    "ay": -24,
                    "font": {"size": 10},
                }
            )
    extra: dict[str, Any] = {}
    if capacity > 0:
        shape, note = fig.horizontal_line(capacity, f"capacity {_per_s(capacity)}", "#d1495b")
        shapes.append(shape)
        annotations.append(note)
        if configured == in_scope:
            times = sorted(totals)
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": "utilization %",
                    "x": times,
                    "y": [round(100 * totals[t] / capacity, 2) for t in times],
                    "yaxis": "y2",
                    "line": {"color": fig.NEUTRAL, "width": 1, "dash": "dot"},
                    "hovertemplate": "%{y:.1f}% of capacity",
                }
            )
            extra["yaxis2"] = {
                "title": {"text": "utilization (%)"},
                "overlaying": "y",
                "side": "right",
                "rangemode": "tozero",
                "showgrid": False,
            }
        if configured < in_scope:
            notes.append(
                f"Capacity is set for {configured} of {in_scope} agents in scope: the line sums those, and "
                "utilization is not shown (the traffic of the others has no capacity to compare with)."
            )
    else:
        notes.append("No capacity is configured for these agents (admin: Agent capacities), so no capacity line.")
    notes.append("Click a point to list the agents that made that traffic; drag across the chart to zoom the page.")
    return {
        "figure": fig.figure(
            data,
            fig.layout(
                y_title="requests / s",
                x_title="time (UTC)",
                shapes=shapes,
                annotations=annotations,
                hovermode="closest" if by_environment else "x unified",
                **extra,
            ),
        ),
        "drill": True,
        "zoom": True,
        "notes": notes,
    }


# --- 4.5 agents ---------------------------------------------------------------------------------

AGENT_SORTS = {
    "p95": ("p95_ms", True),
    "p50": ("p50_ms", True),
    "p99": ("p99_ms", True),
    "throughput": ("throughput_rps", True),
    "errors": ("error_rate", True),
    "agent": ("key", False),
}
AGENT_ROWS = 40


def build_agents(ctx: Context) -> dict[str, Any]:
    query = ctx.query()
    rows = query.breakdown("agent")["rows"]
    rows = [r for r in rows if r["count"]]
    if not rows:
        return _empty()
    sort = ctx.options.get("sort", "p95")
    key, descending = AGENT_SORTS.get(sort, AGENT_SORTS["p95"])
    if ctx.options.get("order") == "asc":
        descending = False
    elif ctx.options.get("order") == "desc":
        descending = True
    known = sorted((r for r in rows if r[key] is not None), key=lambda r: r[key], reverse=descending)
    rows = known + [r for r in rows if r[key] is None]  # no value (no requests): last either way
    shown = rows[:AGENT_ROWS]
    # The trend is the last seven whole days (UTC): day rows only, a few per agent.
    today = ctx.now.replace(hour=0, minute=0, second=0, microsecond=0)
    week = ctx.query(range=None, start=today - timedelta(days=7), end=today).series(
        "agent", limit=max(len(rows), 1), qs=(0.95,), max_points=7
    )
    trend = {s["key"]: [p["p95_ms"] for p in s["points"]] for s in week["series"]}
    statuses = overlays.slo_statuses(ctx.filters, ctx.user)
    top = max((r["p95_ms"] or 0.0) for r in shown) or 1.0
    table = []
    for r in shown:
        status = statuses.get(r["key"])
        colour_name = fig.slo_colour(status.compliance if status else None)
        table.append(
            {
                "agent": r["key"],
                "href": ctx.link("dashboard:agent", r["key"], agent=None),
                "p50": _ms(r["p50_ms"]),
                "p95": _ms(r["p95_ms"]),
                "p99": _ms(r["p99_ms"]),
                "bar_pct": round(100 * (r["p95_ms"] or 0.0) / top, 1),
                "bar_colour": fig.SLO_COLOURS[colour_name],
                "slo": colour_name,
                "slo_text": f"{status.compliance * 100:.2f}% of {status.slo}" if status else "no SLO",
                "throughput": _per_s(r["throughput_rps"]),
                "error_rate": _rate(r["error_rate"]),
                "count": r["count"],
                "sparkline": fig.sparkline_points(trend.get(r["key"], [])),
            }
        )
    notes = [] if statuses else ["Bars turn green, yellow or red by SLO compliance once SLOs exist; grey means no SLO."]
    if len(rows) > AGENT_ROWS:
        notes.append(f"Showing {AGENT_ROWS} of {len(rows)} agents; sort or narrow the filters to see others.")
    return {
        "rows": table,
        "sort": sort,
        "descending": descending,
        # The active sort's link flips its order: slowest first, then fastest first (top and bottom performers).
        "sorts": [
            (
                name,
                ctx.link(
                    "dashboard:panel",
                    "agents",
                    sort=name,
                    order=("asc" if descending else "desc") if name == sort else None,
                ),
            )
            for name in AGENT_SORTS
        ],
        "descending_label": "highest first" if descending else "lowest first",
        "notes": notes,
        "total": len(rows),
    }


# --- 4.6 heatmap, 4.13 distribution -------------------------------------------------------------------


def build_heatmap(ctx: Context) -> dict[str, Any]:
    result = ctx.query().heatmap()
    if not any(result["counts"]):
        return _empty()
    labels = [p.removesuffix("_ms").upper() for p in result["percentiles"]]
    data = [
        {
            "type": "heatmap",
            "x": result["times"],
            "y": labels,
            "z": result["latency_ms"],
            "colorscale": "YlOrRd",
            "reversescale": True,  # dark red is slow
            # A few extreme buckets would otherwise paint everything else the same colour.
            "zmin": _robust(result["latency_ms"], 0.0),
            "zmax": _robust(result["latency_ms"], 0.95),
            "colorbar": {"title": {"text": "ms"}, "thickness": 12},
            "hovertemplate": "%{y} at %{x}: %{z:,.1f} ms<extra></extra>",
            "hoverongaps": False,
        }
    ]
    return {
        "figure": fig.figure(
            data,
            fig.layout(
                x_title="time (UTC)",
                y_title="percentile",
                legend=False,
                hovermode="closest",
                yaxis={"type": "category", "rangemode": "normal"},
            ),
        )
    }


def build_distribution(ctx: Context) -> dict[str, Any]:
    result = ctx.query().histogram()
    if not result["count"]:
        return _empty()
    xs: list[float] = []
    ys: list[int] = []
    for b in result["bins"]:
        xs.extend([b["low_ms"] or 0.01, b["high_ms"]])
        ys.extend([b["count"], b["count"]])
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "requests",
            "x": xs,
            "y": ys,
            "fill": "tozeroy",
            "line": {"color": "#3b6fd4", "width": 1, "shape": "hv"},
            "hovertemplate": "%{x:,.1f} ms: %{y:,} requests<extra></extra>",
        }
    ]
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for key, value in result["percentiles"].items():
        if value is None:
            continue
        colour = fig.PERCENTILE_COLOURS.get(key, fig.NEUTRAL)
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": value,
                "x1": value,
                "y0": 0,
                "y1": 1,
                "line": {"color": colour, "width": 1.5, "dash": "dash"},
            }
        )
        annotations.append(
            {
                "x": math.log10(max(value, 0.01)),
                "y": 1 - 0.09 * len(annotations),
                "xref": "x",
                "yref": "paper",
                "showarrow": False,
                "text": f"{PERCENTILE_NAMES.get(key, key)} {_ms(value)}",
                "xanchor": "left",
                "yanchor": "top",
                "font": {"size": 10, "color": colour},
            }
        )
    notes = []
    for line in overlays.slo_lines(ctx.filters, ctx.user):
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": line.threshold_ms,
                "x1": line.threshold_ms,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#d1495b", "width": 2},
            }
        )
    if len(shapes) == len(annotations):
        notes.append("The SLO threshold shows here once a latency SLO covers this scope.")
    tiers = result["tiers"]
    notes.insert(0, "Tiers: " + ", ".join(f"{name} {count:,}" for name, count in tiers.items()))
    return {
        "figure": fig.figure(
            data,
            fig.layout(
                x_title="latency (ms, log scale)",
                y_title="requests",
                legend=False,
                hovermode="closest",
                xaxis={"type": "log"},
                shapes=shapes,
                annotations=annotations,
            ),
        ),
        "notes": notes,
    }


# --- 4.7 environment parity ----------------------------------------------------------------------


def build_parity(ctx: Context) -> dict[str, Any]:
    rows = {r["key"]: r for r in ctx.query(environment=ALL).breakdown("environment")["rows"] if r["count"]}
    if not rows:
        return _empty()
    order = [env for env in ("development", "staging", "production") if env in rows]
    data = []
    for env in order:
        r = rows[env]
        data.append(
            {
                "type": "bar",
                "name": env,
                "x": [PERCENTILE_NAMES[k] for k in PERCENTILES],
                "y": [r[k] for k in PERCENTILES],
                "marker": {"color": fig.ENVIRONMENT_COLOURS[env]},
                "hovertemplate": "%{y:,.1f} ms",
            }
        )
    baseline = rows.get("production")
    table = []
    gaps = []
    for env in order:
        r = rows[env]
        delta = None
        if baseline and env != "production" and baseline["p95_ms"] and r["p95_ms"] is not None:
            delta = r["p95_ms"] / baseline["p95_ms"] - 1
            if abs(delta) >= 0.2:
                gaps.append(f"{env} P95 is {abs(delta) * 100:.0f}% {'above' if delta > 0 else 'below'} production")
        table.append(
            {
                "environment": env,
                "p50": _ms(r["p50_ms"]),
                "p95": _ms(r["p95_ms"]),
                "p99": _ms(r["p99_ms"]),
                "error_rate": _rate(r["error_rate"]),
                "throughput": _per_s(r["throughput_rps"]),
                "delta": None if delta is None else f"{delta * 100:+.0f}%",
                "gap": delta is not None and abs(delta) >= 0.2,
            }
        )
    return {
        "figure": fig.figure(data, fig.layout(y_title="latency (ms)", barmode="group", hovermode="x unified")),
        "parity": table,
        "gaps": gaps,
        "notes": ["A gap is a P95 that differs from production's by 20% or more."],
    }


# --- 4.8 versions, 4.14 regression timeline --------------------------------------------------------


def build_versions(ctx: Context) -> dict[str, Any]:
    # About 30 points a line (a day each over 30 days): a benchmark compares versions, not minutes,
    # and day rows keep a month of every version's traffic to a few thousand rows.
    query = ctx.query()
    result = query.series("version", limit=8, qs=(0.95,), max_points=VERSION_POINTS)
    if not _has_traffic(result):
        return _empty()
    data = []
    first_seen = []
    for i, series in enumerate(result["series"]):
        points = [p for p in series["points"] if p["count"]]
        if not points:
            continue
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "marker": {"size": 3},
                "name": series["key"],
                "x": [p["t"] for p in series["points"]],
                "y": [p["p95_ms"] for p in series["points"]],
                "line": {"color": fig.colour(i), "width": 2},
                "customdata": [[p["count"], p["error_rate"]] for p in series["points"]],
                "hovertemplate": "%{y:,.1f} ms P95 (%{customdata[0]:,} requests, %{customdata[1]:.2%} errors)",
            }
        )
        # A label where a version's traffic starts, unless it was already running when the window began.
        if series["key"] != "other" and points[0]["t"] != series["points"][0]["t"]:
            first_seen.append((points[0]["t"], series["key"]))
    first_seen.sort()
    notes = ["One line per version: its P95. Labels mark where each version's traffic starts."]
    if not overlays.change_points(ctx.filters, ctx.user):
        notes.append("No regression flag or detected step in this window.")
    return {
        "figure": fig.figure(
            data, fig.layout(y_title="P95 latency (ms)", x_title="time (UTC)", **fig.vertical_markers(first_seen))
        ),
        "versions": _version_gate(query),
        "notes": notes,
    }


def _version_gate(query: MetricsQuery) -> list[dict[str, Any]]:
    """Each version's totals over the chart's span against the busiest one (the gate: v2.0 against v1.9)."""
    rows = [r for r in query.breakdown("version", max_points=VERSION_POINTS)["rows"] if r["count"]][:8]
    if len(rows) < 2:
        return []
    base = rows[0]
    out = []
    for r in rows:
        delta = None
        if r is not base and base["p95_ms"] and r["p95_ms"] is not None:
            delta = r["p95_ms"] / base["p95_ms"] - 1
        out.append(
            {
                "version": r["key"],
                "count": r["count"],
                "p50": _ms(r["p50_ms"]),
                "p95": _ms(r["p95_ms"]),
                "p99": _ms(r["p99_ms"]),
                "error_rate": _rate(r["error_rate"]),
                "delta": None if delta is None else f"{delta * 100:+.0f}%",
                "worse": delta is not None and delta >= 0.1,
                "baseline": r is base,
            }
        )
    return out


def build_regressions(ctx: Context) -> dict[str, Any]:
    query = ctx.query()
    result = query.series(qs=(0.95,))
    points = _series_points(result)
    if not any(p["count"] for p in points):
        return _empty()
    markers = _deployment_markers(ctx, result["window"]["start"], result["window"]["end"])
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "P95",
            "x": [p["t"] for p in points],
            "y": [p["p95_ms"] for p in points],
            "line": {"color": fig.PERCENTILE_COLOURS["p95_ms"], "width": 2},
            "hovertemplate": "%{y:,.1f} ms",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "error rate %",
            "x": [p["t"] for p in points],
            "y": [None if p["error_rate"] is None else round(100 * p["error_rate"], 3) for p in points],
            "yaxis": "y2",
            "line": {"color": "#d1495b", "width": 1},
            "hovertemplate": "%{y:.2f}%",
        },
    ]
    if markers:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "deployments",
                "x": [m["at"] for m in markers],
                "y": [0 for _ in markers],
                "marker": {"symbol": "triangle-up", "size": 11, "color": "#3b6fd4"},
                "text": [f"{m['version']} ({m['environment']}): {', '.join(m['agents'])}" for m in markers],
                "hovertemplate": "%{text}<extra>deploy</extra>",
            }
        )
    changes = overlays.change_points(ctx.filters, ctx.user)
    marks = fig.vertical_markers([(c.at.isoformat(), c.label) for c in changes], colour_="#d1495b")
    notes = [f"{c.label}: {c.evidence}" for c in changes[:5]]
    if not changes:
        notes.append(
            "No regression flag or detected step in this window (flags come from the hourly version and step "
            "checks, or from a person on an agent's version chart)."
        )
    return {
        "figure": fig.figure(
            data,
            fig.layout(
                y_title="P95 latency (ms)",
                x_title="time (UTC)",
                yaxis2={
                    "title": {"text": "errors (%)"},
                    "overlaying": "y",
                    "side": "right",
                    "rangemode": "tozero",
                    "showgrid": False,
                },
                **marks,
            ),
        ),
        "notes": notes,
    }


# --- subset comparison (department / team / agent) and intents -------------------------------------


def build_comparison(ctx: Context) -> dict[str, Any]:
    by = _comparison_dimension(ctx)
    rows = [r for r in ctx.query().breakdown(by)["rows"] if r["count"]][:25]
    if not rows:
        return _empty()
    rows.sort(key=lambda r: -(r["p95_ms"] or 0.0))
    links = []
    for r in rows:
        if r["key"] == "(none)":
            links.append("")  # agents without a team: nothing to narrow to
        elif by == "agent":
            links.append(ctx.link("dashboard:agent", r["key"], agent=None))
        else:
            links.append(ctx.link("dashboard:performance", **{by: r["key"]}))
    data = [
        {
            "type": "bar",
            "orientation": "h",
            "name": "P95",
            "y": [r["key"] for r in rows],
            "x": [r["p95_ms"] for r in rows],
            "marker": {"color": fig.PERCENTILE_COLOURS["p95_ms"]},
            "customdata": links,
            "hovertext": [f"{r['count']:,} req, {_rate(r['error_rate'])} errors" for r in rows],
            "hovertemplate": "%{y}: %{x:,.1f} ms P95 (%{hovertext})<extra></extra>",
        },
        {
            "type": "bar",
            "orientation": "h",
            "name": "P50",
            "y": [r["key"] for r in rows],
            "x": [r["p50_ms"] for r in rows],
            "marker": {"color": fig.PERCENTILE_COLOURS["p50_ms"]},
            "customdata": links,
            "hovertemplate": "%{y}: %{x:,.1f} ms P50<extra></extra>",
        },
    ]
    height = max(220, 26 * len(rows) + 80)
    return {
        "figure": fig.figure(
            data,
            fig.layout(
                x_title="latency (ms)",
                height=height,
                barmode="group",
                hovermode="closest",
                yaxis={"autorange": "reversed", "rangemode": "normal"},
            ),
        ),
        "navigate": True,
        "title_suffix": f"by {by}",
        "notes": [f"Click a bar to narrow the dashboard to that {by}."],
    }


def build_intents(ctx: Context) -> dict[str, Any]:
    rows = [r for r in ctx.query().breakdown("intent")["rows"] if r["count"]][:20]
    if not rows:
        return _empty()
    return {
        "figure": fig.figure(
            [
                {
                    "type": "bar",
                    "name": PERCENTILE_NAMES[k],
                    "x": [r["key"] for r in rows],
                    "y": [r[k] for r in rows],
                    "marker": {"color": fig.PERCENTILE_COLOURS[k]},
                    "customdata": [
                        "" if r["key"] == "(none)" else ctx.link("dashboard:performance", intent=r["key"]) for r in rows
                    ],
                    "hovertemplate": "%{y:,.1f} ms",
                }
                for k in PERCENTILES
            ],
            fig.layout(y_title="latency (ms)", barmode="group"),
        ),
        "navigate": True,
        "notes": ["Click a bar to narrow the dashboard to that intent."],
    }


# --- 4.15 phases, 4.9 dependencies ------------------------------------------------------------------


def build_phases(ctx: Context) -> dict[str, Any]:
    result = ctx.query().timing_breakdown("phase")
    rows = [r for r in result["rows"] if r["per_trace_ms"]]
    if not rows:
        return _empty("These requests carry no phase timings.")
    data = [
        {
            "type": "pie",
            "hole": 0.45,
            "labels": [r["name"] for r in rows],
            "values": [r["per_trace_ms"] for r in rows],
            "hovertext": [f"mean {_ms(r['mean_ms'])} per call" for r in rows],
            "hovertemplate": "%{label}: %{value:,.1f} ms per request (%{percent})<br>%{hovertext}<extra></extra>",
            "textinfo": "percent",
            "textposition": "inside",
            "sort": False,
            "marker": {"colors": [fig.colour(i) for i in range(len(rows))]},
        }
    ]
    return {
        "figure": fig.figure(
            data, fig.layout(legend=True, hovermode="closest", margin={"l": 16, "r": 16, "t": 28, "b": 16})
        ),
        "notes": [
            f"Mean time per request in each phase over {result['traces']:,} requests.",
            f"Cache hits: {_rate(ctx.query().summary(qs=())['cache_hit_rate'])} of these requests"
            " (response, prompt or embedding cache, as the traces report them).",
            *([shift] if (shift := overlays.slowdown(ctx.filters, ctx.user, ctx.now)) else []),
        ],
    }


def build_dependencies(ctx: Context) -> dict[str, Any]:
    result = ctx.query().timing_breakdown("dependency")
    rows = [r for r in result["rows"] if r["calls"]][:20]
    if not rows:
        return _empty("These requests carry no dependency calls.")
    rows.sort(key=lambda r: (r["mean_start_ms"] or 0.0, r["name"]))
    kinds = sorted({r["kind"] for r in rows})
    data = []
    for i, kind in enumerate(kinds):
        mine = [r for r in rows if r["kind"] == kind]
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": kind,
                "y": [f"{r['kind']}: {r['name']}" for r in mine],
                "base": [r["mean_start_ms"] for r in mine],
                "x": [r["mean_ms"] for r in mine],
                "marker": {"color": fig.colour(i)},
                "hovertext": [
                    f"{r['calls']:,} calls, {_rate(r['error_rate'])} errors, "
                    f"{(r['share_of_latency'] or 0) * 100:.1f}% of latency"
                    for r in mine
                ],
                "hovertemplate": "%{y}: starts at %{base:,.0f} ms, takes %{x:,.1f} ms<br>%{hovertext}<extra></extra>",
            }
        )
    order = [f"{r['kind']}: {r['name']}" for r in rows]
    height = max(220, 26 * len(rows) + 80)
    return {
        "figure": fig.figure(
            data,
            fig.layout(
                x_title="ms since the request started (mean)",
                height=height,
                hovermode="closest",
                barmode="overlay",
                yaxis={
                    "categoryorder": "array",
                    "categoryarray": order,
                    "autorange": "reversed",
                    "rangemode": "normal",
                },
            ),
        ),
        "notes": ["Each bar starts at the call's mean start offset and is as long as its mean duration."],
    }


# --- 4.10 SLO compliance, 4.11 capacity, 4.12 error patterns ------------------------------------------


def build_slo(ctx: Context) -> dict[str, Any]:
    statuses = overlays.slo_statuses(ctx.filters, ctx.user)
    if not statuses:
        return _empty(
            "No SLO is defined for the agents in this view. When SLOs exist, every agent's compliance and "
            "remaining error budget appear here: green above 99%, yellow 95–99%, red below 95%."
        )
    cells = [
        {
            "agent": s.agent,
            "href": ctx.link("dashboard:agent", s.agent, agent=None),
            "slo": s.slo,
            "compliance": f"{s.compliance * 100:.2f}%",
            "budget": f"{s.budget_remaining * 100:.0f}%",
            "colour": fig.slo_colour(s.compliance),
        }
        for s in sorted(statuses.values(), key=lambda s: s.compliance)
    ]
    return {"grid": cells}


def build_capacity(ctx: Context) -> dict[str, Any]:
    by = _comparison_dimension(ctx)
    if by == "version":
        by = "environment"
    result = ctx.query().series(by, limit=8, qs=())
    if not _has_traffic(result):
        return _empty()
    data = []
    for i, series in enumerate(result["series"]):
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "stackgroup": "throughput",
                "name": series["key"],
                "x": [p["t"] for p in series["points"]],
                "y": [p["throughput_rps"] for p in series["points"]],
                "line": {"width": 0.5, "color": fig.colour(i)},
                "hovertemplate": "%{y:.2f} req/s",
            }
        )
    capacity, configured, in_scope = _capacity_rps(ctx)
    shapes, annotations, notes = [], [], []
    if capacity > 0:
        shape, note = fig.horizontal_line(capacity, f"capacity {_per_s(capacity)}", "#d1495b")
        shapes.append(shape)
        annotations.append(note)
        peak = max(
            sum(s["points"][j]["throughput_rps"] or 0.0 for s in result["series"])
            for j in range(len(result["series"][0]["points"]))
        )
        if configured == in_scope:
            notes.append(f"Peak utilization {100 * peak / capacity:.1f}% of the configured {_per_s(capacity)}.")
        else:
            notes.append(
                f"Capacity is set for {configured} of {in_scope} agents in scope (the line sums those); "
                "utilization is not computed."
            )
    else:
        notes.append("No capacity is configured for these agents (admin: Agent capacities).")
    outlook = overlays.capacity_forecast(ctx.filters, ctx.user, ctx.now)
    if outlook is None:
        notes.append("The 7-day forecast needs at least 3 days of traffic in this scope.")
    else:
        start, end = ctx.filters.window(ctx.now)
        if end - start >= timedelta(hours=24):
            data.extend(_forecast_traces(outlook))
        else:
            notes.append("Widen the range to 24 h or more to see the 7-day forecast band on the chart.")
        notes.extend(_forecast_notes(outlook, ctx.now))
    return {
        "figure": fig.figure(
            data, fig.layout(y_title="requests / s", x_title="time (UTC)", shapes=shapes, annotations=annotations)
        ),
        "notes": notes,
    }


def _forecast_traces(outlook: Any) -> list[dict[str, Any]]:
    """The next 7 days: the 80% band (low edge, then the high edge filled down to it) and the forecast line."""
    hours = 7 * 24
    x = [h.isoformat() for h in outlook.forecast.hours(hours)]
    band = {"type": "scatter", "mode": "lines", "x": x, "line": {"width": 0}, "hoverinfo": "skip"}
    return [
        band
        | {"name": "forecast 10%", "y": np.round(outlook.forecast.low_rps[:hours], 4).tolist(), "showlegend": False},
        band
        | {
            "name": "80% band",
            "y": np.round(outlook.forecast.high_rps[:hours], 4).tolist(),
            "fill": "tonexty",
            "fillcolor": "rgba(59, 111, 212, 0.15)",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "forecast",
            "x": x,
            "y": np.round(outlook.forecast.mean_rps[:hours], 4).tolist(),
            "line": {"color": "#3b6fd4", "width": 1.5, "dash": "dash"},
            "hovertemplate": "%{y:.2f} req/s forecast",
        },
    ]


def _forecast_notes(outlook: Any, now: datetime) -> list[str]:
    notes = [outlook.forecast.explanation, f"Forecast peak over the next 7 days: {_per_s(outlook.peak_rps_7d)}."]
    if outlook.capacity_rps is None:
        notes.append(
            f"Capacity dates need a capacity for every agent in scope ({outlook.agents_with_capacity} of "
            f"{outlook.agents} have one)."
        )
        return notes
    utilization = outlook.utilization_7d()
    notes[-1] = notes[-1][:-1] + f", {utilization * 100:.0f}% of the {_per_s(outlook.capacity_rps)} capacity."
    reach = len(outlook.forecast.mean_rps) // 24
    for level, at in sorted(outlook.reaches.items()):
        early = outlook.reaches_early.get(level)
        soonest = "" if early is None else f" (the band's upper edge: {_in_days(early, now)})"
        if at is None:
            notes.append(f"{level * 100:.0f}% of capacity: not reached within {reach} days{soonest}.")
        else:
            notes.append(
                f"{level * 100:.0f}% of capacity reached {at:%a %d %b %H:00} UTC, {_in_days(at, now)}{soonest}."
            )
    return notes


def _in_days(at: datetime, now: datetime) -> str:
    return f"in {max(0.0, (at - now).total_seconds() / 86400):.1f} days"


def build_error_patterns(ctx: Context) -> dict[str, Any]:
    failed = ctx.query()
    if failed.scope.statuses is None:
        # Only the failed requests' rows: a few percent of the agent view.
        failed.scope = replace(failed.scope, statuses=FAILED_STATUS_CODES)
    rows = failed.cross("error_type", "agent")["rows"]
    totals = {r["key"]: r["count"] for r in ctx.query().breakdown("agent", qs=())["rows"]}
    failing = [r for r in rows if r["error_type"] != "none" and r["errors"] + r["timeouts"]]
    if not failing:
        return _empty("No errors or timeouts in this time range.")
    anomalies = overlays.error_anomalies(ctx.filters, ctx.user, ctx.now)
    ids, labels, parents, values, colours, texts = ["errors"], ["all errors"], [""], [0], ["rgba(0,0,0,0)"], [""]
    by_type: dict[str, int] = {}
    for r in failing[:200]:
        failures = r["errors"] + r["timeouts"]
        by_type[r["error_type"]] = by_type.get(r["error_type"], 0) + failures
        rate = failures / totals[r["agent"]] if totals.get(r["agent"]) else 0.0
        severity = "high" if rate >= 0.05 else "medium" if rate >= 0.01 else "low"
        reason = anomalies.get((r["error_type"], r["agent"]))
        ids.append(f"{r['error_type']}/{r['agent']}")
        labels.append(r["agent"] + (" ⚠" if reason else ""))
        parents.append(r["error_type"])
        values.append(failures)
        colours.append({"high": "#d1495b", "medium": "#e9a03b", "low": "#8d99ae"}[severity])
        texts.append(
            f"{rate * 100:.2f}% of the agent's requests, severity {severity}"
            + (f"; anomaly: {reason}" if reason else "")
        )
    for error_type, count in by_type.items():
        ids.append(error_type)
        labels.append(error_type)
        parents.append("errors")
        values.append(count)
        colours.append(fig.ERROR_COLOURS.get(error_type, fig.NEUTRAL))
        texts.append("")
    values[0] = sum(by_type.values())
    data = [
        {
            "type": "treemap",
            "ids": ids,
            "labels": labels,
            "parents": parents,
            "values": values,
            "text": texts,
            "branchvalues": "total",
            "marker": {"colors": colours},
            "hovertemplate": "%{label}: %{value:,} failed requests<br>%{text}<extra></extra>",
            "maxdepth": 3,
        }
    ]
    notes = ["Boxes: error type, then agent; red ≥ 5% of the agent's requests, amber ≥ 1%, grey below."]
    if anomalies:
        notes.extend(f"⚠ {reason}" for reason in list(anomalies.values())[:3])
    else:
        notes.append("⚠ marks an error rate of the last 3 hours that is anomalous for its agent; none now.")
    return {
        "figure": fig.figure(
            data, fig.layout(legend=False, hovermode="closest", margin={"l": 4, "r": 4, "t": 8, "b": 4})
        ),
        "notes": notes,
    }


# --- 4.4 slow requests, drill-down lists --------------------------------------------------------------


def build_slow(ctx: Context) -> dict[str, Any]:
    result = traces.slow_requests(ctx.filters, ctx.user, ctx.now)
    if not result.rows:
        return _empty()
    column = ctx.options.get("sort", "latency_ms")
    descending = ctx.options.get("order", "desc") != "asc"
    rows = traces.sort_rows(result.rows, column, descending)
    phase_names = result.phase_names
    for row in rows:
        total = sum(row["phases"].values()) or 1.0
        row["phase_bars"] = [
            {
                "name": name,
                "ms": row["phases"].get(name, 0.0),
                "pct": round(100 * row["phases"].get(name, 0.0) / total, 1),
                "colour": fig.colour(i),
            }
            for i, name in enumerate(phase_names)
            if row["phases"].get(name)
        ]
        row["href"] = reverse("dashboard:request", args=[row["trace_id"]])
        row["agent_href"] = ctx.link("dashboard:agent", row["agent"], agent=None)
    columns = []
    for key, heading in traces.SLOW_COLUMNS.items():
        flip = "asc" if key == column and descending else "desc"
        columns.append(
            {
                "key": key,
                "heading": heading,
                "href": ctx.link("dashboard:panel", "slow", sort=key, order=flip),
                "active": key == column,
                "descending": descending,
            }
        )
    return {
        "rows": rows,
        "columns": columns,
        "phase_names": [{"name": n, "colour": fig.colour(i)} for i, n in enumerate(phase_names)],
        "csv": ctx.link("dashboard:slow-csv", sort=column, order="desc" if descending else "asc"),
        "notes": [
            "Root cause: the phase or call with the most time over its agent's p50 (its successful requests "
            "of the day before), as a share of the request's own excess."
        ],
    }


def build_contributors(ctx: Context) -> dict[str, Any]:
    rows = [r for r in ctx.query().breakdown("agent")["rows"] if r["count"]]
    if not rows:
        return _empty()
    failures = ctx.options.get("sort") == "failures"
    if failures:
        rows = [r for r in rows if r["errors"] + r["timeouts"]]
        rows.sort(key=lambda r: -(r["errors"] + r["timeouts"]))
    else:
        rows.sort(key=lambda r: -r["count"])
    start, end = ctx.filters.window(ctx.now)
    return {
        "contributors": [
            {
                "agent": r["key"],
                "href": ctx.link("dashboard:agent", r["key"], agent=None),
                "count": r["count"],
                "failures": r["errors"] + r["timeouts"],
                "error_rate": _rate(r["error_rate"]),
                "p95": _ms(r["p95_ms"]),
            }
            for r in rows[:15]
        ],
        "failures": failures,
        "window": f"{start:%Y-%m-%d %H:%M} – {end:%H:%M} UTC",
    }


# Panels that draw SLOs or regression flags: their cache key also follows changes to those.
OVERLAY_PANELS = frozenset({"latency", "errors", "agents", "slo", "distribution", "regressions"})

# What a panel plots, for its alert badges and its "Create alert" link (A4.3).
ALERT_GROUPS = {
    "kpis": "latency",
    "latency": "latency",
    "agents": "latency",
    "heatmap": "latency",
    "distribution": "latency",
    "versions": "latency",
    "phases": "latency",
    "errors": "errors",
    "error_patterns": "errors",
    "throughput": "throughput",
    "capacity": "capacity",
}
# The rule a "Create alert" link proposes for each group.
ALERT_DEFAULTS = {
    "latency": {"metric": "latency", "quantile": "0.95"},
    "errors": {"metric": "error_rate", "threshold": "0.05"},
    "throughput": {"metric": "throughput", "comparison": "lte"},
    "capacity": {"metric": "capacity", "utilization": "0.8", "comparison": "lte", "threshold": "14"},
}


def new_alert_link(filters: MetricFilters, group: str) -> str:
    """The alert-rule form for what a panel shows: its metric, scope, environment and filters."""
    params = dict(ALERT_DEFAULTS[group])
    for key in ("agent", "team", "department", "version", "intent", "tier", "status"):
        value = getattr(filters, key)
        if value and not (key == "version" and value == "latest"):
            params[key] = value
    if filters.environment != "all":
        params["environment"] = filters.environment
    return reverse("slos:rule-new") + "?" + urlencode(params)


PANELS: dict[str, Panel] = {
    p.name: p
    for p in (
        Panel(
            "kpis",
            "Latency and traffic",
            "4.1",
            "latency_kpi.fleet",
            build_kpis,
            "dashboard/panels/kpis.html",
            wide=True,
        ),
        Panel(
            "latency",
            "Latency percentiles",
            "4.1",
            "latency_kpi.fleet",
            build_latency,
            description="P50, P95 and P99 per time bucket; per environment when Environment is All.",
        ),
        Panel(
            "errors",
            "Errors by type",
            "4.2",
            "error_rate",
            build_errors,
            description="Share of requests that failed, stacked by error type, with version rollouts.",
        ),
        Panel(
            "throughput",
            "Throughput",
            "4.3",
            "throughput",
            build_throughput,
            description="Requests per second with the configured capacity and utilization.",
        ),
        Panel(
            "agents",
            "Agent performance",
            "4.5",
            "agent_comparison",
            build_agents,
            "dashboard/panels/agents.html",
            description="P95 per agent with its 7-day trend; click an agent for its page.",
            wide=True,
            live=False,
        ),
        Panel(
            "comparison",
            "Comparison",
            "4.5",
            "agent_comparison",
            build_comparison,
            description="The members of the current scope side by side.",
        ),
        Panel(
            "intents",
            "Intent categories",
            "4.5",
            "agent_comparison",
            build_intents,
            description="Latency per intent category.",
        ),
        Panel(
            "heatmap",
            "Latency percentile heatmap",
            "4.6",
            "latency_heatmap",
            build_heatmap,
            description="P50 to P99.9 over time; darker is slower.",
        ),
        Panel(
            "parity",
            "Environment parity",
            "4.7",
            "environment_parity",
            build_parity,
            "dashboard/panels/parity.html",
            description="The same scope in development, staging and production.",
        ),
        Panel(
            "versions",
            "Version benchmark",
            "4.8",
            "version_benchmark",
            build_versions,
            "dashboard/panels/versions.html",
            description="P95 per version over time, and each version against the busiest one.",
        ),
        Panel(
            "dependencies",
            "Dependency waterfall",
            "4.9",
            "dependency_waterfall",
            build_dependencies,
            description="Where in a request each dependency is called and for how long.",
        ),
        Panel("slo", "SLO compliance", "4.10", "slo_compliance", build_slo, "dashboard/panels/slo.html"),
        Panel(
            "capacity",
            "Capacity planner",
            "4.11",
            "capacity_planner",
            build_capacity,
            description="Throughput stacked by the scope's members against capacity.",
        ),
        Panel(
            "error_patterns",
            "Error patterns",
            "4.12",
            "error_patterns",
            build_error_patterns,
            description="Failed requests by error type and agent.",
        ),
        Panel(
            "distribution",
            "Latency distribution",
            "4.13",
            "latency_distribution",
            build_distribution,
            description="How many requests took how long, with percentile markers.",
        ),
        Panel(
            "regressions",
            "Regression timeline",
            "4.14",
            "regression_timeline",
            build_regressions,
            description="P95 and error rate with every deployment in scope.",
        ),
        Panel(
            "phases",
            "Latency by phase",
            "4.15",
            "latency_breakdown",
            build_phases,
            description="Mean time per request spent in each phase.",
        ),
        Panel(
            "slow",
            "Slow requests",
            "4.4",
            "slow_requests",
            build_slow,
            "dashboard/panels/slow.html",
            description="The slowest requests in the window; click one for its trace.",
            wide=True,
            live=False,
        ),
        Panel(
            "contributors",
            "Agents in this bucket",
            "4.2",
            "error_rate",
            build_contributors,
            "dashboard/panels/contributors.html",
        ),
    )
}

FLEET_LAYOUT = (
    "kpis",
    "latency",
    "errors",
    "throughput",
    "heatmap",
    "agents",
    "comparison",
    "intents",
    "distribution",
    "parity",
    "versions",
    "regressions",
    "phases",
    "dependencies",
    "slo",
    "capacity",
    "error_patterns",
    "slow",
)
AGENT_LAYOUT = (
    "kpis",
    "latency",
    "phases",
    "dependencies",
    "errors",
    "throughput",
    "capacity",
    "versions",
    "regressions",
    "parity",
    "distribution",
    "heatmap",
    "slo",
    "slow",
)
