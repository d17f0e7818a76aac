"""CAC, CLV:CAC and payback by acquisition channel and monthly cohort.

Definitions (docs/customers.md, "Acquisition economics"):

* a customer's **cohort** is the UTC calendar month of their first order, their **channel** the
  first-touch acquisition channel of the customer table;
* **spend** is ``ad_spend`` of that channel in that month, converted to the store currency with
  ``currency_rates`` (latest rate on or before the spend date, else the earliest after);
* **CAC** = spend / new customers of the cohort and channel (0 when the channel has no spend;
  empty when it has spend but no new customers: ``unattributed_spend``);
* **value per customer** = the cohort's realised net revenue to ``now`` × ``margin``, plus the
  mean predicted future CLV when a CLV result is given; **CLV:CAC** = value / CAC;
* **payback_months** = the smallest m ≥ 1 such that the cumulative revenue × margin per
  customer over the cohort's first m calendar months (month 1 = the acquisition month)
  reaches CAC; empty when it has not happened by ``now``; 0 when CAC is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import numpy as np
import pandas as pd

from funnelscope.analysis.customers import CustomersResult, order_log
from funnelscope.engines.base import Engine
from funnelscope.errors import InvalidInputError, Problem

__all__ = ["AcquisitionResult", "acquisition"]

_SPEND_SQL: Final = """
SELECT strftime(s."date", '%Y-%m') AS cohort, s.channel,
       sum(CAST(s.spend AS DOUBLE) * CASE WHEN s.currency = $store_currency THEN 1.0 ELSE coalesce(
           (SELECT arg_max(r.rate, r."date") FROM currency_rates r
            WHERE r.currency = s.currency AND r."date" <= s."date"),
           (SELECT arg_min(r.rate, r."date") FROM currency_rates r
            WHERE r.currency = s.currency)) END) AS spend,
       count(*) FILTER (WHERE s.currency <> $store_currency AND NOT EXISTS (
           SELECT 1 FROM currency_rates r WHERE r.currency = s.currency)) AS unconverted_rows
