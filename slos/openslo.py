"""SLOs in and out as OpenSLO v1 YAML (https://github.com/OpenSLO/OpenSLO), so they live in git next to code.

Mapping: one YAML document (`apiVersion: openslo/v1`, `kind: SLO`) per SLO::

    apiVersion: openslo/v1
    kind: SLO
    metadata:
      name: pay-bot-availability          # SLO.name as an RFC 1123 label (<= 59 chars, unique in the export)
      displayName: pay-bot availability   # SLO.name, exactly: the import matches on it
      labels:                             # v1 label values are strings or lists of strings; keys allow no '/'
        scope: [agent]
        environment: [production]
    spec:
      description: 99.9% of requests succeed over 30 days   # SLO.objective, informational
      service: pay-bot                    # agent slug | team slug | department slug | "fleet", informational
      indicator:
        metadata: {name: pay-bot-availability-sli}
        spec:
          ratioMetric:
            counter: true
            good:  {metricSource: {type: perfops, spec: {sli: availability, environment: production,
                                                         scope: agent, agent: pay-bot}}}
            total: {metricSource: {type: perfops, spec: {... the same, without thresholdMs ...}}}
      timeWindow: [{duration: 30d, isRolling: true}]        # SLO.window_days: 7d, 28d or 30d
      budgetingMethod: Occurrences
      objectives: [{displayName: 99.9% succeed, target: 0.999}]

The `perfops` metric source of `good` is what the import reads: `sli` (SLO.kind), `thresholdMs`
(SLO.threshold_ms, latency only), `environment`, `scope` and the scope's slugs: `department` for a
department, `department` + `team` for a team (team slugs are unique per department only), `agent`
for an agent, none for the fleet. `total` must agree with it. Labels, service and description are
written for people and other OpenSLO tools, and ignored on import. On import, `1w`/`4w`/`1M` are
accepted for 7, 28 and 30 days and `targetPercent` for `target`; documents of other kinds (Service,
SLI, AlertPolicy, ...) are skipped with a note.

Importing is two steps so a person can confirm: `parse` (or `plan`, which also returns the notes)
validates everything and writes nothing; `apply` saves the plan in one transaction. An SLO is
updated when a visible one has the same name, environment and scope target; otherwise created.
Department scoping hides what the person may not see: a department, team or agent outside their
departments is "unknown", exactly like one that does not exist. Callers check the model permissions.

The YAML is untrusted: at most 1 MiB and 500 documents, parsed with the safe loader only, and
aliases (`*name`) are refused before anything is built, so an alias bomb cannot expand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from perfops.access.scoping import department_ids_for
from perfops.telemetry.choices import Environment
from perfops.telemetry.models import Agent, Department, Team
from slos.models import SLO, Scope

API_VERSION = "openslo/v1"
SOURCE_TYPE = "perfops"
MAX_BYTES = 1024 * 1024
MAX_DOCUMENTS = 500
NAME_MAX = 59  # leaves room for "-sli" in the indicator's name within RFC 1123's 63 characters
SOURCE_PATH = "spec.indicator.spec.ratioMetric.good.metricSource.spec"
WINDOW_PATH = "spec.timeWindow[0].duration"
TARGET_PATH = "spec.objectives[0].target"
TARGET_RANGE = (0.5, 0.99999)  # SLO.target's validators; full_clean still has the last word

# What each scope names in the metric source; a team needs its department (team slugs repeat across them).
SCOPE_KEYS: dict[str, tuple[str, ...]] = {
    Scope.FLEET: (),
    Scope.DEPARTMENT: ("department",),
    Scope.TEAM: ("department", "team"),
    Scope.AGENT: ("agent",),
}
SOURCE_KEYS = frozenset({"sli", "thresholdMs", "environment", "scope", "department", "team", "agent"})
DURATION_MINUTES = {"m": 1, "h": 60, "d": 1440, "w": 7 * 1440, "M": 30 * 1440}
# Where a model field lives in the document, for full_clean's errors.
FIELD_PATHS = {
    "name": "metadata.displayName",
    "target": TARGET_PATH,
    "threshold_ms": f"{SOURCE_PATH}.thresholdMs",
    "window_days": WINDOW_PATH,
    "environment": f"{SOURCE_PATH}.environment",
    "scope": f"{SOURCE_PATH}.scope",
    "kind": f"{SOURCE_PATH}.sli",
}
COMPARED_FIELDS = ("kind", "threshold_ms", "target", "window_days")

Action = Literal["create", "update", "unchanged"]


# ---------------------------------------------------------------- export


def export_slos(slos: Iterable[SLO]) -> str:
    """The SLOs as multi-document OpenSLO v1 YAML, keys in the spec's order (select_related the scope FKs)."""
    taken: set[str] = set()
    documents = [slo_document(slo, unique_name(slo.name, taken)) for slo in slos]
    return yaml.safe_dump_all(
        documents, explicit_start=True, sort_keys=False, allow_unicode=True, default_flow_style=False
    )


