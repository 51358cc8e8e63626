"""Live traffic of the fleet: the seeded history's generator, run tick by tick, with incidents now and then."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from perfops.telemetry.demo.fleet import (
    ARCHETYPES,
    DEPARTMENTS,
    E_DEPENDENCY,
    E_LLM,
    E_RATE_LIMITED,
    E_VALIDATION,
    ENVIRONMENTS,
    MODELS,
    PRODUCTION,
    US_PER_MIN,
    department,
)
from perfops.telemetry.demo.plan import Burst, FleetPlan
from perfops.telemetry.demo.render import Renderer
from perfops.telemetry.demo.traffic import TrafficModel

MEAN_INCIDENT_GAP_MIN = 8.0


class LiveTraffic:
    """Records for [t0, t1) at `rate_per_s` (weekly average, following the daily shape)."""

    def __init__(
        self, plan: FleetPlan, rate_per_s: float, seed: int, announce: Callable[[str], None] | None = None
    ) -> None:
        self.model = TrafficModel(plan)
        self.renderer = Renderer(self.model)
        self.rate_per_s = rate_per_s
        self.rng = np.random.default_rng([seed, 1])
        self.announce = announce or (lambda message: None)
        self.next_incident_us: int | None = None

    def shape_at(self, t_us: int) -> float:
        """The fleet's rate at t relative to its weekly average."""
        return float(self.model.fleet_rate_shape(np.array([t_us], dtype=np.int64))[0])

    def tick(self, t0_us: int, t1_us: int) -> list[dict[str, Any]]:
        """The requests that finished in [t0, t1): each starts its latency earlier than it ended."""
        self._maybe_incident(t0_us)
        cols = self.model.sample_live(self.rng, t0_us, t1_us, self.rate_per_s)
        cols.t_us = cols.t_us - np.rint(cols.latency_ms * 1000).astype(np.int64)
        return self.renderer.records(cols)

    def _maybe_incident(self, now_us: int) -> None:
        if self.next_incident_us is None:
            self.next_incident_us = now_us + self._gap_us(first=True)
            return
        if now_us < self.next_incident_us:
            return
        self.model.drop_bursts_before(now_us)
        burst = self._incident(now_us)
        self.model.add_burst(burst)
        minutes = (burst.end_us - burst.start_us) / US_PER_MIN
        self.announce(f"incident: {burst.label} for {minutes:.0f} min")
        self.next_incident_us = burst.end_us + self._gap_us(first=False)

    def _gap_us(self, *, first: bool) -> int:
        minutes = 2.0 + self.rng.exponential(MEAN_INCIDENT_GAP_MIN / (2 if first else 1))
        return int(minutes * US_PER_MIN)

    def _incident(self, now_us: int) -> Burst:
        """A random, short incident of one of the kinds the history holds."""
        rng = self.rng
        plan = self.model.plan
        n_env = len(ENVIRONMENTS)
        llm_agents = [i for i, a in enumerate(plan.agents) if ARCHETYPES[a.archetype].uses_llm]
        kind = rng.choice(["rate_limited", "outage", "slowdown", "validation"], p=[0.35, 0.3, 0.2, 0.15])
        minutes = float(rng.uniform(1.0, 4.0))
        end_us = now_us + int(minutes * US_PER_MIN)
        if kind == "rate_limited" and llm_agents:
            agent = plan.agents[int(rng.choice(llm_agents))]
            ae = plan.ae(agent.slug, PRODUCTION)
            return Burst(f"rate_limited burst on {agent.slug}", now_us, end_us, (ae,), E_RATE_LIMITED, 0.5)
        if kind == "outage":
            dept = DEPARTMENTS[int(rng.integers(len(DEPARTMENTS)))]
            aes = tuple(i * n_env + PRODUCTION for i, a in enumerate(plan.agents) if a.department == dept.slug)
            label = f"{department(dept.slug).api} outage ({dept.slug})"
            return Burst(label, now_us, end_us, aes, E_DEPENDENCY, 0.4, hang_ms=2500.0)
        if kind == "slowdown":
            used = sorted({a.model for a in plan.agents if a.model} & set(MODELS))
            model = used[int(rng.integers(len(used)))] if used else ""
            aes = tuple(i * n_env + e for i, a in enumerate(plan.agents) if a.model == model for e in range(n_env))
            return Burst(f"{model} slowdown", now_us, end_us, aes, E_LLM, 0.03, llm_factor=3.0)
        agent = plan.agents[int(rng.integers(len(plan.agents)))]
        ae = plan.ae(agent.slug, PRODUCTION)
        return Burst(f"validation errors on {agent.slug}", now_us, end_us, (ae,), E_VALIDATION, 0.3)
