"""Golden cases for the stage report (semantics in docs/data-model.md, "Stage report")."""

from __future__ import annotations

from datetime import timedelta

from funnelscope.events.stages import Stage
from funnelscope.workspace import Workspace
from tests.conftest import T0, load_journeys

JOURNEYS = {
    # reaches every stage: the second order is a Retention event
    "alice": [
        (0, "ad_impression"),
        (10, "Page Viewed"),
        (20, "add_to_cart"),
        (30, "purchase", {"revenue": "20", "currency": "USD"}),
        (1440, "Order Completed", {"revenue": "30", "currency": "USD"}),
    ],
    "bob": [(0, "page_viewed"), (5, "product_viewed")],
    # anonymous browsing, then identify, then an order: one person at Action
    "carol": [
        (1, "page_viewed", {"anonymous_id": "anon-c"}),
        (2, "product_added", {"anonymous_id": "anon-c"}),
        (3, "identify", {"anonymous_id": "anon-c", "user_id": "carol"}),
        (50, "order_completed", {"user_id": "carol", "revenue": "5", "currency": "USD"}),
    ],
    "dave": [(0, "identify")],  # no stage event: not in the report
    "erin": [(0, "ad_impression")],
}


def test_reached_counts_never_increase_and_stitch_persons(workspace: Workspace) -> None:
    load_journeys(workspace, JOURNEYS)
    report = workspace.stage_report()
    reached = [r.persons for r in report.rows]
    active = [r.active_persons for r in report.rows]
    events = [r.events for r in report.rows]
    assert reached == [4, 3, 2, 2, 1]
    assert active == [2, 3, 2, 2, 1]
    assert events == [2, 4, 2, 2, 1]
    interest = report.row(Stage.INTEREST)
    assert interest.conversion_from_previous == 3 / 4
    lo, hi = interest.conversion_interval or (0, 0)
    assert 0.30 < lo < 0.75 < hi < 0.96  # Wilson 95% for 3/4
    assert report.row(Stage.AWARENESS).conversion_from_previous is None


def test_repeat_order_rank_uses_all_history_not_only_the_period(workspace: Workspace) -> None:
    load_journeys(workspace, JOURNEYS)
    report = workspace.stage_report(T0 + timedelta(minutes=45), T0 + timedelta(days=2))
    # alice's only in-period event is her second order: Retention, so she reached all stages
    assert [r.persons for r in report.rows] == [2, 2, 2, 2, 1]
    assert [r.active_persons for r in report.rows] == [0, 0, 0, 1, 1]
