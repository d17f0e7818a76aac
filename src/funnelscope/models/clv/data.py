"""From a transaction log to the per-customer summary the CLV models need.

Rules (docs/customers.md, "CLV data"):

* purchases on the same calendar day (UTC) are **one** transaction, whose value is the day's
  total: the models count purchase *occasions*, and a basket split over two orders is one;
* ``frequency`` x = purchase days after the first (repeat transactions);
* ``recency`` t_x = last purchase day − first purchase day, in ``time_unit`` (weeks by default);
* ``T`` = observation end − first purchase day, in ``time_unit``;
* ``monetary_value`` m̄ = mean value of the *repeat* purchase days (0 when x = 0), the
  Gamma-Gamma input; the first purchase is left out because it is often atypical;
* purchases after ``observation_end`` are ignored; ``observation_end`` is a date (inclusive).

A calibration/holdout split summarises the calibration period and counts each customer's
purchase days in the holdout period.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Final

import numpy as np
import pandas as pd

from funnelscope.errors import InvalidInputError, Problem

__all__ = [
    "DEFAULT_TIME_UNIT",
    "SUMMARY_COLUMNS",
    "calibration_and_holdout",
    "daily_transactions",
    "summarise_transactions",
]

#: The models' time unit: weeks, as in the published CDNOW results.
DEFAULT_TIME_UNIT: Final = timedelta(weeks=1)
SUMMARY_COLUMNS: Final = ("frequency", "recency", "T", "monetary_value")
_EPOCH: Final = np.datetime64("1970-01-01", "D")


def _day_number(value: date | datetime) -> int:
    if isinstance(value, datetime):
        value = (value.astimezone(UTC) if value.tzinfo is not None else value).date()
    return int((np.datetime64(value, "D") - _EPOCH).astype(np.int64))


def _unit_days(time_unit: timedelta) -> float:
    days = time_unit.total_seconds() / 86400.0
    if days <= 0:
        raise InvalidInputError([Problem("clv.bad_time_unit", "time_unit", "must be > 0")])
    return days


def daily_transactions(
    transactions: pd.DataFrame,
    *,
    customer: str = "customer_id",
    at: str = "at",
    amount: str = "amount",
) -> pd.DataFrame:
    """One row per customer and purchase day: ``customer_id``, ``day`` (since 1970), ``amount``.

    ``at`` may hold dates, naive datetimes (read as UTC) or tz-aware datetimes.
    """
    missing = [c for c in (customer, at, amount) if c not in transactions.columns]
    if missing:
        raise InvalidInputError(
            [
                Problem("clv.missing_column", c, "the transaction log needs this column")
                for c in missing
            ]
        )
    stamps = pd.to_datetime(transactions[at], utc=True)
    days = (stamps.dt.tz_convert(None).to_numpy().astype("datetime64[D]") - _EPOCH).astype(np.int64)
    amounts = pd.to_numeric(transactions[amount], errors="coerce").to_numpy(np.float64)
    if np.isnan(amounts).any():
        raise InvalidInputError(
            [Problem("clv.bad_value", amount, "amounts must be numbers (no missing values)")]
        )
    frame = pd.DataFrame(
        {"customer_id": transactions[customer].to_numpy(), "day": days, "amount": amounts}
    )
    grouped = frame.groupby(["customer_id", "day"], as_index=False, sort=True)
    return grouped.agg(amount=("amount", "sum"))


def _summary_from_daily(daily: pd.DataFrame, end_day: int, unit: float) -> pd.DataFrame:
    grouped = daily.groupby("customer_id", sort=True)
    agg = grouped.agg(
        first_day=("day", "min"),
        last_day=("day", "max"),
        days=("day", "size"),
        total=("amount", "sum"),
        first_amount=("amount", "first"),  # rows are sorted by day within a customer
    )
    frequency = (agg["days"] - 1).astype(np.float64)
    repeat_total = agg["total"] - agg["first_amount"]
    monetary = np.where(frequency > 0, repeat_total / frequency.where(frequency > 0, 1.0), 0.0)
    return pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (agg["last_day"] - agg["first_day"]) / unit,
            "T": (end_day - agg["first_day"]) / unit,
            "monetary_value": monetary,
        },
        index=agg.index,
    )


def summarise_transactions(
    transactions: pd.DataFrame,
    *,
    observation_end: date | datetime,
    customer: str = "customer_id",
    at: str = "at",
    amount: str = "amount",
    time_unit: timedelta = DEFAULT_TIME_UNIT,
) -> pd.DataFrame:
    """Per-customer ``frequency``, ``recency``, ``T``, ``monetary_value`` (index: customer).

    Examples
    --------
    >>> import pandas as pd
    >>> log = pd.DataFrame({"customer_id": [1, 1, 1, 2],
    ...                     "at": ["2024-01-01", "2024-01-01", "2024-01-15", "2024-01-08"],
    ...                     "amount": [10.0, 5.0, 20.0, 7.0]})
    >>> s = summarise_transactions(log, observation_end=date(2024, 1, 29))
    >>> s.loc[1].tolist(), s.loc[2].tolist()
    ([1.0, 2.0, 4.0, 20.0], [0.0, 0.0, 3.0, 0.0])
    """
    unit = _unit_days(time_unit)
    end_day = _day_number(observation_end)
    daily = daily_transactions(transactions, customer=customer, at=at, amount=amount)
    daily = daily[daily["day"] <= end_day]
    return _summary_from_daily(daily, end_day, unit)


def calibration_and_holdout(
    transactions: pd.DataFrame,
    *,
    calibration_end: date | datetime,
    observation_end: date | datetime,
    customer: str = "customer_id",
    at: str = "at",
    amount: str = "amount",
    time_unit: timedelta = DEFAULT_TIME_UNIT,
) -> pd.DataFrame:
    """The calibration summary plus ``holdout_frequency`` and ``holdout_duration``.

    Customers first seen after ``calibration_end`` are left out (the model has nothing to say
    about them). ``holdout_frequency`` counts purchase days in (calibration_end,
    observation_end]; ``holdout_duration`` is that span in ``time_unit``.
    """
    unit = _unit_days(time_unit)
    cal_day = _day_number(calibration_end)
    end_day = _day_number(observation_end)
    if end_day <= cal_day:
        raise InvalidInputError(
            [
                Problem(
                    "clv.bad_holdout",
                    "observation_end",
                    "observation_end must be after calibration_end",
                )
            ]
        )
    daily = daily_transactions(transactions, customer=customer, at=at, amount=amount)
    calibration = daily[daily["day"] <= cal_day]
    summary = _summary_from_daily(calibration, cal_day, unit)
    holdout = daily[(daily["day"] > cal_day) & (daily["day"] <= end_day)]
    counts = holdout.groupby("customer_id").size()
    summary["holdout_frequency"] = counts.reindex(summary.index, fill_value=0).astype(np.float64)
    summary["holdout_duration"] = (end_day - cal_day) / unit
    return summary
