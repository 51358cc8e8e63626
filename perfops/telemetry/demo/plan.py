"""The seeded history's plan: which version ran where and when, the incidents, and the stories to find.

`build_plan` is deterministic for a seed apart from where the window ends (now): versions roll out
in office hours, staging ahead of production, development ahead of staging; two roll-outs are
regressions fixed by their next version, and a few incidents hit busy hours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from perfops.telemetry.demo.fleet import (
    ARCHETYPES,
    DEVELOPMENT,
    E_DEPENDENCY,
    E_LLM,
    E_NONE,
    E_RATE_LIMITED,
    E_VALIDATION,
    ENVIRONMENTS,
    ERROR_REGRESSION_AGENT,
    LATENCY_REGRESSION_AGENT,
    NEAR_CAPACITY_AGENT,
    OUTAGE_DEPARTMENT,
    PARITY_AGENT,
    PRODUCTION,
    RATE_LIMITED_AGENT,
    SLOWDOWN_MODEL,
    STAGING,
    US_PER_DAY,
    US_PER_H,
    US_PER_MIN,
    US_PER_S,
    VALIDATION_AGENT,
    AgentSpec,
    catalog,
    department,
    reports_deploys,
)


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """A version of an agent in one environment, from the start of its roll-out."""

    ae: int  # agent index * 3 + environment index
    name: str
    start_us: int
    ramp_us: int = 0  # the old version keeps a shrinking share of traffic for this long
    latency_factor: float = 1.0  # on preprocess and LLM time
    token_factor: float = 1.0  # on input tokens
    error_add: float = 0.0  # extra failure probability...
    error_type: int = E_NONE  # ...of this type
    source: str = "ingest"
    notes: str = ""


@dataclass(frozen=True, slots=True)
class Burst:
    """An incident: for a while, some agent-environments fail (or slow down) more."""

    label: str
    start_us: int
    end_us: int
    aes: tuple[int, ...]
    error_type: int = E_NONE
    probability: float = 0.0
    hang_ms: float = 0.0  # a failing dependency hangs this long before it errors
    llm_factor: float = 1.0  # LLM time multiplier (a slow provider)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A story in the history that a demo presenter can point at."""

    kind: str
    agent: str
    environment: str
    summary: str
    versions: tuple[str, ...] = ()
    start_us: int = 0
    end_us: int = 0


@dataclass
class FleetPlan:
    """The whole history to generate: fleet, window, versions per agent-environment, incidents."""

    seed: int
    start_us: int
    end_us: int
    agents: list[AgentSpec]
    versions: list[VersionSpec]
    bursts: list[Burst] = field(default_factory=list)
    scenarios: list[Scenario] = field(default_factory=list)
    # Persistent latency factors of some agent-environments (an undersized staging cluster).
    env_latency: dict[int, float] = field(default_factory=dict)

    @property
    def days(self) -> float:
        return (self.end_us - self.start_us) / US_PER_DAY

    def agent_index(self, slug: str) -> int:
        return next(i for i, agent in enumerate(self.agents) if agent.slug == slug)

    def ae(self, slug: str, environment: int) -> int:
        return self.agent_index(slug) * len(ENVIRONMENTS) + environment

    def scenario(self, kind: str) -> Scenario:
        return next(s for s in self.scenarios if s.kind == kind)


def to_us(moment: datetime) -> int:
    return int(moment.timestamp()) * US_PER_S + moment.microsecond


def from_us(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(value))


def window_end(now: datetime) -> datetime:
    """The seeded history ends at the current minute."""
    return now.astimezone(UTC).replace(second=0, microsecond=0)


def _working_time(t_us: int, end_us: int) -> int:
    """The next weekday office hour (09-17 UTC) within 18 h, where people deploy; else t itself."""
    moment = from_us(t_us)
    for step in range(18 * 4):
        candidate = moment + timedelta(minutes=15 * step)
        if candidate.weekday() < 5 and 9 <= candidate.hour < 17:
            value = to_us(candidate)
            return value if value < end_us - US_PER_H else t_us
    return t_us


def _increasing(times: list[int], gap_us: int) -> list[int]:
    """Each roll-out at least `gap_us` after the previous one."""
    out: list[int] = []
    for t in times:
        out.append(t if not out else max(t, out[-1] + gap_us))
    return out


