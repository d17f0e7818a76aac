"""The customer table: one row per (stitched) person, as of ``now``; and CLV scoring on it.

Definitions (docs/customers.md, "Customer table"): only events at or before ``now`` count.

* **orders**: ``order_completed`` events, one per ``order_id`` (an event without an order id is
  its own order); an order with an ``order_cancelled`` of the same order id does not count;
* **revenue**: the orders' revenue converted to the store currency with ``currency_rates``
  (the latest rate on or before the order's UTC date, else the earliest rate after it); an
  order whose currency has no rate at all adds nothing and is counted in ``unconverted_orders``
  — amounts in different currencies are never summed raw; **refunds** likewise from
  ``order_refunded``; ``net_revenue = revenue − refunds``;
* **recency_days** = now − last order, **tenure_days** = now − first order (fractional days);
* **acquisition** = channel, source and campaign of the person's first touch (their first event
  that is not an identify/alias/group call; ties broken by arrival order);
* **stage** = the highest stage among the person's events (events/stages.py), an order after the
  first being Retention when the stage model says so;
* **main_device** = the most frequent ``device_type`` (ties: alphabetical); **country** = the
  latest known country;
* **top_categories** = up to 3 categories the person touched most (line items, the event's
  ``properties.category``, or the product's category), ties alphabetical;
* **email_opens / email_clicks** = ``email_opened`` / ``email_clicked`` in the 90 days up to now;
* **nps** = the latest NPS score (``survey_responses`` or an ``nps_answered`` event's
  ``properties.score``); **nps_group**: promoter 9-10, passive 7-8, detractor 0-6.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import pandas as pd

from funnelscope.engines.base import Engine
from funnelscope.errors import InvalidInputError, Problem
from funnelscope.events.stages import DEFAULT_STAGE_MODEL, Stage, StageModel

__all__ = [
    "CUSTOMER_COLUMNS",
    "DEFAULT_EMAIL_WINDOW",
    "CLVResult",
    "CustomersResult",
    "customer_params",
    "customer_sql",
    "customer_table",
    "customer_value",
    "order_log",
]

#: Email engagement counts look back this far from ``now``.
DEFAULT_EMAIL_WINDOW: Final = timedelta(days=90)
#: How many categories ``top_categories`` keeps.
TOP_CATEGORIES: Final = 3
#: Calls that carry identities, not touches: never the first touch.
NON_TOUCH_EVENTS: Final = ("identify", "alias", "group")

CUSTOMER_COLUMNS: Final = (
    "person_id",
    "user_id",
    "first_seen_at",
    "last_seen_at",
    "orders",
    "first_order_at",
    "last_order_at",
    "recency_days",
    "tenure_days",
    "revenue",
    "refunds",
    "net_revenue",
    "average_order_value",
    "unconverted_orders",
    "acquisition_channel",
    "acquisition_source",
    "acquisition_campaign",
    "stage",
    "main_device",
    "country",
    "top_categories",
    "email_opens",
    "email_clicks",
    "nps",
    "nps_group",
)


def _require_aware(now: datetime, name: str = "now") -> None:
    if now.tzinfo is None:
        raise InvalidInputError(
            [Problem("customers.naive_time", name, f"{name} must be timezone-aware (UTC)")]
        )


# Orders and refunds, one row per order id, converted to the store currency. Shared by the
# customer table and the CLV transaction log so both count the same orders.
_MONEY_SQL = """
money_raw AS (
    SELECT person_id, event, coalesce(order_id, event_id) AS order_key, "timestamp" AS order_at,
           revenue, currency, seq
    FROM events
    WHERE "timestamp" <= $now AND event IN ('order_completed', 'order_refunded')
),
cancelled AS (
    SELECT DISTINCT order_id AS order_key FROM events
    WHERE "timestamp" <= $now AND event = 'order_cancelled' AND order_id IS NOT NULL
),
orders AS (
    SELECT person_id, order_key, min(order_at) AS order_at,
           arg_min(revenue, order_at) AS revenue, arg_min(currency, order_at) AS currency
    FROM money_raw
    WHERE event = 'order_completed' AND order_key NOT IN (SELECT order_key FROM cancelled)
    GROUP BY person_id, order_key
),
refunds AS (
    SELECT person_id, order_at, revenue, currency FROM money_raw WHERE event = 'order_refunded'
),
amounts AS (
    SELECT 'order' AS kind, person_id, order_key, order_at, revenue, currency FROM orders
    UNION ALL
    SELECT 'refund', person_id, NULL, order_at, revenue, currency FROM refunds
),
-- one rate lookup per (foreign currency, day), not per order
day_rates AS (
    SELECT d.currency, d.day,
           coalesce(
               (SELECT arg_max(r.rate, r."date") FROM currency_rates r
                WHERE r.currency = d.currency AND r."date" <= d.day),
               (SELECT arg_min(r.rate, r."date") FROM currency_rates r
                WHERE r.currency = d.currency)) AS rate
    FROM (SELECT DISTINCT currency, CAST(order_at AS DATE) AS day FROM amounts
          WHERE currency <> $store_currency) d
),
converted AS (
    SELECT m.kind, m.person_id, m.order_key, m.order_at, m.revenue,
           CASE WHEN m.revenue IS NULL THEN NULL
                WHEN m.currency = $store_currency THEN 1.0
                ELSE dr.rate
           END AS rate
    FROM amounts m
    LEFT JOIN day_rates dr ON dr.currency = m.currency AND dr.day = CAST(m.order_at AS DATE)
),
money AS (
    SELECT kind, person_id, order_key, order_at,
           CAST(revenue AS DOUBLE) * rate AS amount,
           revenue IS NOT NULL AND rate IS NULL AS unconverted
    FROM converted
)
"""


def customer_sql(model: StageModel = DEFAULT_STAGE_MODEL) -> str:
    """The customer-table query; parameters ``$now``, ``$store_currency``, ``$email_since``."""
    repeat = "TRUE" if model.repeat_order_is_retention else "FALSE"
    non_touch = ", ".join(f"'{e}'" for e in NON_TOUCH_EVENTS)
    return f"""
