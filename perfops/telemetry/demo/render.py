"""Turn generated columns into PostgreSQL COPY text, SQLite rows or ingest API records.

Rows that share a version and a shape (which phases ran, which calls happened and failed, the
status) share a %-format template, built once. The numbers of all rows are written by orjson
from one numpy matrix (C speed; Python's float formatting was half the cost of a row), so the
per-row Python work is one split and one `%` that splices strings.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import orjson

from perfops.telemetry import timings
from perfops.telemetry.demo.fleet import ARCHETYPES, ENVIRONMENTS, ERROR_TYPES, MAX_CALLS, PHASES, department
from perfops.telemetry.demo.traffic import N_ENV, TraceColumns, TrafficModel

_SKIP = "%.0s"  # consumes an argument and prints nothing: absent phases and calls keep a fixed arity
_STATUS = {0: "ok", 1: "timeout"}
_SHAPE_BITS = 17  # 5 phase bits + 6 call bits + 6 call-error bits


class RowFields(NamedTuple):
    """What every row of one template shares (it is decided by the row's version and shape)."""

    agent_id: int
    environment: str
    version: str
    status: str
    error_type: str
    model: str
    cache_hit: bool
    uses_llm: bool
    slug: str


def _bits(mask: np.ndarray) -> np.ndarray:
    return (mask.astype(np.int64) << np.arange(mask.shape[1], dtype=np.int64)).sum(axis=1)


def call_names(model: TrafficModel) -> list[list[tuple[str, str]]]:
    """Each agent's calls as (name, kind), in the order of its archetype."""
    out = []
    for agent in model.plan.agents:
        archetype = ARCHETYPES[agent.archetype]
        api = department(agent.department).api
        out.append([(c.name.replace("{model}", agent.model).replace("{api}", api), c.kind) for c in archetype.calls])
    return out


def label_keys(model: TrafficModel) -> set[tuple[str, str]]:
    """Every timing label (kind, name) the fleet's traces use."""
    keys = {("phase", name) for name in PHASES}
    keys.update((kind, name) for names in call_names(model) for name, kind in names)
    return keys


class Renderer:
    """Formats TraceColumns for one plan; `agent_ids` maps slugs to database ids (not needed for records)."""

    def __init__(
        self,
        model: TrafficModel,
        agent_ids: dict[str, int] | None = None,
        label_ids: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.model = model
        self.agent_ids = agent_ids or {}
        self.label_ids = label_ids or {}
        self.intents = model.intents
        self._calls = call_names(model)
        self._copy: dict[int, str] = {}
        self._phase_labels = np.zeros(len(PHASES), dtype=np.uint32)
        self._call_labels = np.zeros((len(self._calls), MAX_CALLS), dtype=np.uint32)
        if self.label_ids:
            self._phase_labels[:] = [self.label_ids[("phase", name)] for name in PHASES]
            for a, names in enumerate(self._calls):
                for j, key in enumerate(names[:MAX_CALLS]):
                    self._call_labels[a, j] = self.label_ids[(key[1], key[0])]
        self._json: dict[int, tuple[str, str]] = {}
        self._fixed: dict[int, RowFields] = {}

    def _codes(self, cols: TraceColumns) -> np.ndarray:
        shape = (
            (_bits(~np.isnan(cols.phases)) << 12) | (_bits(~np.isnan(cols.call_start)) << 6) | _bits(cols.call_error)
        )
        status = (cols.version.astype(np.int64) * 8 + cols.error_type) * 2 + cols.cache_hit
        return np.asarray((status << _SHAPE_BITS) | shape)

    def _json_templates(self, code: int) -> tuple[str, str]:
        """%-templates of the phases object and the calls list for a row shape."""
        cached = self._json.get(code)
        if cached is not None:
            return cached
        shape = code & ((1 << _SHAPE_BITS) - 1)
        version = self.model.plan.versions[code >> (_SHAPE_BITS + 4)]
        phases_on, calls_on, calls_failed = shape >> 12, (shape >> 6) & 63, shape & 63
        parts, first = ["{"], True
        for i, name in enumerate(PHASES):
            if phases_on >> i & 1:
                parts.append(("" if first else ",") + f'"{name}":%s')
                first = False
            else:
                parts.append(_SKIP)
        parts.append("}")
        calls = self._calls[version.ae // N_ENV]
        items, first = ["["], True
        for j in range(MAX_CALLS):
            if calls_on >> j & 1:
                name, kind = calls[j]
                status = "error" if calls_failed >> j & 1 else "ok"
                items.append(
                    ("" if first else ",")
                    + f'{{"name":"{name}","kind":"{kind}","start_ms":%s,"duration_ms":%s,"status":"{status}"}}'
                )
                first = False
            else:
                items.append(_SKIP + _SKIP)
        items.append("]")
        templates = ("".join(parts), "".join(items))
        self._json[code] = templates
        return templates

    def _fixed_fields(self, code: int) -> RowFields:
        cached = self._fixed.get(code)
        if cached is not None:
            return cached
        version = self.model.plan.versions[code >> (_SHAPE_BITS + 4)]
        agent = self.model.plan.agents[version.ae // N_ENV]
        error_code = (code >> (_SHAPE_BITS + 1)) & 7
        fixed = RowFields(
            agent_id=self.agent_ids.get(agent.slug, 0),
            environment=ENVIRONMENTS[version.ae % N_ENV],
            version=version.name,
            status=_STATUS.get(error_code, "error") if error_code else "ok",
            error_type=ERROR_TYPES[error_code],
            model=agent.model,
            cache_hit=bool((code >> _SHAPE_BITS) & 1),
            uses_llm=ARCHETYPES[agent.archetype].uses_llm,
            slug=agent.slug,
        )
        self._fixed[code] = fixed
        return fixed

    def _copy_template(self, code: int) -> str:
        cached = self._copy.get(code)
        if cached is not None:
            return cached
        phases, calls = self._json_templates(code)
        row = self._fixed_fields(code)
        tokens = "%d\t%d" if row.uses_llm else "\\N\t\\N" + _SKIP + _SKIP
        template = (
            f"%s\t{row.agent_id}\t{row.environment}\t{row.version}\t%s\t%s+00\t%s\t{row.status}\t"
            f"{row.error_type}\t{phases}\t{calls}\t{row.model}\t{tokens}\t{'t' if row.cache_hit else 'f'}\tf\t%s\t"
            "\\\\x%s\n"
        )
        self._copy[code] = template
        return template

    def _columns(self, cols: TraceColumns, *, iso: bool) -> tuple[list[Any], ...]:
        """Per-row values: ids, intents, timestamps, the 18 numbers of a row (as strings), tokens, attributes."""
        timestamps = np.datetime_as_string(cols.t_us.astype("datetime64[us]"), unit="us")
        if not iso:
            # PostgreSQL and Django's SQLite format both take "YYYY-MM-DD HH:MM:SS.ffffff".
            timestamps.view("<U1").reshape(len(cols), -1)[:, 10] = " "
        intents = np.array(self.intents, dtype=object)[cols.intent].tolist()
        attributes = np.array(self.model.attribute_json, dtype=object)[cols.attributes].tolist()
        calls = np.empty((len(cols), 2 * MAX_CALLS))
        calls[:, 0::2] = cols.call_start
        calls[:, 1::2] = cols.call_duration
        numbers = np.round(np.column_stack([cols.latency_ms, cols.phases, calls]), 1).T.copy()
        # One orjson dump and one split per column (absent phases and calls are NaN: null, which the
        # templates skip); splitting per row instead costs three times as much.
        columns = [
            orjson.dumps(column, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",") for column in numbers
        ]
        if not len(cols):
            columns = [[] for _ in numbers]
        return (
            cols.trace_ids,
            intents,
            timestamps.tolist(),
            columns,
            cols.input_tokens.tolist(),
            cols.output_tokens.tolist(),
            attributes,
        )

    def copy_text(self, cols: TraceColumns) -> str:
        """Rows in COPY text format, in store.COLUMNS order."""
        codes = self._codes(cols)
        for code in np.unique(codes).tolist():
            self._copy_template(code)
        templates = self._copy
        ids, intents, stamps, numbers, tokens_in, tokens_out, attributes = self._columns(cols, iso=False)
        packed = [blob.hex() for blob in self.timings(cols)]
        rows = zip(ids, intents, stamps, *numbers, tokens_in, tokens_out, attributes, packed, strict=True)
        return "".join([templates[code] % row for code, row in zip(codes.tolist(), rows, strict=True)])

    def _json_rows(self, cols: TraceColumns, *, iso: bool) -> list[tuple[Any, ...]]:
        """Per row: fixed fields, trace id, intent, timestamp, latency, phases and calls JSON, tokens, attributes."""
        codes = self._codes(cols).tolist()
        ids, intents, stamps, numbers, tokens_in, tokens_out, attributes = self._columns(cols, iso=iso)
        latencies = np.round(cols.latency_ms, 1).tolist()
        n_phases = len(PHASES)
        phase_rows = zip(*numbers[1 : 1 + n_phases], strict=True)
        call_rows = zip(*numbers[1 + n_phases :], strict=True)
        out = []
        for code, trace_id, intent, stamp, latency, phase_values, call_values, t_in, t_out, attrs in zip(
            codes,
            ids,
            intents,
            stamps,
            latencies,
            phase_rows,
            call_rows,
            tokens_in,
            tokens_out,
            attributes,
            strict=True,
        ):
            phase_t, call_t = self._json.get(code) or self._json_templates(code)
            fixed = self._fixed.get(code) or self._fixed_fields(code)
            out.append(
                (
                    fixed,
                    trace_id,
                    intent,
                    stamp,
                    latency,
                    phase_t % phase_values,
                    call_t % call_values,
                    t_in,
                    t_out,
                    attrs,
                )
            )
        return out

    def timings(self, cols: TraceColumns) -> list[bytes]:
        """Each row's packed timings (perfops.telemetry.timings), from the same rounded numbers as its JSON."""
        n = len(cols)
        phases = np.round(cols.phases, 1)
        present_phase = ~np.isnan(phases)
        durations = np.where(present_phase, phases, 0.0)
        phase_start = np.cumsum(durations, axis=1) - durations
        call_start = np.round(cols.call_start, 1)
        call_duration = np.round(cols.call_duration, 1)
        present_call = ~np.isnan(call_start)
        agent_index = cols.ae // N_ENV
        call_labels = self._call_labels[agent_index] | np.where(cols.call_error, timings.ERROR_BIT, 0).astype(np.uint32)
        labels = np.concatenate([np.broadcast_to(self._phase_labels, (n, len(PHASES))), call_labels], axis=1)
        present = np.concatenate([present_phase, present_call], axis=1)
        entries = np.zeros(present.shape, dtype=timings.ENTRY)
        entries["label"] = labels
        entries["start_ms"] = np.concatenate([phase_start, np.nan_to_num(call_start)], axis=1)
        entries["duration_ms"] = np.concatenate([durations, np.nan_to_num(call_duration)], axis=1)
        data = entries[present].tobytes()  # row-major: each row's entries stay together, phases first
        ends = np.cumsum(present.sum(axis=1), dtype=np.int64) * timings.ENTRY_SIZE
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if n else ends
        return [data[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]

    def sqlite_rows(self, cols: TraceColumns) -> list[tuple[Any, ...]]:
        """Rows as parameter tuples, in store.COLUMNS order."""
        out = []
        packed = self.timings(cols)
        for row_timings, (fixed, trace_id, intent, stamp, latency, phases, calls, t_in, t_out, attrs) in zip(
            packed, self._json_rows(cols, iso=False), strict=True
        ):
            out.append(
                (
                    trace_id,
                    fixed.agent_id,
                    fixed.environment,
                    fixed.version,
                    intent,
                    stamp,
                    latency,
                    fixed.status,
                    fixed.error_type,
                    phases,
                    calls,
                    fixed.model,
                    t_in if fixed.uses_llm else None,
                    t_out if fixed.uses_llm else None,
                    fixed.cache_hit,
                    False,
                    attrs,
                    row_timings,
                )
            )
        return out

    def records(self, cols: TraceColumns) -> list[dict[str, Any]]:
        """Rows as ingest API records (JSON-ready dicts)."""
        out = []
        for fixed, trace_id, intent, stamp, latency, phases, calls, t_in, t_out, attrs in self._json_rows(
            cols, iso=True
        ):
            record: dict[str, Any] = {
                "trace_id": trace_id,
                "agent": fixed.slug,
                "environment": fixed.environment,
                "version": fixed.version,
                "intent": intent,
                "started_at": stamp + "Z",
                "latency_ms": latency,
                "status": fixed.status,
                "phases": orjson.loads(phases),
                "dependencies": orjson.loads(calls),
                "cache_hit": fixed.cache_hit,
                "attributes": orjson.loads(attrs),
            }
            if fixed.error_type:
                record["error_type"] = fixed.error_type
            if fixed.uses_llm:
                record.update(model=fixed.model, input_tokens=t_in, output_tokens=t_out)
            out.append(record)
        return out
