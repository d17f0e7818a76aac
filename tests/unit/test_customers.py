"""The customer table (golden, by hand) and CLV scoring of the store's orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from funnelscope.analysis.customers import customer_table, customer_value, order_log
from funnelscope.errors import InvalidInputError
from funnelscope.workspace import Workspace
from tests.conftest import NOW, T0, load_journeys

DAY = 24 * 60


@pytest.fixture
def shop(workspace: Workspace) -> Workspace:
    load_journeys(
        workspace,
        {
            "ann": [
                # anonymous browsing first: stitched to ann by the identify below
                (
                    0,
                    "page_viewed",
                    {
                        "anonymous_id": "a-1",
                        "utm_source": "google",
                        "utm_medium": "cpc",
                        "utm_campaign": "spring",
                        "device_type": "mobile",
                        "country": "FR",
                    },
                ),
                (1, "identify", {"anonymous_id": "a-1", "user_id": "ann"}),
                (
                    5,
                    "product_viewed",
                    {"properties": '{"category": "running"}', "device_type": "mobile"},
                ),
                (6, "product_viewed", {"product_id": "p-trail", "device_type": "desktop"}),
                (
                    10,
                    "order_completed",
                    {
                        "order_id": "o1",
                        "revenue": "100",
                        "currency": "EUR",
                        "device_type": "desktop",
                    },
                ),
                (11, "order_completed", {"order_id": "o1", "revenue": "100", "currency": "EUR"}),
                (
                    3 * DAY,
                    "order_completed",
                    {
                        "order_id": "o2",
                        "revenue": "50",
                        "items": '[{"product_id": "p1", "category": "running", '
                        '"price": 50, "quantity": 1}]',
                    },
                ),
                (4 * DAY, "order_completed", {"order_id": "o3", "revenue": "30"}),
                (4 * DAY + 5, "order_cancelled", {"order_id": "o3"}),
                (5 * DAY, "order_refunded", {"order_id": "o2", "revenue": "20"}),
                (6 * DAY, "email_opened", {}),
                (7 * DAY, "email_clicked", {"country": "DE"}),
            ],
            "bob": [
                (0, "identify", {}),
                (2, "product_added", {"utm_source": "newsletter", "utm_medium": "email"}),
                (3, "order_completed", {"order_id": "b1", "revenue": "1000", "currency": "JPY"}),
                (4, "nps_answered", {"properties": '{"score": 10}'}),
            ],
            "cy": [(0, "ad_impression", {}), (1, "product_viewed", {"product_id": "p-trail"})],
        },
    )
    with workspace.store.write() as cur:
        cur.execute(
            "INSERT INTO currency_rates VALUES ('2024-01-01', 'EUR', 1.1), "
            "('2024-05-07', 'EUR', 1.2)"
        )
        cur.execute("INSERT INTO products (product_id, category) VALUES ('p-trail', 'trail')")
        # a survey answer later than bob's NPS event wins; ann's is an old email survey
        cur.execute(
            "INSERT INTO survey_responses VALUES ('r1', ?, 'bob', NULL, NULL, 6, NULL, "
            "'nps'), ('r2', ?, 'ann', NULL, NULL, 9, NULL, 'csat')",
            [T0 + timedelta(days=1), T0],
        )
    return workspace


def test_customer_table_golden(shop: Workspace) -> None:
    table = customer_table(shop.engine, now=NOW)
    rows = table.frame.set_index("user_id")
    assert sorted(rows.index) == ["ann", "bob", "cy"]  # one row per stitched person
    ann = rows.loc["ann"]
    # o1 counted once, 100 EUR at the 2024-01-01 rate 1.1 (the 1.2 rate starts after the
    # order's date); o2 50 USD; o3 cancelled; 20 USD refunded
    assert ann["orders"] == 2
    assert ann["revenue"] == pytest.approx(160.0)
    assert ann["refunds"] == pytest.approx(20.0)
    assert ann["net_revenue"] == pytest.approx(140.0)
    assert ann["average_order_value"] == pytest.approx(80.0)
    assert ann["first_order_at"] == T0 + timedelta(minutes=10)
    assert ann["last_order_at"] == T0 + timedelta(days=3)
    assert ann["recency_days"] == pytest.approx((NOW - T0 - timedelta(days=3)) / timedelta(days=1))
    assert ann["acquisition_channel"] == "paid_search"  # the anonymous first touch
    assert (ann["acquisition_source"], ann["acquisition_campaign"]) == ("google", "spring")
    assert ann["stage"] == "retention"  # a second order
    assert ann["main_device"] == "desktop"  # 2 mobile vs 2 desktop: alphabetical tie-break
    assert ann["country"] == "DE"  # latest known
    assert list(ann["top_categories"]) == ["running", "trail"]  # 2 running, 1 trail
    assert (ann["email_opens"], ann["email_clicks"]) == (1, 1)
    assert pd.isna(ann["nps"])  # a CSAT answer is not NPS
    bob = rows.loc["bob"]
    assert bob["orders"] == 1 and bob["unconverted_orders"] == 1  # no JPY rate
    assert bob["revenue"] == 0.0
    assert bob["acquisition_channel"] == "email"  # identify is not a touch
    assert bob["stage"] == "retention"  # answered NPS
    assert (bob["nps"], bob["nps_group"]) == (6, "detractor")  # the later survey answer
    cy = table.frame[table.frame["user_id"] == "cy"].iloc[0]
    assert cy["orders"] == 0 and pd.isna(cy["recency_days"])
    assert cy["stage"] == "interest"
    assert list(cy["top_categories"]) == ["trail"]
    assert table.currency == "USD"
    as_json = table.to_dict()
    assert as_json["customers"][0]["first_seen_at"].endswith("+00:00")


def test_only_events_up_to_now_count(shop: Workspace) -> None:
    early = customer_table(shop.engine, now=T0 + timedelta(days=2))
    ann = early.frame.set_index("user_id").loc["ann"]
    assert ann["orders"] == 1 and ann["stage"] == "action"
    assert ann["email_opens"] == 0


def test_email_engagement_window(shop: Workspace) -> None:
    later = customer_table(shop.engine, now=T0 + timedelta(days=100))
    ann = later.frame.set_index("user_id").loc["ann"]
    assert (ann["email_opens"], ann["email_clicks"]) == (0, 0)


def test_naive_now_is_rejected(shop: Workspace) -> None:
    with pytest.raises(InvalidInputError) as err:
        customer_table(shop.engine, now=datetime(2024, 7, 1))
    assert err.value.code == "customers.naive_time"


def test_order_log_uses_the_same_order_rules(shop: Workspace) -> None:
    log = order_log(shop.engine, now=NOW)
    assert sorted(log["amount"].round(4).tolist()) == [0.0, 50.0, 110.0]


CDNOW = Path(__file__).parents[1] / "data" / "cdnow" / "CDNOW_sample.txt"
SHIFT = timedelta(days=10_000)  # the store accepts events from 2000 on; whole days keep the model


def test_clv_from_the_store_reproduces_the_cdnow_fit(workspace: Workspace) -> None:
    raw = pd.read_csv(
        CDNOW, sep=r"\s+", header=None, names=["master", "customer", "date", "cds", "amount"]
    )
    at = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d", utc=True) + SHIFT
    staging = pa.table(
        {
            "event_id": [f"cd-{i}" for i in range(len(raw))],
            "timestamp": [t.isoformat() for t in at],
            "event": ["order_completed"] * len(raw),
            "user_id": [f"c{c}" for c in raw["customer"]],
            "revenue": [f"{v:.2f}" for v in raw["amount"]],
            "order_id": [f"o{i}" for i in range(len(raw))],
        }
    )
    now = datetime(1997, 9, 30, 23, 59, tzinfo=UTC) + SHIFT
    report = workspace.append_staging(
        staging, source="cdnow", received_at=now + timedelta(days=400)
    )
    assert report.inserted == 6919
    result = customer_value(workspace.engine, now=now, horizon_weeks=39)
    params = result.purchases_model["params"]
    assert params["r"] == pytest.approx(0.2425945, rel=1e-4)
    assert params["b"] == pytest.approx(2.4258881, rel=1e-4)
    assert result.spend_model is not None
    assert result.spend_model["params"]["p"] == pytest.approx(6.249575, rel=1e-4)
    customers = result.customers
    assert len(customers) == 2357
    # customers whose first purchase is before `now` only; P(alive) == 1 without repeats
    assert (customers.loc[customers["frequency"] == 0, "probability_alive"] == 1.0).all()
    assert set(customers["churn_risk"]) == {"low", "medium", "high"}
    assert customers["expected_purchases"].sum() == pytest.approx(1653.4, abs=1.0)
