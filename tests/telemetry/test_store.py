"""Batch storage under real PostgreSQL errors: concurrent overlapping batches, a lost connection."""

from __future__ import annotations

import threading

import orjson
import psycopg
import pytest
from django.db import connection, connections

from perfops.telemetry.api import validate_batch
from perfops.telemetry.ingest.store import StoreResult, store_records
from perfops.telemetry.models import Trace
from tests import factories

postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY and row locks are PostgreSQL's")


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_batches_sharing_new_traces_in_opposite_orders_both_succeed(engineer, payments):
    factories.agent("support-bot", payments)
    # The classic deadlock: each batch holds one shared trace and waits for the other's. One round
    # deadlocks about 4 times in 5 here; three rounds make a regression very unlikely to slip by.
    for _ in range(3):
        before = Trace.objects.count()
        first, last = factories.record(), factories.record()
        middle = [[factories.record() for _ in range(3000)] for _ in range(2)]
        outcomes = _race([[first, *middle[0], last], [last, *middle[1], first]], engineer)

        results = [outcome for outcome in outcomes if isinstance(outcome, StoreResult)]
        assert len(results) == 2, outcomes
        accepted = sum(result.accepted for result in results)
        duplicates = sum(result.duplicates for result in results)
        assert (accepted, duplicates) == (6002, 2)
        assert Trace.objects.count() - before == 6002


def _race(batches: list[list[dict]], user) -> list[object]:
    """Store each batch from its own thread and connection, starting together."""
    outcomes: list[object] = [None] * len(batches)
    barrier = threading.Barrier(len(batches))

    def send(slot: int) -> None:
        try:
            records, rejected = validate_batch(batches[slot], lenient=False)
            assert not rejected
            barrier.wait()
            outcomes[slot] = store_records(records, user)
        except Exception as exc:  # reported by the caller, with the failing thread's slot
            outcomes[slot] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(slot,)) for slot in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


@postgresql_only
@pytest.mark.django_db
def test_a_connection_lost_during_copy_answers_503_not_500(ingest_api, payments, monkeypatch):
    factories.agent("support-bot", payments)

    def lost(*args, **kwargs):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(psycopg.Cursor, "copy", lost)
    response = ingest_api.generic(
        "POST", "/api/v1/traces", orjson.dumps({"traces": [factories.record()]}), content_type="application/json"
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
