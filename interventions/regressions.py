"""Regression flags and incidents (A4.4): flag a version with its evidence, confirm or dismiss it.

Evidence compares the candidate version with the one before it on the same agent and environment:
p50 / p95 / p99 latency and error rate, each over its own traffic (the baseline over the days before
the candidate arrived, the candidate since). The analytics (a later piece) call `flag` with their
own evidence and `source="analytics"`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from interventions.models import Incident, RegressionFlag
from perfops.access.audit import record_update
from perfops.metrics.filters import MetricFilters
from perfops.metrics.query import MetricsQuery
from perfops.telemetry.models import Agent, Deployment

WINDOW = timedelta(days=7)
FIGURES = ("count", "p50_ms", "p95_ms", "p99_ms", "error_rate")


class AlreadyFlagged(Exception):
    """That version already has an open flag."""


class NotPending(Exception):
    """The flag was decided already (by someone else, or earlier)."""


def baseline_of(agent: Agent, environment: str, version: str) -> Deployment | None:
    """The version that ran before `version` (by when each went out)."""
    deployments = list(
        Deployment.objects.filter(agent=agent, environment=environment).with_effective_at().order_by("effective_at")  # type: ignore[misc]
    )
    names = [d.version for d in deployments]
    if version not in names:
        return deployments[-1] if deployments else None
    index = names.index(version)
    return deployments[index - 1] if index else None


def _figures(agent: Agent, environment: str, version: str, start: datetime, end: datetime, user: Any) -> dict[str, Any]:
    filters = MetricFilters(
        range=None, start=start, end=end, environment=environment, agent=agent.slug, version=version
    )
    summary = MetricsQuery(filters, user, now=end).summary()
    return {key: summary.get(key) for key in FIGURES} | {"start": start.isoformat(), "end": end.isoformat()}


def evidence(agent: Agent, environment: str, version: str, user: Any, now: datetime | None = None) -> dict[str, Any]:
    """Metrics of the candidate and its baseline, and the relative changes (+0.25 = 25% worse)."""
    now = now or timezone.now()
    candidate: Any = (
        Deployment.objects.filter(agent=agent, environment=environment, version=version).with_effective_at().first()
    )
    since = candidate.effective_at if candidate is not None and candidate.effective_at else now - WINDOW
    since = max(since, now - timedelta(days=30))
    base = baseline_of(agent, environment, version)
    out: dict[str, Any] = {"candidate": _figures(agent, environment, version, since, now, user)}
    if base is not None:
        out["baseline_version"] = base.version
        out["baseline"] = _figures(
            agent, environment, base.version, max(since - WINDOW, now - timedelta(days=30)), since, user
        )
        changes = {}
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            before, after = out["baseline"].get(key), out["candidate"].get(key)
            changes[key] = round(after / before - 1, 4) if before and after is not None else None
        before, after = out["baseline"].get("error_rate"), out["candidate"].get("error_rate")
        changes["error_rate_points"] = (
            round((after - before) * 100, 3) if before is not None and after is not None else None
        )
        out["changes"] = changes
    return out


def describe(found: dict[str, Any], version: str) -> str:
    """The evidence in one sentence with its numbers."""
    changes = found.get("changes")
    cand = found["candidate"]
    if not changes:
        if cand.get("p95_ms") is None:
            return f"{version}: no requests of it to judge yet."
        errors = (cand.get("error_rate") or 0) * 100
        return f"{version}: p95 {cand['p95_ms']:,.0f} ms, {errors:.2f}% errors (no earlier version to compare)."
    base = found["baseline"]
    parts = []
    if changes["p95_ms"] is not None:
        parts.append(f"p95 {base['p95_ms']:,.0f} → {cand['p95_ms']:,.0f} ms ({changes['p95_ms'] * 100:+.0f}%)")
    if changes["error_rate_points"] is not None:
        parts.append(f"errors {base['error_rate'] * 100:.2f}% → {cand['error_rate'] * 100:.2f}%")
    return f"{version} against {found['baseline_version']}: " + (", ".join(parts) or "no traffic to compare") + "."


def flag(
    agent: Agent,
    environment: str,
    version: str,
    user: Any,
    *,
    source: str = RegressionFlag.Source.ENGINEER,
    summary: str = "",
    found: dict[str, Any] | None = None,
) -> RegressionFlag:
    """Flag a version as a suspected regression, with evidence (computed here unless given)."""
    found = found if found is not None else evidence(agent, environment, version, user)
    made = RegressionFlag(
        agent=agent,
        environment=environment,
        version=version,
        baseline_version=found.get("baseline_version", ""),
        source=source,
        summary=(summary or describe(found, version))[:300],
        evidence=found,
        flagged_by=user if getattr(user, "pk", None) else None,
    )
    try:
        with transaction.atomic():
            made.save()
    except IntegrityError as exc:
        raise AlreadyFlagged(f"{agent.slug} {version} ({environment}) is already flagged.") from exc
    return made


def confirm(flagged: RegressionFlag, user: Any, title: str = "") -> Incident:
    """Approve the flag: an Incident is opened and the department's channels are told (after commit)."""
    with transaction.atomic():
        now = timezone.now()
        changed = RegressionFlag.objects.filter(pk=flagged.pk, status=RegressionFlag.Status.SUSPECTED).update(
            status=RegressionFlag.Status.CONFIRMED, decided_by=user, decided_at=now
        )
        if not changed:
            raise NotPending("This flag was already decided.")
        flagged.refresh_from_db()
        record_update(
            flagged, user, {"status": ("suspected", "confirmed"), "decided_by": (None, user), "decided_at": (None, now)}
        )
        incident = Incident.objects.create(
            flag=flagged,
            title=title or f"Regression in {flagged.agent.slug} {flagged.version} ({flagged.environment})",
            opened_by=user,
            notes=flagged.summary,
        )
        transaction.on_commit(lambda: _notify(incident))
    return incident


