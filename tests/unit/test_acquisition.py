"""CAC, CLV:CAC and payback by channel and monthly cohort (golden, by hand)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from funnelscope.analysis.acquisition import acquisition
from funnelscope.analysis.customers import customer_table
from funnelscope.errors import InvalidInputError
from funnelscope.workspace import Workspace
from tests.conftest import NOW, load_journeys

DAY = 24 * 60
PAID = {"utm_source": "google", "utm_medium": "cpc"}


@pytest.fixture
def shop(workspace: Workspace) -> Workspace:
    load_journeys(
        workspace,
        {
            "p1": [
                (0, "order_completed", {**PAID, "order_id": "1", "revenue": "30"}),
                (35 * DAY, "order_completed", {"order_id": "2", "revenue": "40"}),
            ],
            "p2": [(DAY, "order_completed", {**PAID, "order_id": "3", "revenue": "20"})],
            "p3": [
                (
                    2 * DAY,
                    "order_completed",
                    {"utm_medium": "email", "order_id": "4", "revenue": "100"},
                )
            ],
            "p4": [(26 * DAY, "order_completed", {"order_id": "5", "revenue": "10"})],
        },
    )
    with workspace.store.write() as cur:
        cur.execute(
            "INSERT INTO ad_spend VALUES "
            "('2024-05-01', 'paid_search', 'google', 'c', 1000, 50, 100, 'USD', NULL), "
            "('2024-05-01', 'email', 'esp', 'c', 0, 0, 50, 'EUR', NULL), "
            "('2024-06-01', 'paid_search', 'google', 'c', 1000, 50, 30, 'USD', NULL), "
            "('2024-08-01', 'paid_search', 'google', 'c', 1000, 50, 999, 'USD', NULL)"
        )
        cur.execute("INSERT INTO currency_rates VALUES ('2024-01-01', 'EUR', 1.2)")
    return workspace


def test_cac_value_and_payback_golden(shop: Workspace) -> None:
    result = acquisition(shop.engine, customer_table(shop.engine, now=NOW))
    rows = result.rows.set_index(["cohort", "channel"])
    email = rows.loc[("2024-05", "email")]
    assert (email["new_customers"], email["spend"], email["cac"]) == (1, 60.0, 60.0)
    assert email["value_per_customer"] == 100.0
    assert email["clv_to_cac"] == pytest.approx(100 / 60)
    assert email["payback_months"] == 1.0
    paid = rows.loc[("2024-05", "paid_search")]
    assert (paid["new_customers"], paid["spend"], paid["cac"]) == (2, 100.0, 50.0)
    assert paid["revenue_per_customer"] == 45.0
    assert paid["clv_to_cac"] == pytest.approx(0.9)
    assert math.isnan(paid["payback_months"])  # 25 after May, 45 after June and July < 50
    direct = rows.loc[("2024-06", "direct")]
    assert (direct["spend"], direct["cac"], direct["payback_months"]) == (0.0, 0.0, 0.0)
    assert math.isnan(direct["clv_to_cac"])
    unattributed = rows.loc[("2024-06", "paid_search")]
    assert unattributed["new_customers"] == 0 and math.isnan(unattributed["cac"])
    assert ("2024-08", "paid_search") not in rows.index  # spend after now
    channels = result.channels.set_index("channel")
    assert channels.loc["paid_search", "cac"] == 65.0
    assert channels.loc["paid_search", "clv_to_cac"] == pytest.approx(45 / 65)
    assert result.to_dict()["cohorts"][0]["cohort"] == "2024-05"


def test_margin_and_predicted_clv_raise_the_value(shop: Workspace) -> None:
    customers = customer_table(shop.engine, now=NOW)
    ids = customers.frame.set_index("user_id")["person_id"]
    predicted = pd.Series({ids["p3"]: 20.0})
    result = acquisition(shop.engine, customers, margin=0.5, predicted_clv=predicted)
    email = result.rows.set_index(["cohort", "channel"]).loc[("2024-05", "email")]
    assert email["value_per_customer"] == 100 * 0.5 + 20
    # payback counts realised margin only: 100 x 0.5 = 50 < CAC 60, not paid back yet
    assert math.isnan(email["payback_months"])
    with pytest.raises(InvalidInputError):
        acquisition(shop.engine, customers, margin=0)
