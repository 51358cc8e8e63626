"""Performance reports (A4.8): the dashboard's figures for a filter set, as a PDF or a CSV, written in the background.

The content is gathered once (`gather`), through the same query layer as the dashboard and with the
creator's scope, then laid out: the PDF with reportlab (charts drawn by matplotlib as PNG), the CSV
with every cell made formula-safe. Progress is written to the report row step by step, so its page
shows how far a long range has got. Text from traces (agent names, versions) is never markup in
the PDF: table cells are plain strings and paragraphs are escaped.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from django.utils import timezone

from interventions.models import Recommendation, RegressionFlag, Report
from perfops.dashboard import overlays
from perfops.dashboard.traces import csv_safe
from perfops.metrics.filters import MetricFilters, parse_filters
from perfops.metrics.query import MetricsQuery, resolve_scope

logger = logging.getLogger(__name__)

AGENT_ROWS = 50


@dataclass
class Content:
    """What a report says, independent of its format."""

    title: str
    scope: str
    window: tuple[str, str]
    summary: dict[str, Any]
    series: list[dict[str, Any]]
    agents: list[dict[str, Any]]
    slos: list[dict[str, Any]] = field(default_factory=list)
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)


def describe_scope(filters: MetricFilters) -> str:
    parts = [f"{key} {value}" for key, value in filters.normalised().items() if key not in ("range", "start", "end")]
    return ", ".join(parts) or "the whole fleet, production"


def _progress(report: Report, percent: int, step: str) -> None:
    Report.objects.filter(pk=report.pk).update(progress=percent, step=step)


def gather(report: Report, now: datetime) -> Content:
    user = report.created_by
    filters = parse_filters(report.filters, now=now)
    query = MetricsQuery(filters, user, now=now)
    _progress(report, 10, "totals")
    summary = query.summary()
    _progress(report, 25, "series")
    series = query.series()["series"][0]["points"] if summary["count"] else []
    _progress(report, 45, "agents")
    agents = [row for row in query.breakdown("agent")["rows"] if row["count"]][:AGENT_ROWS]
    _progress(report, 60, "SLOs, recommendations, regressions")
    slos = [
        {"agent": s.agent, "slo": s.slo, "compliance": s.compliance, "target": s.target, "budget": s.budget_remaining}
        for s in sorted(overlays.slo_statuses(filters, user).values(), key=lambda s: s.compliance)
    ]
    scope = resolve_scope(filters, user)
    recommendations = Recommendation.objects.visible_to(user).filter(status=Recommendation.Status.OPEN)
    flags = RegressionFlag.objects.visible_to(user).exclude(status=RegressionFlag.Status.DISMISSED)
    if scope.agents is not None:
        recommendations = recommendations.filter(agent_id__in=scope.agents)
        flags = flags.filter(agent_id__in=scope.agents)
    elif scope.departments is not None:
        recommendations = recommendations.filter(agent__department_id__in=scope.departments)
        flags = flags.filter(agent__department_id__in=scope.departments)
    start, end = filters.window(now)
    return Content(
        title=report.title,
        scope=describe_scope(filters),
        window=(f"{start:%Y-%m-%d %H:%M}", f"{end:%Y-%m-%d %H:%M}"),
        summary=summary,
        series=series,
        agents=agents,
        slos=slos,
        recommendations=[
            {"agent": r.agent.slug, "title": r.title, "effect": r.expected_effect, "rationale": r.rationale}
            for r in recommendations.select_related("agent")[:20]
        ],
        flags=[
            {"agent": f.agent.slug, "version": f.version, "status": f.status, "summary": f.summary}
            for f in flags.select_related("agent")[:20]
        ],
    )


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


AGENT_HEADER = ["agent", "requests", "error rate", "p50 ms", "p95 ms", "p99 ms", "throughput req/s"]


def _agent_row(row: dict[str, Any]) -> list[str]:
    return [
        str(row["key"]),
        _number(row["count"]),
        _percent(row["error_rate"]),
        _number(row["p50_ms"]),
        _number(row["p95_ms"]),
        _number(row["p99_ms"]),
        _number(row["throughput_rps"], 3),
    ]


def kpis(content: Content) -> list[tuple[str, str]]:
    s = content.summary
    return [
        ("Requests", _number(s["count"])),
        ("Error rate", _percent(s["error_rate"])),
        ("P50", f"{_number(s['p50_ms'])} ms"),
        ("P95", f"{_number(s['p95_ms'])} ms"),
        ("P99", f"{_number(s['p99_ms'])} ms"),
        ("Throughput", f"{_number(s['throughput_rps'], 3)} req/s"),
    ]


def to_csv(content: Content) -> bytes:
    """Sections of rows; every cell formula-safe (OWASP CSV injection)."""
    out = io.StringIO()
    writer = csv.writer(out)

    def row(cells: list[Any]) -> None:
        writer.writerow([csv_safe(cell) for cell in cells])

    row(["perfops performance report", content.title])
    row(["scope", content.scope])
    row(["window (UTC)", content.window[0], content.window[1]])
    row([])
    row(["figure", "value"])
    for label, value in kpis(content):
        row([label, value])
    row([])
    row(AGENT_HEADER)
    for agent in content.agents:
        row(_agent_row(agent))
    row([])
    row(["agent", "SLO", "compliance", "target", "budget remaining"])
    for slo in content.slos:
        row([slo["agent"], slo["slo"], _percent(slo["compliance"]), _percent(slo["target"]), _percent(slo["budget"])])
    row([])
    row(["agent", "recommendation", "expected effect", "why"])
    for rec in content.recommendations:
        row([rec["agent"], rec["title"], rec["effect"], rec["rationale"]])
    row([])
    row(["agent", "version", "regression flag", "evidence"])
    for flag in content.flags:
        row([flag["agent"], flag["version"], flag["status"], flag["summary"]])
    return out.getvalue().encode("utf-8")


def _chart(content: Content, keys: list[tuple[str, str]], ylabel: str, scale: float = 1.0) -> bytes:
    """A line chart of the series as PNG bytes (matplotlib's Agg backend: no display, fonts bundled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.2, 2.4), dpi=110)
    times = [datetime.fromisoformat(p["t"].replace("Z", "+00:00")) for p in content.series]
    for key, label in keys:
        values = [None if p.get(key) is None else p[key] * scale for p in content.series]
        axes.plot(times, [float("nan") if v is None else v for v in values], label=label, linewidth=1.4)  # type: ignore[arg-type]
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def to_pdf(content: Content, report: Report | None = None) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    story: list[Any] = []

    def para(text: str, style: str = "BodyText") -> None:
        story.append(Paragraph(escape(text), styles[style]))

    def table(rows: list[list[str]], widths: list[float] | None = None) -> None:
        found = Table(rows, colWidths=widths, repeatRows=1)
        found.setStyle(
            TableStyle(
                [
                    ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                    ("FONT", (0, 1), (-1, -1), "Helvetica", 8),
                    ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.grey),
                    ("ALIGN", (1, 1), (-1, -1), "RIGHT"),
                    ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f4f8")]),
                ]
            )
        )
        story.append(found)
        story.append(Spacer(1, 0.4 * cm))

    para("perfops performance report", "Title")
    para(content.title, "Heading2")
    para(f"Scope: {content.scope}. Window: {content.window[0]} to {content.window[1]} UTC.")
    para(f"Generated {timezone.now():%Y-%m-%d %H:%M} UTC.")
    story.append(Spacer(1, 0.3 * cm))
    table([["figure", "value"], *[[label, value] for label, value in kpis(content)]], [5 * cm, 5 * cm])
    if content.series:
        if report is not None:
            _progress(report, 70, "charts")
        for keys, label, scale in (
            ([("p50_ms", "P50"), ("p95_ms", "P95"), ("p99_ms", "P99")], "latency (ms)", 1.0),
            ([("error_rate", "failed %")], "failed requests (%)", 100.0),
            ([("throughput_rps", "requests/s")], "throughput (req/s)", 1.0),
        ):
            story.append(Image(io.BytesIO(_chart(content, keys, label, scale)), width=17 * cm, height=5.6 * cm))
            story.append(Spacer(1, 0.2 * cm))
    if report is not None:
        _progress(report, 85, "tables")
    para("Agents", "Heading2")
    if content.agents:
        table([AGENT_HEADER, *[_agent_row(row) for row in content.agents]])
    else:
        para("No requests in this window.")
    if content.slos:
        para("SLO compliance", "Heading2")
        rows = [["agent", "SLO", "compliance", "target", "budget left"]]
        rows += [
            [s["agent"], s["slo"][:60], _percent(s["compliance"]), _percent(s["target"]), _percent(s["budget"])]
            for s in content.slos
        ]
        table(rows)
    para("Recommendations", "Heading2")
    if content.recommendations:
        for rec in content.recommendations:
            para(f"{rec['agent']}: {rec['title']}" + (f" ({rec['effect']})" if rec["effect"] else ""), "Heading4")
            para(rec["rationale"])
    else:
        para("No open recommendation for these agents.")
    if content.flags:
        para("Regression flags", "Heading2")
        table(
            [
                ["agent", "version", "status", "evidence"],
                *[[f["agent"], f["version"], f["status"], f["summary"][:80]] for f in content.flags],
            ]
        )
    buffer = io.BytesIO()
    SimpleDocTemplate(buffer, pagesize=A4, title=content.title, author="perfops").build(story)
    return buffer.getvalue()


