"""Plotly figures as plain dicts: data in, figure out, no request and no database.

plotly.js draws what these return. They are plain dicts rather than `plotly.graph_objects`
figures because validating a graph object costs 10–50 ms per figure, a third of a panel's budget,
for figures whose shape these functions already fix. Colours are the same in light and dark
themes; text and grid colours come from the page (dashboard.js sets them from CSS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PERCENTILE_COLOURS = {"p50_ms": "#2a9d8f", "p95_ms": "#e9a03b", "p99_ms": "#d1495b"}
PERCENTILE_DASH = {"p50_ms": "dot", "p95_ms": "solid", "p99_ms": "dash"}
ENVIRONMENT_COLOURS = {"production": "#3b6fd4", "staging": "#9b5de5", "development": "#2a9d8f"}
ERROR_COLOURS = {
    "timeout": "#d1495b",
    "validation": "#e9a03b",
    "llm_error": "#9b5de5",
    "dependency_error": "#3b6fd4",
    "rate_limited": "#2a9d8f",
    "other": "#8d99ae",
}
PALETTE = ("#3b6fd4", "#e9a03b", "#2a9d8f", "#d1495b", "#9b5de5", "#8d6e63", "#00a5cf", "#c9a227", "#6c757d", "#f28482")
SLO_COLOURS = {"green": "#2a9d8f", "yellow": "#e9a03b", "red": "#d1495b", "none": "#8d99ae"}
NEUTRAL = "#8d99ae"
FAILED = "#d1495b"
# Colours for kinds of calls in a waterfall: never the red that marks a failed call.
KIND_COLOURS = tuple(c for c in PALETTE if c != FAILED)


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def layout(
    *, x_title: str = "", y_title: str = "", height: int = 300, legend: bool = True, **extra: Any
) -> dict[str, Any]:
    """The common layout: transparent, compact, legend on top, hover across series."""
    base: dict[str, Any] = {
        "height": height,
        "margin": {"l": 56, "r": 16, "t": 52 if legend else 28, "b": 44},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"size": 12},
        "showlegend": legend,
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "font": {"size": 11}},
        "hovermode": "x unified",
        "xaxis": {"title": {"text": x_title}, "automargin": True},
        "yaxis": {"title": {"text": y_title}, "rangemode": "tozero", "automargin": True},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


# Trace attributes that plotly draws as text and that can hold names from traces (versions, phases, calls).
_TEXT_KEYS = ("name", "labels", "parents", "ids", "x", "y", "text", "hovertext")


def inert(value: Any) -> Any:
    """Text that plotly shows as written: it renders a subset of HTML (links, bold) in labels and hovers."""
    if isinstance(value, str):
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if isinstance(value, list):
        return [inert(v) for v in value]
    return value


def figure(data: Sequence[dict[str, Any]], layout_: dict[str, Any]) -> dict[str, Any]:
    """The figure, with every label from the data made inert (hovertemplates are ours and keep their markup)."""
    data = [{k: inert(v) if k in _TEXT_KEYS else v for k, v in trace.items()} for trace in data]
    for note in layout_.get("annotations", []):
        note["text"] = inert(note["text"])
    for key, axis in layout_.items():
        if key.startswith(("xaxis", "yaxis")) and isinstance(axis, dict) and "categoryarray" in axis:
            axis["categoryarray"] = inert(axis["categoryarray"])
    if "yaxis2" in layout_:
        # Room for the right-hand axis and its title.
        layout_["margin"] = {**layout_["margin"], "r": 64}
        layout_["yaxis2"] = {"automargin": True, **layout_["yaxis2"]}
    return {"data": list(data), "layout": layout_}


def vertical_markers(marks: Sequence[tuple[str, str]], *, colour_: str = NEUTRAL) -> dict[str, Any]:
    """Dashed vertical lines with a label at the top, e.g. version rollouts: [(iso time, label)]."""
    shapes = []
    annotations = []
    for i, (at, label) in enumerate(marks):
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": at,
                "x1": at,
                "y0": 0,
                "y1": 1,
                "line": {"color": colour_, "width": 1, "dash": "dot"},
            }
        )
        annotations.append(
            {
                "x": at,
                "y": 0.99 - 0.07 * (i % 3),
                "xref": "x",
                "yref": "paper",
                "text": label,
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
                "font": {"size": 10, "color": colour_},
            }
        )
    return {"shapes": shapes, "annotations": annotations}


def horizontal_line(y: float, label: str, colour_: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A threshold line across the plot (an SLO, a capacity) and its label."""
    shape = {
        "type": "line",
        "xref": "paper",
        "yref": "y",
        "x0": 0,
        "x1": 1,
        "y0": y,
        "y1": y,
        "line": {"color": colour_, "width": 1.5, "dash": "dash"},
    }
    note = {
        "x": 1,
        "y": y,
        "xref": "paper",
        "yref": "y",
        "text": label,
        "showarrow": False,
        "xanchor": "right",
        "yanchor": "bottom",
        "font": {"size": 10, "color": colour_},
    }
    return shape, note


def sparkline_points(values: Sequence[float | None], width: int = 96, height: int = 24) -> str:
    """An SVG polyline's points for a small trend line; gaps (None) are skipped."""
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return ""
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    points = []
    for i, value in enumerate(values):
        if value is None:
            continue
        y = height - 2 - (value - low) / span * (height - 4)
        points.append(f"{i * step:.1f},{y:.1f}")
    return " ".join(points)


def slo_colour(compliance: float | None) -> str:
    """The spec's compliance colours: green above 99%, yellow 95–99%, red below 95%."""
    if compliance is None:
        return "none"
    if compliance > 0.99:
        return "green"
    if compliance >= 0.95:
        return "yellow"
    return "red"