def unique_name(name: str, taken: set[str]) -> str:
    """An RFC 1123 label from the SLO's name, suffixed -2, -3... when the export already has it."""
    base = re.sub(r"-+", "-", slugify(name).replace("_", "-")).strip("-")[:NAME_MAX].strip("-") or "slo"
    candidate, number = base, 1
    while candidate in taken:
        number += 1
        suffix = f"-{number}"
        candidate = base[: NAME_MAX - len(suffix)].strip("-") + suffix
    taken.add(candidate)
    return candidate


def slo_document(slo: SLO, name: str) -> dict[str, Any]:
    """One SLO as an OpenSLO v1 `kind: SLO` object."""
    good = source_spec(slo, with_threshold=True)
    return {
        "apiVersion": API_VERSION,
        "kind": "SLO",
        "metadata": {
            "name": name,
            "displayName": slo.name,
            "labels": {"scope": [str(slo.scope)], "environment": [str(slo.environment)]},
        },
        "spec": {
            "description": slo.objective,
            "service": service_name(slo),
            "indicator": {
                "metadata": {"name": f"{name}-sli"},
                "spec": {
                    "ratioMetric": {
                        "counter": True,
                        "good": {"metricSource": {"type": SOURCE_TYPE, "spec": good}},
                        "total": {"metricSource": {"type": SOURCE_TYPE, "spec": source_spec(slo)}},
                    }
                },
            },
            "timeWindow": [{"duration": f"{slo.window_days}d", "isRolling": True}],
            "budgetingMethod": "Occurrences",
            "objectives": [{"displayName": objective_name(slo), "target": slo.target}],
        },
    }


def source_spec(slo: SLO, *, with_threshold: bool = False) -> dict[str, Any]:
    """The perfops metric source: what is counted (good requests, or all of them) for the SLO's scope."""
    # str(): a fresh instance may still hold the TextChoices member, which the safe dumper refuses.
    spec: dict[str, Any] = {"sli": str(slo.kind)}
    if with_threshold and slo.kind == SLO.Kind.LATENCY and slo.threshold_ms is not None:
        spec["thresholdMs"] = plain_number(slo.threshold_ms)
    spec["environment"] = str(slo.environment)
    spec["scope"] = str(slo.scope)
    # The SLO's own department is its team's (derived on save), so no query for team.department.
    slugs = {"department": slo.department, "team": slo.team, "agent": slo.agent}
    for key in SCOPE_KEYS[Scope(slo.scope)]:
        spec[key] = getattr(slugs[key], "slug", None)
    return spec


def service_name(slo: SLO) -> str:
    target = {Scope.DEPARTMENT: slo.department, Scope.TEAM: slo.team, Scope.AGENT: slo.agent}.get(Scope(slo.scope))
    return str(getattr(target, "slug", "fleet"))


def objective_name(slo: SLO) -> str:
    """e.g. "95% under 500 ms" or "99.9% succeed"."""
    share = f"{slo.target * 100:g}%"
    if slo.kind == SLO.Kind.LATENCY:
        return f"{share} under {slo.threshold_ms:g} ms"
    return f"{share} succeed"


def plain_number(value: float) -> int | float:
    """500.0 as 500, so the YAML reads like a person wrote it."""
    return int(value) if float(value).is_integer() else value


# ---------------------------------------------------------------- import: results


@dataclass
class Planned:
    """One SLO document's effect: the SLO to create, or an existing one with the new values (unsaved)."""

    slo: SLO
    action: Action
    document: int
    source_name: str
    changes: list[str] = field(default_factory=list)
    previous_window_days: int | None = None

    @property
    def creates(self) -> bool:
        return self.action == "create"


