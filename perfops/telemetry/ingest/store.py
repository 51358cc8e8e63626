"""Store a validated batch: resolve (or register) agents, record new versions, insert traces.

PostgreSQL: one COPY straight into the partitioned trace table. When that meets a trace already
stored (a retried batch), the transaction is rolled back and the batch is stored again through a
temporary staging table and INSERT ... SELECT ... ON CONFLICT DO NOTHING, which skips exactly the
stored ones; the common case pays for one COPY only. SQLite: INSERT OR IGNORE through executemany.
Either way a batch is one transaction, committed when store_records returns (unless the caller
holds a transaction of its own, as OTLP ingest does: then it commits with the caller's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
from auditlog.context import set_actor
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone
from psycopg.errors import DeadlockDetected

from perfops.access.scoping import department_ids_for
from perfops.metrics.dirty import mark_dirty
from perfops.telemetry import timings
from perfops.telemetry.ingest.records import TraceRecord
from perfops.telemetry.models import Agent, Department, Team
from perfops.telemetry.partitions import ensure_partitions

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

logger = logging.getLogger(__name__)

# The trace columns ingest writes, in COPY order; received_at takes its database default.
COLUMNS = (
    "trace_id",
    "agent_id",
    "environment",
    "version",
    "intent",
    "started_at",
    "latency_ms",
    "status",
    "error_type",
    "phases",
    "dependencies",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_hit",
    "profiled",
    "attributes",
    "timings",
)
_COLUMN_LIST = ", ".join(COLUMNS)
# The COPY line puts the three JSON columns last, so they are encoded in one go.
_JSON_COLUMNS = ("phases", "dependencies", "attributes")
_COPY_COLUMNS = ", ".join([c for c in COLUMNS if c not in _JSON_COLUMNS] + list(_JSON_COLUMNS))


# (agent_id, environment, version) -> first_seen_at already recorded, so steady traffic skips the
# upsert. Entries expire so a deployment deleted in the admin is recreated by the next trace.
_KNOWN_DEPLOYMENT_TTL_S = 300.0
_known_deployments: dict[tuple[int, str, str], tuple[datetime, float]] = {}
_unassigned_id: tuple[int, float] | None = None


def forget_ingest_memos() -> None:
    """Clear the per-process memos (tests, or after a bulk load that bypassed ingest)."""
    global _unassigned_id
    _known_deployments.clear()
    _agent_memo.clear()
    _unassigned_id = None
    timings.forget_labels()


def _unassigned_department_id() -> int:
    global _unassigned_id
    now = time.monotonic()
    if _unassigned_id is None or now - _unassigned_id[1] > _KNOWN_DEPLOYMENT_TTL_S:
        _unassigned_id = (Department.unassigned().pk, now)
    return _unassigned_id[0]


class _Collision(Exception):
    """The plain COPY met a trace that is already stored."""


class AgentRef(NamedTuple):
    id: int
    department_id: int
    intent_category: str


@dataclass
class StoreResult:
    """What happened to a batch: counts for the response and the refused records by index."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


def store_records(
    records: Sequence[TraceRecord], user: AbstractBaseUser | AnonymousUser, *, now: datetime | None = None
) -> StoreResult:
    """Store valid records for `user`; records whose agent the user may not write to are rejected."""
    result = StoreResult()
    if not records:
        return result
    ensure_partitions({record.started_at.date() for record in records})
    dedupe = False
    deadlocks = 0
    while True:
        try:
            with transaction.atomic():
                agents, refused = _resolve_agents(records, user)
                rows = [record for record in records if record.agent in agents]
                _mark_profiled(rows, agents)
                for record in records:
                    if record.agent in refused:
                        result.rejected.append({"index": record.index, "errors": {"agent": [refused[record.agent]]}})
                _upsert_deployments(rows, agents)
                accepted = _insert_traces(rows, agents, dedupe=dedupe)
                if accepted:
                    # Last, so the rollup's claim on these buckets waits for this commit only briefly.
                    mark_dirty([record.started_at for record in rows])
            break
        except _Collision:
            # Some of these traces were stored before (a retried batch): do it again, skipping exactly those.
            dedupe = True
        except OperationalError as exc:
            # Two batches holding some of the same new traces (or new agents, versions) in opposite
            # orders deadlock; PostgreSQL aborts one, which tries once more.
            deadlocks += 1
            if deadlocks > 1 or not isinstance(exc.__cause__, DeadlockDetected):
                raise
            logger.warning("ingest batch deadlocked, retrying once")
        result = StoreResult()
    result.accepted = accepted
    result.duplicates = len(rows) - accepted
    return result


