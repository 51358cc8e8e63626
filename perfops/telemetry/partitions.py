"""Daily partitions of the trace table on PostgreSQL (SQLite has one plain table).

A partition per UTC day lets retention drop a day instead of deleting rows. Partitions are made
ahead of time by a beat task, and on demand by ingest for a day that has none yet (a backfill).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction

TABLE = "telemetry_trace"
_known: set[date] = set()


def is_partitioned() -> bool:
    return connection.vendor == "postgresql"


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def existing_partition_days() -> set[date]:
    """The days that have a partition, read from the catalog."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT child.relname FROM pg_inherits
            JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
            JOIN pg_class child ON child.oid = pg_inherits.inhrelid
            WHERE parent.relname = %s
            """,
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    days = set()
    for name in names:
        suffix = name.rsplit("_p", 1)[-1]
        if len(suffix) == 8 and suffix.isdigit():
            days.add(datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=UTC).date())
    return days


def ensure_partitions(days: Iterable[date]) -> list[date]:
    """Create the missing partitions for `days`; return the days created. Safe to run concurrently."""
    if not is_partitioned():
        return []
    wanted = set(days) - _known
    if not wanted:
        return []
    created: list[date] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            # One creator at a time: CREATE TABLE ... IF NOT EXISTS still races on the catalog.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('perfops.trace_partitions'))")
            present = existing_partition_days()
            for day in sorted(wanted - present):
                start = datetime(day.year, day.month, day.day, tzinfo=UTC)
                end = start + timedelta(days=1)
                cursor.execute(
                    f'CREATE TABLE IF NOT EXISTS "{partition_name(day)}" PARTITION OF "{TABLE}" '
                    "FOR VALUES FROM (%s) TO (%s)",
                    [start, end],
                )
                created.append(day)
        # Remember only once committed: a rolled-back creation must be retried next time.
        transaction.on_commit(lambda: _known.update(wanted))
    return created


def ensure_partitions_between(first: date, last: date) -> list[date]:
    """Make sure every day from `first` to `last` (inclusive) has a partition."""
    count = (last - first).days + 1
    return ensure_partitions(first + timedelta(days=offset) for offset in range(max(count, 0)))


def forget_known_partitions() -> None:
    """Drop the in-process memo (after retention dropped partitions, or between tests)."""
    _known.clear()


def stored_trace_ids(trace_ids: Iterable[str], first: date, last: date) -> set[str]:
    """Which of `trace_ids` (32-hex) are stored with a start between the days `first` and `last`.

    On PostgreSQL each day's partition is probed by `trace_id = ANY(...)` on its own primary key.
    The plan is pinned to index probes: before a freshly filled day is analysed the planner guesses
    that half of it matches and scans it whole (measured: 250 ms against 3 ms for 1,000 ids).
    """
    wanted = sorted(set(trace_ids))
    if not wanted:
        return set()
    if not is_partitioned():
        from perfops.telemetry.models import Trace

        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            found.update(
                t.hex for t in Trace.objects.order_by().filter(trace_id__in=chunk).values_list("trace_id", flat=True)
            )
        return found
    days = [day for day in sorted(existing_partition_days()) if first <= day <= last]
    if not days:
        return set()
    # Partition names come from the catalog and the ids are a parameter.
    union = " UNION ALL ".join(
        f'SELECT trace_id FROM "{partition_name(day)}" WHERE trace_id = ANY(%s::uuid[])'  # noqa: S608
        for day in days
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        cursor.execute(union, [wanted] * len(days))
        found = {row[0].hex for row in cursor.fetchall()}
        # SET LOCAL outlives a released savepoint: put the session's settings back for the rest of a
        # caller's transaction. (On an error the savepoint's rollback undoes it anyway.)
        cursor.execute("SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL enable_bitmapscan TO DEFAULT")
        return found


def analyze_recent(days: Iterable[date]) -> list[date]:
    """Refresh the planner's statistics of these days' partitions (where autovacuum is off or behind)."""
    if not is_partitioned():
        return []
    present = existing_partition_days()
    done = []
    with connection.cursor() as cursor:
        for day in sorted(set(days) & present):
            cursor.execute(f'ANALYZE "{partition_name(day)}"')
            done.append(day)
    return done


def drop_partitions_before(day: date) -> list[date]:
    """Drop the partitions of every day before `day` (retention); return the days dropped."""
    if not is_partitioned():
        return []
    dropped = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('perfops.trace_partitions'))")
        for old in sorted(d for d in existing_partition_days() if d < day):
            cursor.execute(f'DROP TABLE IF EXISTS "{partition_name(old)}"')
            dropped.append(old)
    if dropped:
        forget_known_partitions()
    return dropped
