"""Check each new version of every agent against the one before it, and flag the regressions (beat, every 10 min).

A version is checked while it is new (first seen in the last 7 days): "insufficient" is tried again
at the next run, a pass or a fail is final (kept in VersionCheck), and a fail raises a suspected
RegressionFlag with the decision as its evidence, for an engineer to confirm or dismiss.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from django.utils import timezone

from perfops.analytics import regression, samples

logger = logging.getLogger(__name__)

NEW_FOR = timedelta(days=7)
# The system reads every department (a superuser's scope).
SYSTEM = SimpleNamespace(is_authenticated=True, is_active=True, is_superuser=True, pk=None)


def check_new_versions(now: datetime | None = None) -> dict[str, int]:
    from interventions import regressions
    from interventions.models import VersionCheck
    from perfops.telemetry.models import Deployment

    now = now or timezone.now()
    counts = {"checked": 0, "fail": 0, "pass": 0, "insufficient": 0, "flagged": 0}
    final = set(
        VersionCheck.objects.exclude(verdict=regression.INSUFFICIENT).values_list("agent_id", "environment", "version")
    )
    deployments: Any = Deployment.objects
    recent = (
        deployments.with_effective_at()
        .filter(effective_at__gte=now - NEW_FOR)
        .select_related("agent")
        .order_by("effective_at")
    )
    for deployment in recent:
        key = (deployment.agent_id, deployment.environment, deployment.version)
        if key in final:
            continue
        agent, environment, version = deployment.agent, deployment.environment, deployment.version
        before = regressions.baseline_of(agent, environment, version)
        if before is None or before.version == version:
            continue
        decision = regression.compare(
            samples.sample(agent, environment, before.version, now),
            samples.sample(agent, environment, version, now),
            regression.hour_profile(samples.history(agent, environment, before.version, now)),
        )
        counts["checked"] += 1
        counts[decision.verdict] += 1
        evidence = {"baseline_version": before.version, "decision": decision.as_dict()}
        VersionCheck.objects.update_or_create(
            agent=agent,
            environment=environment,
            version=version,
            defaults={
                "baseline_version": before.version,
                "verdict": decision.verdict,
                "evidence": evidence,
                "checked_at": now,
            },
        )
        if decision.verdict == regression.FAIL:
            summary = f"{version} against {before.version}: " + " ".join(decision.reasons)
            counts["flagged"] += raise_flag(agent, environment, version, summary, evidence, now)
    if counts["checked"]:
        logger.info("version checks: %s", counts)
    return counts


def raise_flag(agent: Any, environment: str, version: str, summary: str, found: dict[str, Any], now: datetime) -> bool:
    """A suspected flag raised by the analytics, with the version's metrics beside `found`; False if one is open."""
    from interventions import regressions
    from interventions.models import RegressionFlag

    try:
        regressions.flag(
            agent,
            environment,
            version,
            SYSTEM,
            source=RegressionFlag.Source.ANALYTICS,
            summary=summary[:300],
            found=found | regressions.evidence(agent, environment, version, SYSTEM, now),
        )
    except regressions.AlreadyFlagged:
        return False
    return True
