"""Store a validated batch: resolve (or register) agents, record new versions, insert traces.

PostgreSQL: COPY into a per-connection temporary staging table, then one
INSERT ... SELECT ... ON CONFLICT DO NOTHING into the partitioned trace table, so a retried
record is skipped without failing its batch. SQLite: INSERT OR IGNORE through executemany.
Either way a batch is one transaction: when this returns, the batch is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from auditlog.context import set_actor
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from perfops.access.scoping import department_ids_for
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
)
_COLUMN_LIST = ", ".join(COLUMNS)


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
    for attempt in (1, 2):
        try:
            with transaction.atomic(), set_actor(user if user.is_authenticated else None):
                agents, refused = _resolve_agents(records, user)
                rows = [record for record in records if record.agent in agents]
                for record in records:
                    if record.agent in refused:
                        result.rejected.append({"index": record.index, "errors": {"agent": [refused[record.agent]]}})
                _upsert_deployments(rows, agents)
                accepted = _insert_traces(rows, agents)
            break
        except OperationalError as exc:
            # Two batches racing on the same new agent or version can deadlock; retry once.
            if attempt == 2 or "deadlock" not in str(exc).lower():
                raise
            logger.warning("ingest batch deadlocked, retrying once")
            result = StoreResult()
    result.accepted = accepted
    result.duplicates = len(rows) - accepted
    return result


def _may_write(user: AbstractBaseUser | AnonymousUser, department_id: int, unassigned_id: int) -> bool:
    """Ingest may write to its user's departments, and to agents nobody has assigned yet."""
    ids = department_ids_for(user)
    return ids is None or department_id in ids or department_id == unassigned_id


def _resolve_agents(
    records: Sequence[TraceRecord], user: AbstractBaseUser | AnonymousUser
) -> tuple[dict[str, AgentRef], dict[str, str]]:
    """Map each agent slug to its row, registering unknown agents; also return refusals by slug."""
    slugs = {record.agent for record in records}
    agents = {
        slug: AgentRef(pk, department_id, intent or "")
        for slug, pk, department_id, intent in Agent.objects.filter(slug__in=slugs).values_list(
            "slug", "id", "department_id", "intent_category"
        )
    }
    refused: dict[str, str] = {}
    unassigned = Department.unassigned()
    missing = slugs - agents.keys()
    if missing:
        _register_agents(records, missing, user, unassigned, agents, refused)
    for slug, ref in agents.items():
        if slug not in refused and not _may_write(user, ref.department_id, unassigned.pk):
            refused[slug] = f"Agent '{slug}' belongs to a department outside this token's scope."
    for slug in refused:
        agents.pop(slug, None)
    return agents, refused


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
        department = unassigned
        if record.department:
            if record.department not in departments:
                refused[slug] = f"Unknown department '{record.department}' for new agent '{slug}'."
                continue
            department = departments[record.department]
        if not _may_write(user, department.pk, unassigned.pk):
            refused[slug] = f"Department '{department.slug}' is outside this token's scope."
            continue
        team = None
        if record.team:
            team = teams.get((department.pk, record.team))
            if team is None:
                refused[slug] = f"Unknown team '{record.team}' in department '{department.slug}'."
                continue
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


def _db_datetime(value: datetime) -> Any:
    if connection.vendor == "postgresql":
        return value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _insert_traces(rows: Sequence[TraceRecord], agents: dict[str, AgentRef]) -> int:
    if not rows:
        return 0
    if connection.vendor == "postgresql":
        return _copy_postgresql(rows, agents)
    return _insert_sqlite(rows, agents)


def _escape(text: str) -> str:
    """COPY text format: control characters are refused at validation, so only backslash needs escaping."""
    return text.replace("\\", "\\\\") if "\\" in text else text


def _json_text(value: object) -> str:
    return _escape(orjson.dumps(value).decode())


def _copy_postgresql(rows: Sequence[TraceRecord], agents: dict[str, AgentRef]) -> int:
    lines = []
    for r in rows:
        agent = agents[r.agent]
        lines.append(
            "\t".join(
                (
                    r.trace_id,
                    str(agent.id),
                    r.environment,
                    _escape(r.version),
                    _escape(r.intent or agent.intent_category),
                    r.started_at.isoformat(),
                    repr(r.latency_ms),
                    r.status,
                    r.error_type,
                    _json_text(r.phases),
                    _json_text(r.dependencies),
                    _escape(r.model),
                    "\\N" if r.input_tokens is None else str(r.input_tokens),
                    "\\N" if r.output_tokens is None else str(r.output_tokens),
                    "t" if r.cache_hit else "f",
                    "t" if r.profiled else "f",
                    _json_text(r.attributes),
                )
            )
        )
    payload = "\n".join(lines) + "\n"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS perfops_trace_staging "
            "(LIKE telemetry_trace INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cursor.copy(f"COPY perfops_trace_staging ({_COLUMN_LIST}) FROM STDIN") as copy:
            copy.write(payload)
        cursor.execute(
            f"INSERT INTO telemetry_trace ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM perfops_trace_staging "  # noqa: S608
            "ON CONFLICT DO NOTHING"
        )
        inserted = cursor.rowcount
        # Empty it now as well: a caller may run several batches in one transaction.
        cursor.execute("TRUNCATE perfops_trace_staging")
    return inserted


def _insert_sqlite(rows: Sequence[TraceRecord], agents: dict[str, AgentRef]) -> int:
    params = []
    for r in rows:
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
                orjson.dumps(r.phases).decode(),
                orjson.dumps(r.dependencies).decode(),
                r.model,
                r.input_tokens,
                r.output_tokens,
                r.cache_hit,
                r.profiled,
                orjson.dumps(r.attributes).decode(),
            )
        )
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT OR IGNORE INTO telemetry_trace ({_COLUMN_LIST}) VALUES ({placeholders})",  # noqa: S608
            params,
        )
        return cursor.rowcount