def _mark_profiled(rows: Sequence[TraceRecord], agents: dict[str, AgentRef]) -> None:
    """Traces of an agent being profiled in their environment are marked (interventions.profiling)."""
    from interventions.profiling import active_windows, profiled

    if not active_windows():
        return
    for record in rows:
        record.profiled = profiled(agents[record.agent].id, record.environment, record.started_at)


def _may_write(user: AbstractBaseUser | AnonymousUser, department_id: int, unassigned_id: int) -> bool:
    """Ingest may write to its user's departments, and to agents nobody has assigned yet."""
    ids = department_ids_for(user)
    return ids is None or department_id in ids or department_id == unassigned_id


def may_write(user: AbstractBaseUser | AnonymousUser, department_id: int) -> bool:
    """Whether `user` may send telemetry for an agent of this department."""
    return _may_write(user, department_id, _unassigned_department_id())


def _resolve_agents(
    records: Sequence[TraceRecord], user: AbstractBaseUser | AnonymousUser
) -> tuple[dict[str, AgentRef], dict[str, str]]:
    """Map each agent slug to its row, registering unknown agents; also return refusals by slug."""
    slugs = {record.agent for record in records}
    agents = {slug: AgentRef(pk, department_id, intent or "") for slug, pk, department_id, intent in _agent_rows(slugs)}
    refused: dict[str, str] = {}
    unassigned_id = _unassigned_department_id()
    missing = slugs - agents.keys()
    if missing:
        _register_agents(records, missing, user, Department.unassigned(), agents, refused)
    for slug, ref in agents.items():
        if slug not in refused and not _may_write(user, ref.department_id, unassigned_id):
            refused[slug] = f"Agent '{slug}' is not one this token may write to."
    for slug in refused:
        agents.pop(slug, None)
    return agents, refused


# Agents of the last second, by slug: a busy sender names the same agents in every batch. A move
# to another department therefore reaches ingest's scope check within a second.
_AGENT_MEMO_TTL_S = 1.0
_agent_memo: dict[str, tuple[tuple[str, int, int, str], float]] = {}


def _agent_rows(slugs: set[str]) -> list[tuple[str, int, int, str]]:
    """(slug, id, department_id, intent_category) of the named agents that exist."""
    clock = time.monotonic()
    rows = []
    missing = set()
    for slug in slugs:
        remembered = _agent_memo.get(slug)
        if remembered is not None and clock - remembered[1] < _AGENT_MEMO_TTL_S:
            rows.append(remembered[0])
        else:
            missing.add(slug)
    if missing:
        fetched = _query_agent_rows(missing)
        if len(_agent_memo) > 50_000:
            _agent_memo.clear()
        _agent_memo.update((row[0], (row, clock)) for row in fetched)
        rows.extend(fetched)
    return rows


def _query_agent_rows(slugs: set[str]) -> list[tuple[str, int, int, str]]:
    if connection.vendor == "postgresql":
        # One array parameter: the ORM's IN (%s, %s, ...) with hundreds of slugs costs ms to build and plan.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT slug, id, department_id, intent_category FROM telemetry_agent WHERE slug = ANY(%s)",
                [list(slugs)],
            )
            return cursor.fetchall()
    return list(Agent.objects.filter(slug__in=slugs).values_list("slug", "id", "department_id", "intent_category"))