def generate(report_id: int) -> str:
    """The task body: gather, lay out, store; progress on the row; a failure is recorded, not raised."""
    claimed = Report.objects.filter(pk=report_id, status=Report.Status.QUEUED).update(
        status=Report.Status.RUNNING, progress=1, step="starting"
    )
    if not claimed:
        return Report.objects.filter(pk=report_id).values_list("status", flat=True).first() or "missing"
    report = Report.objects.select_related("created_by").get(pk=report_id)
    try:
        content = gather(report, timezone.now())
        body = to_pdf(content, report) if report.format == Report.Format.PDF else to_csv(content)
    except Exception as exc:
        logger.exception("report %s failed", report_id)
        Report.objects.filter(pk=report_id).update(
            status=Report.Status.FAILED, detail=f"{type(exc).__name__}: {exc}"[:300], finished_at=timezone.now()
        )
        return Report.Status.FAILED
    Report.objects.filter(pk=report_id).update(
        status=Report.Status.READY,
        progress=100,
        step="done",
        content=body,
        size=len(body),
        finished_at=timezone.now(),
    )
    return Report.Status.READY


def request_report(filters: MetricFilters, fmt: str, user: Any, title: str = "") -> Report:
    """Queue a report of the filters for `user` (enqueued after the row commits)."""
    from auditlog.context import set_actor
    from django.db import transaction

    from interventions.tasks import generate_report

    with set_actor(user):
        report = Report.objects.create(
            format=fmt,
            filters=filters.normalised(),
            title=title or f"Performance of {describe_scope(filters)}",
            created_by=user,
        )
    transaction.on_commit(lambda: generate_report.delay(report.pk))
    return report