FROM ad_spend s
WHERE s."date" <= CAST($now AS DATE)
GROUP BY 1, 2
"""

COLUMNS: Final = (
    "cohort",
    "channel",
    "new_customers",
    "spend",
    "cac",
    "revenue_per_customer",
    "value_per_customer",
    "clv_to_cac",
    "payback_months",
)


@dataclass(frozen=True)
class AcquisitionResult:
    """One row per (cohort, channel) with customers or spend, and totals per channel."""

    now: datetime
    currency: str
    margin: float
    rows: pd.DataFrame = field(repr=False)
    channels: pd.DataFrame = field(repr=False)
    unconverted_spend_rows: int = 0

    def to_pandas(self) -> pd.DataFrame:
        return self.rows.copy()

    def to_dict(self) -> dict[str, Any]:
        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [
                {
                    str(k): (None if isinstance(v, float) and np.isnan(v) else v)
                    for k, v in r.items()
                }
                for r in frame.astype(object).to_dict(orient="records")
            ]

        return {
            "now": self.now.isoformat(),
            "currency": self.currency,
            "margin": self.margin,
            "unconverted_spend_rows": self.unconverted_spend_rows,
            "cohorts": records(self.rows),
            "channels": records(self.channels),
        }


def _month_index(stamps: pd.Series) -> np.ndarray[Any, Any]:
    values = pd.to_datetime(stamps, utc=True)
    return np.asarray(values.dt.year * 12 + values.dt.month - 1, dtype=np.int64)


def _payback(cumulative: list[float], cac: float) -> float:
    if cac <= 0:
        return 0.0
    for month, value in enumerate(cumulative, start=1):
        if value >= cac - 1e-9:
            return float(month)
    return float("nan")


def acquisition(
    engine: Engine,
    customers: CustomersResult,
    *,
    margin: float = 1.0,
    predicted_clv: pd.Series | None = None,
) -> AcquisitionResult:
    """CAC, value per customer, CLV:CAC and payback per cohort and channel.

    ``predicted_clv`` (person_id -> future CLV, e.g. from ``customer_value``) is added to the
    realised value when given.

    Examples
    --------
    >>> import funnelscope
    >>> from datetime import UTC, datetime
    >>> from funnelscope.analysis.customers import customer_table
    >>> ws = funnelscope.open(":memory:")
    >>> now = datetime(2024, 1, 1, tzinfo=UTC)
    >>> len(acquisition(ws.engine, customer_table(ws.engine, now=now)).rows)
    0
    """
    if not 0 < margin <= 1:
        raise InvalidInputError(
            [Problem("acquisition.bad_margin", "margin", "margin must be in (0, 1]")]
        )
    now = customers.now
    spend = engine.sql(_SPEND_SQL, {"now": now, "store_currency": customers.currency}).to_pandas()
    table = customers.frame
    buyers = table[table["orders"] > 0][["person_id", "acquisition_channel", "first_order_at"]]
    buyers = buyers.assign(
        channel=buyers["acquisition_channel"].fillna("unknown"),
        cohort_index=_month_index(buyers["first_order_at"]),
    )
    buyers["cohort"] = [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in buyers["cohort_index"]]
    log = order_log(engine, now=now).merge(
        buyers[["person_id", "channel", "cohort", "cohort_index"]],
        left_on="customer_id",
        right_on="person_id",
    )
    log["month"] = _month_index(log["at"]) - log["cohort_index"] + 1
    now_index = int(_month_index(pd.Series([now]))[0])

    groups = buyers.groupby(["cohort", "channel"]).agg(
        new_customers=("person_id", "size"), cohort_index=("cohort_index", "first")
    )
    spend_by = spend.set_index(["cohort", "channel"])["spend"] if len(spend) else pd.Series()
    keys = sorted(set(groups.index) | set(spend_by.index))
    rows = []
    for cohort, channel in keys:
        n = int(groups["new_customers"].get((cohort, channel), 0))
        cost = float(spend_by.get((cohort, channel), 0.0))
        cac = cost / n if n else float("nan")
        part = log[(log["cohort"] == cohort) & (log["channel"] == channel)]
        revenue = float(part["amount"].sum()) / n if n else float("nan")
        value = revenue * margin
        if n and predicted_clv is not None:
            members = buyers.loc[
                (buyers["cohort"] == cohort) & (buyers["channel"] == channel), "person_id"
            ]
            value += float(predicted_clv.reindex(members).fillna(0.0).mean())
        payback = float("nan")
        if n:
            start = int(groups["cohort_index"].get((cohort, channel), now_index))
            months = max(now_index - start + 1, 1)
            per_month = (
                part.groupby("month")["amount"].sum().reindex(range(1, months + 1), fill_value=0.0)
            )
            payback = _payback(list(np.cumsum(per_month.to_numpy() * margin / n)), cac)
        rows.append(
            {
                "cohort": cohort,
                "channel": channel,
                "new_customers": n,
                "spend": cost,
                "cac": cac,
                "revenue_per_customer": revenue,
                "value_per_customer": value,
                "clv_to_cac": value / cac if n and cac > 0 else float("nan"),
                "payback_months": payback,
            }
        )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    channels = (
        frame.groupby("channel", as_index=False)
        .agg(new_customers=("new_customers", "sum"), spend=("spend", "sum"))
        .sort_values("channel", ignore_index=True)
    )
    value_total = {
        ch: float((g["value_per_customer"].fillna(0) * g["new_customers"]).sum())
        for ch, g in frame.groupby("channel")
    }
    channels["cac"] = np.where(
        channels["new_customers"] > 0,
        channels["spend"] / channels["new_customers"].where(channels["new_customers"] > 0, 1),
        np.nan,
    )
    channels["value_per_customer"] = [
        value_total[ch] / n if n else np.nan
        for ch, n in zip(channels["channel"], channels["new_customers"], strict=True)
    ]
    channels["clv_to_cac"] = np.where(
        channels["cac"] > 0, channels["value_per_customer"] / channels["cac"], np.nan
    )
    unconverted = int(spend["unconverted_rows"].sum()) if len(spend) else 0
    return AcquisitionResult(now, customers.currency, margin, frame, channels, unconverted)