@dataclass
class Plan:
    """What an import would do; any error refuses all of it (then `planned` is empty)."""

    planned: list[Planned] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    created: list[SLO] = field(default_factory=list)
    updated: list[SLO] = field(default_factory=list)
    unchanged: list[SLO] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class DocumentError(Exception):
    """A problem with one document, at a path inside it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path} {problem}" if path else problem)


# ---------------------------------------------------------------- import: entry points


def parse(text: str, user: Any) -> tuple[list[Planned], list[str]]:
    """Validate the YAML for `user` without writing: (what would be created or updated, errors)."""
    result = plan(text, user)
    return result.planned, result.errors


def plan(text: str, user: Any) -> Plan:
    """`parse`, plus notes on the documents it skipped (other OpenSLO kinds)."""
    result = Plan()
    documents = load_documents(text, result.errors)
    if result.errors:
        return result
    reader = Reader(user)
    seen: dict[tuple[Any, ...], int] = {}
    for number_, document in enumerate(documents, start=1):
        if document is None:
            continue
        prefix = document_prefix(number_, document)
        try:
            item = reader.read(number_, document)
        except DocumentError as exc:
            result.errors.append(f"{prefix}: {exc}")
            continue
        if item is None:
            result.notes.append(f"{prefix}: kind {text_of(document.get('kind'))} skipped (only SLOs are imported).")
            continue
        key = identity(item.slo)
        if key in seen:
            result.errors.append(f"{prefix}: the same SLO (name, environment and scope) as document {seen[key]}.")
            continue
        seen[key] = number_
        result.planned.append(item)
    if result.errors:
        result.planned = []
    return result


def apply(planned: Sequence[Planned], user: Any) -> ImportResult:
    """Save a plan from `parse` in one transaction: all of it, or (on any error) none of it."""
    result = ImportResult()
    ids = department_ids_for(user)
    with transaction.atomic():
        for item in planned:
            if item.action == "unchanged":
                result.unchanged.append(item.slo)
                continue
            error = save_one(item, user, ids)
            if error:
                result.errors.append(error)
                continue
            (result.created if item.creates else result.updated).append(item.slo)
        if result.errors:
            transaction.set_rollback(True)
            return ImportResult(errors=result.errors)
    return result


def save_one(item: Planned, user: Any, ids: frozenset[int] | None) -> str | None:
    """Save one planned SLO; the error text when it is (no longer) valid or not the user's to change."""
    prefix = f"document {item.document} (metadata.name '{short(item.source_name)}')"
    slo = item.slo
    if ids is not None and slo.department_id not in ids:
        return f"{prefix}: {SOURCE_PATH} names an unknown {slo.scope}."
    if item.creates:
        slo.created_by = user if getattr(user, "pk", None) else None
    try:
        slo.full_clean()
    except ValidationError as exc:
        return f"{prefix}: {model_errors(exc)}"
    slo.save()
    return None


# ---------------------------------------------------------------- import: YAML


def load_documents(text: str, errors: list[str]) -> list[Any]:
    """The documents of the YAML stream, after the size, count and alias guards; [] with errors otherwise."""
    if len(text.encode("utf-8")) > MAX_BYTES:
        errors.append("The YAML is larger than 1 MiB: split it into several imports.")
        return []
    try:
        problem = stream_problem(text)
        if problem:
            errors.append(problem)
            return []
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        errors.append(syntax_error(exc))
        return []


def stream_problem(text: str) -> str | None:
    """Count documents and refuse aliases from the parser's events, before any object is built."""
    documents = 0
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > MAX_DOCUMENTS:
                return f"More than {MAX_DOCUMENTS} documents: split the file into several imports."
        elif isinstance(event, yaml.AliasEvent):
            return f"YAML aliases (*{short(str(event.anchor))}) are not supported{line_of(event.start_mark)}."
    return None


