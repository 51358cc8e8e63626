"""Performance reports: PDF with charts and tables (its text read back), formula-safe CSV, progress, ownership."""

from __future__ import annotations

import csv
import io

import pytest
from auditlog.models import LogEntry
from django.test import Client
from django.urls import reverse
from pypdf import PdfReader

from interventions import reports
from interventions.models import Recommendation, Report
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery


def pdf_text(body: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(body)).pages)


def test_the_pdf_holds_the_agents_and_numbers_the_dashboard_shows(
    rolled_up, superuser, django_capture_on_commit_callbacks
):
    agent = rolled_up.agents["pay-bot"]
    Recommendation.objects.create(
        agent=agent,
        environment="production",
        title="Enable prompt caching",
        rationale="LLM phase is 80% of latency.",
        changes={"prompt_cache": True},
    )
    with django_capture_on_commit_callbacks(execute=True):
        report = reports.request_report(MetricFilters(range="7d", department="payments"), "pdf", superuser)
    report.refresh_from_db()
    assert (report.status, report.progress) == ("ready", 100)
    body = bytes(report.content or b"")
    assert body.startswith(b"%PDF")
    text = pdf_text(body)
    expected = MetricsQuery(MetricFilters(range="7d", department="payments"), superuser, now=rolled_up.now).summary()
    assert f"{expected['count']:,}" in text
    for slug in ("pay-bot", "refund-bot", "ledger-bot"):
        assert slug in text
    assert "lab-bot" not in text  # another department
    assert "Enable prompt caching" in text
    assert "department payments" in text
    assert len(PdfReader(io.BytesIO(body)).pages[0].images) >= 1  # the charts are images
    assert LogEntry.objects.get_for_object(report).get().actor == superuser


def test_the_csv_is_formula_safe_and_a_report_is_its_creators(
    rolled_up, superuser, manager, django_capture_on_commit_callbacks
):
    Recommendation.objects.create(
        agent=rolled_up.agents["pay-bot"],
        environment="production",
        title="=cmd|' /C calc'!A0",
        rationale="@SUM(1)",
        changes={"prompt_cache": True},
    )
    with django_capture_on_commit_callbacks(execute=True):
        report = reports.request_report(MetricFilters(range="7d", department="payments"), "csv", superuser)
    report.refresh_from_db()
    rows = list(csv.reader(io.StringIO(bytes(report.content or b"").decode())))
    cells = [cell for row in rows for cell in row]
    assert "'=cmd|' /C calc'!A0" in cells
    assert "'@SUM(1)" in cells
    assert ["agent", "requests", "error rate", "p50 ms", "p95 ms", "p99 ms", "throughput req/s"] in rows
    client = Client()
    client.force_login(manager)
    assert client.get(reverse("interventions:report", args=[report.pk])).status_code == 404
    assert client.get(reverse("interventions:report-download", args=[report.pk])).status_code == 404


def test_export_from_the_dashboard_queues_a_report_with_its_filters(
    rolled_up, manager, django_capture_on_commit_callbacks
):
    client = Client()
    client.force_login(manager)
    page = client.get(reverse("dashboard:performance"), {"range": "7d", "department": "payments"}).content.decode()
    assert 'action="/interventions/reports/new"' in page
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(
            reverse("interventions:report-new"), {"range": "7d", "department": "payments", "format": "pdf"}
        )
    report = Report.objects.get()
    assert done["Location"] == reverse("interventions:report", args=[report.pk])
    assert (report.filters, report.created_by, report.status) == (
        {"range": "7d", "department": "payments"},
        manager,
        "ready",
    )
    download = client.get(reverse("interventions:report-download", args=[report.pk]))
    assert download["Content-Type"] == "application/pdf"
    assert "pay-bot" in pdf_text(download.content)
    refused = client.post(reverse("interventions:report-new"), {"range": "9y", "format": "pdf"})
    assert refused.status_code == 302
    assert Report.objects.count() == 1


@pytest.mark.django_db
def test_names_with_markup_stay_text_in_the_pdf(superuser, payments):
    from tests import factories

    factories.agent("pay-bot", payments)
    content = reports.Content(
        title="<b>bold</b> & <script>x</script>",
        scope="agent <i>",
        window=("a", "b"),
        summary={"count": 0, "error_rate": None, "p50_ms": None, "p95_ms": None, "p99_ms": None, "throughput_rps": 0.0},
        series=[],
        agents=[],
        recommendations=[{"agent": "a<b>", "title": "<font size=40>t</font>", "effect": "", "rationale": "<para>r"}],
    )
    text = pdf_text(reports.to_pdf(content))
    assert "<b>bold</b> & <script>x</script>" in text
    assert "<font size=40>t</font>" in text


def test_the_api_queues_a_report_and_serves_it_to_its_creator_only(
    rolled_up, superuser, manager, django_capture_on_commit_callbacks
):
    from tests import factories

    client = factories.api_as(manager, ["read"])
    refused = client.post("/api/v1/reports", {"format": "csv", "filters": {"tier": "glacial"}}, format="json")
    assert refused.status_code == 400
    assert "tier" in refused.json()["filters"]
    with django_capture_on_commit_callbacks(execute=True):
        made = client.post("/api/v1/reports", {"format": "csv", "filters": {"range": "7d"}}, format="json")
    assert made.status_code == 202
    pk = made.json()["id"]
    assert client.get(f"/api/v1/reports/{pk}").json()["status"] == "ready"
    body = client.get(f"/api/v1/reports/{pk}/download").content.decode()
    assert "pay-bot" in body
    assert "lab-bot" not in body  # the manager's departments only
    assert factories.api_as(superuser, ["read"]).get(f"/api/v1/reports/{pk}").status_code == 200
    other = factories.user("rita", "managers", [rolled_up.agents["lab-bot"].department])
    assert factories.api_as(other, ["read"]).get(f"/api/v1/reports/{pk}/download").status_code == 404
