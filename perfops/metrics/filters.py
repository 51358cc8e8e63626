"""The dashboard's filter set: parsed once from a query string, for the pages and the REST API alike.

Parameter names are the spec's filters: range (1h, 6h, 24h, 7d, 30d) or start / end, environment,
department, team, agent, tier, status, version, intent. Every value is checked; a bad one raises
FilterError naming the parameter and the reason (the API answers 400 with it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from perfops.telemetry.choices import SLUG_REGEX, Environment

RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_RANGE = "24h"
ALL = "all"
DEFAULT_ENVIRONMENT = Environment.PRODUCTION.value
ENVIRONMENT_VALUES = (*Environment.values, ALL)
# The spec's performance tiers (perfops.metrics.models.Tier codes).
TIERS = {"fast": 0, "normal": 1, "slow": 2, "critical": 3}
# Error status: success, errors (status error) and timeouts are three disjoint sets of requests.
STATUSES = {"success": "ok", "errors": "error", "timeouts": "timeout"}
LATEST = "latest"
MIN_SPAN = timedelta(minutes=1)

PARAMETERS = (
    "range",
    "start",
    "end",
    "environment",
    "department",
    "team",
    "agent",
    "tier",
    "status",
    "version",
    "intent",
)
_SLUG = re.compile(rf"\A{SLUG_REGEX}\Z")
_VERSION = re.compile(r"\A[^\x00-\x1f\x7f]{1,64}\Z")


class FilterError(Exception):
    """Bad filter parameters: {parameter: [reasons]}."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{key}: {' '.join(reasons)}" for key, reasons in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class MetricFilters:
    """A checked filter set. Either `range` or `start` (with an optional `end`) says when."""

    range: str | None = DEFAULT_RANGE
    start: datetime | None = None
    end: datetime | None = None
    environment: str = DEFAULT_ENVIRONMENT
    department: str | None = None
    team: str | None = None
    agent: str | None = None
    tier: str | None = None
    status: str | None = None
    version: str | None = None
    intent: str | None = None

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The [start, end) asked for, with `end` never after now."""
        if self.range is not None:
            return now - RANGES[self.range], now
        assert self.start is not None
        return self.start, min(self.end or now, now)

    def normalised(self) -> dict[str, str]:
        """The parameters that differ from the defaults, as strings (cache keys, links, the API's echo)."""
        out: dict[str, str] = {}
        for key, value in asdict(self).items():
            if value is None or (key == "environment" and value == DEFAULT_ENVIRONMENT):
                continue
            if key == "range" and value == DEFAULT_RANGE:
                continue
            out[key] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out

    @property
    def environments(self) -> list[str]:
        return list(Environment.values) if self.environment == ALL else [self.environment]


def parse_filters(params: Mapping[str, str], *, strict: bool = False, now: datetime | None = None) -> MetricFilters:
    """Read a filter set from query parameters; `strict` also refuses parameters it does not know."""
    now = now or timezone.now()
    errors: dict[str, list[str]] = {}
    if strict:
        for key in params:
            if key not in PARAMETERS:
                errors.setdefault(key, []).append("Unknown parameter.")

    def value(key: str) -> str | None:
        raw = params.get(key)
        if raw is None:
            return None
        raw = raw.strip()
        return raw or None

    range_key = value("range")
    start_text, end_text = value("start"), value("end")
    start = end = None
    if range_key is not None and (start_text or end_text):
        errors.setdefault("range", []).append("Give either range or start/end, not both.")
    elif range_key is not None and range_key not in RANGES:
        errors.setdefault("range", []).append(f"Must be one of {', '.join(RANGES)}.")
    if start_text or end_text:
        range_key = None
        start = _timestamp(start_text, "start", errors, required=True)
        end = _timestamp(end_text, "end", errors, required=False)
        if start and end and end - start < MIN_SPAN:
            errors.setdefault("end", []).append("Must be at least one minute after start.")
        if start and start >= now:
            errors.setdefault("start", []).append("Must be in the past.")
        oldest = now - timedelta(days=settings.PERFOPS["ROLLUP_RETENTION_DAYS"])
        if start and start < oldest:
            errors.setdefault("start", []).append(
                f"Must be within the last {settings.PERFOPS['ROLLUP_RETENTION_DAYS']} days (rollup retention)."
            )
    elif range_key is None:
        range_key = DEFAULT_RANGE

    environment = value("environment") or DEFAULT_ENVIRONMENT
    if environment not in ENVIRONMENT_VALUES:
        errors.setdefault("environment", []).append(f"Must be one of {', '.join(ENVIRONMENT_VALUES)}.")
    slugs = {}
    for key in ("department", "team", "agent", "intent"):
        slugs[key] = value(key)
        if slugs[key] is not None and not _SLUG.match(slugs[key] or ""):
            errors.setdefault(key, []).append("Must be a slug: 1-64 lowercase letters, digits, '-' or '_'.")
    tier = value("tier")
    if tier is not None and tier not in TIERS:
        errors.setdefault("tier", []).append(f"Must be one of {', '.join(TIERS)}.")
    status = value("status")
    if status is not None and status not in STATUSES:
        errors.setdefault("status", []).append(f"Must be one of {', '.join(STATUSES)}.")
    version = value("version")
    if version is not None and not _VERSION.match(version):
        errors.setdefault("version", []).append("Must be 'latest' or a version of 1-64 printable characters.")
    for key, reasons in list(errors.items()):
        errors[key] = list(dict.fromkeys(reasons))
    if errors:
        raise FilterError(errors)
    return MetricFilters(
        range=range_key,
        start=start,
        end=end,
        environment=environment,
        department=slugs["department"],
        team=slugs["team"],
        agent=slugs["agent"],
        tier=tier,
        status=status,
        version=version,
        intent=slugs["intent"],
    )


def _timestamp(text: str | None, key: str, errors: dict[str, list[str]], *, required: bool) -> datetime | None:
    if text is None:
        if required:
            errors.setdefault(key, []).append("Required with end.")
        return None
    try:
        moment = parse_datetime(text)
    except ValueError:
        moment = None
    if moment is None:
        errors.setdefault(key, []).append("Must be an ISO 8601 date-time, e.g. 2026-11-30T09:00:00Z.")
        return None
    if moment.tzinfo is None:
        errors.setdefault(key, []).append("Must carry a UTC offset (Z or +hh:mm).")
        return None
    return moment