def syntax_error(exc: yaml.YAMLError) -> str:
    """A YAML error as one line a person can act on: what, and where (1-based line and column)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"YAML syntax error{line_of(mark)}: {problem}."


def line_of(mark: Any) -> str:
    return "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"


def document_prefix(number_: int, document: Any) -> str:
    metadata = document.get("metadata") if isinstance(document, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"document {number_} (metadata.name '{short(name)}')" if isinstance(name, str) else f"document {number_}"


def short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def text_of(value: Any) -> str:
    """A scalar from the document, quoted and cut short for a message; never a whole list or mapping."""
    if isinstance(value, str):
        return f"'{short(value)}'"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def identity(slo: SLO) -> tuple[Any, ...]:
    return (slo.name, slo.environment, slo.scope, slo.department_id, slo.team_id, slo.agent_id)


# ---------------------------------------------------------------- import: one document


class Reader:
    """Reads SLO documents for one person, remembering the departments, teams and agents they may see."""

    def __init__(self, user: Any) -> None:
        self.user = user
        self.ids = department_ids_for(user)
        self.departments: dict[str, Department | None] = {}
        self.agents: dict[str, Agent | None] = {}
        self.teams: dict[tuple[int, str], Team | None] = {}

    def read(self, number_: int, document: Any) -> Planned | None:
        """The planned SLO of a `kind: SLO` document; None for other kinds (skipped)."""
        if not isinstance(document, dict):
            raise DocumentError("", f"must be a mapping (one OpenSLO object per document), not a {type_name(document)}")
        kind = document.get("kind")
        if kind is None:
            raise DocumentError("kind", "is required (SLO)")
        if kind != "SLO":
            return None
        if document.get("apiVersion") != API_VERSION:
            raise DocumentError("apiVersion", f"must be '{API_VERSION}' (got {text_of(document.get('apiVersion'))})")
        metadata = mapping(document, "metadata", "metadata")
        source_name = string(metadata, "name", "metadata.name", limit=255)
        spec = mapping(document, "spec", "spec")
        slo = SLO(name=slo_name(metadata, source_name))
        good, total = read_indicator(spec, slo)
        self.read_scope(good, slo)
        same_source(good, total)
        slo.window_days = read_window(spec)
        read_budgeting(spec)
        slo.target = read_target(spec)
        check_model(slo)
        return self.match(number_, source_name, slo)

    def read_scope(self, source: dict[str, Any], slo: SLO) -> None:
        """Scope, environment and the department, team or agent it names, among those the person may see."""
        slo.environment = choice(source, "environment", f"{SOURCE_PATH}.environment", Environment.values)
        slo.scope = choice(source, "scope", f"{SOURCE_PATH}.scope", list(SCOPE_KEYS))
        needed = SCOPE_KEYS[slo.scope]
        for key in ("department", "team", "agent"):
            if key in source and key not in needed:
                raise DocumentError(f"{SOURCE_PATH}.{key}", f"is only for a scope that names a {key}")
        if slo.scope == Scope.FLEET and self.ids is not None:
            raise DocumentError(f"{SOURCE_PATH}.scope", "fleet is for superusers only: ask one to import fleet SLOs")
        if "department" in needed:
            slo.department = self.department(string(source, "department", f"{SOURCE_PATH}.department"))
        if slo.scope == Scope.TEAM:
            assert slo.department is not None
            slo.team = self.team(slo.department, string(source, "team", f"{SOURCE_PATH}.team"))
        if slo.scope == Scope.AGENT:
            slo.agent = self.agent(string(source, "agent", f"{SOURCE_PATH}.agent"))
            slo.department_id = slo.agent.department_id

    def department(self, slug: str) -> Department:
        if slug not in self.departments:
            self.departments[slug] = self.visible(Department.objects.filter(slug=slug), "id").first()
        return found(self.departments[slug], "department", slug)

    def team(self, department: Department, slug: str) -> Team:
        key = (department.pk, slug)
        if key not in self.teams:
            self.teams[key] = Team.objects.filter(department=department, slug=slug).first()
        return found(self.teams[key], "team", slug)

    def agent(self, slug: str) -> Agent:
        if slug not in self.agents:
            self.agents[slug] = self.visible(Agent.objects.filter(slug=slug), "department_id").first()
        return found(self.agents[slug], "agent", slug)

    def visible(self, queryset: Any, column: str) -> Any:
        return queryset if self.ids is None else queryset.filter(**{f"{column}__in": self.ids})

    def match(self, number_: int, source_name: str, slo: SLO) -> Planned:
        """Update the visible SLO with the same name, environment and scope target, or create one."""
        existing = list(
            SLO.objects.visible_to(self.user).filter(
                name=slo.name,
                environment=slo.environment,
                scope=slo.scope,
                department_id=slo.department_id,
                team_id=slo.team_id,
                agent_id=slo.agent_id,
            )[:2]
        )
        if len(existing) > 1:
            raise DocumentError("metadata.displayName", f"'{short(slo.name)}' matches several SLOs: rename one first")
        if not existing:
            return Planned(slo=slo, action="create", document=number_, source_name=source_name)
        current = existing[0]
        changes = [
            f"{name}: {getattr(current, name)} → {getattr(slo, name)}"
            for name in COMPARED_FIELDS
            if getattr(current, name) != getattr(slo, name)
        ]
        previous_window = current.window_days
        for name in COMPARED_FIELDS:
            setattr(current, name, getattr(slo, name))
        return Planned(
            slo=current,
            action="update" if changes else "unchanged",
            document=number_,
            source_name=source_name,
            changes=changes,
            previous_window_days=previous_window,
        )


def slo_name(metadata: dict[str, Any], source_name: str) -> str:
    """The SLO's name: displayName (what the export writes), else metadata.name."""
    if "displayName" not in metadata:
        return source_name
    name = string(metadata, "displayName", "metadata.displayName", limit=SLO._meta.get_field("name").max_length)
    return name.strip() or source_name


