"""The rollup: dirty buckets in, replaced rows out; never a double count, never a lost bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from perfops.metrics import rollup, storage
from perfops.metrics.filters import parse_filters
from perfops.metrics.levels import Grain, View, kept_from
from perfops.metrics.models import DirtyBucket, Rollup, RollupState
from perfops.metrics.query import MetricsQuery
from perfops.metrics.rollup import Lease, LeaseLost, catch_up, tick
from tests import factories
from tests.metrics.conftest import ingest


def snapshot() -> list[tuple]:
    """Every rollup row, comparable across runs."""
    return sorted(Rollup.objects.values_list(*storage.COLUMNS))


def total(grain: int, view: View = View.AGENT, **filters) -> int:
    return Rollup.objects.filter(grain_s=grain, view=view, **filters).aggregate(n=Sum("count"))["n"] or 0


def one_record(agent: str, started: datetime, **fields) -> dict:
    return factories.record(agent=agent, started_at=factories.iso(started), **fields)


@pytest.fixture
def bot(payments):
    return factories.agent("pay-bot", payments)


def later(seconds: float = 60) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.mark.django_db
def test_a_tick_rolls_up_what_ingest_marked_and_clears_the_marks(bot, superuser):
    now = datetime.now(UTC)
    ingest([one_record("pay-bot", now - timedelta(seconds=20)) for _ in range(3)], superuser)
    assert DirtyBucket.objects.count() >= 1
    result = tick(later(), settle_s=0)
    assert result.traces == 3
    assert DirtyBucket.objects.count() == 0
    assert total(Grain.S30) == total(Grain.S30, View.FLEET) == 3


@pytest.mark.django_db
def test_a_mark_settles_before_the_rollup_claims_it(bot, superuser):
    now = datetime.now(UTC)
    ingest([one_record("pay-bot", now - timedelta(seconds=5))], superuser)
    assert tick(now, settle_s=15).traces == 0
    assert DirtyBucket.objects.count() == 1
    assert tick(now + timedelta(seconds=16), settle_s=15).traces == 1


@pytest.mark.django_db
def test_a_trace_is_in_the_charts_within_a_minute_of_ingest(bot, superuser, settings):
    # Beat ticks every 10 s and marks settle for ROLLUP_SETTLE_S: the worst case is a mark made just
    # after a tick, claimed by the first tick after it has settled.
    interval = 10
    received = datetime.now(UTC)
    ingest([one_record("pay-bot", received - timedelta(seconds=2), latency_ms=1321.0)], superuser)
    seen_at = None
    for step in range(0, 61, interval):
        moment = received + timedelta(seconds=step)
        tick(moment)
        summary = MetricsQuery(parse_filters({"range": "1h"}), superuser, now=moment).summary()
        if summary["count"] == 1:
            seen_at = step
            break
    assert seen_at is not None
    assert seen_at <= settings.PERFOPS["ROLLUP_SETTLE_S"] + interval
    assert summary["p50_ms"] == 1321.0


@pytest.mark.django_db
def test_running_a_catch_up_twice_or_a_tick_after_it_changes_nothing(rolled_up):
    first = snapshot()
    assert first
    catch_up(rolled_up.now - timedelta(days=30), now=rolled_up.now)
    assert snapshot() == first
    tick(rolled_up.now + timedelta(seconds=60), settle_s=0, limit=10**6)
    assert total(Grain.H1) == total(Grain.H1, View.FLEET) == total(Grain.H1, View.DEPARTMENT)


@pytest.mark.django_db
def test_every_view_and_grain_adds_up_to_the_same_traces(rolled_up):
    windows = rollup.Windows.at(rolled_up.now)
    # Coarse buckets are written once they have ended; the running hour and 5 minutes are read finer.
    hour = int(rolled_up.now.timestamp()) // 3600 * 3600
    five = int(rolled_up.now.timestamp()) // 300 * 300
    for view in View:
        # From where the finer grain is kept, both hold every trace.
        span = {"bucket_epoch_s__gte": windows.kept(Grain.M5), "bucket_epoch_s__lt": hour}
        assert total(Grain.H1, view, **span) == total(Grain.M5, view, **span)
        span = {"bucket_epoch_s__gte": windows.kept(Grain.S30), "bucket_epoch_s__lt": five}
        assert total(Grain.M5, view, **span) == total(Grain.S30, view, **span)
        days = Rollup.objects.filter(grain_s=Grain.D1, view=view).values_list("bucket_epoch_s", flat=True)
        for day in set(days):
            assert total(Grain.D1, view, bucket_epoch_s=day) == total(
                Grain.H1, view, bucket_epoch_s__gte=day, bucket_epoch_s__lt=day + 86400
            )


@pytest.mark.django_db
def test_late_data_recomputes_its_bucket_and_the_hours_and_days_above_it(rolled_up, superuser):
    two_hours_ago = rolled_up.now - timedelta(hours=2, minutes=7)
    hour = int(two_hours_ago.timestamp()) // 3600 * 3600
    before = total(Grain.H1, bucket_epoch_s=hour), total(Grain.S30, View.FLEET)
    ingest([one_record("pay-bot", two_hours_ago), one_record("lab-bot", two_hours_ago)], superuser)
    result = tick(rolled_up.now + timedelta(seconds=60), settle_s=0)
    assert result.buckets == 1
    assert total(Grain.H1, bucket_epoch_s=hour) == before[0] + 2
    assert total(Grain.S30, View.FLEET) == before[1] + 2
    day = hour // 86400 * 86400
    if day + 86400 <= rolled_up.now.timestamp():  # the day has ended, so it has a row to rebuild
        assert total(Grain.D1, bucket_epoch_s=day) == total(
            Grain.H1, bucket_epoch_s__gte=day, bucket_epoch_s__lt=day + 86400
        )


@pytest.mark.django_db
def test_old_late_data_is_recomputed_at_the_finest_grain_still_kept(rolled_up, superuser):
    five_days_ago = rolled_up.now - timedelta(days=5)
    hour = int(five_days_ago.timestamp()) // 3600 * 3600
    assert hour < kept_from(Grain.M5, rolled_up.now)
    before = total(Grain.H1, bucket_epoch_s=hour)
    ingest([one_record("pay-bot", five_days_ago)], superuser)
    tick(rolled_up.now + timedelta(seconds=60), settle_s=0)
    assert total(Grain.H1, bucket_epoch_s=hour) == before + 1
    assert not Rollup.objects.filter(grain_s__in=[Grain.S30, Grain.M5], bucket_epoch_s__lt=hour + 3600).exists()


@pytest.mark.django_db
def test_a_batch_that_lands_during_a_recompute_keeps_its_mark(bot, superuser, monkeypatch):
    now = datetime.now(UTC)
    ingest([one_record("pay-bot", now - timedelta(seconds=20))], superuser)
    real_read = rollup.read_traces
    landed: list[int] = []

    def read_then_ingest(start, end):
        raw = real_read(start, end)
        if not landed:  # a batch for the same bucket commits after the rollup read the raw rows
            landed.append(ingest([one_record("pay-bot", now - timedelta(seconds=19))], superuser))
        return raw

    monkeypatch.setattr(rollup, "read_traces", read_then_ingest)
    tick(later(), settle_s=0)
    assert total(Grain.S30) == 1
    assert DirtyBucket.objects.count() == 1  # bumped meanwhile: not cleared
    monkeypatch.setattr(rollup, "read_traces", real_read)
    tick(later(), settle_s=0)
    assert total(Grain.S30) == 2
    assert DirtyBucket.objects.count() == 0


@pytest.mark.django_db
def test_a_run_that_dies_half_way_leaves_rows_and_marks_as_they_were(rolled_up, superuser, monkeypatch):
    before = snapshot()
    ingest([one_record("pay-bot", rolled_up.now - timedelta(minutes=3))], superuser)
    marks = DirtyBucket.objects.count()
    calls = []

    def die_on_the_third_insert(grain, view, cells):
        calls.append(view)
        if len(calls) == 3:
            raise RuntimeError("worker killed")
        return real_insert(grain, view, cells)

    real_insert = storage.insert_cells
    monkeypatch.setattr(rollup, "insert_cells", die_on_the_third_insert)
    with pytest.raises(RuntimeError, match="worker killed"):
        tick(rolled_up.now + timedelta(seconds=60), settle_s=0)
    assert snapshot() == before
    assert DirtyBucket.objects.count() == marks
    state = RollupState.get()
    assert state.lease_owner == ""
    assert "worker killed" in state.last_error


@pytest.mark.django_db
def test_only_one_run_writes_at_a_time(bot, superuser):
    ingest([one_record("pay-bot", datetime.now(UTC) - timedelta(seconds=30))], superuser)
    holder = Lease()
    assert holder.acquire()
    assert tick(later(), settle_s=0).skipped
    assert total(Grain.S30) == 0
    holder.release()
    assert tick(later(), settle_s=0).traces == 1


@pytest.mark.django_db
def test_a_dead_runs_lease_expires_and_the_next_run_takes_over(bot, superuser):
    ingest([one_record("pay-bot", datetime.now(UTC) - timedelta(seconds=30))], superuser)
    RollupState.get()
    RollupState.objects.update(lease_owner="dead-worker:1", lease_until=datetime.now(UTC) - timedelta(seconds=1))
    assert tick(later(), settle_s=0).traces == 1


@pytest.mark.django_db
def test_a_run_that_lost_its_lease_writes_nothing(bot):
    lease = Lease()
    assert lease.acquire()
    RollupState.objects.update(lease_owner="someone-else", lease_until=datetime.now(UTC) + timedelta(minutes=1))
    with pytest.raises(LeaseLost):
        rollup._commit(lease, [rollup.Write(Grain.S30, 0, 30, [])])


@pytest.mark.django_db
def test_an_agent_that_moves_department_takes_its_history_along(
    rolled_up, superuser, research, django_capture_on_commit_callbacks
):
    agent = rolled_up.agents["pay-bot"]
    params = parse_filters({"range": "30d", "environment": "all", "department": "research"})
    before = MetricsQuery(params, superuser, now=rolled_up.now).summary()["count"]
    moved = MetricsQuery(
        parse_filters({"range": "30d", "environment": "all", "agent": "pay-bot"}), superuser, now=rolled_up.now
    ).summary()["count"]
    with django_capture_on_commit_callbacks(execute=True):
        agent.department = research
        agent.team = None
        agent.save()
    after = MetricsQuery(params, superuser, now=rolled_up.now).summary()["count"]
    assert after == before + moved
    payments = MetricsQuery(
        parse_filters({"range": "30d", "environment": "all", "department": "payments"}), superuser, now=rolled_up.now
    ).summary()["count"]
    assert payments + after == rolled_up.count


@pytest.mark.django_db
def test_the_rollup_command_runs_a_tick_or_a_catch_up(rolled_up, capsys):
    call_command("rollup", "--all")
    assert "Recomputed" in capsys.readouterr().out
    call_command("rollup", "--since", "2d", "--jobs", "1")
    out = capsys.readouterr().out
    assert "Rolled up" in out
    assert "traces/s" in out
    with pytest.raises(CommandError, match="neither a span"):
        call_command("rollup", "--since", "yesterday")
    with pytest.raises(CommandError, match="after --since"):
        call_command("rollup", "--since", "2d", "--until", "3d")


@pytest.mark.django_db
def test_rollup_rows_hold_exact_counts_and_the_sketch_of_their_cell(rolled_up):
    from perfops.metrics.sketch import Sketch

    rows = Rollup.objects.filter(view=View.FLEET, grain_s=Grain.H1)[:50]
    for row in rows:
        sketch = Sketch.decode(bytes(row.sketch), row.latency_min_ms, row.latency_max_ms)
        assert sketch.count == row.count
        assert row.latency_min_ms <= row.latency_sum_ms / row.count <= row.latency_max_ms
    assert np.all([row.bucket_epoch_s % 3600 == 0 for row in rows])