def dismiss(flagged: RegressionFlag, user: Any, reason: str) -> None:
    """A false positive: the flag is closed with the reason (required)."""
    if not reason.strip():
        raise ValueError("Say why it is a false positive.")
    changed = RegressionFlag.objects.filter(pk=flagged.pk, status=RegressionFlag.Status.SUSPECTED).update(
        status=RegressionFlag.Status.DISMISSED, decided_by=user, decided_at=timezone.now(), dismiss_reason=reason[:300]
    )
    if not changed:
        raise NotPending("This flag was already decided.")
    flagged.refresh_from_db()
    record_update(
        flagged,
        user,
        {
            "status": ("suspected", "dismissed"),
            "decided_by": (None, user),
            "decided_at": (None, flagged.decided_at),
            "dismiss_reason": ("", flagged.dismiss_reason),
        },
    )


def resolve(incident: Incident, user: Any) -> bool:
    changed = Incident.objects.filter(pk=incident.pk, status=Incident.Status.OPEN).update(
        status=Incident.Status.RESOLVED, resolved_by=user, resolved_at=timezone.now()
    )
    incident.refresh_from_db()
    if changed:
        record_update(
            incident,
            user,
            {"status": ("open", "resolved"), "resolved_by": (None, user), "resolved_at": (None, incident.resolved_at)},
        )
    return bool(changed)


def _notify(incident: Incident) -> None:
    from slos.models import NotificationChannel
    from slos.tasks import deliver_message

    flagged = incident.flag
    data = {
        "event": "incident_opened",
        "incident": incident.pk,
        "title": incident.title,
        "agent": flagged.agent.slug,
        "environment": flagged.environment,
        "version": flagged.version,
        "baseline_version": flagged.baseline_version,
        "summary": flagged.summary,
        "evidence": flagged.evidence,
        "opened_by": incident.opened_by.get_username() if incident.opened_by else None,
        "at": incident.opened_at.isoformat(),
    }
    subject = f"[incident] {incident.title}: {flagged.summary}"
    for channel_id in NotificationChannel.objects.filter(department_id=flagged.agent.department_id).values_list(
        "pk", flat=True
    ):
        deliver_message.delay(channel_id, f"incident:{incident.pk}:opened", subject, data)