def read_indicator(spec: dict[str, Any], slo: SLO) -> tuple[dict[str, Any], dict[str, Any]]:
    """Kind and threshold from the inline ratio indicator; its good and total metric source specs."""
    if "indicator" not in spec:
        problem = "is not supported: write the indicator inline" if "indicatorRef" in spec else "is required"
        raise DocumentError("spec.indicatorRef" if "indicatorRef" in spec else "spec.indicator", problem)
    indicator = mapping(spec, "indicator", "spec.indicator")
    sli_spec = mapping(indicator, "spec", "spec.indicator.spec")
    if "ratioMetric" not in sli_spec:
        raise DocumentError("spec.indicator.spec.ratioMetric", "is required (perfops SLOs count good requests)")
    ratio = mapping(sli_spec, "ratioMetric", "spec.indicator.spec.ratioMetric")
    good = metric_source(ratio, "good")
    total = metric_source(ratio, "total")
    unknown = sorted(str(key) for key in good if key not in SOURCE_KEYS)
    if unknown:
        raise DocumentError(SOURCE_PATH, f"has unknown key(s): {short(', '.join(unknown))}")
    slo.kind = choice(good, "sli", f"{SOURCE_PATH}.sli", SLO.Kind.values)
    slo.threshold_ms = read_threshold(good, slo.kind)
    return good, total


def same_source(good: dict[str, Any], total: dict[str, Any]) -> None:
    """`total` must count the requests of the same SLI, environment and scope as `good` (checked first)."""
    for key in ("sli", "environment", "scope", "department", "team", "agent"):
        if total.get(key) != good.get(key):
            path = "spec.indicator.spec.ratioMetric.total.metricSource.spec"
            raise DocumentError(f"{path}.{key}", f"must be the same as in good ({text_of(good.get(key))})")


def metric_source(ratio: dict[str, Any], which: str) -> dict[str, Any]:
    """`good` or `total`'s perfops metric source spec."""
    base = f"spec.indicator.spec.ratioMetric.{which}"
    if which not in ratio:
        raise DocumentError(base, "is required (perfops SLOs are good / total ratios)")
    source = mapping(mapping(ratio, which, base), "metricSource", f"{base}.metricSource")
    if source.get("type") != SOURCE_TYPE:
        raise DocumentError(
            f"{base}.metricSource.type",
            f"must be '{SOURCE_TYPE}' (got {text_of(source.get('type'))}): only SLOs measured by perfops are imported",
        )
    return mapping(source, "spec", f"{base}.metricSource.spec")


def read_threshold(source: dict[str, Any], kind: str) -> float | None:
    path = f"{SOURCE_PATH}.thresholdMs"
    if kind != SLO.Kind.LATENCY:
        if "thresholdMs" in source:
            raise DocumentError(path, "is only for sli: latency")
        return None
    if "thresholdMs" not in source:
        raise DocumentError(path, "is required for sli: latency (the good/bad line in milliseconds)")
    value = source["thresholdMs"]
    if not is_number(value) or value < 0.001:
        raise DocumentError(path, f"must be a number of milliseconds above 0 (got {text_of(value)})")
    return float(value)