def _register_agents(
    records: Sequence[TraceRecord],
    missing: set[str],
    user: AbstractBaseUser | AnonymousUser,
    unassigned: Department,
    agents: dict[str, AgentRef],
    refused: dict[str, str],
) -> None:
    """Create the agents a batch names for the first time; the first record naming one decides its home."""
    first: dict[str, TraceRecord] = {}
    for record in records:
        if record.agent in missing and record.agent not in first:
            first[record.agent] = record
    departments = {
        d.slug: d for d in Department.objects.filter(slug__in={r.department for r in first.values() if r.department})
    }
    teams = {
        (t.department_id, t.slug): t
        for t in Team.objects.filter(
            department__in=departments.values(), slug__in={r.team for r in first.values() if r.team}
        )
    }
    for slug, record in sorted(first.items()):
        department: Department | None = departments.get(record.department) if record.department else unassigned
        # One answer for "no such department" and "not yours": ingest must not reveal what exists.
        if department is None or not _may_write(user, department.pk, unassigned.pk):
            refused[slug] = f"Department '{record.department}' does not exist or is outside this token's scope."
            continue
        team = None
        if record.team:
            team = teams.get((department.pk, record.team))
            if team is None:
                refused[slug] = f"Unknown team '{record.team}' in department '{department.slug}'."
                continue
        with set_actor(user if user.is_authenticated else None):  # the registration's audit entry names who sent it
            agent, _ = Agent.objects.get_or_create(
                slug=slug,
                defaults={
                    "name": slug,
                    "department": department,
                    "team": team,
                    "intent_category": record.intent,
                    "auto_registered": True,
                },
            )
        agents[slug] = AgentRef(agent.pk, agent.department_id, agent.intent_category)
        logger.info("registered agent %s in department %s", slug, agent.department_id)


