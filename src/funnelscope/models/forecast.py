"""Forecasts of a daily KPI series and of its aggregate over a period, with intervals.

The model (docs/goals.md, "The forecast") is a structural time series (statsmodels
``UnobservedComponents``, fitted by maximum likelihood, Kalman filter):

* **Local linear trend + weekly season** when the history has at least
  :data:`MIN_SEASONAL_DAYS` days: a level and a slope that both drift, a fixed day-of-week
  pattern, and daily noise.
* **Local level** with :data:`MIN_STRUCTURAL_DAYS` to :data:`MIN_SEASONAL_DAYS` - 1 days: too
  few weeks to tell a weekly pattern or a trend from noise.
* **Mean** below that (at least :data:`MIN_HISTORY_DAYS` days): the days are treated as
  independent draws around the history's mean, with the mean's own uncertainty added; also used
  for a constant history and if the structural model cannot be fitted.
* Fewer days: no forecast (:class:`InsufficientHistoryError`).

A state-space model is used rather than exponential smoothing in innovations form because its
simulations start from the *filtered distribution* of the current level, slope and season, not
from point estimates: the uncertainty about where the series is now (and where it is heading)
is part of every interval. Without it, 80% intervals of a quarter's total covered the realised
value in only 45-65% of backtest cases; with it, about 80% (docs/goals.md, "Backtest").

Every forecast is a set of simulated daily paths (:data:`DEFAULT_REPETITIONS`, seeded, so the
numbers repeat). The period aggregate (a sum, a ratio or a mean over the period) is computed on
each path together with the days already observed; its mean, quantiles and the probability of
reaching a target are read off those simulated aggregates. Daily values are clipped to the
KPI's bounds (revenue is never negative, a rate never above 1) on every path.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from funnelscope.errors import FunnelscopeError

__all__ = [
    "DEFAULT_REPETITIONS",
    "MIN_HISTORY_DAYS",
    "MIN_SEASONAL_DAYS",
    "MIN_STRUCTURAL_DAYS",
    "Aggregation",
    "DailyPaths",
    "InsufficientHistoryError",
    "PeriodForecast",
    "period_forecast",
    "simulate_daily",
]

Aggregation = Literal["sum", "ratio", "mean"]
Direction = Literal["at_least", "at_most"]

#: Simulated paths per forecast: the Monte Carlo error of a probability is at most ±1.1 points.
DEFAULT_REPETITIONS: Final = 2000
#: At least four weeks of days to fit a weekly season.
MIN_SEASONAL_DAYS: Final = 28
#: At least two weeks of days for the local-level model.
MIN_STRUCTURAL_DAYS: Final = 14
#: Fewer days than this: no forecast.
MIN_HISTORY_DAYS: Final = 3
#: Only the most recent year of history is fitted: older days say little about this quarter.
MAX_HISTORY_DAYS: Final = 365
WEEK: Final = 7


class InsufficientHistoryError(FunnelscopeError):
    """The series is too short (or empty) to forecast from."""


@dataclass(frozen=True)
class DailyPaths:
    """Simulated future daily values of a series.

    Attributes
    ----------
    method
        ``"structural(trend+weekly)"``, ``"structural(level)"``, ``"mean"`` or ``"none"`` (no
        future day).
    rule
        Why this method: the history-length rule.
    dates
        The forecast days (consecutive, the day after the history's last day first).
    paths
        Array of shape ``(len(dates), repetitions)``.
    history_days
        How many days of history were fitted.
    """

    method: str
    rule: str
    dates: pd.DatetimeIndex
    paths: np.ndarray[Any, np.dtype[np.float64]] = field(repr=False, compare=False)
    history_days: int

    def mean(self) -> pd.Series:
        """The expected value of each forecast day."""
        return pd.Series(self.paths.mean(axis=1), index=self.dates, name="mean")


def _daily_index(series: pd.Series) -> pd.Series:
    """The series on a consecutive daily index (missing days are an error for the caller)."""
    out = series.astype("float64").copy()
    out.index = pd.DatetimeIndex(pd.to_datetime(series.index)).normalize().tz_localize(None)
    full = pd.date_range(out.index.min(), out.index.max(), freq="D")
    if len(full) != len(out):
        raise ValueError("the history must have one value per consecutive day")
    out.index = full
    return out


def _fit_structural(y: pd.Series, *, seasonal: bool) -> Any:
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    model = UnobservedComponents(
        y,
        level="lltrend" if seasonal else "llevel",
        seasonal=WEEK if seasonal else None,
        # A fixed weekly pattern: one variance fewer to estimate, and the pattern's estimation
        # uncertainty is still carried by the Kalman filter into the forecast.
        stochastic_seasonal=False,
    )
    with warnings.catch_warnings():
        # A fit that stops early still gives usable variances; it is not an error for the user.
        warnings.simplefilter("ignore")
        # Powell converges to the same optimum as L-BFGS here, about twice as fast.
        return model.fit(disp=False, method="powell")


def _mean_paths(
    y: np.ndarray[Any, np.dtype[np.float64]],
    horizon: int,
    repetitions: int,
    rng: np.random.Generator,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    n = len(y)
    sd = float(np.std(y, ddof=1)) if n > 1 else 0.0
    # Each path gets its own mean (the sample mean's uncertainty, sd / sqrt(n)), then iid days.
    level = float(np.mean(y)) + rng.normal(0.0, sd / math.sqrt(n), size=repetitions)
    noise = rng.normal(0.0, sd, size=(horizon, repetitions))
    return np.asarray(level[None, :] + noise, dtype=np.float64)


def simulate_daily(
    history: pd.Series,
    horizon: int,
    *,
    repetitions: int = DEFAULT_REPETITIONS,
    seed: int = 0,
    lower: float | None = None,
    upper: float | None = None,
) -> DailyPaths:
    """Simulate ``horizon`` future days of a daily series.

    Parameters
    ----------
    history
        One value per consecutive day (index: dates), oldest first, no gaps. NaN days (a rate on
        a day without a denominator) are filled from the previous day.
    horizon
        Number of days to simulate after the last history day.
    repetitions, seed
        Number of simulated paths and the seed of their random numbers.
    lower, upper
        Bounds of a daily value (e.g. 0 for revenue, 1 for a rate); paths are clipped to them.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> days = pd.date_range("2024-01-01", periods=56, freq="D")
    >>> y = pd.Series(100 + 10 * (days.day_of_week >= 5), index=days, dtype=float)
    >>> f = simulate_daily(y + np.random.default_rng(1).normal(0, 2, 56), 7)
    >>> f.method, round(float(f.mean().iloc[5]))  # the 6th day is a Saturday
    ('structural(trend+weekly)', 110)
    """
    if horizon < 0:
        raise ValueError("horizon must be >= 0")
    y = _daily_index(history).ffill().bfill().iloc[-MAX_HISTORY_DAYS:]
    y = y.dropna()
    n = len(y)
    if n < MIN_HISTORY_DAYS:
        raise InsufficientHistoryError(
            f"{n} day(s) of history; a forecast needs at least {MIN_HISTORY_DAYS}"
        )
    rng = np.random.default_rng(seed)
    start = y.index[-1] + pd.Timedelta(days=1)
    dates = pd.date_range(start, periods=horizon, freq="D")
    values = y.to_numpy(dtype=np.float64)
    if horizon == 0:
        paths = np.zeros((0, repetitions))
        method, rule = "none", "no future days to forecast"
    elif n < MIN_STRUCTURAL_DAYS or float(np.std(values)) == 0.0:
        method = "mean"
        rule = (
            f"{n} days of history (< {MIN_STRUCTURAL_DAYS}): independent days around the mean"
            if n < MIN_STRUCTURAL_DAYS
            else "a constant history: its value, without noise"
        )
        paths = _mean_paths(values, horizon, repetitions, rng)
    else:
        seasonal = n >= MIN_SEASONAL_DAYS
        method = "structural(trend+weekly)" if seasonal else "structural(level)"
        rule = (
            f"{n} days of history (>= {MIN_SEASONAL_DAYS}): local linear trend + weekly season"
            if seasonal
            else f"{n} days of history ({MIN_STRUCTURAL_DAYS}..{MIN_SEASONAL_DAYS - 1}): "
            "local level, too few weeks for a weekly season or a trend"
        )
        result = _fit_structural(y.asfreq("D"), seasonal=seasonal)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sim = result.simulate(horizon, anchor="end", repetitions=repetitions, rng=rng)
        paths = np.asarray(sim, dtype=np.float64).reshape(horizon, repetitions)
        if not np.isfinite(paths).all():
            method, rule = "mean", "the structural model did not fit: independent days"
            paths = _mean_paths(values, horizon, repetitions, rng)
    if lower is not None or upper is not None:
        paths = np.clip(paths, lower, upper)
    return DailyPaths(method=method, rule=rule, dates=dates, paths=paths, history_days=n)


@dataclass(frozen=True)
class PeriodForecast:
    """The aggregate of a KPI over a period: what is observed so far and what is expected.

    Attributes
    ----------
    aggregation
        ``"sum"`` (additive KPIs), ``"ratio"`` (sum of numerators / sum of denominators) or
        ``"mean"`` (mean of the daily values).
    observed_value, observed_days
        The aggregate over the period's days observed so far (None when none is).
    mean, median, interval80, interval95
        The predictive distribution of the aggregate at the period's end. When every day is
        observed they all equal the observed value.
    method, rule
        The daily model (see :func:`simulate_daily`) and why it was chosen.
    daily
        One row per day of the period: ``actual`` (daily value), ``actual_to_date`` (the running
        aggregate), and the running aggregate's forecast ``mean``, ``lower80``, ``upper80``,
        ``lower95``, ``upper95`` on future days.
    """

    aggregation: Aggregation
    period_start: date
    period_end: date
    observed_value: float | None
    observed_days: int
    mean: float
    median: float
    interval80: tuple[float, float]
    interval95: tuple[float, float]
    method: str
    rule: str
    daily: pd.DataFrame = field(repr=False, compare=False)
    samples: np.ndarray[Any, np.dtype[np.float64]] = field(repr=False, compare=False)

    @property
    def is_complete(self) -> bool:
        """Every day of the period is observed: the aggregate is known."""
        return self.observed_days == (self.period_end - self.period_start).days + 1

    def probability(self, target: float, direction: Direction = "at_least") -> float:
        """The share of simulated aggregates at or beyond ``target`` (``>=`` or ``<=``)."""
        hits = self.samples >= target if direction == "at_least" else self.samples <= target
        return float(np.mean(hits))

    def to_dict(self) -> dict[str, Any]:
        return {
            "aggregation": self.aggregation,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "observed_value": self.observed_value,
            "observed_days": self.observed_days,
            "mean": self.mean,
            "median": self.median,
            "interval80": list(self.interval80),
            "interval95": list(self.interval95),
            "method": self.method,
            "rule": self.rule,
        }


def _running(
    aggregation: Aggregation,
    num: np.ndarray[Any, np.dtype[np.float64]],
    den: np.ndarray[Any, np.dtype[np.float64]],
    axis: int = 0,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Running aggregate along ``axis`` from cumulative numerators and denominators."""
    cn = np.cumsum(num, axis=axis)
    if aggregation == "sum":
        return cn
    cd = np.cumsum(den, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(cd > 0, cn / np.where(cd > 0, cd, 1.0), np.nan))


def period_forecast(
    history: pd.Series,
    *,
    period_start: date,
    period_end: date,
    aggregation: Aggregation = "sum",
    denominator: pd.Series | None = None,
    lower: float | None = None,
    upper: float | None = None,
    repetitions: int = DEFAULT_REPETITIONS,
    seed: int = 0,
) -> PeriodForecast:
    """Forecast a KPI's aggregate over ``[period_start, period_end]`` (days, inclusive).

    Parameters
    ----------
    history
        The KPI's daily values up to the last complete day (consecutive dates, no gaps). For
        ``"ratio"`` KPIs these are the daily rates.
    period_start, period_end
        The period; it may have started (its observed days are in ``history``) or not.
    aggregation
        ``"sum"``: the total of the days. ``"ratio"``: the rate over the whole period, sum of
        ``rate * denominator`` over sum of ``denominator``; future days get the mean daily
        denominator of the last 28 days. Without ``denominator``, and for ``"mean"``, the mean
        of the daily values.
    denominator
        The daily denominators of a ratio KPI (same index as ``history``).
    lower, upper
        Bounds of a daily value (see :func:`simulate_daily`).

    Examples
    --------
    >>> import pandas as pd
    >>> from datetime import date
    >>> days = pd.date_range("2024-01-01", "2024-03-10", freq="D")
    >>> sales = pd.Series(10.0, index=days)
    >>> f = period_forecast(sales, period_start=date(2024, 3, 1), period_end=date(2024, 3, 31))
    >>> f.observed_value, f.mean, f.probability(300.0)
    (100.0, 310.0, 1.0)
    """
    if period_end < period_start:
        raise ValueError("period_end is before period_start")
    y = _daily_index(history)
    if y.index[0].date() > period_start:
        # the period began before the history: its first days are observed as missing, so
        # observed + forecast days always cover the whole period
        y = y.reindex(pd.date_range(period_start, y.index[-1], freq="D"))
    days = pd.DatetimeIndex(y.index)
    last = days[-1].date()
    first_future = max(last + timedelta(days=1), period_start)
    horizon = max(0, (period_end - (last + timedelta(days=1))).days + 1)
    if denominator is not None:
        den_hist = _daily_index(denominator).reindex(y.index).fillna(0.0)
    else:
        den_hist = pd.Series(1.0, index=y.index)
    if aggregation == "mean" or denominator is None:
        den_hist = pd.Series(np.where(y.notna(), 1.0, 0.0), index=y.index)

    in_period = (days.date >= period_start) & (days.date <= period_end)
    obs_val = y[in_period].fillna(0.0).to_numpy()
    obs_den = den_hist[in_period].to_numpy()
    obs_num = obs_val * obs_den if aggregation != "sum" else obs_val
    observed_days = int(in_period.sum())
    observed_value: float | None = None
    if observed_days:
        observed_value = float(_running(aggregation, obs_num, obs_den)[-1])
        if math.isnan(observed_value):
            observed_value = None

    if horizon:
        daily = simulate_daily(
            history, horizon, repetitions=repetitions, seed=seed, lower=lower, upper=upper
        )
        method, rule = daily.method, daily.rule
        keep = daily.dates.date >= first_future
        fut_val = daily.paths[keep]
        future_den = float(den_hist.iloc[-28:].mean()) if aggregation != "sum" else 1.0
        fut_den = np.full(fut_val.shape, future_den)
        fut_num = fut_val if aggregation == "sum" else fut_val * fut_den
    else:
        method, rule = "none", "every day of the period is observed"
        fut_val = np.zeros((0, 1))
        fut_num = fut_den = fut_val

    reps = fut_val.shape[1]
    all_num = np.vstack([np.repeat(obs_num[:, None], reps, axis=1), fut_num])
    all_den = np.vstack([np.repeat(obs_den[:, None], reps, axis=1), fut_den])
    running = _running(aggregation, all_num, all_den, axis=0)
    samples = running[-1] if len(running) else np.array([np.nan])
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        raise InsufficientHistoryError("the period has no measurable day")

    dates = pd.date_range(period_start, period_end, freq="D")
    n_days = len(dates)
    columns: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {
        name: np.full(n_days, np.nan)
        for name in ("actual", "actual_to_date", "mean", "lower80", "upper80", "lower95", "upper95")
    }
    columns["actual"][:observed_days] = obs_val
    columns["actual_to_date"][:observed_days] = running[:observed_days, 0]
    future_rows = running[observed_days:]
    if len(future_rows):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a ratio's days without denominator
            columns["mean"][observed_days:] = np.nanmean(future_rows, axis=1)
            qs = np.nanquantile(future_rows, [0.1, 0.9, 0.025, 0.975], axis=1)
        for i, name in enumerate(("lower80", "upper80", "lower95", "upper95")):
            columns[name][observed_days:] = qs[i]
    frame = pd.DataFrame(columns, index=pd.DatetimeIndex(dates, name="date"))
    q = np.quantile(samples, [0.5, 0.1, 0.9, 0.025, 0.975])
    return PeriodForecast(
        aggregation=aggregation,
        period_start=period_start,
        period_end=period_end,
        observed_value=observed_value,
        observed_days=observed_days,
        mean=float(np.mean(samples)),
        median=float(q[0]),
        interval80=(float(q[1]), float(q[2])),
        interval95=(float(q[3]), float(q[4])),
        method=method,
        rule=rule,
        daily=frame,
        samples=samples,
    )
