"""Produce one chunk of the history: generate, render for the database, and summarise.

Runs in worker processes (no Django here): each worker builds the History once, then turns chunk
numbers into COPY text or SQLite rows plus the small statistics the loader needs (rows per
version, each version's first trace, the scenario agents' numbers). On PostgreSQL a worker can
also COPY its chunk itself over its own connection, so several chunks stream in side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from perfops.telemetry.demo.fleet import E_TIMEOUT
from perfops.telemetry.demo.plan import FleetPlan
from perfops.telemetry.demo.render import Renderer
from perfops.telemetry.demo.traffic import History, TraceColumns

NEVER = np.iinfo(np.int64).max


@dataclass
class ChunkResult:
    """A rendered chunk and what it contributes to the deployments and the summary."""

    index: int
    rows: int
    payload: Any  # COPY text (str) or a list of SQLite parameter tuples
    version_counts: np.ndarray
    first_seen_us: np.ndarray
    # Per watched version: latencies and error types, to report the regressions' p95 and error rate.
    watched: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # Per burst: requests inside its window on affected agents, and how many of those failed with its type.
    bursts: list[tuple[int, int]] = field(default_factory=list)


class ChunkProducer:
    """Everything needed to produce chunks of one seeding run."""

    def __init__(
        self,
        plan: FleetPlan,
        total: int,
        chunk_size: int,
        agent_ids: dict[str, int],
        payload: str,
        watched: set[int],
        copy_sql: str = "",
        connect: dict[str, Any] | None = None,
        label_ids: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.history = History(plan, total, chunk_size)
        self.renderer = Renderer(self.history.model, agent_ids, label_ids)
        self.payload = payload
        self.watched = watched
        self.copy_sql = copy_sql
        self.connect = connect
        self._connection: psycopg.Connection[Any] | None = None

    def produce(self, index: int) -> ChunkResult:
        cols = self.history.chunk(index)
        payload: Any = None
        if self.payload == "copy":
            payload = self.renderer.copy_text(cols)
            if self.connect is not None:
                self._copy(payload)
                payload = None
        elif self.payload == "rows":
            payload = self.renderer.sqlite_rows(cols)
        return self.summarise(index, cols, payload)

    def _copy(self, text: str) -> None:
        """COPY one chunk in its own committed transaction, over this worker's connection."""
        if self._connection is None:
            self._connection = psycopg.connect(**self.connect or {})
        with self._connection.transaction(), self._connection.cursor() as cursor:
            # Demo data: a crash may lose the last chunks (a re-seed restores them); skip waiting for the WAL flush.
            cursor.execute("SET LOCAL synchronous_commit = off")
            with cursor.copy(self.copy_sql) as copy:
                copy.write(text)

    def summarise(self, index: int, cols: TraceColumns, payload: Any) -> ChunkResult:
        n_versions = len(self.history.plan.versions)
        first_seen = np.full(n_versions, NEVER, dtype=np.int64)
        np.minimum.at(first_seen, cols.version, cols.t_us)
        result = ChunkResult(
            index=index,
            rows=len(cols),
            payload=payload,
            version_counts=np.bincount(cols.version, minlength=n_versions),
            first_seen_us=first_seen,
        )
        for version in self.watched:
            rows = cols.version == version
            result.watched[version] = (cols.latency_ms[rows], cols.error_type[rows])
        for burst, mask in self.history.model.bursts:
            inside = mask[cols.ae] & (cols.t_us >= burst.start_us) & (cols.t_us < burst.end_us)
            kind = burst.error_type if burst.llm_factor == 1.0 else E_TIMEOUT  # a slowdown shows as timeouts
            result.bursts.append((int(inside.sum()), int((inside & (cols.error_type == kind)).sum())))
        return result


_producer: ChunkProducer | None = None


def init_worker(*args: Any) -> None:
    """Pool initializer: build this process's producer once."""
    global _producer
    _producer = ChunkProducer(*args)


def produce_in_worker(index: int) -> ChunkResult:
    assert _producer is not None, "init_worker was not called"
    return _producer.produce(index)