def _upsert_deployments(rows: Sequence[TraceRecord], agents: dict[str, AgentRef]) -> None:
    """Record each (agent, environment, version) the batch carries, keeping the earliest first_seen_at."""
    first_seen: dict[tuple[int, str, str], datetime] = {}
    for record in rows:
        key = (agents[record.agent].id, record.environment, record.version)
        seen = first_seen.get(key)
        if seen is None or record.started_at < seen:
            first_seen[key] = record.started_at
    clock = time.monotonic()
    for key, seen in list(first_seen.items()):
        known = _known_deployments.get(key)
        if known is not None and known[0] <= seen and clock - known[1] < _KNOWN_DEPLOYMENT_TTL_S:
            del first_seen[key]
    if not first_seen:
        return
    now = timezone.now()
    least = "LEAST" if connection.vendor == "postgresql" else "MIN"
    # Sorted keys take row locks in one order, so concurrent batches cannot deadlock here.
    params: list[Any] = []
    values = []
    for (agent_id, environment, version), seen in sorted(first_seen.items()):
        values.append("(%s, %s, %s, %s, 'ingest', '', %s)")
        params.extend([agent_id, environment, version, _db_datetime(seen), _db_datetime(now)])
    # Only placeholders and fixed identifiers are interpolated; every value is a parameter.
    sql = (
        "INSERT INTO telemetry_deployment (agent_id, environment, version, first_seen_at, source, notes, created_at) "  # noqa: S608
        f"VALUES {', '.join(values)} "
        "ON CONFLICT (agent_id, environment, version) DO UPDATE SET first_seen_at = "
        f"{least}(COALESCE(telemetry_deployment.first_seen_at, excluded.first_seen_at), excluded.first_seen_at) "
        "WHERE telemetry_deployment.first_seen_at IS NULL "
        "OR excluded.first_seen_at < telemetry_deployment.first_seen_at"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    # Remember them only once the batch commits; a rolled-back upsert must run again.
    transaction.on_commit(lambda: _known_deployments.update((key, (seen, clock)) for key, seen in first_seen.items()))


def _db_datetime(value: datetime) -> Any:
    if connection.vendor == "postgresql":
        return value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _insert_traces(rows: Sequence[TraceRecord], agents: dict[str, AgentRef], *, dedupe: bool) -> int:
    """Insert the rows and return how many were new (the rest were already stored)."""
    if not rows:
        return 0
    packed = timings.encode_many([(r.phases, r.dependencies) for r in rows])
    if connection.vendor == "postgresql":
        return _copy_postgresql(rows, agents, packed, dedupe=dedupe)
    return _insert_sqlite(rows, agents, packed)


def _escape(text: str) -> str:
    """COPY text format: control characters are refused at validation, so only backslash needs escaping."""
    return text.replace("\\", "\\\\") if "\\" in text else text


# msgspec, not orjson: records hold Call structs, which it encodes natively (and fast).
_encode_json = msgspec.json.Encoder().encode


_NULL = "\\N"  # COPY text format's NULL


def _copy_postgresql(
    rows: Sequence[TraceRecord], agents: dict[str, AgentRef], packed: Sequence[bytes], *, dedupe: bool
) -> int:
    """COPY the rows in. Plainly, unless `dedupe`: then through a staging table that skips stored ones.

    The plain COPY raises _Collision at the first stored trace, aborting the transaction; the
    caller then repeats the batch with dedupe. No savepoint: retries are rare, round trips are not.
    """
    dumps = _encode_json
    agent_ids = {slug: str(ref.id) for slug, ref in agents.items()}
    lines = []
    for r, blob in zip(rows, packed, strict=True):
        # Bytes throughout: the JSON comes as bytes from msgspec and goes to psycopg as bytes.
        blobs = dumps(r.phases) + b"\t" + dumps(r.dependencies) + b"\t" + dumps(r.attributes)
        if b"\\" in blobs:
            blobs = blobs.replace(b"\\", b"\\\\")
        lines.append(
            f"{r.trace_id}\t{agent_ids[r.agent]}\t{r.environment}\t{_escape(r.version)}\t"
            f"{_escape(r.intent or agents[r.agent].intent_category)}\t{r.started_at.isoformat()}\t{r.latency_ms!r}\t"
            f"{r.status}\t{r.error_type}\t{_escape(r.model)}\t"
            f"{_NULL if r.input_tokens is None else r.input_tokens}\t"
            f"{_NULL if r.output_tokens is None else r.output_tokens}\t"
            f"{'t' if r.cache_hit else 'f'}\t{'t' if r.profiled else 'f'}\t\\\\x{blob.hex()}\t".encode()
            + blobs
        )
    payload = b"\n".join(lines) + b"\n"
    if not dedupe:
        try:
            # cursor.copy() is psycopg's own: wrap_database_errors turns its errors into Django's
            # (IntegrityError, OperationalError), which the callers handle.
            with (
                connection.wrap_database_errors,
                connection.cursor() as cursor,
                cursor.copy(f"COPY telemetry_trace ({_COPY_COLUMNS}) FROM STDIN") as copy,
            ):
                copy.write(payload)
        except IntegrityError as exc:
            raise _Collision from exc
        return len(rows)
    with connection.wrap_database_errors, connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS perfops_trace_staging "
            "(LIKE telemetry_trace INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cursor.copy(f"COPY perfops_trace_staging ({_COPY_COLUMNS}) FROM STDIN") as copy:
            copy.write(payload)
        cursor.execute(
            f"INSERT INTO telemetry_trace ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM perfops_trace_staging "  # noqa: S608
            "ON CONFLICT DO NOTHING"
        )
        inserted = cursor.rowcount
        cursor.execute("DELETE FROM perfops_trace_staging")
    return inserted


def _insert_sqlite(rows: Sequence[TraceRecord], agents: dict[str, AgentRef], packed: Sequence[bytes]) -> int:
    params = []
    for r, blob in zip(rows, packed, strict=True):
        agent = agents[r.agent]
        params.append(
            (
                r.trace_id,
                agent.id,
                r.environment,
                r.version,
                r.intent or agent.intent_category,
                r.started_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
                r.latency_ms,
                r.status,
                r.error_type,
                _encode_json(r.phases).decode(),
                _encode_json(r.dependencies).decode(),
                r.model,
                r.input_tokens,
                r.output_tokens,
                r.cache_hit,
                r.profiled,
                _encode_json(r.attributes).decode(),
                blob,
            )
        )
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT OR IGNORE INTO telemetry_trace ({_COLUMN_LIST}) VALUES ({placeholders})",  # noqa: S608
            params,
        )
        return cursor.rowcount
