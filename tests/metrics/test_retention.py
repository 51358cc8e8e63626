"""Retention: raw traces past PERFOPS_RAW_RETENTION_DAYS go, rollups past their grain's window go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection

from perfops.metrics.levels import Grain, View, kept_from
from perfops.metrics.models import Rollup, RollupState
from perfops.metrics.retention import apply_retention
from perfops.telemetry import partitions
from perfops.telemetry.models import Trace
from tests import factories


def old_trace(agent, started: datetime) -> Trace:
    partitions.ensure_partitions({started.date()})
    return Trace.objects.create(
        agent=agent, environment="production", version="1.0.0", started_at=started, latency_ms=10.0, status="ok"
    )


def rollup_row(grain: int, epoch_s: int) -> Rollup:
    return Rollup.objects.create(
        grain_s=grain,
        view=View.TOTAL,
        bucket_epoch_s=epoch_s,
        environment=0,
        status=3,
        tier=4,
        count=1,
        latency_sum_ms=1.0,
        latency_min_ms=1.0,
        latency_max_ms=1.0,
        sketch=b"",
    )


@pytest.mark.django_db
def test_raw_traces_past_retention_go_and_recent_ones_stay(payments, capsys):
    agent = factories.agent("pay-bot", payments)
    now = datetime.now(UTC)
    gone = old_trace(agent, now - timedelta(days=33))
    kept = old_trace(agent, now - timedelta(days=2))
    result = apply_retention(now)
    assert not Trace.objects.filter(pk=gone.pk).exists()
    assert Trace.objects.filter(pk=kept.pk).exists()
    if connection.vendor == "postgresql":
        assert result["raw_days_dropped"] >= 1
        assert (now - timedelta(days=33)).date() not in partitions.existing_partition_days()
    else:
        assert result["raw_traces_deleted"] == 1
    call_command("apply_retention")
    assert "Dropped" in capsys.readouterr().out


@pytest.mark.django_db
def test_each_grain_keeps_rollups_for_its_own_window():
    now = datetime.now(UTC)
    hour = int(now.timestamp()) // 3600 * 3600
    rows = {
        "30 s, a day old": rollup_row(Grain.S30, hour - 86400),
        "30 s, recent": rollup_row(Grain.S30, hour),
        "5 min, a week old": rollup_row(Grain.M5, hour - 7 * 86400),
        "5 min, a day old": rollup_row(Grain.M5, hour - 86400),
        "hour, 500 days old": rollup_row(Grain.H1, hour - 500 * 86400),
        "hour, 300 days old": rollup_row(Grain.H1, hour - 300 * 86400),
        "day, 401 days old": rollup_row(Grain.D1, hour // 86400 * 86400 - 401 * 86400),
    }
    apply_retention(now)
    left = {name for name, row in rows.items() if Rollup.objects.filter(pk=row.pk).exists()}
    assert left == {"30 s, recent", "5 min, a day old", "hour, 300 days old"}
    assert kept_from(Grain.S30, now) <= hour


@pytest.mark.django_db
def test_operators_see_the_rollup_state_in_the_admin(client, superuser, manager):
    RollupState.get()
    client.force_login(superuser)
    response = client.get("/admin/metrics/rollupstate/")
    assert response.status_code == 200
    assert b"Buckets waiting" in response.content
    client.force_login(manager)
    assert client.get("/admin/metrics/rollupstate/").status_code == 403
