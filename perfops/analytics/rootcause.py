"""Why was this request (or this agent) slow? The excess latency attributed to phases and calls.

Pure: a request's phases and calls against its agent's baseline (the medians of its recent requests),
answered in one sentence that names its numbers ("LLM call claude-sonnet-4 3.1 s, 2.4x its p50 of
1.3 s: 78% of the 2.2 s this request spent over the agent's p50").

The excess of a request is its latency minus the agent's p50. Each phase's excess is its duration
minus that phase's p50, and likewise for each call (by kind and name: an LLM call is named by its
model). The cause is the phase with the largest excess, narrowed to the call inside it when that call
carries at least half of the phase's excess: a slow phase is usually one slow dependency.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Under 1.25x the agent's p50 a request is within its normal spread: nothing to explain.
SLOW_RATIO = 1.25
MIN_BASELINE = 30  # requests behind a baseline, fewer and the medians are noise
CALL_SHARE = 0.5  # a call is named when it carries this much of its phase's excess
MIN_SHARE = 0.25  # a part named as the cause carries at least this much of the request's excess
KIND_NAMES = {"llm": "LLM", "db": "database", "http": "HTTP", "tool": "tool"}


@dataclass(frozen=True)
class Baseline:
    """An agent's typical request: the p50 of its latency, of each phase and of each call (by "kind: name")."""

    requests: int
    latency_p50_ms: float
    phase_p50_ms: dict[str, float]
    call_p50_ms: dict[str, float]


@dataclass(frozen=True)
class Part:
    """One phase or call of a request against its baseline."""

    name: str
    ms: float
    p50_ms: float

    @property
    def excess_ms(self) -> float:
        return self.ms - self.p50_ms

    @property
    def ratio(self) -> float | None:
        return self.ms / self.p50_ms if self.p50_ms > 0 else None


@dataclass(frozen=True)
class Cause:
    """The part that made a request slow, with the numbers that show it."""

    sentence: str
    part: str | None  # None: not slow, or nothing in the request explains it
    excess_ms: float
    share: float  # of the request's excess carried by the part


def call_key(call: Mapping[str, Any]) -> str:
    return f"{call.get('kind', 'call')}: {call.get('name', '?')}"


def _phases(phases: Mapping[str, Any] | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in (phases or {}).items() if isinstance(v, int | float)}


def _calls(calls: Sequence[Any] | None) -> list[Mapping[str, Any]]:
    return [c for c in (calls or []) if isinstance(c, Mapping)]


