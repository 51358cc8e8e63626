"""Dirty buckets: ingest notes the 30-second buckets it wrote to; the rollup recomputes them.

The notes are an append-only journal written in the same transaction as the traces, so a committed
trace always has a note. Ingest only inserts (no row is shared, so concurrent batches never wait on
each other). The rollup takes a note only once every transaction that could still commit traces for it
has finished: on PostgreSQL, notes carry their writer's transaction id and are claimed below the
oldest running transaction (the snapshot's xmin), so the raw traces read next include all of theirs;
SQLite has one writer at a time, so every committed note is safe. Claimed notes are deleted in the
transaction that writes the recomputed rows; notes that arrive meanwhile stay for the next run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from perfops.metrics.levels import BASE


def bucket_start_s(moment: datetime) -> int:
    """The epoch second at which the 30-second bucket holding `moment` starts."""
    return int(moment.timestamp()) // BASE * BASE


def _stamp(moment: datetime) -> Any:
    return moment if connection.vendor == "postgresql" else moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def mark_dirty(started_ats: Iterable[datetime]) -> None:
    """Note the buckets of these trace starts for a recompute (inside the caller's transaction)."""
    buckets = sorted({bucket_start_s(moment) for moment in started_ats})
    if not buckets:
        return
    writer = "pg_current_xact_id()::text::bigint" if connection.vendor == "postgresql" else "0"
    values = ", ".join([f"(%s, %s, {writer})"] * len(buckets))
    stamp = _stamp(timezone.now())
    params: list[Any] = []
    for bucket in buckets:
        params.extend([bucket, stamp])
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO metrics_dirtybucket (bucket_epoch_s, marked_at, writer_xid) VALUES {values}",  # noqa: S608
            params,
        )


@dataclass(frozen=True)
class Claim:
    """Dirty buckets a rollup run may recompute: their notes from finished writers (or `own`), up to `last_id`."""

    buckets: list[int]
    horizon: int
    own: int
    last_id: int

    def release_sql(self) -> tuple[str, list[Any]]:
        """The DELETE of exactly the claimed notes (to run in the transaction that writes their rows)."""
        marks = ", ".join(["%s"] * len(self.buckets)) or "NULL"
        return (
            f"DELETE FROM metrics_dirtybucket WHERE bucket_epoch_s IN ({marks}) "  # noqa: S608
            "AND (writer_xid < %s OR writer_xid = %s) AND id <= %s",
            [*self.buckets, self.horizon, self.own, self.last_id],
        )


def horizon() -> tuple[int, int]:
    """(Transaction ids below this have all finished, this transaction's own id or -1).

    On SQLite every committed note counts: (1, -1) with notes written as 0.
    """
    if connection.vendor != "postgresql":
        return 1, -1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
            "coalesce(pg_current_xact_id_if_assigned()::text::bigint, -1)"
        )
        below, own = cursor.fetchone()
        return int(below), int(own)


def claim(
    *, settled_before: datetime | None, start_s: int | None = None, end_s: int | None = None, limit: int
) -> Claim:
    """The buckets whose notes are safe to take (and, with settled_before, whose first note has settled).

    A note is safe when its writer has finished (or is this very transaction, whose writes it sees).
    """
    below, own = horizon()
    clauses, params = ["(writer_xid < %s OR writer_xid = %s)"], [below, own]
    if start_s is not None and end_s is not None:
        clauses.append("bucket_epoch_s >= %s AND bucket_epoch_s < %s")
        params.extend([start_s, end_s])
    having, having_params = "", []
    if settled_before is not None:
        having, having_params = "HAVING min(marked_at) <= %s", [_stamp(settled_before)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT bucket_epoch_s, max(id) FROM metrics_dirtybucket WHERE {' AND '.join(clauses)} "  # noqa: S608
            f"GROUP BY bucket_epoch_s {having} ORDER BY bucket_epoch_s LIMIT %s",
            [*params, *having_params, limit],
        )
        rows = cursor.fetchall()
    return Claim(
        buckets=[int(b) for b, _ in rows], horizon=below, own=own, last_id=max((int(i) for _, i in rows), default=0)
    )


def pending() -> int:
    """Buckets with notes not yet taken."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT bucket_epoch_s) FROM metrics_dirtybucket")
        return int(cursor.fetchone()[0])
