"""Error budgets and multi-window, multi-burn-rate alerting (Google SRE Workbook, "Alerting on SLOs").

Pure arithmetic on ratios and durations: no database, no request.

A burn rate is how fast the error budget is being spent: the error ratio divided by the budget
(1 - target). At burn rate 1 the budget lasts exactly the SLO window. The Workbook's rules for a
30-day SLO alert when a share of the whole budget is spent within a long window, confirmed by a
short window (1/12 of the long one) so that an alert stops soon after the burn does:

    page    2% of the budget in 1 h (14.4x), short window 5 min
    page    5% of the budget in 6 h (6x),    short window 30 min
    ticket 10% of the budget in 1 d (3x),    short window 2 h
    ticket 10% of the budget in 3 d (1x),    short window 6 h

For another SLO window the same budget shares give the thresholds: burn = share x window / long.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

PAGE = "page"
TICKET = "ticket"


@dataclass(frozen=True)
class BurnRule:
    """Alert when both windows burn faster than `burn_rate`."""

    severity: str
    budget_share: float  # share of the whole error budget spent within the long window
    long_window: timedelta
    short_window: timedelta
    burn_rate: float


# (severity, budget share, long window); the short window is 1/12 of the long one.
WORKBOOK = (
    (PAGE, 0.02, timedelta(hours=1)),
    (PAGE, 0.05, timedelta(hours=6)),
    (TICKET, 0.10, timedelta(days=1)),
    (TICKET, 0.10, timedelta(days=3)),
)


def error_budget(target: float) -> float:
    """The allowed share of bad events, e.g. 0.001 for a 99.9% target."""
    if not 0 < target < 1:
        raise ValueError("An SLO target is a share strictly between 0 and 1.")
    return 1.0 - target


def burn_rate(error_ratio: float, target: float) -> float:
    """How many times faster than sustainable the budget is being spent."""
    return error_ratio / error_budget(target)


def rules_for(window: timedelta) -> list[BurnRule]:
    """The Workbook's four rules, scaled to an SLO window (14.4 / 6 / 3 / 1 for 30 days)."""
    return [
        BurnRule(severity, share, long, long / 12, round(share * (window / long), 4))
        for severity, share, long in WORKBOOK
    ]


def firing(rules: list[BurnRule], error_ratios: Mapping[timedelta, float], target: float) -> list[BurnRule]:
    """The rules whose long and short windows both burn at or above their rate (ratios per window length)."""
    return [
        rule
        for rule in rules
        if burn_rate(error_ratios[rule.long_window], target) >= rule.burn_rate
        and burn_rate(error_ratios[rule.short_window], target) >= rule.burn_rate
    ]


def severity(fired: list[BurnRule]) -> str | None:
    """The most urgent severity among the rules that fire: page, ticket or nothing."""
    if any(rule.severity == PAGE for rule in fired):
        return PAGE
    return TICKET if fired else None


def exhaustion(remaining: float | None, burn: float, window: timedelta) -> timedelta | None:
    """When the budget runs out at burn rate `burn`: at 1x a whole budget lasts the window.

    None when nothing is being spent (or nothing is known); zero when it is already spent.
    """
    if remaining is None or burn <= 0:
        return None
    if remaining <= 0:
        return timedelta(0)
    try:
        return window * (remaining / burn)
    except OverflowError:  # a trickle of errors: it lasts longer than a timedelta holds (2.7 million years)
        return timedelta.max


@dataclass(frozen=True)
class Budget:
    """An SLO's error budget over its window from good / total event counts."""

    target: float
    good: int
    total: int

    @property
    def compliance(self) -> float | None:
        return self.good / self.total if self.total else None

    @property
    def allowed_bad(self) -> float:
        return error_budget(self.target) * self.total

    @property
    def bad(self) -> int:
        return self.total - self.good

    @property
    def remaining(self) -> float | None:
        """Share of the budget left: 1 untouched, 0 spent, negative overspent."""
        if not self.total:
            return None
        return 1.0 - self.bad / self.allowed_bad
