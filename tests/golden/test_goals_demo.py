"""The seed document's example goal on a simulated demo shop.

"Increase sales of Product X by 15% by the end of the first quarter through email marketing
campaigns": product_revenue scoped to the shop's best-selling product of Q4 2024 (most order
lines), +15% against Q4 2024 (Oct 1 - Dec 31), from Jan 1 to Mar 31 2025, the email channel as
the initiative.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

import funnelscope
from funnelscope.analysis.goals import GoalSpec
from funnelscope.analysis.kpis import KpiSpec, compute_kpis
from funnelscope.simulate import simulate
from funnelscope.workspace import Workspace

MID_QUARTER = datetime(2025, 2, 15, 9, 30, tzinfo=UTC)  # Jan 1 .. Feb 14 are complete: 45 days
AFTER = datetime(2025, 4, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws = funnelscope.open(tmp_path_factory.mktemp("demo") / "shop.duckdb")
    simulated = simulate(customers=10_000, days=182, seed=11, start=date(2024, 10, 1))
    report = simulated.write_store(ws.store, received_at=datetime(2025, 4, 1, tzinfo=UTC))
    assert report.rejected == 0
    yield ws
    ws.close()


def product_revenue(ws: Workspace, product: str, start: date, end: date) -> float:
    """The KPI over a whole window in one query (not the sum of daily values)."""
    spec = KpiSpec.create(
        "product_revenue",
        datetime.combine(start, datetime.min.time(), UTC),
        datetime.combine(end, datetime.min.time(), UTC),
        filters={"product": product},
    )
    value = compute_kpis(ws.engine, spec).rows[0].value
    assert value is not None
    return value


def best_seller(ws: Workspace) -> str:
    rows = ws.store.query(
        "SELECT i.product_id FROM (SELECT unnest(items) AS i FROM events "
        "WHERE event = 'order_completed' AND \"timestamp\" < '2025-01-01') "
        "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    )
    return str(rows[0][0])


def seed_goal(product: str) -> GoalSpec:
    return GoalSpec.from_dict(
        {
            "name": "product-x-q1",
            "owner": "marketing",
            "kpi": "product_revenue",
            "scope": {"product": product},
            "target": "+15%",
            "baseline_start": "2024-10-01",
            "baseline_end": "2024-12-31",
            "start": "2025-01-01",
            "deadline": "2025-03-31",
            "initiative": "email",
            "description": "Increase sales of Product X by 15% by the end of the first quarter "
            "through email marketing campaigns",
        }
    )


def test_the_seed_goal_shows_progress_pacing_forecast_and_status(shop: Workspace) -> None:
    product = best_seller(shop)
    shop.add_goal(seed_goal(product), now=MID_QUARTER)
    p = shop.goal_progress("product-x-q1", now=MID_QUARTER)

    baseline = product_revenue(shop, product, date(2024, 10, 1), date(2025, 1, 1))
    so_far = product_revenue(shop, product, date(2025, 1, 1), date(2025, 2, 15))
    assert p.baseline_value == pytest.approx(baseline)
    assert p.target_value == pytest.approx(baseline * 1.15)
    assert p.current_value == pytest.approx(so_far)
    assert p.percent_of_target == pytest.approx(100 * so_far / (baseline * 1.15))
    # Pacing: a straight line in cumulative revenue, 0 on Dec 31 to the target on Mar 31.
    assert (p.days_elapsed, p.days_total) == (45, 90)
    assert p.expected_to_date == pytest.approx(baseline * 1.15 * 45 / 90)
    assert p.daily["pacing"].iloc[-1] == pytest.approx(baseline * 1.15)
    # The forecast adds the rest of the quarter to what is already sold.
    f = p.forecast
    assert f is not None and f.method == "structural(trend+weekly)"
    assert (
        so_far
        <= f.interval95[0]
        <= f.interval80[0]
        <= f.median
        <= f.interval80[1]
        <= f.interval95[1]
    )
    assert p.probability is not None and 0.0 <= p.probability <= 1.0
    expected = (
        "on_track" if p.probability >= 0.7 else "at_risk" if p.probability >= 0.3 else "off_track"
    )
    assert p.status == expected
    checks = {c.property: c for c in p.checks}
    assert all(checks[k].passed for k in ("specific", "measurable", "relevant", "time_bound"))
    assert checks["relevant"].message == "initiative 'email' found in events (as a channel)"
    assert checks["time_bound"].message == "deadline 2025-03-31: 90 days, 45 left"
    assert f"{p.probability:.0%}" in checks["achievable"].message
    # The chart series: actual up to Feb 14, the forecast band after.
    chart = p.to_pandas()
    assert chart.loc["2025-02-14", "actual_to_date"] == pytest.approx(so_far)
    assert chart.loc["2025-02-15":, "forecast_mean"].notna().all()
    assert chart.loc[:"2025-02-14", "forecast_mean"].isna().all()


def test_after_the_quarter_the_seed_goal_is_achieved_or_missed(shop: Workspace) -> None:
    product = best_seller(shop)
    p = shop.goal_progress("product-x-q1", now=AFTER) if shop.goals() else None
    if p is None:  # this test run alone
        shop.add_goal(seed_goal(product), now=MID_QUARTER)
        p = shop.goal_progress("product-x-q1", now=AFTER)
    quarter = product_revenue(shop, product, date(2025, 1, 1), date(2025, 4, 1))
    assert p.current_value == pytest.approx(quarter)
    assert p.status == ("achieved" if quarter >= p.target_value else "missed")
    assert p.probability == (1.0 if p.status == "achieved" else 0.0)
