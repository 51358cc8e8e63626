"""Burn-rate arithmetic against the Google SRE Workbook's examples."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slos import maths

HOUR = timedelta(hours=1)


def ratios_at(rate: float, target: float) -> dict[timedelta, float]:
    """A sustained burn: every window sees the same error ratio."""
    ratio = rate * maths.error_budget(target)
    windows = {w for r in maths.rules_for(timedelta(days=30)) for w in (r.long_window, r.short_window)}
    return dict.fromkeys(windows, ratio)


def test_the_30_day_rules_are_the_workbooks():
    rules = maths.rules_for(timedelta(days=30))
    assert [(r.severity, r.long_window, r.short_window, r.burn_rate) for r in rules] == [
        ("page", HOUR, timedelta(minutes=5), 14.4),
        ("page", 6 * HOUR, timedelta(minutes=30), 6.0),
        ("ticket", timedelta(days=1), 2 * HOUR, 3.0),
        ("ticket", timedelta(days=3), 6 * HOUR, 1.0),
    ]


def test_a_999_slo_pages_when_the_error_ratio_exceeds_144_percent_over_1h_and_5min():
    rules = maths.rules_for(timedelta(days=30))
    ratios = ratios_at(0.0, 0.999)
    ratios[HOUR] = ratios[timedelta(minutes=5)] = 0.0145
    assert maths.severity(maths.firing(rules, ratios, 0.999)) == "page"
    ratios[HOUR] = 0.0143  # the long window is below 1.44%: no page
    assert maths.severity(maths.firing(rules, ratios, 0.999)) is None
    ratios[HOUR], ratios[timedelta(minutes=5)] = 0.0145, 0.0  # the burn stopped: the short window resets it
    assert maths.severity(maths.firing(rules, ratios, 0.999)) is None


@pytest.mark.parametrize(("rate", "expected"), [(15, "page"), (6.5, "page"), (1.1, "ticket"), (0.9, None)])
def test_sustained_burns_page_ticket_or_stay_quiet(rate, expected):
    rules = maths.rules_for(timedelta(days=30))
    assert maths.severity(maths.firing(rules, ratios_at(rate, 0.999), 0.999)) == expected


def test_other_windows_scale_the_thresholds_by_budget_share():
    week = maths.rules_for(timedelta(days=7))
    assert [r.burn_rate for r in week] == [3.36, 1.4, 0.7, 0.2333]


def test_the_budget_counts_what_is_left():
    spent = maths.Budget(target=0.99, good=9_950, total=10_000)
    assert spent.compliance == 0.995
    assert spent.allowed_bad == pytest.approx(100)
    assert spent.remaining == pytest.approx(0.5)
    assert maths.Budget(0.99, 9_800, 10_000).remaining == pytest.approx(-1.0)
    assert maths.Budget(0.99, 0, 0).remaining is None
    with pytest.raises(ValueError, match="strictly between"):
        maths.error_budget(1.0)


@given(st.floats(0.5, 0.99999), st.floats(0, 1))
def test_burn_rate_one_spends_exactly_the_budget(target, ratio):
    assert maths.burn_rate(maths.error_budget(target), target) == pytest.approx(1.0)
    assert maths.burn_rate(ratio, target) * maths.error_budget(target) == pytest.approx(ratio)