def _call_ms(calls: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Time per call key (a request may call the same dependency more than once: summed)."""
    out: dict[str, float] = defaultdict(float)
    for call in calls:
        duration = call.get("duration_ms")
        if isinstance(duration, int | float):
            out[call_key(call)] += float(duration)
    return dict(out)


def baseline(rows: Iterable[tuple[float, Mapping[str, Any] | None, Sequence[Any] | None]]) -> Baseline | None:
    """The medians of (latency_ms, phases, dependencies) rows; None with too few requests to trust them.

    A phase or call missing from a request counts as 0 ms there, so a call made by one request in ten
    has a p50 of 0 and all of its time is excess when it happens.
    """
    latencies: list[float] = []
    phase_values: dict[str, list[float]] = defaultdict(list)
    call_values: dict[str, list[float]] = defaultdict(list)
    for n, (latency, phases, calls) in enumerate(rows):
        latencies.append(float(latency))
        for name, ms in _phases(phases).items():
            values = phase_values[name]
            values.extend([0.0] * (n - len(values)))
            values.append(ms)
        for key, ms in _call_ms(_calls(calls)).items():
            values = call_values[key]
            values.extend([0.0] * (n - len(values)))
            values.append(ms)
    total = len(latencies)
    if total < MIN_BASELINE:
        return None

    def medians(values: dict[str, list[float]]) -> dict[str, float]:
        return {k: float(np.median(v + [0.0] * (total - len(v)))) for k, v in values.items()}

    return Baseline(
        requests=total,
        latency_p50_ms=float(np.median(latencies)),
        phase_p50_ms=medians(phase_values),
        call_p50_ms=medians(call_values),
    )


def duration(ms: float) -> str:
    """1,250 ms as "1.25 s", 830 ms as "830 ms"."""
    if abs(ms) >= 10_000:
        return f"{ms / 1000:,.1f} s"
    if abs(ms) >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:,.0f} ms"


def _times(ratio: float | None) -> str:
    return "" if ratio is None else f", {ratio:.1f}x its p50 of "


def _describe(part: Part, *, model: str = "") -> str:
    label = part.name
    if ": " in label:
        kind, name = label.split(": ", 1)
        label = f"{KIND_NAMES.get(kind, kind)} call {name}"
    else:
        label = f"{KIND_NAMES.get(label, label)} phase"
        if model and part.name == "llm":
            label += f" (model {model})"
    if part.p50_ms > 0:
        return f"{label} {duration(part.ms)}{_times(part.ratio)}{duration(part.p50_ms)}"
    return f"{label} {duration(part.ms)}, usually absent or instant"


def explain(
    latency_ms: float,
    phases: Mapping[str, Any] | None,
    calls: Sequence[Any] | None,
    base: Baseline,
    *,
    model: str = "",
    status: str = "ok",
) -> Cause:
    """The one-sentence cause of one request's latency against its agent's baseline."""
    excess = latency_ms - base.latency_p50_ms
    if latency_ms < SLOW_RATIO * base.latency_p50_ms:
        return Cause(
            f"Not slow for this agent: {duration(latency_ms)} against its p50 of {duration(base.latency_p50_ms)} "
            f"over {base.requests:,} recent requests.",
            None,
            excess,
            0.0,
        )
    mine = _phases(phases)
    parts = [Part(name, ms, base.phase_p50_ms.get(name, 0.0)) for name, ms in mine.items()]
    parts = [p for p in parts if p.excess_ms > 0]
    call_parts = [Part(key, ms, base.call_p50_ms.get(key, 0.0)) for key, ms in _call_ms(_calls(calls)).items()]
    call_parts = [p for p in call_parts if p.excess_ms > 0]
    timed_out = " It timed out." if status == "timeout" else ""
    top_excess = max((p.excess_ms for p in parts + call_parts), default=0.0)
    if top_excess < MIN_SHARE * excess:
        return Cause(
            f"{duration(latency_ms)}, {latency_ms / base.latency_p50_ms:.1f}x the agent's p50 of "
            f"{duration(base.latency_p50_ms)}, but no phase or call carries more than {top_excess / excess:.0%} "
            f"of the {duration(excess)} over it: the time went outside the recorded phases.{timed_out}",
            None,
            excess,
            0.0,
        )
    top = max(parts or call_parts, key=lambda p: p.excess_ms)
    # A call inside the slow phase that carries most of its excess is the more precise answer.
    best_call = max(call_parts, key=lambda p: p.excess_ms, default=None)
    if best_call is not None and (top in call_parts or best_call.excess_ms >= CALL_SHARE * top.excess_ms):
        cause = best_call
        within = "" if top is best_call else f" (the {top.name} phase took {duration(top.ms)})"
    else:
        cause, within = top, ""
    share = min(1.0, cause.excess_ms / excess) if excess > 0 else 0.0
    sentence = (
        f"{_describe(cause, model=model)}{within}: {share:.0%} of the {duration(excess)} this request spent "
        f"over the agent's p50 of {duration(base.latency_p50_ms)}.{timed_out}"
    )
    return Cause(sentence[0].upper() + sentence[1:], cause.name, cause.excess_ms, share)


def explain_shift(
    latency_now_ms: float,
    latency_before_ms: float,
    phases: tuple[Mapping[str, float], Mapping[str, float]],
    calls: tuple[Mapping[str, float], Mapping[str, float]],
    label: str,
) -> str | None:
    """Why a scope (an agent, a team) got slower: the phase, and the call in it, that carry the increase.

    `phases` and `calls` are (now, before) maps of a phase or a "kind: name" call to its mean time per
    request in each window. None when mean latency did not rise by at least 10%.
    """
    increase = latency_now_ms - latency_before_ms
    if latency_before_ms <= 0 or latency_now_ms < 1.1 * latency_before_ms:
        return None
    head = (
        f"Mean latency {duration(latency_now_ms)} against {duration(latency_before_ms)} {label} "
        f"(+{increase / latency_before_ms:.0%})"
    )

    def biggest(now: Mapping[str, float], before: Mapping[str, float]) -> Part | None:
        parts = [Part(name, now.get(name, 0.0), before.get(name, 0.0)) for name in sorted(set(now) | set(before))]
        return max((p for p in parts if p.excess_ms > 0), key=lambda p: p.excess_ms, default=None)

    phase, call = biggest(*phases), biggest(*calls)
    top = phase or call
    if top is None:
        return f"{head}, spread over no single phase or call."
    if call is not None and phase is not None and call.excess_ms >= CALL_SHARE * phase.excess_ms:
        top = call
    share = min(1.0, top.excess_ms / increase)
    ratio = f", {top.ratio:.1f}x" if top.ratio is not None else ""
    where = f"the {top.name} phase" if top is phase else top.name
    return (
        f"{head}: {where} carries {share:.0%} of the increase "
        f"({duration(top.ms)} per request against {duration(top.p50_ms)}{ratio})."
    )
