"""Vectorised trace generation: when requests happen, and what each one looked like.

Shared by seed_demo (history, in chunks) and simulate (live ticks, single requests of the
simulated agents). Every random draw is a numpy array operation over all rows of a batch; the
only per-row Python work is the text formatting in render.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import orjson

from perfops.telemetry.demo.fleet import (
    ARCHETYPE_KEYS,
    ARCHETYPES,
    CUSTOMER_TIERS,
    E_DEPENDENCY,
    E_LLM,
    E_NONE,
    E_OTHER,
    E_RATE_LIMITED,
    E_TIMEOUT,
    E_VALIDATION,
    ENV_ERROR,
    ENV_LATENCY,
    ENV_SHARE,
    ENVIRONMENTS,
    LLM,
    MAX_CALLS,
    MIX_TYPES,
    MODELS,
    PHASES,
    POST,
    PRE,
    PROFILES,
    REGIONS,
    RET,
    US_PER_DAY,
    US_PER_H,
    US_PER_MIN,
)
from perfops.telemetry.demo.plan import Burst, FleetPlan

N_PHASES = len(PHASES)
N_ENV = len(ENVIRONMENTS)
_VERSION_SHIFT = 44  # version lookup keys: ae << 44 | microseconds since the oldest roll-out (~200 days)
_RETRIES_OK = (0.93, 0.05, 0.02)
STALL_RATE = 0.002
_RETRIES_FAILED = (0.5, 0.3, 0.2)


def _bump(hours: np.ndarray, center: float, width: float) -> np.ndarray:
    """A bell around `center` o'clock that wraps around midnight."""
    distance = (hours - center + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (distance / width) ** 2)