def read_window(spec: dict[str, Any]) -> int:
    """The rolling window in days (7, 28 or 30); 30 when the document has none, as the spec allows."""
    if "timeWindow" not in spec:
        return SLO.Window.DAYS_30
    windows = spec["timeWindow"]
    if not isinstance(windows, list) or len(windows) != 1 or not isinstance(windows[0], dict):
        raise DocumentError("spec.timeWindow", "must be a list of exactly one window")
    window = windows[0]
    if "calendar" in window:
        raise DocumentError("spec.timeWindow[0].calendar", "is not supported: perfops windows are rolling")
    if window.get("isRolling", True) is not True:
        raise DocumentError("spec.timeWindow[0].isRolling", "must be true: perfops windows are rolling")
    duration = window.get("duration")
    matched = re.fullmatch(r"(\d{1,6})([mhdwM])", duration) if isinstance(duration, str) else None
    minutes = int(matched[1]) * DURATION_MINUTES[matched[2]] if matched else 0
    if minutes % 1440 or minutes // 1440 not in SLO.Window.values:
        raise DocumentError(WINDOW_PATH, f"must be 7d, 28d or 30d (got {text_of(duration)})")
    return minutes // 1440


def read_budgeting(spec: dict[str, Any]) -> None:
    method = spec.get("budgetingMethod")
    if method != "Occurrences":
        problem = "is required" if method is None else f"must be Occurrences (got {text_of(method)})"
        raise DocumentError("spec.budgetingMethod", f"{problem}: perfops counts good requests over all requests")


def read_target(spec: dict[str, Any]) -> float:
    """The one objective's target, from `target` or `targetPercent`, within the model's 0.5..0.99999."""
    objectives = spec.get("objectives")
    if not isinstance(objectives, list) or len(objectives) != 1 or not isinstance(objectives[0], dict):
        raise DocumentError("spec.objectives", "must be a list of exactly one objective (perfops SLOs have one target)")
    objective = objectives[0]
    if ("target" in objective) == ("targetPercent" in objective):
        raise DocumentError("spec.objectives[0]", "needs exactly one of target or targetPercent")
    key = "target" if "target" in objective else "targetPercent"
    value = objective[key]
    scale = 1 if key == "target" else 100
    low, high = TARGET_RANGE
    if not is_number(value) or not low <= value / scale <= high:
        limits = f"{low:g} and {high:g}" if scale == 1 else f"{low * 100:g} and {high * 100:g}"
        raise DocumentError(f"spec.objectives[0].{key}", f"must be between {limits} (got {text_of(value)})")
    return float(value) if scale == 1 else round(value / 100, 12)


def check_model(slo: SLO) -> None:
    """The model's own validation (scope consistency, limits), reported at the document's paths."""
    try:
        slo.full_clean(exclude=["created_by"])
    except ValidationError as exc:
        raise DocumentError("", model_errors(exc)) from exc


def model_errors(exc: ValidationError) -> str:
    if not hasattr(exc, "error_dict"):
        return " ".join(exc.messages)
    return "; ".join(
        f"{FIELD_PATHS.get(name, name)}: {' '.join(ValidationError(errors).messages)}"
        for name, errors in exc.error_dict.items()
    )


# ---------------------------------------------------------------- import: small readers


def mapping(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        raise DocumentError(path, "is required")
    if not isinstance(value, dict):
        raise DocumentError(path, f"must be a mapping, not a {type_name(value)}")
    return value


def string(parent: dict[str, Any], key: str, path: str, limit: int | None = 64) -> str:
    value = parent.get(key)
    if value is None:
        raise DocumentError(path, "is required")
    if not isinstance(value, str) or not value:
        raise DocumentError(path, f"must be a non-empty string (got {text_of(value)}; quote values like 123 or no)")
    if limit is not None and len(value) > limit:
        raise DocumentError(path, f"must be at most {limit} characters")
    return value


def choice(parent: dict[str, Any], key: str, path: str, allowed: Sequence[str]) -> str:
    value = parent.get(key)
    if value not in allowed:
        problem = "is required" if value is None else f"got {text_of(value)}"
        raise DocumentError(path, f"must be one of {', '.join(allowed)} ({problem})")
    return str(value)


def found(value: Any, what: str, slug: str) -> Any:
    """The looked-up object, or the same "unknown" whether it does not exist or is not the person's."""
    if value is None:
        raise DocumentError(f"{SOURCE_PATH}.{what}", f"names an unknown {what} '{short(slug)}'")
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN


def type_name(value: Any) -> str:
    names: dict[type, str] = {list: "list", dict: "mapping", str: "string"}
    return names.get(type(value), type(value).__name__)
