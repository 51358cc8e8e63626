"""A trace's phases and calls packed for the rollup: fixed-size (label, start, duration) entries.

The JSON columns stay what the request page and the API show. Beside them each trace carries its
timings as 12-byte entries: a label id (TimingLabel: a phase name, or a dependency kind and name;
the top bit set when the call failed), the start offset and the duration in milliseconds (float32).
Phases start where the previous phase ended, so their order survives. Entries carry no framing, so
the rollup joins the blobs of a million traces and reads them with one numpy call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from django.db import transaction

from perfops.telemetry.choices import DependencyKind, DependencyStatus, TimingKind

ENTRY = np.dtype([("label", "<u4"), ("start_ms", "<f4"), ("duration_ms", "<f4")])
ENTRY_SIZE = ENTRY.itemsize
ERROR_BIT = 0x8000_0000
LABEL_MASK = ERROR_BIT - 1

LabelKey = tuple[str, str]  # (kind, name)

# Labels are never deleted or renamed, so a label's id is remembered for the life of the process
# (once its creation has committed).
_label_ids: dict[LabelKey, int] = {}


def forget_labels() -> None:
    """Drop the process memo (tests roll back the rows it points at)."""
    _label_ids.clear()


def label_ids(keys: Iterable[LabelKey]) -> dict[LabelKey, int]:
    """Ids for these labels, creating the missing ones (safe when several batches create the same one)."""
    wanted = set(keys)
    known = {key: _label_ids[key] for key in wanted if key in _label_ids}
    missing = sorted(wanted - known.keys())
    if not missing:
        return known
    from perfops.telemetry.models import TimingLabel

    # Sorted inserts take their index locks in one order: concurrent batches cannot deadlock here.
    TimingLabel.objects.bulk_create(
        [TimingLabel(kind=kind, name=name) for kind, name in missing], ignore_conflicts=True, batch_size=500
    )
    fetched: dict[LabelKey, int] = {}
    for start in range(0, len(missing), 500):
        chunk = missing[start : start + 500]
        names = {name for _, name in chunk}
        for pk, kind, name in TimingLabel.objects.filter(name__in=names).values_list("pk", "kind", "name"):
            if (kind, name) in wanted:
                fetched[(kind, name)] = pk
    # Remembered only once committed (outside a transaction: at once); a rolled-back label must be made again.
    transaction.on_commit(lambda: _label_ids.update(fetched))
    return {**known, **fetched}


# Enum members and their values hash alike (TextChoices are str), so one dict maps both to plain text.
_KIND: dict[str, str] = {kind.value: kind.value for kind in DependencyKind}
_PHASE = TimingKind.PHASE.value
_FAILED = DependencyStatus.ERROR


def _flatten(
    traces: Iterable[tuple[Mapping[str, float], Sequence[Any]]],
) -> tuple[list[LabelKey], list[float], list[float], list[bool], list[int]]:
    """Every trace's entries in one pass: label keys, starts, durations, failures, and entries per trace.

    Calls are msgspec structs from ingest, or dicts from a stored trace (the OTLP sweeper).
    """
    keys: list[LabelKey] = []
    starts: list[float] = []
    durations: list[float] = []
    failed: list[bool] = []
    sizes: list[int] = []
    for phases, calls in traces:
        offset = 0.0
        for name, duration in phases.items():
            keys.append((_PHASE, name))
            starts.append(offset)
            durations.append(duration)
            failed.append(False)
            offset += duration
        for call in calls:
            if type(call) is dict:
                keys.append((_KIND[call["kind"]], call["name"]))
                starts.append(call.get("start_ms") or 0.0)
                durations.append(call["duration_ms"])
                failed.append(call.get("status") == _FAILED)
            else:
                keys.append((_KIND[call.kind], call.name))
                starts.append(call.start_ms)
                durations.append(call.duration_ms)
                failed.append(call.status is _FAILED)
        sizes.append(len(phases) + len(calls))
    return keys, starts, durations, failed, sizes


def encode_many(traces: Iterable[tuple[Mapping[str, float], Sequence[Any]]]) -> list[bytes]:
    """The packed timings of many traces (phases in their order, then the calls), built in one array.

    Labels seen for the first time are created on the way (inside the caller's transaction).
    """
    keys, starts, durations, failed, sizes = _flatten(traces)
    ids = label_ids(set(keys))
    packed = np.empty(len(keys), dtype=ENTRY)
    packed["label"] = np.fromiter(map(ids.__getitem__, keys), dtype=np.uint32, count=len(keys)) | np.where(
        np.array(failed, dtype=bool), np.uint32(ERROR_BIT), np.uint32(0)
    )
    packed["start_ms"] = starts
    packed["duration_ms"] = durations
    data = packed.tobytes()
    ends = np.cumsum(sizes, dtype=np.int64) * ENTRY_SIZE
    firsts = ends - np.asarray(sizes, dtype=np.int64) * ENTRY_SIZE
    return [data[a:b] for a, b in zip(firsts.tolist(), ends.tolist(), strict=True)]


def encode(phases: Mapping[str, float], calls: Sequence[Any]) -> bytes:
    """One trace's packed timings."""
    return encode_many([(phases, calls)])[0]


def decode(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """All entries of many traces' (or rollups') timings: (row of each entry, the entries)."""
    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    if np.any(lengths % ENTRY_SIZE):
        raise ValueError("Packed timings are not a whole number of entries.")
    entries = np.frombuffer(b"".join(blobs), dtype=ENTRY)
    return np.repeat(np.arange(len(blobs)), lengths // ENTRY_SIZE), entries


def describe(blob: bytes, names: Mapping[int, LabelKey]) -> list[dict[str, Any]]:
    """Readable entries (the admin shows them): kind, name, start, duration, failed."""
    _, entries = decode([blob])
    return [
        {
            "kind": names.get(int(label) & LABEL_MASK, ("?", "?"))[0],
            "name": names.get(int(label) & LABEL_MASK, ("?", "?"))[1],
            "start_ms": round(float(start), 3),
            "duration_ms": round(float(duration), 3),
            "failed": bool(int(label) & ERROR_BIT),
        }
        for label, start, duration in entries.tolist()
    ]
