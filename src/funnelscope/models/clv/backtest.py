"""Calibration/holdout backtest: does BG/NBD predict the holdout better than a naive rule?

The model is fitted on the calibration period. For every holdout period k (``period_length``
time units, a week by default) the aggregate prediction is Σ_customers E[Y(k·L)] − E[Y((k−1)·L)],
the conditional expectation given each customer's calibration history. The **naive baseline**
assumes every customer keeps their calibration repeat rate, x / T per time unit (0 when T = 0):
it is what a spreadsheet "same rate as before" forecast does, and ignores that customers leave.

Both are compared with the actual repeat purchase days per period. Errors: mean absolute error
of the per-period aggregates, and the error of the holdout total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from funnelscope.models.clv.bg_nbd import BetaGeoModel
from funnelscope.models.clv.data import (
    DEFAULT_TIME_UNIT,
    _day_number,
    _unit_days,
    calibration_and_holdout,
    daily_transactions,
)

__all__ = ["BacktestResult", "backtest"]


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Per-period actual vs predicted repeat purchases in the holdout, and the errors."""

    periods: pd.DataFrame  # period, actual, model, naive
    params: dict[str, float]
    log_likelihood: float
    customers: int

    @property
    def model_mae(self) -> float:
        return float((self.periods["model"] - self.periods["actual"]).abs().mean())

    @property
    def naive_mae(self) -> float:
        return float((self.periods["naive"] - self.periods["actual"]).abs().mean())

    @property
    def actual_total(self) -> float:
        return float(self.periods["actual"].sum())

    @property
    def model_total(self) -> float:
        return float(self.periods["model"].sum())

    @property
    def naive_total(self) -> float:
        return float(self.periods["naive"].sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "params": self.params,
            "log_likelihood": self.log_likelihood,
            "actual_total": self.actual_total,
            "model_total": self.model_total,
            "naive_total": self.naive_total,
            "model_mae": self.model_mae,
            "naive_mae": self.naive_mae,
            "periods": self.periods.to_dict(orient="records"),
        }

    def to_pandas(self) -> pd.DataFrame:
        return self.periods.copy()

    def summary(self) -> str:
        """A short printable report."""
        return (
            f"holdout repeat purchases: actual {self.actual_total:.0f}, "
            f"BG/NBD {self.model_total:.1f} ({self.model_total / self.actual_total - 1:+.1%}), "
            f"naive {self.naive_total:.1f} ({self.naive_total / self.actual_total - 1:+.1%}); "
            f"per-period MAE: BG/NBD {self.model_mae:.2f}, naive {self.naive_mae:.2f}"
        )


def backtest(
    transactions: pd.DataFrame,
    *,
    calibration_end: date | datetime,
    observation_end: date | datetime,
    customer: str = "customer_id",
    at: str = "at",
    amount: str = "amount",
    time_unit: timedelta = DEFAULT_TIME_UNIT,
    period_length: float = 1.0,
) -> BacktestResult:
    """Fit BG/NBD on the calibration period and compare with the holdout, period by period.

    Examples
    --------
    See ``tests/peer/test_cdnow.py``: on CDNOW (39 + 39 weeks) the BG/NBD total is within a few
    percent of the 1,882 actual holdout repeat purchases; the naive rule is far off.
    """
    summary = calibration_and_holdout(
        transactions,
        calibration_end=calibration_end,
        observation_end=observation_end,
        customer=customer,
        at=at,
        amount=amount,
        time_unit=time_unit,
    )
    model = BetaGeoModel().fit(summary)
    unit = _unit_days(time_unit)
    cal_day = _day_number(calibration_end)
    end_day = _day_number(observation_end)
    horizon = (end_day - cal_day) / unit
    n_periods = int(np.ceil(horizon / period_length - 1e-9))
    edges = np.minimum(np.arange(n_periods + 1) * period_length, horizon)

    x, t_x, big_t = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    cumulative = np.array(
        [model.expected_purchases(e, x, t_x, big_t).sum() if e > 0 else 0.0 for e in edges]
    )
    rate = np.divide(x, big_t, out=np.zeros_like(x), where=big_t > 0).sum()

    daily = daily_transactions(transactions, customer=customer, at=at, amount=amount)
    daily = daily[daily["customer_id"].isin(summary.index)]
    offset = (daily["day"] - cal_day).to_numpy() / unit  # time of each purchase day after cal end
    held = offset[(offset > 0) & (offset <= horizon)]
    # a purchase day d days after calibration end falls in period ceil(d / L)
    index = np.clip(np.ceil(held / period_length - 1e-9).astype(np.int64), 1, n_periods)
    actual = np.bincount(index, minlength=n_periods + 1)[1:]
    periods = pd.DataFrame(
        {
            "period": np.arange(1, n_periods + 1),
            "actual": actual.astype(np.float64),
            "model": np.diff(cumulative),
            "naive": rate * np.diff(edges),
        }
    )
    return BacktestResult(
        periods=periods,
        params=dict(model.params_ or {}),
        log_likelihood=float(model.log_likelihood_ or 0.0),
        customers=len(summary),
    )
