"""What a person confirms before an intervention runs: its scope, what changes, and its risk."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from interventions import configs
from interventions.models import AgentConfig, LoadTest, ProfilingSession
from slos.confirm import Preview


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def describe_config(candidate: AgentConfig, user: Any = None) -> Preview:
    """A new configuration version: each setting that changes, before -> after."""
    base = configs.current(candidate.agent, candidate.environment)
    number = (base.version if base else 0) + 1
    preview = Preview(f"Configuration v{number} of {candidate.agent.slug} in {candidate.environment}")
    changes = candidate.diff(base or AgentConfig())  # a first version: against the defaults
    preview.facts = [("Agent", f"{candidate.agent.slug} ({candidate.environment})")]
    preview.facts += [
        (name.replace("_", " "), f"{_value(before)} → {_value(after)}") for name, before, after in changes
    ]
    if candidate.note:
        preview.facts.append(("Note", candidate.note))
    if not changes:
        preview.warnings.append("Nothing changes: these are the current settings.")
    if candidate.environment == "production":
        preview.warnings.append("Production: the agent picks this up at its next config poll.")
    if base is not None:
        preview.facts.append(("Undo", f"revert to v{base.version} from the history at any time"))
    return preview


def describe_profiling(candidate: ProfilingSession, user: Any = None) -> Preview:
    now = timezone.now()
    preview = Preview(f"Profile {candidate.agent.slug} in {candidate.environment}")
    minutes = candidate.duration_s / 60
    preview.facts = [
        ("Agent", f"{candidate.agent.slug} ({candidate.environment})"),
        ("Duration", f"{minutes:g} min, until {(now + timedelta(seconds=candidate.duration_s)):%H:%M} UTC"),
        ("While active", "the agent sends every request with full phase and dependency timing (100% sampling)"),
        ("After", "a bottleneck report against the agent's previous 24 hours"),
    ]
    if candidate.reason:
        preview.facts.append(("Reason", candidate.reason))
    if candidate.environment == "production":
        preview.warnings.append("Production: full detail adds load and trace volume for the session.")
    return preview


def describe(candidate: Any, user: Any = None) -> Preview:
    if isinstance(candidate, AgentConfig):
        return describe_config(candidate, user)
    if isinstance(candidate, LoadTest):
        return describe_load_test(candidate, user)
    return describe_profiling(candidate, user)


def describe_load_test(candidate: LoadTest, user: Any = None) -> Preview:
    preview = Preview(f"Load test {candidate.agent.slug} in {candidate.environment}")
    preview.facts = [
        ("Target", candidate.target_url),
        ("Starts", f"{candidate.scheduled_at:%Y-%m-%d %H:%M:%S} UTC"),
        (
            "Load",
            f"{candidate.rate_rps:g} requests/s"
            + (f" after a {candidate.ramp_s} s ramp" if candidate.ramp_s else "")
            + f" for {candidate.duration_s} s, at most {candidate.concurrency} in flight",
        ),
        ("Requests", f"about {candidate.expected_requests:,}"),
        ("Measured", "latency from each request's intended send time (no coordinated omission); SLOs compared"),
        ("Undo", "cancel any time before it starts; stop it while it runs"),
    ]
    if candidate.environment == "production":
        preview.warnings.append("Production: real users share this endpoint while the test runs.")
    return preview