WITH ev AS (
    SELECT * FROM events WHERE "timestamp" <= $now
),
{_MONEY_SQL},
persons AS (
    SELECT person_id, min("timestamp") AS first_seen_at, max("timestamp") AS last_seen_at,
           arg_max(user_id, "timestamp") FILTER (WHERE user_id IS NOT NULL) AS user_id,
           max({model.sql_case("event")}) AS event_stage,
           count(*) FILTER (WHERE event = 'email_opened' AND "timestamp" > $email_since)
               AS email_opens,
           count(*) FILTER (WHERE event = 'email_clicked' AND "timestamp" > $email_since)
               AS email_clicks,
           arg_max(country, "timestamp") FILTER (WHERE country IS NOT NULL) AS country,
           -- first touch, in the same pass: one struct so the three fields come from one event
           arg_min({{'channel': channel, 'source': utm_source, 'campaign': utm_campaign}},
                   ("timestamp", seq)) FILTER (WHERE event NOT IN ({non_touch})) AS touch
    FROM ev GROUP BY person_id
),
order_stats AS (
    SELECT person_id,
           count(*) FILTER (WHERE kind = 'order') AS orders,
           min(order_at) FILTER (WHERE kind = 'order') AS first_order_at,
           max(order_at) FILTER (WHERE kind = 'order') AS last_order_at,
           coalesce(sum(amount) FILTER (WHERE kind = 'order'), 0) AS revenue,
           coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0) AS refunds,
           count(*) FILTER (WHERE kind = 'order' AND unconverted) AS unconverted_orders
    FROM money GROUP BY person_id
),
devices AS (
    SELECT person_id, device_type, count(*) AS n FROM ev
    WHERE device_type IS NOT NULL GROUP BY person_id, device_type
),
main_device AS (
    SELECT person_id, arg_min(device_type, (-n, device_type)) AS main_device
    FROM devices GROUP BY person_id
),
category_touches AS (
    SELECT person_id, unnest(items).category AS category FROM ev
    WHERE items IS NOT NULL AND len(items) > 0
    UNION ALL
    SELECT e.person_id,
           coalesce(json_extract_string(e.properties, '$.category'), p.category)
    FROM ev e LEFT JOIN (
        SELECT product_id, min(category) AS category FROM products GROUP BY product_id
    ) p ON p.product_id = e.product_id
    WHERE (e.items IS NULL OR len(e.items) = 0)
      AND (e.product_id IS NOT NULL OR json_extract_string(e.properties, '$.category') IS NOT NULL)
),
category_counts AS (
    SELECT person_id, category, count(*) AS n,
           row_number() OVER (PARTITION BY person_id ORDER BY count(*) DESC, category) AS rk
    FROM category_touches WHERE category IS NOT NULL
    GROUP BY person_id, category
),
categories AS (
    SELECT person_id, list(category ORDER BY rk) AS top_categories
    FROM category_counts WHERE rk <= {TOP_CATEGORIES} GROUP BY person_id
),
nps_answers AS (
    SELECT m.canonical_id AS person_id, s.answered_at AS answered_at, s.score, 0 AS src
    FROM survey_responses s
    JOIN identities i ON i.distinct_id = coalesce(s.user_id, s.anonymous_id)
    JOIN person_map m ON m.person_id = i.person_id
    WHERE s.survey = 'nps' AND s.answered_at <= $now AND s.person_id IS NULL
    UNION ALL
    SELECT m.canonical_id, s.answered_at, s.score, 0
    FROM survey_responses s JOIN person_map m ON m.person_id = s.person_id
    WHERE s.survey = 'nps' AND s.answered_at <= $now
    UNION ALL
    SELECT person_id, "timestamp",
           TRY_CAST(json_extract_string(properties, '$.score') AS INTEGER), 1
    FROM ev WHERE event = 'nps_answered'
),
nps AS (
    SELECT person_id, arg_max(score, (answered_at, src)) AS nps FROM nps_answers
    WHERE score BETWEEN 0 AND 10 GROUP BY person_id
)
SELECT p.person_id, p.user_id, p.first_seen_at, p.last_seen_at,
       coalesce(o.orders, 0) AS orders, o.first_order_at, o.last_order_at,
       (epoch($now) - epoch(o.last_order_at)) / 86400.0 AS recency_days,
       (epoch($now) - epoch(o.first_order_at)) / 86400.0 AS tenure_days,
       coalesce(o.revenue, 0) AS revenue, coalesce(o.refunds, 0) AS refunds,
       coalesce(o.revenue, 0) - coalesce(o.refunds, 0) AS net_revenue,
       CASE WHEN o.orders > 0 THEN o.revenue / o.orders END AS average_order_value,
       coalesce(o.unconverted_orders, 0) AS unconverted_orders,
       p.touch.channel AS acquisition_channel, p.touch.source AS acquisition_source,
       p.touch.campaign AS acquisition_campaign,
       greatest(p.event_stage,
                CASE WHEN coalesce(o.orders, 0) >= 1 THEN {int(Stage.ACTION)} END,
                CASE WHEN coalesce(o.orders, 0) >= 2 AND {repeat} THEN {int(Stage.RETENTION)} END
       ) AS stage,
       d.main_device, p.country, c.top_categories,
       p.email_opens, p.email_clicks,
       n.nps,
       CASE WHEN n.nps >= 9 THEN 'promoter' WHEN n.nps >= 7 THEN 'passive'
            WHEN n.nps >= 0 THEN 'detractor' END AS nps_group