def profile_intensity(t_us: np.ndarray) -> np.ndarray:
    """Relative request rate of each daily profile (business, consumer, batch) at UTC times t: shape (3, n)."""
    hours = (t_us % US_PER_DAY) / US_PER_H
    weekend = ((t_us // US_PER_DAY) + 3) % 7 >= 5  # 1970-01-01 was a Thursday
    business = np.where(
        weekend,
        0.05 + 0.22 * _bump(hours, 14.0, 3.0),
        0.05 + _bump(hours, 10.5, 1.6) + 0.95 * _bump(hours, 15.0, 1.9) + 0.12 * _bump(hours, 20.5, 1.5),
    )
    consumer = np.where(
        weekend,
        0.1 + 0.7 * _bump(hours, 14.0, 4.0) + 0.55 * _bump(hours, 20.5, 2.0),
        0.1 + 0.65 * _bump(hours, 12.5, 3.5) + 0.6 * _bump(hours, 20.0, 2.0),
    )
    # Nightly jobs, and a little daytime use on weekdays.
    batch = 0.25 + 2.0 * _bump(hours, 2.0, 0.6) + np.where(weekend, 0.0, 0.35 * _bump(hours, 11.0, 2.5))
    return np.stack([business, consumer, batch])


@dataclass
class TraceColumns:
    """A batch of generated requests, one array per field (phases and calls as 2-D arrays, NaN = absent)."""

    t_us: np.ndarray
    ae: np.ndarray
    version: np.ndarray  # index into plan.versions
    trace_ids: list[str]
    intent: np.ndarray  # index into TrafficModel.intents
    latency_ms: np.ndarray
    phases: np.ndarray  # (n, 5) milliseconds
    call_start: np.ndarray  # (n, 6) offsets in ms
    call_duration: np.ndarray  # (n, 6)
    call_error: np.ndarray  # (n, 6) bool
    error_type: np.ndarray  # ERROR_TYPES codes
    cache_hit: np.ndarray
    input_tokens: np.ndarray  # -1: none (no LLM)
    output_tokens: np.ndarray
    attributes: np.ndarray  # index into TrafficModel.attribute_json

    def __len__(self) -> int:
        return len(self.t_us)

    def take(self, rows: np.ndarray) -> TraceColumns:
        """The subset (or reordering) of rows."""
        return TraceColumns(
            t_us=self.t_us[rows],
            ae=self.ae[rows],
            version=self.version[rows],
            trace_ids=[self.trace_ids[i] for i in rows.tolist()],
            intent=self.intent[rows],
            latency_ms=self.latency_ms[rows],
            phases=self.phases[rows],
            call_start=self.call_start[rows],
            call_duration=self.call_duration[rows],
            call_error=self.call_error[rows],
            error_type=self.error_type[rows],
            cache_hit=self.cache_hit[rows],
            input_tokens=self.input_tokens[rows],
            output_tokens=self.output_tokens[rows],
            attributes=self.attributes[rows],
        )


@dataclass
class _Failures:
    """Where the failures of a batch happen (phase -1: the request did not fail)."""

    phase: np.ndarray  # the phase the request ended in
    phase_ms: np.ndarray  # how long that phase lasted
    cut: np.ndarray  # the phase was cut short by the agent's own code (validation, other)
    cut_at: np.ndarray  # ...at this fraction of its normal duration
    slot_fails: np.ndarray  # a call failed (dependency error, LLM error, rate limit, a stall)
    slot: np.ndarray  # ...this one
    slot_start: np.ndarray  # ...starting at this fraction of its phase
    call_ms: np.ndarray  # ...after this long
    cache_hit: np.ndarray


@dataclass
class _Calls:
    """The dependency calls of a batch, one column per archetype call slot."""

    present: np.ndarray
    start: np.ndarray
    duration: np.ndarray
    error: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _Calls:
        shape = (n, MAX_CALLS)
        return cls(np.zeros(shape, dtype=bool), np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=bool))

    def cut(self, rows: np.ndarray, cutoff: np.ndarray) -> _Calls:
        """The calls as they stood when `rows` were cut at `cutoff`: later calls gone, running ones failed."""
        at = cutoff[:, None]
        selected = rows[:, None]
        end = self.start + self.duration
        running = self.present & (self.start < at)
        return _Calls(
            present=np.where(selected, running, self.present),
            start=self.start,
            duration=np.where(selected, np.minimum(end, at) - self.start, self.duration),
            error=np.where(selected, self.error | (running & (end > at)), self.error),
        )


def _cut_phases(
    rows: np.ndarray, cutoff: np.ndarray, phase_start: np.ndarray, durations: np.ndarray, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Phase durations and presence of `rows` cut at `cutoff` (what started later never ran)."""
    at = cutoff[:, None]
    selected = rows[:, None]
    still = present & (phase_start < at)
    cut = np.where(still, np.minimum(phase_start + durations, at) - phase_start, 0.0)
    return np.where(selected, cut, durations), np.where(selected, still, present)


class TrafficModel:
    """The fleet plan as arrays indexed by agent-environment (ae = agent * 3 + environment)."""

    def __init__(self, plan: FleetPlan) -> None:
        self.plan = plan
        agents = plan.agents
        n_agents = len(agents)
        self.n_ae = n_agents * N_ENV
        self.ae_agent = np.repeat(np.arange(n_agents), N_ENV)
        self.ae_env = np.tile(np.arange(N_ENV), n_agents)
        arch_index = {key: i for i, key in enumerate(ARCHETYPE_KEYS)}
        model_names = list(MODELS)
        self.agent_arch = np.array([arch_index[a.archetype] for a in agents], dtype=np.int64)
        self.agent_model = np.array([model_names.index(a.model) if a.model else 0 for a in agents], dtype=np.int64)
        self.intents = sorted({a.intent for a in agents} | {a.secondary_intent for a in agents if a.secondary_intent})
        self.agent_intent = np.array([self.intents.index(a.intent) for a in agents], dtype=np.int64)
        self.agent_intent2 = np.array(
            [self.intents.index(a.secondary_intent) if a.secondary_intent else -1 for a in agents], dtype=np.int64
        )
        env_latency = np.array([plan.env_latency.get(ae, 1.0) for ae in range(self.n_ae)])
        speed = np.array([a.speed for a in agents])[self.ae_agent]
        self.ae_scale = speed * np.array(ENV_LATENCY)[self.ae_env] * env_latency
        self.ae_error = np.array([a.error_rate for a in agents])[self.ae_agent] * np.array(ENV_ERROR)[self.ae_env]
        self.ae_env_error = np.array(ENV_ERROR)[self.ae_env]
        self.ae_cache = np.array([a.cache_rate for a in agents])[self.ae_agent]
        self.ae_tail = np.array([a.tail_rate for a in agents])[self.ae_agent]
        # Staging and development are used by engineers, so they follow office hours.
        profile = np.array([PROFILES.index(a.profile) for a in agents])[self.ae_agent]
        self.ae_profile = np.where(self.ae_env == 0, profile, PROFILES.index("business"))
        self.ae_weight = np.array([a.weight for a in agents])[self.ae_agent] * np.array(ENV_SHARE)[self.ae_env]

        archetypes = [ARCHETYPES[key] for key in ARCHETYPE_KEYS]
        self.arch_phase_ms = np.array([a.phase_ms for a in archetypes])
        self.arch_phase_present = self.arch_phase_ms > 0
        self.arch_llm = np.array([a.uses_llm for a in archetypes])
        self.arch_in_tokens = np.array([a.in_tokens for a in archetypes])
        self.arch_out_tokens = np.array([a.out_tokens for a in archetypes])
        self.arch_timeout = np.array([a.timeout_ms for a in archetypes])
        self.arch_mix = np.cumsum(np.array([a.error_mix for a in archetypes]), axis=1)
        self.arch_mix /= self.arch_mix[:, -1:]
        self.arch_dep_slot = np.array([a.dependency_slot for a in archetypes])
        self.arch_llm_slot = np.array([max(a.llm_slot, 0) for a in archetypes])
        shape = (len(archetypes), MAX_CALLS)
        self.slot_phase = np.full(shape, -1)
        self.slot_start = np.zeros(shape)
        self.slot_lo = np.zeros(shape)
        self.slot_hi = np.zeros(shape)
        self.slot_llm = np.zeros(shape, dtype=bool)
        for i, archetype in enumerate(archetypes):
            for j, call in enumerate(archetype.calls):
                self.slot_phase[i, j] = call.phase
                self.slot_start[i, j] = call.start
                self.slot_lo[i, j] = call.dur_lo
                self.slot_hi[i, j] = call.dur_hi
                self.slot_llm[i, j] = call.kind == "llm"
        self.model_ttft = np.array([MODELS[m][0] for m in model_names])
        self.model_tpot = np.array([MODELS[m][1] for m in model_names])

        # Every attribute combination, pre-rendered: rows just carry an index.
        self.attribute_json: list[str] = []
        for archetype in archetypes:
            for channel in archetype.channels:
                for region in REGIONS:
                    for tier in CUSTOMER_TIERS:
                        for retries in range(3):
                            attrs = {"region": region, "channel": channel, "customer_tier": tier, "retries": retries}
                            self.attribute_json.append(orjson.dumps(attrs).decode())

        versions = plan.versions
        self.v_ae = np.array([v.ae for v in versions], dtype=np.int64)
        self.v_start = np.array([v.start_us for v in versions], dtype=np.int64)
        self.v_ramp = np.array([v.ramp_us for v in versions], dtype=np.int64)
        self.v_latency = np.array([v.latency_factor for v in versions])
        self.v_tokens = np.array([v.token_factor for v in versions])
        self.v_error = np.array([v.error_add for v in versions])
        self.v_error_type = np.array([v.error_type for v in versions], dtype=np.int8)
        self._v_base = int(self.v_start.min()) - 1
        self._v_keys = (self.v_ae << _VERSION_SHIFT) | (self.v_start - self._v_base)
        if np.any(np.diff(self._v_keys) <= 0):
            raise ValueError("plan.versions must be sorted by (ae, start) with distinct starts")
        self.bursts = [(burst, self._ae_mask(burst)) for burst in plan.bursts]
        self._weekly_mean: float | None = None

    def _ae_mask(self, burst: Burst) -> np.ndarray:
        mask = np.zeros(self.n_ae, dtype=bool)
        mask[list(burst.aes)] = True
        return mask

    def add_burst(self, burst: Burst) -> None:
        self.bursts.append((burst, self._ae_mask(burst)))

    def drop_bursts_before(self, t_us: int) -> None:
        self.bursts = [(b, m) for b, m in self.bursts if b.end_us > t_us]

    def _versions_at(self, rng: np.random.Generator, ae: np.ndarray, t_us: np.ndarray) -> np.ndarray:
        """The version each request ran: the latest roll-out, or its predecessor while the roll-out ramps up."""
        offset = np.clip(t_us - self._v_base, 0, (1 << _VERSION_SHIFT) - 1)
        idx = np.searchsorted(self._v_keys, (ae.astype(np.int64) << _VERSION_SHIFT) | offset, side="right") - 1
        idx = np.maximum(idx, 0)
        since = t_us - self.v_start[idx]
        ramp = self.v_ramp[idx]
        ramping = (ramp > 0) & (since < ramp) & (idx > 0)
        has_previous = ramping & (self.v_ae[np.maximum(idx - 1, 0)] == ae)
        share_new = np.where(has_previous, since / np.maximum(ramp, 1), 1.0)
        return np.where(has_previous & (rng.random(len(ae)) > share_new), idx - 1, idx)

    def synthesize(self, rng: np.random.Generator, ae: np.ndarray, t_us: np.ndarray) -> TraceColumns:
        """Everything about requests of agent-environments `ae` starting at `t_us`."""
        n = len(ae)
        agent = self.ae_agent[ae]
        arch = self.agent_arch[agent]
        uses_llm = self.arch_llm[arch]
        version = self._versions_at(rng, ae, t_us)
        work, in_tokens, out_tokens = self._work(rng, ae, arch, agent, version)
        error_type, hang = self._errors(rng, ae, t_us, arch, version, work)
        failures = self._failures(rng, ae, arch, error_type, hang, work)
        present = self.arch_phase_present[arch].copy()
        present[failures.cache_hit, RET] = False
        present[failures.cache_hit, LLM] = False

        # The failed phase ends early and the phases after it never run.
        rows = np.arange(n)
        durations = work.copy()
        has_fail = failures.phase >= 0
        durations[rows[has_fail], failures.phase[has_fail]] = failures.phase_ms[has_fail]
        present &= ~((np.arange(N_PHASES)[None, :] > failures.phase[:, None]) & has_fail[:, None])
        durations = np.where(present, durations, 0.0)
        ingress = 0.2 + np.exp(rng.normal(math.log(0.8), 0.5, n))
        egress = 0.2 + np.exp(rng.normal(math.log(1.0), 0.5, n))
        phase_start = ingress[:, None] + np.cumsum(durations, axis=1) - durations
        latency = ingress + durations.sum(axis=1) + egress
        calls = self._calls(rng, arch, work, present, phase_start, failures)

        # Requests that ran past the agent's timeout are cut there, with the call in flight failing.
        timeout_ms = self.arch_timeout[arch]
        timed_out = (error_type == E_NONE) & (latency > timeout_ms)
        if timed_out.any():
            cutoff = np.minimum(timeout_ms + rng.uniform(0.0, 25.0, n), latency)
            durations, present = _cut_phases(timed_out, cutoff, phase_start, durations, present)
            calls = calls.cut(timed_out, cutoff)
            latency = np.where(timed_out, cutoff, latency)
            error_type[timed_out] = E_TIMEOUT

        llm_called = (calls.present & self.slot_llm[arch]).any(axis=1)
        input_tokens = np.where(uses_llm, np.where(llm_called, np.rint(in_tokens), 0), -1).astype(np.int64)
        output_tokens = np.where(
            uses_llm, np.where(llm_called & (error_type == E_NONE), np.rint(out_tokens), 0), -1
        ).astype(np.int64)
        intent, attributes, trace_ids = self._labels(rng, agent, arch, error_type != E_NONE)
        return TraceColumns(
            t_us=t_us,
            ae=ae,
            version=version,
            trace_ids=trace_ids,
            intent=intent,
            latency_ms=latency,
            phases=np.where(present, durations, np.nan),
            call_start=np.where(calls.present, calls.start, np.nan),
            call_duration=np.where(calls.present, calls.duration, np.nan),
            call_error=calls.error & calls.present,
            error_type=error_type,
            cache_hit=failures.cache_hit,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            attributes=attributes,
        )

    def _work(
        self, rng: np.random.Generator, ae: np.ndarray, arch: np.ndarray, agent: np.ndarray, version: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What each phase would take if nothing failed (n x 5 ms), with the LLM's input and output tokens."""
        n = len(ae)
        scale = self.ae_scale[ae]
        latency_factor = self.v_latency[version]
        work = self.arch_phase_ms[arch] * scale[:, None] * np.exp(rng.normal(0.0, 0.45, (n, N_PHASES)))
        model = self.agent_model[agent]
        in_tokens = self.arch_in_tokens[arch] * self.v_tokens[version] * np.exp(rng.normal(0.0, 0.5, n))
        out_tokens = np.maximum(self.arch_out_tokens[arch] * np.exp(rng.normal(0.0, 0.6, n)), 5.0)
        ttft = self.model_ttft[model] * np.exp(rng.normal(0.0, 0.35, n)) * (1.0 + in_tokens / 30_000)
        # A few requests wait in the provider's queue: the heavy tail of every LLM agent.
        slow = rng.random(n) < self.ae_tail[ae]
        ttft = np.where(slow, ttft * np.exp(rng.normal(math.log(3.5), 0.5, n)), ttft)
        llm_ms = (ttft + out_tokens * self.model_tpot[model] * np.exp(rng.normal(0.0, 0.2, n))) * scale
        work[:, LLM] = np.where(self.arch_llm[arch], llm_ms * latency_factor, 0.0)
        work[:, PRE] *= latency_factor
        return work, in_tokens, out_tokens

    def _errors(
        self,
        rng: np.random.Generator,
        ae: np.ndarray,
        t_us: np.ndarray,
        arch: np.ndarray,
        version: np.ndarray,
        work: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each request's error type (E_NONE: fine) and how long a failing dependency hangs.

        Slow-provider incidents stretch the LLM phase of `work` in place.
        """
        n = len(ae)
        error_type = np.zeros(n, dtype=np.int8)
        base_failed = rng.random(n) < self.ae_error[ae]
        mix = np.minimum((rng.random(n)[:, None] > self.arch_mix[arch]).sum(axis=1), len(MIX_TYPES) - 1)
        error_type[base_failed] = np.array(MIX_TYPES, dtype=np.int8)[mix[base_failed]]
        version_failed = rng.random(n) < self.v_error[version]
        error_type[version_failed] = self.v_error_type[version][version_failed]
        hang = 250.0 * np.exp(rng.normal(0.0, 0.8, n))
        for burst, mask in self.bursts:
            inside = mask[ae] & (t_us >= burst.start_us) & (t_us < burst.end_us)
            if not inside.any():
                continue
            if burst.llm_factor != 1.0:
                factor = burst.llm_factor * np.exp(rng.normal(0.0, 0.3, n))
                work[:, LLM] = np.where(inside, work[:, LLM] * factor, work[:, LLM])
            if burst.error_type != E_NONE:
                hit = inside & (rng.random(n) < burst.probability)
                error_type[hit] = burst.error_type
                if burst.hang_ms:
                    hang = np.where(hit, burst.hang_ms * np.exp(rng.normal(0.0, 0.3, n)), hang)
        # Without an LLM, a "rate limit" comes from the failing dependency, and an LLM error cannot happen.
        error_type[(error_type == E_LLM) & ~self.arch_llm[arch]] = E_OTHER
        return error_type, hang

    def _failures(
        self,
        rng: np.random.Generator,
        ae: np.ndarray,
        arch: np.ndarray,
        error_type: np.ndarray,
        hang: np.ndarray,
        work: np.ndarray,
    ) -> _Failures:
        """Where each failure happens: the phase it ends (and how long that phase lasted) and the failing call."""
        n = len(ae)
        uses_llm = self.arch_llm[arch]
        # Now and then a call hangs (a stuck connection, a provider stall) until the agent times out.
        stalled = (rng.random(n) < STALL_RATE * self.ae_env_error[ae]) & (error_type == E_NONE)
        dependency_fail = (error_type == E_DEPENDENCY) | ((error_type == E_RATE_LIMITED) & ~uses_llm)
        dependency_fail |= stalled & ~uses_llm
        llm_fail = (((error_type == E_LLM) | (error_type == E_RATE_LIMITED)) & uses_llm) | (stalled & uses_llm)
        cut = (error_type == E_VALIDATION) | (error_type == E_OTHER)
        hang = np.where(stalled, self.arch_timeout[arch] * rng.uniform(1.0, 2.0, n), hang)
        cache_hit = (rng.random(n) < self.ae_cache[ae]) & ~dependency_fail & ~llm_fail

        phase = np.full(n, -1)
        phase[error_type == E_VALIDATION] = PRE
        phase[error_type == E_OTHER] = POST
        slot = np.where(dependency_fail, self.arch_dep_slot[arch], self.arch_llm_slot[arch])
        slot_fails = dependency_fail | llm_fail
        phase = np.where(slot_fails, self.slot_phase[arch, slot], phase)
        cut_at = rng.uniform(0.2, 0.9, n)
        slot_start = self.slot_start[arch, slot]
        phase_work = work[np.arange(n), np.maximum(phase, 0)]
        # How long the failing call would have taken had it worked.
        call_work = rng.uniform(self.slot_lo[arch, slot], self.slot_hi[arch, slot]) * phase_work
        throttled = 90.0 * np.exp(rng.normal(0.0, 0.5, n))
        call_ms = np.where(
            dependency_fail | stalled,
            hang,
            np.where(error_type == E_RATE_LIMITED, throttled, rng.uniform(0.1, 0.9, n) * call_work),
        )
        phase_ms = np.where(slot_fails, slot_start * phase_work + call_ms + 1.0, cut_at * phase_work)
        return _Failures(
            phase=phase,
            phase_ms=phase_ms,
            cut=cut,
            cut_at=cut_at,
            slot_fails=slot_fails,
            slot=slot,
            slot_start=slot_start,
            call_ms=call_ms,
            cache_hit=cache_hit,
        )

    def _calls(
        self,
        rng: np.random.Generator,
        arch: np.ndarray,
        work: np.ndarray,
        present: np.ndarray,
        phase_start: np.ndarray,
        failures: _Failures,
    ) -> _Calls:
        """Place each archetype call inside its phase; a failure keeps only the calls made before it."""
        n = len(arch)
        rows = np.arange(n)
        calls = _Calls.empty(n)
        has_fail = failures.phase >= 0
        for j in range(MAX_CALLS):
            phase = self.slot_phase[arch, j]
            exists = phase >= 0
            phase = np.maximum(phase, 0)
            start_frac = self.slot_start[arch, j]
            dur_frac = rng.uniform(self.slot_lo[arch, j], self.slot_hi[arch, j])
            here = exists & present[rows, phase]
            in_failed_phase = has_fail & (failures.phase == phase)
            # A cut phase only kept the calls that finished before the failure.
            here &= ~(in_failed_phase & failures.cut) | (start_frac + dur_frac <= failures.cut_at)
            is_failing = in_failed_phase & failures.slot_fails & (failures.slot == j)
            here &= ~(in_failed_phase & failures.slot_fails & (start_frac > failures.slot_start))
            base = work[rows, phase]
            calls.present[:, j] = here
            calls.start[:, j] = phase_start[rows, phase] + start_frac * base
            calls.duration[:, j] = np.where(is_failing, failures.call_ms, dur_frac * base)
            calls.error[:, j] = is_failing & here
        return calls

    def _labels(
        self, rng: np.random.Generator, agent: np.ndarray, arch: np.ndarray, failed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Intent, free attributes (an index into attribute_json) and a random 32-hex trace id per request."""
        n = len(agent)
        secondary = self.agent_intent2[agent]
        use_secondary = (secondary >= 0) & (rng.random(n) < 0.15)
        intent = np.where(use_secondary, secondary, self.agent_intent[agent])
        channel = rng.choice(4, n, p=(0.5, 0.25, 0.15, 0.1))
        region = (rng.choice(3, n, p=(0.5, 0.3, 0.2)) + agent) % 3
        tier = rng.choice(3, n, p=(0.55, 0.33, 0.12))
        retries = np.where(failed, rng.choice(3, n, p=_RETRIES_FAILED), rng.choice(3, n, p=_RETRIES_OK))
        attributes = (((arch * 4 + channel) * 3 + region) * 3 + tier) * 3 + retries
        raw = rng.bytes(16 * n).hex()
        return intent, attributes, [raw[i : i + 32] for i in range(0, 32 * n, 32)]

    def fleet_rate_shape(self, t_us: np.ndarray) -> np.ndarray:
        """Fleet-wide relative request rate at times t (1.0 = the weekly average)."""
        weights = np.bincount(self.ae_profile, weights=self.ae_weight, minlength=len(PROFILES))
        if self._weekly_mean is None:
            week = np.arange(0, 7 * US_PER_DAY, 10 * US_PER_MIN, dtype=np.int64)
            self._weekly_mean = float(weights @ profile_intensity(week).mean(axis=1))
        return np.asarray(weights @ profile_intensity(t_us) / self._weekly_mean)

    def live_peak_rate_per_s(self, rate_per_s: float) -> np.ndarray:
        """Each agent-environment's rate in its busiest 10 minutes of a week, at `rate_per_s` fleet average."""
        week = np.arange(0, 7 * US_PER_DAY, 10 * US_PER_MIN, dtype=np.int64)
        intensity = profile_intensity(week)[self.ae_profile]
        fleet_mean = float((self.ae_weight * intensity.mean(axis=1)).sum())
        return np.asarray(rate_per_s * self.ae_weight * intensity.max(axis=1) / fleet_mean)

    def sample_live(self, rng: np.random.Generator, t0_us: int, t1_us: int, rate_per_s: float) -> TraceColumns:
        """Requests of the interval [t0, t1) at `rate_per_s` on weekly average, following the daily shape."""
        middle = np.array([(t0_us + t1_us) // 2], dtype=np.int64)
        expected = rate_per_s * (t1_us - t0_us) / 1e6 * float(self.fleet_rate_shape(middle)[0])
        n = int(rng.poisson(expected))
        per_ae = self.ae_weight * profile_intensity(middle)[self.ae_profile, 0]
        ae = rng.choice(self.n_ae, n, p=per_ae / per_ae.sum())
        t_us = np.sort(rng.integers(t0_us, t1_us, n, dtype=np.int64))
        return self.synthesize(rng, ae, t_us)


class History:
    """The seeded history, cut into chunks of equal size that can be generated independently and in any order."""

    def __init__(self, plan: FleetPlan, total: int, chunk_size: int) -> None:
        self.plan = plan
        self.model = TrafficModel(plan)
        self.total = total
        minutes = int((plan.end_us - plan.start_us) // US_PER_MIN)
        self.minute_us = plan.start_us + np.arange(minutes, dtype=np.int64) * US_PER_MIN
        intensity = profile_intensity(self.minute_us + US_PER_MIN // 2)
        # Busier some days than others, and slowly growing towards today.
        noise_rng = np.random.default_rng([plan.seed, 202])
        day = ((self.minute_us - plan.start_us) // US_PER_DAY).astype(np.int64)
        day_noise = np.exp(noise_rng.normal(0.0, 0.07, (len(PROFILES), int(day.max()) + 1)))
        growth = np.exp(0.01 * (self.minute_us - plan.end_us) / US_PER_DAY)
        intensity = intensity * day_noise[:, day] * growth
        self.cumulative = np.concatenate([np.zeros((len(PROFILES), 1)), np.cumsum(intensity, axis=1)], axis=1)
        model = self.model
        profile_weight = np.bincount(model.ae_profile, weights=model.ae_weight, minlength=len(PROFILES))
        fleet = profile_weight @ self.cumulative  # cumulative fleet mass at each minute boundary
        chunks = max(1, min(math.ceil(total / chunk_size), minutes))
        # Slices of equal traffic mass, so every chunk has about the same number of rows.
        bounds = np.searchsorted(fleet, fleet[-1] * np.arange(1, chunks) / chunks)
        bounds = np.concatenate([[0], np.clip(bounds, 1, minutes - 1), [minutes]])
        for k in range(1, chunks + 1):
            bounds[k] = max(bounds[k], bounds[k - 1] + 1) if k < chunks else minutes
        self.bounds = bounds
        self.counts = np.full(chunks, total // chunks, dtype=np.int64)
        self.counts[: total % chunks] += 1

    @property
    def chunks(self) -> int:
        return len(self.counts)

    def chunk(self, k: int) -> TraceColumns:
        """The k-th slice of the history, sorted by start time; the same for a seed, whoever computes it."""
        rng = np.random.default_rng([self.plan.seed, 7, k])
        first, last = int(self.bounds[k]), int(self.bounds[k + 1])
        model = self.model
        mass = model.ae_weight * (self.cumulative[model.ae_profile, last] - self.cumulative[model.ae_profile, first])
        per_ae = rng.multinomial(int(self.counts[k]), mass / mass.sum())
        ae = np.repeat(np.arange(model.n_ae), per_ae)
        t_us = np.empty(len(ae), dtype=np.int64)
        profile_of_row = model.ae_profile[ae]
        for profile in range(len(PROFILES)):
            rows = np.flatnonzero(profile_of_row == profile)
            if not len(rows):
                continue
            cdf = self.cumulative[profile, first : last + 1] - self.cumulative[profile, first]
            minute = np.searchsorted(cdf, rng.random(len(rows)) * cdf[-1], side="right") - 1
            minute = np.clip(minute, 0, last - first - 1) + first
            t_us[rows] = self.minute_us[minute] + rng.integers(0, US_PER_MIN, len(rows))
        order = np.argsort(t_us, kind="stable")
        return model.synthesize(rng, ae[order], t_us[order])

    def peak_rate_per_s(self) -> np.ndarray:
        """Each agent-environment's expected rate in its busiest hour, in requests per second."""
        model = self.model
        n_hours = max((self.cumulative.shape[1] - 1) // 60, 1)
        edges = np.minimum(np.arange(n_hours + 1) * 60, self.cumulative.shape[1] - 1)
        hours = np.diff(self.cumulative[:, edges], axis=1) * 60 / np.maximum(np.diff(edges), 1)
        fleet_mass = float((model.ae_weight * self.cumulative[model.ae_profile, -1]).sum())
        per_hour = self.total * model.ae_weight[:, None] * hours[model.ae_profile] / fleet_mass
        return np.asarray(per_hour.max(axis=1) / 3600.0)
