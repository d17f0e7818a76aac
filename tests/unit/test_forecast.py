"""The daily forecast and the period aggregate (models/forecast.py), on plain series."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from funnelscope.models.forecast import (
    InsufficientHistoryError,
    period_forecast,
    simulate_daily,
)


def daily(values: list[float] | np.ndarray, first: str = "2024-01-01") -> pd.Series:
    return pd.Series(
        np.asarray(values, dtype=float), index=pd.date_range(first, periods=len(values), freq="D")
    )


@pytest.mark.parametrize(
    ("days", "method"),
    [
        pytest.param(5, "mean", id="short-history-mean"),
        pytest.param(20, "structural(level)", id="two-weeks-local-level"),
        pytest.param(60, "structural(trend+weekly)", id="four-weeks-trend-weekly"),
    ],
)
def test_the_model_follows_the_history_length_rule(days: int, method: str) -> None:
    y = daily(100 + np.random.default_rng(days).normal(0, 5, days))
    assert simulate_daily(y, 10, repetitions=200).method == method


def test_too_little_history_cannot_be_forecast() -> None:
    with pytest.raises(InsufficientHistoryError, match="at least 3"):
        simulate_daily(daily([1.0, 2.0]), 5)


def test_a_gap_in_the_days_is_an_error() -> None:
    y = daily([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="consecutive day"):
        simulate_daily(y.drop(y.index[1]), 3)


def test_weekly_pattern_and_trend_are_carried_forward() -> None:
    # 12 weeks: 100 on weekdays, 150 on weekends, +0.5 a day, small noise.
    days = pd.date_range("2024-01-01", periods=84, freq="D")  # starts on a Monday
    t = np.arange(84)
    y = pd.Series(
        100 + 50 * (days.day_of_week >= 5) + 0.5 * t + np.random.default_rng(3).normal(0, 2, 84),
        index=days,
    )
    mean = simulate_daily(y, 14, repetitions=500, seed=1).mean()
    # day 84 is a Monday: expected 100 + 0.5 * 84 = 142; Saturday (day 89): 150 + 44.5 + 50
    assert mean.iloc[0] == pytest.approx(142, abs=4)
    assert mean.iloc[5] == pytest.approx(194.5, abs=4)
    assert mean.iloc[7] - mean.iloc[0] == pytest.approx(3.5, abs=2)  # a week of trend


def test_paths_are_clipped_to_the_bounds_and_repeat_with_the_seed() -> None:
    y = daily(np.random.default_rng(0).poisson(0.5, 60))
    a = simulate_daily(y, 30, repetitions=300, seed=7, lower=0.0)
    b = simulate_daily(y, 30, repetitions=300, seed=7, lower=0.0)
    assert a.paths.min() >= 0.0
    np.testing.assert_array_equal(a.paths, b.paths)


def test_sum_of_a_constant_series_is_exact() -> None:
    # 10 a day; March: 10 days observed (100), 21 to come (210) -> 310 with no uncertainty.
    y = daily([10.0] * 70)  # 2024-01-01 .. 2024-03-10
    f = period_forecast(y, period_start=date(2024, 3, 1), period_end=date(2024, 3, 31))
    assert (f.observed_value, f.observed_days, f.mean) == (100.0, 10, 310.0)
    assert f.interval80 == (310.0, 310.0)
    assert f.probability(310.0) == 1.0
    assert f.probability(310.5) == 0.0
    assert f.probability(300.0, "at_most") == 0.0
    assert f.daily.loc["2024-03-10", "actual_to_date"] == 100.0
    assert f.daily.loc["2024-03-31", "mean"] == 310.0
    assert not f.is_complete


def test_a_completed_period_is_its_observed_value() -> None:
    y = daily([1.0, 2.0, 3.0, 4.0, 5.0])
    f = period_forecast(y, period_start=date(2024, 1, 2), period_end=date(2024, 1, 4))
    assert f.is_complete and f.method == "none"
    assert (f.observed_value, f.mean, f.interval95) == (9.0, 9.0, (9.0, 9.0))
    assert f.probability(9.0) == 1.0 and f.probability(9.1) == 0.0


def test_ratio_is_the_sum_of_numerators_over_the_sum_of_denominators() -> None:
    # day 1: 10 / 100 = 0.1, day 2: 90 / 300 = 0.3 -> 100 / 400 = 0.25 (not the mean 0.2)
    rates = daily([0.1, 0.3, 0.2, 0.2])
    den = daily([100.0, 300.0, 50.0, 50.0])
    f = period_forecast(
        rates,
        period_start=date(2024, 1, 1),
        period_end=date(2024, 1, 2),
        aggregation="ratio",
        denominator=den,
    )
    assert f.observed_value == pytest.approx(0.25)
    m = period_forecast(
        rates, period_start=date(2024, 1, 1), period_end=date(2024, 1, 2), aggregation="mean"
    )
    assert m.observed_value == pytest.approx(0.2)


def test_a_period_that_has_not_started_forecasts_only_its_days() -> None:
    y = daily([5.0] * 30)  # January
    f = period_forecast(y, period_start=date(2024, 2, 10), period_end=date(2024, 2, 19))
    assert f.observed_value is None and f.observed_days == 0
    assert f.mean == 50.0  # 10 days of 5, the days between Jan 31 and Feb 10 excluded
    assert len(f.daily) == 10


def test_the_interval_widens_with_the_horizon() -> None:
    y = daily(100 + np.random.default_rng(5).normal(0, 10, 90))
    short = period_forecast(
        y, period_start=date(2024, 3, 31), period_end=date(2024, 4, 6), repetitions=500
    )
    long = period_forecast(
        y, period_start=date(2024, 3, 31), period_end=date(2024, 6, 28), repetitions=500
    )
    width = lambda f: (f.interval80[1] - f.interval80[0]) / f.mean  # noqa: E731
    assert width(long) > width(short)
    assert (
        long.interval95[0]
        < long.interval80[0]
        < long.median
        < long.interval80[1]
        < long.interval95[1]
    )


def test_period_starting_before_the_history_is_covered_day_by_day() -> None:
    """A goal period that begins before the first day of data (regression: shape mismatch)."""
    from datetime import date

    import pandas as pd

    from funnelscope.models.forecast import period_forecast

    days = pd.date_range("2024-03-05", "2024-03-20", freq="D")
    history = pd.Series(10.0, index=days)
    f = period_forecast(history, period_start=date(2024, 3, 1), period_end=date(2024, 3, 31))
    assert f.observed_days == 20  # 1..20 March, the first four days missing (counted as 0)
    assert f.observed_value == 160.0
    assert 250.0 < f.mean < 370.0  # 160 observed + about 11 days of 10 a day
