"""Periodic metrics work: the rollup tick, and retention of raw traces and rollups."""

from __future__ import annotations

from celery import shared_task

from perfops.metrics import retention, rollup


@shared_task(time_limit=rollup.LEASE_S, soft_time_limit=rollup.LEASE_S - 10)
def rollup_tick() -> dict[str, object]:
    """Recompute settled dirty buckets and build closed coarse buckets (every 10 s under beat)."""
    return rollup.tick().as_dict()


@shared_task(time_limit=3600, soft_time_limit=3500)
def apply_retention() -> dict[str, int]:
    """Drop raw traces and rollups past their retention (hourly under beat)."""
    return retention.apply_retention()


@shared_task(time_limit=3600, soft_time_limit=3500)
def reattribute_agent(agent_id: int) -> dict[str, object]:
    """Relabel a moved agent's rollups and rebuild the department, team and intent views it feeds."""
    return rollup.reattribute_agent(agent_id).as_dict()