FROM persons p
LEFT JOIN order_stats o USING (person_id)
LEFT JOIN main_device d USING (person_id)
LEFT JOIN categories c USING (person_id)
LEFT JOIN nps n USING (person_id)
ORDER BY p.person_id
"""


@dataclass(frozen=True)
class CustomersResult:
    """The customer table as of ``now`` (columns: :data:`CUSTOMER_COLUMNS`)."""

    now: datetime
    currency: str
    frame: pd.DataFrame = field(repr=False)

    def to_pandas(self) -> pd.DataFrame:
        return self.frame.copy()

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "currency": self.currency,
            "customers": _records(self.frame),
        }

    def __len__(self) -> int:
        return len(self.frame)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: timestamps in ISO 8601, NaN as None, lists as lists."""
    out: list[dict[str, Any]] = []
    for row in frame.to_dict(orient="records"):
        clean: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, pd.Timestamp | datetime):
                clean[str(key)] = None if pd.isna(value) else value.isoformat()
            elif isinstance(value, np.ndarray):
                clean[str(key)] = value.tolist()
            elif isinstance(value, float | np.floating) and np.isnan(value):
                clean[str(key)] = None
            elif isinstance(value, np.generic):
                clean[str(key)] = value.item()
            elif value is pd.NA or value is pd.NaT:
                clean[str(key)] = None
            else:
                clean[str(key)] = value
        out.append(clean)
    return out


def _store_currency(engine: Engine) -> str:
    rows = engine.sql("SELECT value FROM meta WHERE key = 'store_currency'").to_pylist()
    return str(rows[0]["value"]) if rows else "USD"


def customer_params(
    engine: Engine, now: datetime, email_window: timedelta = DEFAULT_EMAIL_WINDOW
) -> dict[str, Any]:
    """The bound parameters of :func:`customer_sql`."""
    _require_aware(now)
    return {
        "now": now,
        "store_currency": _store_currency(engine),
        "email_since": now - email_window,
    }


