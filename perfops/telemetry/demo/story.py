"""What a demo presenter should look for: the seeded scenarios, with the numbers they came out with."""

from __future__ import annotations

import numpy as np

from perfops.telemetry.demo.fleet import E_LLM, ENVIRONMENTS, PRODUCTION
from perfops.telemetry.demo.loader import LoadResult
from perfops.telemetry.demo.plan import FleetPlan, Scenario, from_us


def _when(value: int) -> str:
    return from_us(value).strftime("%Y-%m-%d %H:%M UTC")


def scenario_versions(plan: FleetPlan, scenario: Scenario) -> list[int]:
    """Indexes (into plan.versions) of a regression scenario's production versions, in roll-out order."""
    ae = plan.ae(scenario.agent, PRODUCTION)
    return [i for i, v in enumerate(plan.versions) if v.ae == ae and v.name in scenario.versions]


def watched_versions(plan: FleetPlan) -> set[int]:
    watched: set[int] = set()
    for kind in ("latency_regression", "error_regression"):
        watched.update(scenario_versions(plan, plan.scenario(kind)))
    return watched


def _label(text: str) -> str:
    return f"{text:<25}"


def _p95(latency: np.ndarray) -> str:
    return f"{np.percentile(latency, 95):,.0f} ms" if len(latency) else "n/a"


def story_lines(plan: FleetPlan, load: LoadResult) -> list[str]:
    """One or two lines per scenario: where to look and what the seeded numbers are."""
    lines = []
    scenario = plan.scenario("latency_regression")
    parts = []
    for index in scenario_versions(plan, scenario):
        version = plan.versions[index]
        latency, _ = load.watched_arrays(index)
        parts.append(f"{version.name} from {_when(version.start_us)}: p95 {_p95(latency)} ({len(latency):,} traces)")
    lines.append(f"{_label('latency regression')}{scenario.agent} (production) 2.3.0, fixed by 2.3.1")
    lines.extend(f"    {part}" for part in parts)

    scenario = plan.scenario("error_regression")
    parts = []
    for index in scenario_versions(plan, scenario):
        version = plan.versions[index]
        _, errors = load.watched_arrays(index)
        rate = f"{(errors == E_LLM).mean():.1%}" if len(errors) else "n/a"
        parts.append(f"{version.name} from {_when(version.start_us)}: llm_error {rate} ({len(errors):,} traces)")
    lines.append(f"{_label('error regression')}{scenario.agent} (production) 3.1.0, fixed by 3.1.1")
    lines.extend(f"    {part}" for part in parts)

    for burst, (inside, hits) in zip(plan.bursts, load.bursts or [[0, 0]] * len(plan.bursts), strict=True):
        agents = {plan.agents[ae // len(ENVIRONMENTS)].slug for ae in burst.aes}
        who = next(iter(agents)) if len(agents) == 1 else f"{len(agents)} agents"
        share = f"{hits / inside:.0%}" if inside else "n/a"
        lines.append(
            f"{_label(burst.label)}{who}: {_when(burst.start_us)} to {from_us(burst.end_us):%H:%M} UTC, "
            f"{hits:,} of {inside:,} requests failed ({share})"
        )
    for kind in ("parity_gap", "near_capacity"):
        scenario = plan.scenario(kind)
        lines.append(f"{_label(kind.replace('_', ' '))}{scenario.agent} ({scenario.environment}): {scenario.summary}")
    return lines
