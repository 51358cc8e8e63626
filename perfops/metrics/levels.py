"""Rollup levels: the time grains and the pre-merged views, and how long each is kept."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models


class Grain(models.IntegerChoices):
    """The width of a rollup bucket, in seconds."""

    S30 = 30, "30 seconds"
    M5 = 300, "5 minutes"
    H1 = 3600, "1 hour"
    D1 = 86400, "1 day"


BASE = Grain.S30
# Coarser grains, each built from the one before it.
COARSE = (Grain.M5, Grain.H1, Grain.D1)
FINER = {Grain.M5: Grain.S30, Grain.H1: Grain.M5, Grain.D1: Grain.H1}


class View(models.IntegerChoices):
    """Which dimensions a rollup row keeps (every view keeps the environment)."""

    AGENT = 0, "Agent (agent, version, intent)"
    FLEET = 1, "Fleet"
    DEPARTMENT = 2, "Department"
    TEAM = 3, "Team"
    INTENT = 4, "Department and intent"
    TOTAL = 5, "Fleet, all outcomes"
    AGENT_TOTAL = 6, "Agent and version, all outcomes"


# The dimensions each view keeps besides the environment; "outcome" is the status, error type and tier.
# The department is kept by every view but the fleet ones so that people scoped to departments read
# pre-merged rows too. The total view (one row per bucket and environment, its errors and timeouts
# counted in columns) is what the default dashboard reads: the fleet without a status or tier filter.
# The agent total view keeps each agent and version but no outcome and no intent: per agent and
# bucket one row (two during a rollout), so a per-agent or per-version chart, a version filter and
# the agent page read ~10x fewer rows than from the agent view. Filtering on status, tier or intent
# together with an agent or version still reads the agent view.
VIEW_DIMS: dict[View, frozenset[str]] = {
    View.TOTAL: frozenset(),
    View.FLEET: frozenset({"outcome"}),
    View.DEPARTMENT: frozenset({"outcome", "department"}),
    View.TEAM: frozenset({"outcome", "department", "team"}),
    View.INTENT: frozenset({"outcome", "department", "intent"}),
    View.AGENT_TOTAL: frozenset({"department", "team", "agent", "version"}),
    View.AGENT: frozenset({"outcome", "department", "team", "agent", "version", "intent"}),
}
# Smallest first: the query layer reads the first view that keeps every dimension it needs.
VIEWS_BY_SIZE = (View.TOTAL, View.FLEET, View.DEPARTMENT, View.TEAM, View.INTENT, View.AGENT_TOTAL, View.AGENT)
DERIVED_VIEWS = VIEWS_BY_SIZE[:-1]
# The status and tier codes of rows that keep no outcome (the total view).
ANY_STATUS = 3
ANY_TIER = 4


def retention(grain: int) -> timedelta:
    """How long rows of a grain are kept: the finer, the shorter (the ranges that need them are recent)."""
    limits = settings.PERFOPS
    if grain == Grain.S30:
        return timedelta(hours=limits["ROLLUP_30S_RETENTION_HOURS"])
    if grain == Grain.M5:
        return timedelta(days=limits["ROLLUP_5M_RETENTION_DAYS"])
    return timedelta(days=limits["ROLLUP_RETENTION_DAYS"])


def kept_from(grain: int, now: datetime) -> int:
    """The epoch second from which rows of `grain` exist (aligned to the next coarser grain).

    Before it, the grain's buckets are neither written nor read: the next coarser grain stands in,
    computed straight from the raw traces where its own finer rows are gone.
    """
    if grain == Grain.D1 or grain == Grain.H1:
        return floor_to(int((now - retention(grain)).timestamp()), Grain.D1)
    coarser = Grain.M5 if grain == Grain.S30 else Grain.H1
    start = max(int((now - retention(grain)).timestamp()), kept_from(coarser, now))
    return ceil_to(start, coarser)


def floor_to(epoch_s: int, width_s: int) -> int:
    return epoch_s // width_s * width_s


def ceil_to(epoch_s: int, width_s: int) -> int:
    return -(-epoch_s // width_s) * width_s