def _busy_slot(start_us: int, end_us: int, frac: float, hour: int, minute: int, duration_us: int) -> int:
    """A weekday at hour:minute near `frac` of the window (incidents hurt most in busy hours)."""
    anchor = from_us(start_us + int(frac * (end_us - start_us)))
    days = int((end_us - start_us) // US_PER_DAY) + 2
    for offset in (0, *[sign * k for k in range(1, days) for sign in (-1, 1)]):
        day = (anchor + timedelta(days=offset)).replace(hour=hour, minute=minute, second=0, microsecond=0)
        t = to_us(day)
        if day.weekday() < 5 and start_us <= t and t + duration_us <= end_us - 5 * US_PER_MIN:
            return t
    return max(start_us, min(to_us(anchor), end_us - duration_us - 5 * US_PER_MIN))


def _bump(version: str, rng: np.random.Generator) -> str:
    major, minor, patch = (int(part) for part in version.split("."))
    if rng.random() < 0.3:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


class _Timeline:
    """Builds the versions of one agent in its three environments."""

    def __init__(self, plan_start: int, plan_end: int, snap: bool) -> None:
        self.start = plan_start
        self.end = plan_end
        self.snap = snap

    def at(self, frac: float) -> int:
        t = self.start + int(frac * (self.end - self.start))
        return _working_time(t, self.end) if self.snap else t

    def env_versions(
        self, ae: int, rollouts: list[tuple[str, int]], *, source: str, ramp_us: int, rng: np.random.Generator
    ) -> list[VersionSpec]:
        """Versions of one environment from ordered (name, start) roll-outs.

        What predates the window is dropped, and so is what got pushed past its end (not rolled out yet).
        """
        times = _increasing([t for _, t in rollouts], US_PER_H)
        rollouts = [(name, t) for (name, _), t in zip(rollouts, times, strict=True) if t < self.end - US_PER_MIN]
        first = max((i for i, (_, t) in enumerate(rollouts) if t <= self.start), default=0)
        specs = []
        for name, t in rollouts[first:]:
            ramp = ramp_us if t > self.start else 0
            specs.append(
                VersionSpec(
                    ae=ae,
                    name=name,
                    start_us=t,
                    ramp_us=ramp,
                    latency_factor=float(np.exp(rng.normal(0.0, 0.04))),
                    source=source,
                )
            )
        return specs


def build_plan(seed: int, n_agents: int, days: float, end: datetime) -> FleetPlan:
    """The fleet and its history over `days` up to `end`, deterministic for a seed (apart from `end`)."""
    end = window_end(end)
    end_us = to_us(end)
    start_us = end_us - int(days * US_PER_DAY)
    agents = catalog(n_agents)
    rng = np.random.default_rng([seed, 101])
    timeline = _Timeline(start_us, end_us, snap=days >= 7)
    n_env = len(ENVIRONMENTS)
    versions: list[VersionSpec] = []
    for index, agent in enumerate(agents):
        source = "api" if reports_deploys(agent) else "ingest"
        major, minor, patch = int(rng.integers(1, 4)), int(rng.integers(0, 12)), int(rng.integers(0, 6))
        names = [f"{major}.{minor}.{patch}"]
        count = int(min(rng.poisson(days / 7), 5))
        for _ in range(count + 1):
            names.append(_bump(names[-1], rng))
        prod_times = sorted(timeline.at(float(f)) for f in rng.uniform(0.05, 0.95, count))
        before = start_us - int(rng.uniform(1, 20) * US_PER_DAY)
        prod = [(names[0], before), *zip(names[1 : count + 1], prod_times, strict=True)]
        staging = [(name, t - int(rng.uniform(3, 36) * US_PER_H)) for name, t in prod]
        development = [(name, t - int(rng.uniform(6, 48) * US_PER_H)) for name, t in staging]
        # The next version is already in development, and sometimes in staging too.
        development.append((names[count + 1], timeline.at(float(rng.uniform(0.8, 0.95)))))
        if rng.random() < 0.5:
            staging.append((names[count + 1], timeline.at(float(rng.uniform(0.9, 0.98)))))
        ramp = int(rng.uniform(10, 40) * US_PER_MIN)
        for env, rollouts in ((0, prod), (1, staging), (2, development)):
            versions.extend(
                timeline.env_versions(
                    index * n_env + env, rollouts, source=source, ramp_us=ramp if env == 0 else US_PER_MIN, rng=rng
                )
            )
    plan = FleetPlan(seed=seed, start_us=start_us, end_us=end_us, agents=agents, versions=versions)
    _add_regressions(plan, timeline)
    _add_incidents(plan)
    plan.versions.sort(key=lambda v: (v.ae, v.start_us))
    return plan


def _replace_versions(plan: FleetPlan, ae: int, specs: list[VersionSpec]) -> None:
    plan.versions = [v for v in plan.versions if v.ae != ae] + specs


def _add_regressions(plan: FleetPlan, timeline: _Timeline) -> None:
    """The latency and the error-rate regressions, each fixed by the next version."""
    _roll_out_regression(
        plan,
        timeline,
        LATENCY_REGRESSION_AGENT,
        versions=("2.2.4", "2.3.0", "2.3.1", "2.4.0"),
        # The prompt grew: more input tokens, slower preprocessing and LLM calls.
        effect={"latency_factor": 1.7, "token_factor": 2.3},
        notes=(
            "Adds the customer's last 20 orders to the prompt context.",
            "Trims the order history to the last 3 orders (fixes the 2.3.0 latency regression).",
        ),
        schedule={
            PRODUCTION: (0.5, 0.75, US_PER_H // 2),
            STAGING: (0.42, 0.7, US_PER_MIN),
            DEVELOPMENT: (0.35, 0.65, US_PER_MIN),
        },
        next_dev_at=0.9,
        scenario=("latency_regression", "p95 latency up ~60% (prompt grew), fixed by the next version"),
    )
    _roll_out_regression(
        plan,
        timeline,
        ERROR_REGRESSION_AGENT,
        versions=("3.0.7", "3.1.0", "3.1.1", "3.2.0"),
        # Strict JSON mode: the model's answer fails to parse ~4.5% more often.
        effect={"error_add": 0.045, "error_type": E_LLM},
        notes=(
            "Switches the extraction prompt to strict JSON mode.",
            "Retries a malformed JSON answer once (fixes the 3.1.0 error regression).",
        ),
        schedule={
            PRODUCTION: (0.2, 0.45, US_PER_H // 3),
            STAGING: (0.12, 0.42, US_PER_MIN),
            DEVELOPMENT: (0.05, 0.38, US_PER_MIN),
        },
        next_dev_at=0.85,
        scenario=("error_regression", "llm_error rate up ~4.5 points (malformed JSON), fixed by the next version"),
    )


def _roll_out_regression(
    plan: FleetPlan,
    timeline: _Timeline,
    slug: str,
    *,
    versions: tuple[str, str, str, str],
    effect: dict[str, Any],
    notes: tuple[str, str],
    schedule: dict[int, tuple[float, float, int]],
    next_dev_at: float,
    scenario: tuple[str, str],
) -> None:
    """A good version, a regressing one (with `effect`), its fix; development then moves on again.

    `schedule` gives per environment when the regression and the fix roll out (as fractions of the
    history) and how long each roll-out ramps.
    """
    before = plan.start_us - 3 * US_PER_DAY
    agent = plan.agent_index(slug)
    source = "api" if reports_deploys(plan.agents[agent]) else "ingest"
    good, bad, fixed, later = versions
    for env, (regress_at, fix_at, ramp) in schedule.items():
        ae = agent * len(ENVIRONMENTS) + env
        specs = [
            VersionSpec(ae, good, before, source=source),
            VersionSpec(ae, bad, timeline.at(regress_at), ramp, source=source, notes=notes[0], **effect),
            VersionSpec(ae, fixed, timeline.at(fix_at), ramp, source=source, notes=notes[1]),
        ]
        if env == DEVELOPMENT:
            specs.append(VersionSpec(ae, later, timeline.at(next_dev_at), ramp, source=source))
        _replace_versions(plan, ae, specs)
    name, summary = scenario
    plan.scenarios.append(Scenario(name, slug, "production", summary, versions=(good, bad, fixed)))


def _fails_with_department_api(agent: AgentSpec) -> bool:
    archetype = ARCHETYPES[agent.archetype]
    return archetype.calls[archetype.dependency_slot].name == "{api}"


def _add_incidents(plan: FleetPlan) -> None:
    """Error bursts by type, a slow provider, a staging parity gap and a hot agent."""
    n_env = len(ENVIRONMENTS)
    start, end = plan.start_us, plan.end_us

    def slot(frac: float, hour: int, minute: int, minutes: int) -> tuple[int, int]:
        t = _busy_slot(start, end, frac, hour, minute, minutes * US_PER_MIN)
        return t, t + minutes * US_PER_MIN

    rate_from, rate_to = slot(0.82, 14, 10, 40)
    plan.bursts.append(
        Burst(
            "rate_limited burst",
            rate_from,
            rate_to,
            (plan.ae(RATE_LIMITED_AGENT, PRODUCTION),),
            error_type=E_RATE_LIMITED,
            probability=0.8,  # the provider's quota for the key is spent: most calls bounce
        )
    )
    plan.scenarios.append(
        Scenario(
            "rate_limited_burst",
            RATE_LIMITED_AGENT,
            "production",
            "40 minutes of rate_limited errors (the LLM provider throttled its API key)",
            start_us=rate_from,
            end_us=rate_to,
        )
    )

    api = department(OUTAGE_DEPARTMENT).api
    outage_from, outage_to = slot(0.64, 10, 30, 25)
    affected = tuple(
        i * n_env + PRODUCTION
        for i, agent in enumerate(plan.agents)
        if agent.department == OUTAGE_DEPARTMENT and _fails_with_department_api(agent)
    )
    plan.bursts.append(
        Burst(
            f"{api} outage",
            outage_from,
            outage_to,
            affected,
            error_type=E_DEPENDENCY,
            probability=0.45,
            hang_ms=3000.0,
        )
    )
    plan.scenarios.append(
        Scenario(
            "dependency_outage",
            OUTAGE_DEPARTMENT,
            "production",
            f"{api} down for 25 minutes: dependency_error across the department's agents",
            start_us=outage_from,
            end_us=outage_to,
        )
    )

    slow_from, slow_to = slot(0.3, 15, 0, 45)
    users = tuple(
        i * n_env + env for i, agent in enumerate(plan.agents) if agent.model == SLOWDOWN_MODEL for env in range(n_env)
    )
    plan.bursts.append(
        Burst(
            f"{SLOWDOWN_MODEL} slowdown",
            slow_from,
            slow_to,
            users,
            error_type=E_LLM,
            probability=0.04,
            llm_factor=5.0,
        )
    )
    plan.scenarios.append(
        Scenario(
            "provider_slowdown",
            SLOWDOWN_MODEL,
            "all",
            f"45 minutes of {SLOWDOWN_MODEL} LLM time x5: timeouts on every agent using it",
            start_us=slow_from,
            end_us=slow_to,
        )
    )

    bad_from, bad_to = slot(0.15, 11, 0, 60)
    plan.bursts.append(
        Burst(
            "validation burst",
            bad_from,
            bad_to,
            (plan.ae(VALIDATION_AGENT, PRODUCTION),),
            error_type=E_VALIDATION,
            probability=0.3,
        )
    )
    plan.scenarios.append(
        Scenario(
            "validation_burst",
            VALIDATION_AGENT,
            "production",
            "an hour of validation errors (a CRM field was renamed under it)",
            start_us=bad_from,
            end_us=bad_to,
        )
    )

    plan.env_latency[plan.ae(PARITY_AGENT, STAGING)] = 2.0
    plan.scenarios.append(
        Scenario(
            "parity_gap", PARITY_AGENT, "staging", "staging ~2x slower than production (undersized search cluster)"
        )
    )
    plan.scenarios.append(
        Scenario("near_capacity", NEAR_CAPACITY_AGENT, "production", "peaks at ~90% of its capacity in the evening")
    )


def live_plan(agents: list[AgentSpec], current: dict[tuple[str, str], str], now: datetime) -> FleetPlan:
    """A plan for live traffic: each agent-environment runs its current version, no scheduled incidents."""
    versions = []
    for index, agent in enumerate(agents):
        for env, environment in enumerate(ENVIRONMENTS):
            name = current.get((agent.slug, environment), "1.0.0")
            versions.append(VersionSpec(index * len(ENVIRONMENTS) + env, name, 0))
    end_us = to_us(now)
    plan = FleetPlan(seed=0, start_us=end_us - US_PER_DAY, end_us=end_us, agents=agents, versions=versions)
    parity = next((i for i, agent in enumerate(agents) if agent.slug == PARITY_AGENT), None)
    if parity is not None:
        plan.env_latency[parity * len(ENVIRONMENTS) + STAGING] = 2.0
    return plan
