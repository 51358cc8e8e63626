"""When will an agent (or the fleet) run out of capacity? Hourly requests/s for the next 30 days, with a band.

Pure statistics on a contiguous series of hourly request rates (oldest first, UTC): no database. Figures below
are backtests on the demo's traffic (tests/analytics/test_forecast.py): fitted on 21 days, scored on the next 7.

- Scale: the model is fitted to log(rps + 0.3% of the mean rps), so the daily cycle, the weekly cycle and the
  trend multiply each other: a fleet that grows 1%/day grows its 3 pm peak and its 3 am trough by 1%/day. The
  same model fitted to the rate itself errs three to four times as much (13% against 4.3% for the fleet, 30%
  against 7% for a business-hours agent: an additive cycle cannot follow a peak 20 times the night). The
  small offset keeps hours without traffic finite.
- Calendar: 24 hour-of-day effects, fitted by least squares (scikit-learn's Ridge with a negligible penalty:
  a real one pulls the large hour effects of a peaky profile towards the mean and misses the peaks, 6.5%
  instead of 4.3%). Weekends get 24 of their own (another shape, not just a lower level) once every hour of
  the day has been seen on a weekend and on a weekday; before that, one daily cycle. (Waiting for 14 days, as
  for the weekday levels, left a 7-13 day history about 25% off on the fleet, 55% on a business agent.)
- Day of week, from 14 days (every weekday twice): each weekday's own level is the mean of its days'
  deviations, shrunk towards zero by how much the weeks agree (positive-part James-Stein over the weekdays).
  Unshrunk, three weeks of day-to-day noise read as weekday effects (the demo has none: 4.7% instead of
  4.3%); shrunk, they cost nothing there and a real Monday peak of +40% is kept (5.1% where ignoring it
  gives 9.3%).
- Trend: a Theil-Sen line (the median of the slopes between all pairs of days) through the daily levels left
  after the calendar, so one busy or empty day barely moves it; shrunk towards flat by its own standard error
  (positive-part James-Stein: a short or noisy history extrapolates about flat rather than wildly) and capped
  at +-3%/day (x2.4 in 30 days). Not damped: a damped trend reaches a steadily growing fleet's capacity days
  late. The line goes through the last 7 days (their 20%-trimmed mean level), so the forecast starts where
  the traffic is now, after a step, a launch or a capped trend, not where the month averaged.
- Band (80%): the 10% and 90% quantiles of the fitted hours' residuals on the log scale, each split into its
  day's mean and the rest, widened by prediction-interval factors of a least-squares fit. The day part:
  sqrt(1 + 1/7 + se^2 ((t - t_mid)^2 - (t_anchor - t_mid)^2) / s^2), growing with the horizon t as the
  uncertain slope adds up (se: the slope's standard error, at most the 3%/day cap; s: the day part's spread;
  t_mid, t_anchor: the middle of the history and of its last 7 days). From the first forecast day to the
  30th it goes from x1.1 to x1.35 after 28 days of history (5% day-to-day noise), to x3 after 10 days and
  x6 after 4. The rest: sqrt(1 + 1/n_alike), n_alike being the weekdays (or weekend days) the hour effects
  were averaged over. The day part is also scaled up for the degrees of freedom the day levels spent and for
  the few days its quantiles come from (the 90% quantile of 21 values sits at the population's 87.7%: x1.11;
  x1.94 for 3 days). Measured: it covers 74-90% of the hours a week out and 81-87% over 30 days, where the
  unscaled quantiles covered 66-76% a week out.
- The forecast (`mean_rps`) is the median of each hour's rate, exp of the fitted log value less the offset,
  never negative. Summed over 30 days it is within about 2% of the demo's expected traffic from 0.005 req/s
  up; under about 5 requests an hour the median of a Poisson count falls below its mean (28% below at 2).
- Hours before the first one with traffic are not history (the agent did not exist yet) and are left out;
  zeros after it are real hours without traffic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from scipy import stats
from sklearn.linear_model import Ridge

MIN_HOURS = 72
REACH_HOURS = 30 * 24
HOLDOUT_HOURS = 7 * 24
BACKTEST_MIN_FIT_HOURS = 7 * 24  # the backtest's model sees at least a week...
BACKTEST_MIN_HOURS = BACKTEST_MIN_FIT_HOURS + HOLDOUT_HOURS  # ...so fit() backtests from 14 days of history
WEEKDAY_MIN_HOURS = 14 * 24  # day-of-week levels need every weekday twice
ANCHOR_DAYS = 7  # the trend line goes through the level of the last week
OFFSET_SHARE = 0.003  # of the mean rps, added before the log
SCORED_SHARE = 0.05  # hours under 5% of the holdout's mean rps are left out of the MAPE
MAX_TREND_PER_DAY = 0.03  # on the log scale: about +-3%/day
MIN_DAY_HOURS = 12  # a calendar day with fewer observed hours gives no daily level
BAND_QUANTILES = (0.10, 0.90)
RIDGE_ALPHA = 1e-3  # only keeps the solve stable (the hour columns add up to the intercept)
LEVEL_TRIM = 0.2  # of the anchor days at either end


@dataclass(frozen=True, eq=False)
class Forecast:
    """Requests/s for each hour from `start`: the median forecast and an 80% band, with its evidence."""

    start: datetime  # UTC, the hour after the last observed one
    mean_rps: np.ndarray  # the central forecast of each hour: its median rate (read-only arrays)
    low_rps: np.ndarray  # 10% quantile
    high_rps: np.ndarray  # 90% quantile
    fitted_hours: int  # observed hours from the first one with traffic
    backtest_mape: float | None  # see `backtest`; None under 14 days of history
    explanation: str

    def hours(self, n: int | None = None) -> list[datetime]:
        """The timestamps of the first `n` forecast hours (all of them by default)."""
        count = len(self.mean_rps) if n is None else max(0, min(n, len(self.mean_rps)))
        return [self.start + timedelta(hours=i) for i in range(count)]

    def crossing(self, level_rps: float, *, upper: bool = False) -> datetime | None:
        """The first forecast hour whose median (or the band's upper edge) reaches `level_rps`; None if none does."""
        above = np.flatnonzero((self.high_rps if upper else self.mean_rps) >= level_rps)
        return self.start + timedelta(hours=int(above[0])) if len(above) else None


@dataclass(frozen=True)
class _Calendar:
    """Hour of day, weekday (Monday 0), calendar day (0: the first hour's UTC date) and time of a run of hours."""

    hour: np.ndarray
    weekday: np.ndarray
    day: np.ndarray
    t_days: np.ndarray  # since the first hour

    @classmethod
    def of(cls, first_hour: datetime, offset: int, n: int) -> _Calendar:
        index = offset + np.arange(n)
        clock = first_hour.hour + index
        return cls(clock % 24, (first_hour.weekday() + clock // 24) % 7, clock // 24, index / 24.0)

    def design(self, weekend_shape: bool) -> np.ndarray:
        one_hot = np.eye(24)[self.hour]
        if not weekend_shape:
            return one_hot
        weekend = (self.weekday >= 5)[:, None]
        return np.hstack([np.where(weekend, 0.0, one_hot), np.where(weekend, one_hot, 0.0)])


@dataclass(frozen=True)
class _Model:
    """A fitted model on the log scale: calendar, weekday levels, a line, and what the band is made of."""

    hour_coef: np.ndarray
    weekday_level: np.ndarray
    level: float  # of the line at t = 0 (the first hour)
    slope: float  # per day
    raw_slope: float  # before the shrinkage and the cap
    offset: float
    weekend_shape: bool  # weekends have hour effects of their own
    by_weekday: bool  # each weekday has its own (shrunk) level
    within_day: np.ndarray  # each fitted hour's residual less its day's mean residual
    day_residual: np.ndarray  # ...and that mean (scaled up, see _fit_model), per fitted hour
    alike_days: tuple[int, int]  # fitted weekdays and weekend days
    anchor_t: float  # the middle of the anchor days
    middle_t: float  # the middle of all fitted days
    anchor_days: int
    slope_se: float  # the slope's standard error over the day part's spread

    def predict(self, first_hour: datetime, offset: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Median, low and high rps for `n` hours from `offset` hours after `first_hour`."""
        calendar = _Calendar.of(first_hour, offset, n)
        centre = (
            self.level
            + self.slope * calendar.t_days
            + calendar.design(self.weekend_shape) @ self.hour_coef
            + self.weekday_level[calendar.weekday]
        )
        # One band per forecast day: its hours share a weekday and nearly the same horizon.
        days, day_of_hour = np.unique(calendar.day, return_inverse=True)
        day_t = np.bincount(day_of_hour, weights=calendar.t_days) / np.bincount(day_of_hour)
        weekend = (first_hour.weekday() + days) % 7 >= 5
        alike = np.where(weekend & self.weekend_shape, self.alike_days[1], self.alike_days[0])
        if not self.weekend_shape:
            alike = np.full(len(days), sum(self.alike_days))
        # Prediction-interval factors: the hour effects are means over the `alike` days; the day's level comes
        # from the anchor days' mean and the slope, whose error grows with the distance from the middle of the
        # history (less what the anchor, fitted with the same slope, already carries).
        hour_factor = np.sqrt(1 + 1 / np.maximum(alike, 1))
        slope_var = self.slope_se**2 * ((day_t - self.middle_t) ** 2 - (self.anchor_t - self.middle_t) ** 2)
        day_factor = np.sqrt(np.maximum(1 + 1 / self.anchor_days + slope_var, 1))
        residuals = hour_factor[:, None] * self.within_day + day_factor[:, None] * self.day_residual
        low, high = (edge[day_of_hour] for edge in np.quantile(residuals, BAND_QUANTILES, axis=1))

        def rps(log_value: np.ndarray) -> np.ndarray:
            return np.maximum(np.exp(log_value) - self.offset, 0.0)

        return rps(centre), rps(centre + low), rps(centre + high)


def _shrink(estimate: np.ndarray, noise_var: np.ndarray) -> float:
    """Positive-part James-Stein factor for estimates of effects around zero, each with its noise variance."""
    signal = float(estimate @ (estimate / noise_var)) if len(estimate) else 0.0
    if signal <= 0:
        return 0.0
    return max(0.0, 1.0 - max(len(estimate) - 2, 1) / signal)


def _small_sample(n: int) -> float:
    """How much the band's 90% quantile of `n` days' residuals understates the population's (normal days).

    np.quantile takes it at position 0.9 (n - 1), an order statistic whose expected value is the population's
    quantile at Blom's (position + 1 - 3/8) / (n + 1/4): 0.877 for 21 days, not 0.9. The factor is the ratio
    of the two normal quantiles: x1.11 for 21 days, x1.94 for 3.
    """
    high = max(BAND_QUANTILES)
    blom = (high * (n - 1) + 1 - 0.375) / (n + 0.25)
    return float(stats.norm.ppf(high) / stats.norm.ppf(max(blom, 0.6)))


def _fit_model(rps: np.ndarray, first_hour: datetime) -> _Model:
    n = len(rps)
    calendar = _Calendar.of(first_hour, 0, n)
    weekend = calendar.weekday >= 5
    weekend_shape = bool(
        np.all(np.bincount(calendar.hour[weekend], minlength=24) > 0)
        and np.all(np.bincount(calendar.hour[~weekend], minlength=24) > 0)
    )
    by_weekday = n >= WEEKDAY_MIN_HOURS
    offset = OFFSET_SHARE * float(rps.mean())
    y = np.log(rps + offset)
    x = calendar.design(weekend_shape)
    # The time column keeps growth out of the hour effects when the weeks are not balanced.
    hour_coef = Ridge(alpha=RIDGE_ALPHA).fit(np.column_stack([x, calendar.t_days]), y).coef_[:-1]

    hours_per_day = np.maximum(np.bincount(calendar.day), 1)
    days = np.flatnonzero(hours_per_day >= MIN_DAY_HOURS)
    day_level = (np.bincount(calendar.day, weights=y - x @ hour_coef) / hours_per_day)[days]
    day_t = (np.bincount(calendar.day, weights=calendar.t_days) / hours_per_day)[days]
    day_weekday = (first_hour.weekday() + days) % 7

    weekday_level = np.zeros(7)
    weekday_share = 0.0
    slope = float(stats.theilslopes(day_level, day_t, method="joint").slope)
    if by_weekday:
        deviation = day_level - slope * day_t
        deviation -= np.median(deviation)
        counts = np.bincount(day_weekday, minlength=7)
        seen = counts > 0
        means = np.bincount(day_weekday, weights=deviation, minlength=7) / np.maximum(counts, 1)
        within = deviation - means[day_weekday]
        noise = float(within @ within) / max(len(days) - int(seen.sum()), 1)
        if noise > 0:
            weekday_share = _shrink(means[seen], noise / counts[seen])
            weekday_level[seen] = means[seen] * weekday_share
        day_level = day_level - weekday_level[day_weekday]
        slope = float(stats.theilslopes(day_level, day_t, method="joint").slope)

    raw_slope = slope
    spread = float(((day_t - day_t.mean()) ** 2).sum())
    line = day_level - slope * day_t
    line_residual = line - np.median(line)
    day_var = float(line_residual @ line_residual) / max(len(days) - 2, 1)
    if day_var > 0:
        slope *= _shrink(np.array([slope]), np.array([day_var / spread]))
    slope = float(np.clip(slope, -MAX_TREND_PER_DAY, MAX_TREND_PER_DAY))
    anchor = day_t > day_t[-1] - ANCHOR_DAYS
    level = float(stats.trim_mean((day_level - slope * day_t)[anchor], LEVEL_TRIM))

    residuals = y - (level + slope * calendar.t_days + x @ hour_coef + weekday_level[calendar.weekday])
    day_mean = np.bincount(calendar.day, weights=residuals) / hours_per_day
    # The day-level parameters (the line, the weekend's level, the shrunk weekday levels) fitted some of the
    # days' noise away, and a quantile of a few days understates the spread: scale the day part back up.
    spent = 2 + int(weekend_shape) + 7 * weekday_share
    inflate = math.sqrt(len(days) / max(len(days) - spent, 1)) * _small_sample(len(days))
    day_residual = inflate * day_mean[calendar.day]
    # The slope's standard error (at most the cap: the slope cannot be off by more), relative to the spread of
    # the day part it widens.
    day_spread = math.sqrt(float(np.mean(day_residual**2)))
    slope_se = min(math.sqrt(day_var / spread), MAX_TREND_PER_DAY) / day_spread if day_spread > 0 else 0.0
    weekend_days = int((day_weekday >= 5).sum())
    return _Model(
        hour_coef=hour_coef,
        weekday_level=weekday_level,
        level=level,
        slope=slope,
        raw_slope=raw_slope,
        offset=offset,
        weekend_shape=weekend_shape,
        by_weekday=by_weekday,
        within_day=residuals - day_mean[calendar.day],
        day_residual=day_residual,
        alike_days=(len(days) - weekend_days, weekend_days),
        anchor_t=float(day_t[anchor].mean()),
        middle_t=float(day_t.mean()),
        anchor_days=int(anchor.sum()),
        slope_se=slope_se,
    )


def _checked(hourly_rps: Sequence[float] | np.ndarray, first_hour: datetime) -> tuple[np.ndarray, datetime]:
    rps = np.asarray(hourly_rps, dtype=np.float64)
    if rps.ndim != 1 or not np.all(np.isfinite(rps)) or np.any(rps < 0):
        raise ValueError("hourly_rps must be a flat series of finite, non-negative request rates")
    if first_hour.tzinfo is None:
        raise ValueError(f"first_hour must be timezone-aware (UTC), not {first_hour!r}")
    first_hour = first_hour.astimezone(UTC)
    if first_hour != first_hour.replace(minute=0, second=0, microsecond=0):
        raise ValueError(f"first_hour must be on the hour, not {first_hour.isoformat()}")
    # Before the first request the agent did not exist yet: that is not history.
    first_traffic = int(np.argmax(rps > 0)) if rps.any() else len(rps)
    return rps[first_traffic:], first_hour + timedelta(hours=first_traffic)


def backtest(
    hourly_rps: Sequence[float] | np.ndarray, first_hour: datetime, *, holdout_hours: int = HOLDOUT_HOURS
) -> float | None:
    """MAPE of the model fitted without the last `holdout_hours` and scored on them, as a share (0.08 = 8%).

    MAPE = mean over the scored holdout hours of |forecast - observed| / observed, the forecast being the
    median (`Forecast.mean_rps`). Scored are the hours with at least 5% of the holdout's mean rps: a quiet
    night hour of 0.01 req/s forecast at 0.02 is an error of 100% that says nothing about capacity. None when
    the model would see less than a week of history with traffic before the holdout (so 14 days are needed
    with the default holdout), or when the holdout has no traffic.
    """
    rps, first_hour = _checked(hourly_rps, first_hour)
    fit_hours = len(rps) - holdout_hours
    if holdout_hours < 1 or fit_hours < BACKTEST_MIN_FIT_HOURS:
        return None
    median, _, _ = _fit_model(rps[:fit_hours], first_hour).predict(first_hour, fit_hours, holdout_hours)
    observed = rps[fit_hours:]
    if not observed.any():
        return None
    scored = observed >= SCORED_SHARE * float(observed.mean())
    return float(np.mean(np.abs(median[scored] - observed[scored]) / observed[scored]))


def _days(hours: int) -> str:
    return f"{hours // 24} days" if hours % 24 == 0 else f"{hours / 24:.1f} days"


def _explain(model: _Model, fitted_hours: int, backtest_mape: float | None) -> str:
    if model.by_weekday:
        cycles = "daily and weekly cycles"
    elif model.weekend_shape:
        cycles = "a daily cycle and a weekend shape (weekday levels need 14 days)"
    else:
        cycles = "a daily cycle (no whole weekend seen yet)"
    growth = 100 * math.expm1(model.slope)
    if abs(growth) < 0.05:
        trend = "no clear trend"
    else:
        trend = f"a {growth:+.1f}%/day trend"
        if abs(model.slope) >= MAX_TREND_PER_DAY:
            trend += f" (capped; the history alone says {100 * math.expm1(model.raw_slope):+.1f}%/day)"
    if backtest_mape is not None:
        checked = f"backtest error {100 * backtest_mape:.1f}% on the last {_days(HOLDOUT_HOURS)}"
    else:
        checked = f"no backtest yet (it needs {_days(BACKTEST_MIN_HOURS)} of history)"
    return f"Fitted on {_days(fitted_hours)} of hourly traffic with {cycles} and {trend}; {checked}."


def fit(
    hourly_rps: Sequence[float] | np.ndarray, first_hour: datetime, *, reach_hours: int = REACH_HOURS
) -> Forecast | None:
    """The forecast for `reach_hours` after the observed hours; None under 3 days of history or without traffic.

    `hourly_rps`: contiguous observed hours, oldest first; `first_hour`: the timezone-aware, whole hour of the
    first element. Zeros are hours without traffic, not missing data; the history starts at the first hour
    with traffic.
    """
    if reach_hours < 1:
        raise ValueError(f"reach_hours must be positive, not {reach_hours}")
    rps, since = _checked(hourly_rps, first_hour)
    if len(rps) < MIN_HOURS:
        return None
    model = _fit_model(rps, since)
    median, low, high = model.predict(since, len(rps), reach_hours)
    for values in (median, low, high):
        values.setflags(write=False)
    backtest_mape = backtest(rps, since) if len(rps) >= BACKTEST_MIN_HOURS else None
    return Forecast(
        start=since + timedelta(hours=len(rps)),
        mean_rps=median,
        low_rps=low,
        high_rps=high,
        fitted_hours=len(rps),
        backtest_mape=backtest_mape,
        explanation=_explain(model, len(rps), backtest_mape),
    )