def customer_table(
    engine: Engine,
    *,
    now: datetime,
    stage_model: StageModel = DEFAULT_STAGE_MODEL,
    email_window: timedelta = DEFAULT_EMAIL_WINDOW,
) -> CustomersResult:
    """One row per stitched person with events at or before ``now``.

    Examples
    --------
    >>> import funnelscope
    >>> from datetime import UTC, datetime
    >>> ws = funnelscope.open(":memory:")
    >>> len(customer_table(ws.engine, now=datetime(2024, 1, 1, tzinfo=UTC)))
    0
    """
    params = customer_params(engine, now, email_window)
    currency = str(params["store_currency"])
    table = engine.sql(customer_sql(stage_model), params)
    frame = table.to_pandas()
    frame["stage"] = [None if pd.isna(s) else Stage(int(s)).name.lower() for s in frame["stage"]]
    for col in ("orders", "email_opens", "email_clicks", "unconverted_orders"):
        frame[col] = frame[col].astype(np.int64)
    frame["nps"] = frame["nps"].astype("Int64")
    return CustomersResult(now=now, currency=currency, frame=frame)


def order_log(engine: Engine, *, now: datetime) -> pd.DataFrame:
    """Every counted order as ``customer_id``, ``at``, ``amount`` (store currency; 0 if unknown).

    The transaction log of the CLV models, with the customer table's order rules.
    """
    _require_aware(now)
    sql = (
        f"WITH {_MONEY_SQL} SELECT person_id AS customer_id, order_at AS at, "
        "coalesce(amount, 0.0) AS amount FROM money WHERE kind = 'order' ORDER BY 1, 2"
    )
    params = {"now": now, "store_currency": _store_currency(engine)}
    log: pd.DataFrame = engine.sql(sql, params).to_pandas()
    return log


# -- CLV scoring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CLVResult:
    """BG/NBD + Gamma-Gamma fitted on the store's orders, and each customer's predictions.

    ``customers`` columns: person_id, frequency, recency, T, monetary_value (weeks; store
    currency), expected_purchases (over ``horizon_weeks``), probability_alive, churn_risk,
    expected_spend, clv.
    """

    now: datetime
    currency: str
    horizon_weeks: float
    purchases_model: dict[str, Any]
    spend_model: dict[str, Any] | None
    customers: pd.DataFrame = field(repr=False)

    def to_pandas(self) -> pd.DataFrame:
        return self.customers.copy()

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "currency": self.currency,
            "horizon_weeks": self.horizon_weeks,
            "purchases_model": self.purchases_model,
            "spend_model": self.spend_model,
            "customers": _records(self.customers),
        }


def customer_value(
    engine: Engine,
    *,
    now: datetime,
    horizon_weeks: float = 52.0,
    convention: Any = None,
) -> CLVResult:
    """Fit BG/NBD and Gamma-Gamma on the store's orders up to ``now`` and score every buyer.

    Time is in weeks; purchases on one UTC day are one transaction (models/clv/data.py). The
    Gamma-Gamma model needs repeat buyers with positive spend; without at least 2 of them the
    spend model is skipped and ``expected_spend``/``clv`` are empty.
    """
    from funnelscope.models.clv import (
        DEFAULT_CLV_CONVENTION,
        BetaGeoModel,
        GammaGammaModel,
        churn_risk_tier,
        summarise_transactions,
    )

    _require_aware(now)
    convention = convention or DEFAULT_CLV_CONVENTION
    log = order_log(engine, now=now)
    if log.empty:
        raise InvalidInputError(
            [Problem("clv.no_orders", "now", "there are no orders at or before now to fit on")]
        )
    summary = summarise_transactions(log, observation_end=now)
    bg = BetaGeoModel().fit(summary)
    x, t_x, big_t, m = (
        summary[c].to_numpy() for c in ("frequency", "recency", "T", "monetary_value")
    )
    out = summary.reset_index().rename(columns={"customer_id": "person_id"})
    out["expected_purchases"] = bg.expected_purchases(horizon_weeks, x, t_x, big_t)
    p_alive = bg.probability_alive(x, t_x, big_t)
    out["probability_alive"] = p_alive
    out["churn_risk"] = churn_risk_tier(p_alive)
    spend: dict[str, Any] | None = None
    repeaters = (x > 0) & (m > 0)
    if repeaters.sum() >= 2:
        gg = GammaGammaModel().fit({"frequency": x[repeaters], "monetary_value": m[repeaters]})
        out["expected_spend"] = gg.expected_spend(x, m)
        out["clv"] = gg.customer_lifetime_value(bg, x, t_x, big_t, m, convention)
        spend = {**gg.to_dict(), "convention": convention.to_dict()}
    else:
        out["expected_spend"] = np.nan
        out["clv"] = np.nan
    return CLVResult(
        now=now,
        currency=_store_currency(engine),
        horizon_weeks=horizon_weeks,
        purchases_model=bg.to_dict(),
        spend_model=spend,
        customers=out,
    )
